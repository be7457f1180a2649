//! Persistence helpers: the KvStore key layout and the value encoding.
//!
//! Every value is `[version byte] ++ postcard(record)`; version 1 is the only one so far. A
//! reader refuses unknown versions as corrupt rather than guessing.
//!
//! Key layout (all under `auth/v1/`; account ids are 36-character UUID strings, device ids
//! one byte, prekey ids 4-byte big-endian):
//!
//! | key | value |
//! | --- | --- |
//! | `username/<name>` | [`crate::model::UsernameEntry`] (the account id) |
//! | `account/<acc>` | [`crate::model::Account`] (v2; TOTP secret sealed) |
//! | `device/<acc>/<dev>` | [`crate::model::Device`] |
//! | `session/<sid>` | [`crate::model::Session`] |
//! | `acctsess/<acc>/<sid>` | index of the account's sessions |
//! | `link/<sha256(code)>` | [`crate::model::LinkRequest`] (v2; v1 was an account's link code) |
//! | `notice/<acc>/<dev>/<id>` | [`crate::model::DeviceNotice`] (id 8-byte big-endian) |
//! | `mfaticket/<sha256(ticket)>` | [`crate::model::MfaTicket`] |
//! | `lockout/<name>` | [`crate::model::Lockout`]: failed logins for the name from any address |
//! | `lockaddr/<ip, 16 bytes><sha256(name)>` | [`crate::model::Lockout`]: from one address (IPv4 mapped) |
//! | `mfalock/<acc>` | [`crate::model::Lockout`]: failed second factors of the account |
//! | `deleted/<acc>` | `Tombstone` (`tombstone.rs`): the account is being deleted |
//! | `retired/<acc>/<dev>` | `RetiredDevice` (`device_ids.rs`): a removed device's id, not yet reusable |
//! | `hidden/<acc>` | `HiddenUsername` (`lookup.rs`): the username is not discoverable |
//! | `pk/<acc>/<dev>/s` · `/l` · `/k<id>` · `/o<id>` | signed, last-resort KEM, one-time KEM, one-time EC prekeys |
//! | `kp/<acc>/<dev>/l` · `/o<ref>` | last-resort and one-time KeyPackages |
//! | `kp/<acc>/<dev>/s` · `/c<ref>` | pinned MLS signature key; handed-out KeyPackageRefs (`keypackages.rs`) |
//! | `admin/<acc>` | `AdminState` (`admin_state.rs`): roles beyond `user`, suspension |
//! | `owners` | `Owners` (`admin_state.rs`): the accounts holding the owner role |
//! | `signing` | [`crate::model::SigningKeys`] (seeds sealed, [`crate::sealing`]; version 2, record impl in [`crate::signing`]) |
//! | `audit/<seq>` · `audithead` · `auditcheckpoint` | the audit chain (crate `guardyn-audit`, shared with admin) |

use guardyn_common::ids::{ACCOUNT_ID_LEN, AccountId, DeviceId, hex};
use guardyn_storage::record::{Record, decode, postcard_body};
use guardyn_storage::{Direction, KeyRange, KvPair, KvStore, Txn, TxnOutcome};

use crate::error::AuthResult;
use crate::model::{
    Account, AccountV1, Device, DeviceNotice, LinkCode, LinkRequest, Lockout, MfaTicket, Session,
    SessionV1, StoredKeyPackage, StoredPreKey, UsernameEntry,
};

/// Version tag of every record this crate writes (the only one so far).
pub const VERSION: u8 = 1;

/// Value of an index entry (`acctsess/...`): the version byte alone.
pub const INDEX_ENTRY: [u8; 1] = [VERSION];

/// How often an optimistic transaction is retried before giving up.
pub const MAX_ATTEMPTS: usize = 64;

macro_rules! records {
    ($($t:ty),* $(,)?) => {
        $(impl Record for $t {
            const VERSION: u8 = VERSION;
        })*
    };
}

records!(
    Device,
    DeviceNotice,
    MfaTicket,
    StoredPreKey,
    StoredKeyPackage,
    UsernameEntry,
);

/// Account records are version 2 (with `device_set`); version 1 is still read.
impl Record for Account {
    const VERSION: u8 = 2;

    fn decode_version(version: u8, body: &[u8]) -> Result<Self, guardyn_storage::StorageError> {
        match version {
            2 => postcard_body(body),
            VERSION => Ok(postcard_body::<AccountV1>(body)?.into()),
            v => Err(guardyn_storage::StorageError::Corrupt(format!(
                "account: unknown version {v}"
            ))),
        }
    }
}

/// Session records are version 2 (with `stepped_up_ms`); version 1 is still read.
impl Record for Session {
    const VERSION: u8 = 2;

    fn decode_version(version: u8, body: &[u8]) -> Result<Self, guardyn_storage::StorageError> {
        match version {
            2 => postcard_body(body),
            VERSION => Ok(postcard_body::<SessionV1>(body)?.into()),
            v => Err(guardyn_storage::StorageError::Corrupt(format!(
                "session: unknown version {v}"
            ))),
        }
    }
}

/// `link/` records are version 2 ([`LinkRequest`]); a version-1 link code reads as a request
/// that expired when the code did, so nothing can redeem it and the sweeper deletes it.
impl Record for LinkRequest {
    const VERSION: u8 = 2;

    fn decode_version(version: u8, body: &[u8]) -> Result<Self, guardyn_storage::StorageError> {
        match version {
            2 => postcard_body(body),
            VERSION => {
                // Decoded only to tell a v1 record from garbage.
                let _: LinkCode = postcard_body(body)?;
                Ok(Self {
                    device: crate::model::PendingDevice {
                        name: String::new(),
                        registration_id: 0,
                        identity_key: Vec::new(),
                        signed: None,
                        last_resort_kem: None,
                        kem: Vec::new(),
                        ec: Vec::new(),
                    },
                    secret_hash: [0; 32],
                    expires_ms: 0,
                    approved: None,
                })
            }
            v => Err(guardyn_storage::StorageError::Corrupt(format!(
                "link request: unknown version {v}"
            ))),
        }
    }
}

/// Lockout records are version 2 (with the time of the last failure, for the sweeper);
/// version 1 (`failures`, `locked_until_ms`) is still read.
impl Record for Lockout {
    const VERSION: u8 = 2;

    fn decode_version(version: u8, body: &[u8]) -> Result<Self, guardyn_storage::StorageError> {
        match version {
            2 => postcard_body(body),
            VERSION => {
                let (failures, locked_until_ms): (u32, u64) = postcard_body(body)?;
                Ok(Self {
                    failures,
                    locked_until_ms,
                    last_failure_ms: locked_until_ms,
                })
            }
            v => Err(guardyn_storage::StorageError::Corrupt(format!(
                "lockout: unknown version {v}"
            ))),
        }
    }
}

/// Read and decode; `None` when absent. Also returns the raw bytes for `require_unchanged`.
pub async fn get<R: Record>(kv: &dyn KvStore, key: &[u8]) -> AuthResult<Option<(R, Vec<u8>)>> {
    match kv.get(key).await? {
        Some(raw) => Ok(Some((decode(&raw)?, raw))),
        None => Ok(None),
    }
}

/// Commit; `true` when committed, `false` on conflict.
pub async fn commit(kv: &dyn KvStore, txn: Txn) -> AuthResult<bool> {
    Ok(matches!(kv.commit(txn).await?, TxnOutcome::Committed))
}

/// Keys under a prefix, in order.
pub async fn scan_prefix(kv: &dyn KvStore, prefix: &[u8], limit: usize) -> AuthResult<Vec<KvPair>> {
    Ok(kv
        .scan(KeyRange::prefix(prefix), Direction::Forward, limit)
        .await?)
}

const ROOT: &str = "auth/v1/";

/// `<ROOT><kind>/<account>`, the account written without the formatter (these keys are
/// built on every request).
fn acct(kind: &[u8], acc: AccountId) -> Vec<u8> {
    k(&[kind, acc.encode(&mut [0; ACCOUNT_ID_LEN]).as_bytes()])
}

fn k(parts: &[&[u8]]) -> Vec<u8> {
    // Room for what the builders append (separators, a device byte, an id) without growing.
    let len = ROOT.len() + parts.iter().map(|p| p.len() + 1).sum::<usize>() + 16;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(ROOT.as_bytes());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(p);
    }
    out
}

/// An API credential (`CredentialRecord`), by its id.
pub fn credential(id: &str) -> Vec<u8> {
    k(&[b"credential", id.as_bytes()])
}

pub fn credentials_prefix() -> Vec<u8> {
    k(&[b"credential", b""])
}

pub fn username(name: &str) -> Vec<u8> {
    k(&[b"username", name.as_bytes()])
}
pub fn account(acc: AccountId) -> Vec<u8> {
    acct(b"account", acc)
}
pub fn device(acc: AccountId, dev: DeviceId) -> Vec<u8> {
    let mut key = devices(acc);
    key.push(dev_byte(dev));
    key
}
/// Prefix of an account's devices.
pub fn devices(acc: AccountId) -> Vec<u8> {
    let mut key = acct(b"device", acc);
    key.push(b'/');
    key
}
pub fn session(sid: &str) -> Vec<u8> {
    k(&[b"session", sid.as_bytes()])
}
pub fn account_session(acc: AccountId, sid: &str) -> Vec<u8> {
    let mut key = acct(b"acctsess", acc);
    key.push(b'/');
    key.extend_from_slice(sid.as_bytes());
    key
}
pub fn account_sessions(acc: AccountId) -> Vec<u8> {
    let mut key = acct(b"acctsess", acc);
    key.push(b'/');
    key
}
pub fn link_code(hash: &[u8; 32]) -> Vec<u8> {
    k(&[b"link", hex(hash).as_bytes()])
}
/// One notice of a receiving device.
pub fn notice(acc: AccountId, dev: DeviceId, id: u64) -> Vec<u8> {
    let mut key = notices(acc, dev);
    key.extend_from_slice(&id.to_be_bytes());
    key
}
/// Prefix of a receiving device's notices.
pub fn notices(acc: AccountId, dev: DeviceId) -> Vec<u8> {
    let mut key = account_notices(acc);
    key.push(dev_byte(dev));
    key.push(b'/');
    key
}
/// Prefix of all notices of an account.
pub fn account_notices(acc: AccountId) -> Vec<u8> {
    let mut key = acct(b"notice", acc);
    key.push(b'/');
    key
}
/// The notice id of a `notice/` key.
pub fn notice_id_of_key(key: &[u8]) -> Option<u64> {
    let tail = key.len().checked_sub(8).and_then(|i| key.get(i..))?;
    Some(u64::from_be_bytes(tail.try_into().ok()?))
}
pub fn mfa_ticket(hash: &[u8; 32]) -> Vec<u8> {
    k(&[b"mfaticket", hex(hash).as_bytes()])
}
pub fn hidden(acc: AccountId) -> Vec<u8> {
    acct(b"hidden", acc)
}
pub fn lockout(name: &str) -> Vec<u8> {
    k(&[b"lockout", name.as_bytes()])
}
/// Fixed width (the name hashed), so no (address, name) pair can spell another's key.
pub fn lockout_from(name: &str, addr: std::net::IpAddr) -> Vec<u8> {
    use sha2::Digest as _;
    let ip = match addr {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    };
    let mut key = lockouts_from_prefix();
    key.extend_from_slice(&ip.octets());
    key.extend_from_slice(&sha2::Sha256::digest(name.as_bytes()));
    key
}
pub fn lockouts_from_prefix() -> Vec<u8> {
    k(&[b"lockaddr", b""])
}
pub fn mfa_lockout(acc: AccountId) -> Vec<u8> {
    acct(b"mfalock", acc)
}
pub fn mfa_lockouts_prefix() -> Vec<u8> {
    k(&[b"mfalock", b""])
}
pub fn tombstone(acc: AccountId) -> Vec<u8> {
    acct(b"deleted", acc)
}
pub fn tombstones_prefix() -> Vec<u8> {
    k(&[b"deleted", b""])
}
pub fn retired_device(acc: AccountId, dev: DeviceId) -> Vec<u8> {
    let mut key = retired_devices(acc);
    key.push(dev_byte(dev));
    key
}
/// Prefix of an account's retired device ids.
pub fn retired_devices(acc: AccountId) -> Vec<u8> {
    let mut key = acct(b"retired", acc);
    key.push(b'/');
    key
}
/// Prefixes the sweeper walks.
pub fn sessions_prefix() -> Vec<u8> {
    k(&[b"session", b""])
}
pub fn account_sessions_prefix() -> Vec<u8> {
    k(&[b"acctsess", b""])
}
pub fn link_codes_prefix() -> Vec<u8> {
    k(&[b"link", b""])
}
pub fn mfa_tickets_prefix() -> Vec<u8> {
    k(&[b"mfaticket", b""])
}
pub fn lockouts_prefix() -> Vec<u8> {
    k(&[b"lockout", b""])
}

pub fn admin_state(acc: AccountId) -> Vec<u8> {
    acct(b"admin", acc)
}
pub fn owners() -> Vec<u8> {
    k(&[b"owners"])
}

pub fn signing() -> Vec<u8> {
    k(&[b"signing"])
}

/// Prefix of all prekeys of one device.
pub fn prekeys(acc: AccountId, dev: DeviceId) -> Vec<u8> {
    let mut key = acct(b"pk", acc);
    key.push(b'/');
    key.push(dev_byte(dev));
    key.push(b'/');
    key
}
/// Prefix of all prekeys of an account.
pub fn account_prekeys(acc: AccountId) -> Vec<u8> {
    let mut key = acct(b"pk", acc);
    key.push(b'/');
    key
}
pub fn signed_prekey(acc: AccountId, dev: DeviceId) -> Vec<u8> {
    with(prekeys(acc, dev), b"s")
}
pub fn last_resort_kem(acc: AccountId, dev: DeviceId) -> Vec<u8> {
    with(prekeys(acc, dev), b"l")
}
pub fn kem_prekeys(acc: AccountId, dev: DeviceId) -> Vec<u8> {
    with(prekeys(acc, dev), b"k")
}
pub fn kem_prekey(acc: AccountId, dev: DeviceId, id: u32) -> Vec<u8> {
    with(kem_prekeys(acc, dev), &id.to_be_bytes())
}
pub fn ec_prekeys(acc: AccountId, dev: DeviceId) -> Vec<u8> {
    with(prekeys(acc, dev), b"o")
}
pub fn ec_prekey(acc: AccountId, dev: DeviceId, id: u32) -> Vec<u8> {
    with(ec_prekeys(acc, dev), &id.to_be_bytes())
}

/// Prefix of all KeyPackages of one device.
pub fn key_packages(acc: AccountId, dev: DeviceId) -> Vec<u8> {
    let mut key = acct(b"kp", acc);
    key.push(b'/');
    key.push(dev_byte(dev));
    key.push(b'/');
    key
}
pub fn account_key_packages(acc: AccountId) -> Vec<u8> {
    let mut key = acct(b"kp", acc);
    key.push(b'/');
    key
}
pub fn last_resort_kp(acc: AccountId, dev: DeviceId) -> Vec<u8> {
    with(key_packages(acc, dev), b"l")
}
pub fn one_time_kps(acc: AccountId, dev: DeviceId) -> Vec<u8> {
    with(key_packages(acc, dev), b"o")
}
pub fn one_time_kp(acc: AccountId, dev: DeviceId, key_ref: &[u8]) -> Vec<u8> {
    with(one_time_kps(acc, dev), key_ref)
}

fn with(mut key: Vec<u8>, tail: &[u8]) -> Vec<u8> {
    key.extend_from_slice(tail);
    key
}

fn dev_byte(dev: DeviceId) -> u8 {
    // Device ids are 1..=127, so they fit.
    u8::try_from(dev.get()).unwrap_or(u8::MAX)
}

/// The device id of a key built by [`device`] (its last byte).
pub fn device_of_key(key: &[u8]) -> Option<DeviceId> {
    key.last().and_then(|b| DeviceId::new(u32::from(*b)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use guardyn_storage::record::encode;

    use serde::Serialize;

    use super::*;

    const A: &str = "00000000-0000-0000-0000-00000000000a";

    fn dev(id: u32) -> DeviceId {
        DeviceId::new(id).unwrap()
    }

    /// The bytes the crate wrote before records were typed: `[1] ++ postcard(value)`.
    fn legacy<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend(postcard::to_stdvec(value).unwrap());
        out
    }

    #[test]
    fn values_carry_a_version_byte_and_unknown_versions_are_refused() {
        let entry = UsernameEntry(AccountId::parse(A).unwrap());
        let bytes = encode(&entry);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<UsernameEntry>(&bytes).unwrap(), entry);
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(decode::<UsernameEntry>(&other).is_err());
        assert!(decode::<UsernameEntry>(&[]).is_err());
    }

    #[test]
    fn typed_ids_keep_the_stored_bytes() {
        let acc = AccountId::parse(A).unwrap();
        assert_eq!(encode(&UsernameEntry(acc)), legacy(&A.to_owned()));
        let ticket = MfaTicket {
            account_id: acc,
            device_id: dev(3),
            expires_ms: 9,
            attempts_left: 5,
        };
        assert_eq!(encode(&ticket), legacy(&(A.to_owned(), 3u32, 9u64, 5u32)));
        // A version-1 link code reads as an expired, unapproved link request.
        let old_link = decode::<LinkRequest>(&legacy(&(A.to_owned(), 1u32, 7u64))).unwrap();
        assert_eq!((old_link.expires_ms, old_link.approved), (0, None));
        // An id that is not one is a corrupt record.
        assert!(decode::<UsernameEntry>(&legacy(&"nope".to_owned())).is_err());
        assert!(decode::<MfaTicket>(&legacy(&(A.to_owned(), 0u32, 9u64, 5u32))).is_err());
        assert_eq!(account(acc), format!("auth/v1/account/{A}").into_bytes());
        assert_eq!(
            device(acc, dev(3)),
            [format!("auth/v1/device/{A}/").as_bytes(), &[3]].concat()
        );
        assert_eq!(device_of_key(&device(acc, dev(3))), Some(dev(3)));
    }

    #[test]
    fn version_1_lockouts_are_still_read() {
        let old = legacy(&(7u32, 1234u64));
        let l = decode::<Lockout>(&old).unwrap();
        assert_eq!(
            (l.failures, l.locked_until_ms, l.last_failure_ms),
            (7, 1234, 1234)
        );
        let new = Lockout {
            failures: 1,
            locked_until_ms: 0,
            last_failure_ms: 99,
        };
        let bytes = encode(&new);
        assert_eq!(bytes[0], 2);
        assert_eq!(decode::<Lockout>(&bytes).unwrap(), new);
    }

    #[test]
    fn version_1_sessions_read_as_never_stepped_up() {
        let acc = AccountId::parse(A).unwrap();
        let v1 = legacy(&(
            A.to_owned(),
            2u32,
            10u64,
            11u64,
            [7u8; 32],
            12u64,
            Vec::<[u8; 32]>::new(),
            13u64,
            crate::model::SessionState::Live,
        ));
        let s = decode::<Session>(&v1).unwrap();
        assert_eq!(
            (s.account_id, s.device_id, s.stepped_up_ms),
            (acc, dev(2), 0)
        );
        assert_eq!(s.access_exp_max_s, 13);
        let bytes = encode(&s);
        assert_eq!(bytes[0], 2);
        assert_eq!(decode::<Session>(&bytes).unwrap().refresh_expires_ms, 12);
    }

    #[test]
    fn version_1_accounts_read_with_the_first_device_set() {
        let v1 = legacy(&(
            "alice".to_owned(),
            (8u32, 1u32, 1u32, [1u8; 16], [2u8; 32]),
            10u64,
            3u32,
            None::<()>,
            None::<()>,
            vec![[5u8; 32]],
            None::<[u8; 32]>,
        ));
        let mut a = decode::<Account>(&v1).unwrap();
        assert_eq!(
            (a.username.as_str(), a.next_device_id, a.device_set),
            ("alice", 3, 0)
        );
        assert_eq!(a.recovery_codes, vec![[5u8; 32]]);
        // Rewritten as version 2, and a changed device set changes the bytes.
        let before = encode(&a);
        assert_eq!(before[0], 2);
        a.device_set += 1;
        let after = encode(&a);
        assert_ne!(before, after);
        assert_eq!(decode::<Account>(&after).unwrap().device_set, 1);
    }

    #[test]
    fn notice_keys_sort_by_id_within_a_device() {
        let a = AccountId::parse(A).unwrap();
        assert!(notice(a, dev(1), 2) < notice(a, dev(1), 256));
        assert!(notice(a, dev(1), 9).starts_with(&notices(a, dev(1))));
        assert!(notices(a, dev(1)).starts_with(&account_notices(a)));
        assert_eq!(notice_id_of_key(&notice(a, dev(1), 300)), Some(300));
    }

    #[test]
    fn address_lockout_keys_are_fixed_width_per_address_and_name() {
        let v4: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let v6: std::net::IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let a = lockout_from("alice", v4);
        assert_eq!(
            a,
            lockout_from("alice", v6),
            "IPv4 and its mapped form are one address"
        );
        assert_eq!(a.len(), lockouts_from_prefix().len() + 16 + 32);
        assert_eq!(lockout_from(&"x".repeat(5000), v4).len(), a.len());
        assert_ne!(a, lockout_from("alicf", v4));
        assert_ne!(a, lockout_from("alice", "10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn per_device_prefixes_do_not_overlap() {
        let a = AccountId::parse(A).unwrap();
        assert!(kem_prekey(a, dev(1), 5).starts_with(&prekeys(a, dev(1))));
        assert!(!kem_prekey(a, dev(2), 5).starts_with(&prekeys(a, dev(1))));
        assert!(ec_prekey(a, dev(1), 5).starts_with(&ec_prekeys(a, dev(1))));
        assert!(!ec_prekey(a, dev(1), 5).starts_with(&kem_prekeys(a, dev(1))));
        assert!(device(a, dev(3)).starts_with(&devices(a)));
    }
}
