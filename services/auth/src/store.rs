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
//! | `username/<name>` | account id |
//! | `account/<acc>` | [`crate::model::Account`] (TOTP secret sealed) |
//! | `device/<acc>/<dev>` | [`crate::model::Device`] |
//! | `session/<sid>` | [`crate::model::Session`] |
//! | `acctsess/<acc>/<sid>` | index of the account's sessions |
//! | `link/<sha256(code)>` | [`crate::model::LinkCode`] |
//! | `mfaticket/<sha256(ticket)>` | [`crate::model::MfaTicket`] |
//! | `lockout/<name>` | [`crate::model::Lockout`] |
//! | `pk/<acc>/<dev>/s` · `/l` · `/k<id>` · `/o<id>` | signed, last-resort KEM, one-time KEM, one-time EC prekeys |
//! | `kp/<acc>/<dev>/l` · `/o<ref>` | last-resort and one-time KeyPackages |
//! | `signing` | [`crate::model::SigningKeys`] (seeds sealed, [`crate::sealing`]) |
//! | `audit/<seq>` · `audithead` | the audit chain ([`crate::audit`]) |

use guardyn_storage::{Direction, KeyRange, KvStore, Txn, TxnOutcome};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{AuthError, AuthResult};

/// Version tag of every value this crate writes.
pub const VERSION: u8 = 1;

/// How often an optimistic transaction is retried before giving up.
pub const MAX_ATTEMPTS: usize = 64;

pub fn encode<T: Serialize>(value: &T) -> AuthResult<Vec<u8>> {
    let mut out = vec![VERSION];
    let body = postcard::to_stdvec(value).map_err(|e| AuthError::Corrupt(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> AuthResult<T> {
    match bytes.split_first() {
        Some((&VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| AuthError::Corrupt(e.to_string()))
        }
        Some((v, _)) => Err(AuthError::Corrupt(format!("unknown version {v}"))),
        None => Err(AuthError::Corrupt("empty value".into())),
    }
}

/// Read and decode; `None` when absent. Also returns the raw bytes for `require_unchanged`.
pub async fn get<T: DeserializeOwned>(
    kv: &dyn KvStore,
    key: &[u8],
) -> AuthResult<Option<(T, Vec<u8>)>> {
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
pub async fn scan_prefix(
    kv: &dyn KvStore,
    prefix: &[u8],
    limit: usize,
) -> AuthResult<Vec<guardyn_storage::KvPair>> {
    Ok(kv
        .scan(KeyRange::prefix(prefix), Direction::Forward, limit)
        .await?)
}

const ROOT: &str = "auth/v1/";

fn k(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = ROOT.as_bytes().to_vec();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(p);
    }
    out
}

pub fn username(name: &str) -> Vec<u8> {
    k(&[b"username", name.as_bytes()])
}
pub fn account(acc: &str) -> Vec<u8> {
    k(&[b"account", acc.as_bytes()])
}
pub fn device(acc: &str, dev: u32) -> Vec<u8> {
    let mut key = devices(acc);
    key.push(dev_byte(dev));
    key
}
/// Prefix of an account's devices.
pub fn devices(acc: &str) -> Vec<u8> {
    let mut key = k(&[b"device", acc.as_bytes()]);
    key.push(b'/');
    key
}
pub fn session(sid: &str) -> Vec<u8> {
    k(&[b"session", sid.as_bytes()])
}
pub fn account_session(acc: &str, sid: &str) -> Vec<u8> {
    k(&[b"acctsess", acc.as_bytes(), sid.as_bytes()])
}
pub fn account_sessions(acc: &str) -> Vec<u8> {
    let mut key = k(&[b"acctsess", acc.as_bytes()]);
    key.push(b'/');
    key
}
pub fn link_code(hash: &[u8; 32]) -> Vec<u8> {
    k(&[b"link", hex(hash).as_bytes()])
}
pub fn mfa_ticket(hash: &[u8; 32]) -> Vec<u8> {
    k(&[b"mfaticket", hex(hash).as_bytes()])
}
pub fn lockout(name: &str) -> Vec<u8> {
    k(&[b"lockout", name.as_bytes()])
}
pub fn signing() -> Vec<u8> {
    k(&[b"signing"])
}
pub fn audit(seq: u64) -> Vec<u8> {
    k(&[b"audit", &seq.to_be_bytes()])
}
pub fn audit_prefix() -> Vec<u8> {
    k(&[b"audit", b""])
}
pub fn audit_head() -> Vec<u8> {
    k(&[b"audithead"])
}

/// Prefix of all prekeys of one device.
pub fn prekeys(acc: &str, dev: u32) -> Vec<u8> {
    let mut key = k(&[b"pk", acc.as_bytes()]);
    key.push(b'/');
    key.push(dev_byte(dev));
    key.push(b'/');
    key
}
/// Prefix of all prekeys of an account.
pub fn account_prekeys(acc: &str) -> Vec<u8> {
    let mut key = k(&[b"pk", acc.as_bytes()]);
    key.push(b'/');
    key
}
pub fn signed_prekey(acc: &str, dev: u32) -> Vec<u8> {
    with(prekeys(acc, dev), b"s")
}
pub fn last_resort_kem(acc: &str, dev: u32) -> Vec<u8> {
    with(prekeys(acc, dev), b"l")
}
pub fn kem_prekeys(acc: &str, dev: u32) -> Vec<u8> {
    with(prekeys(acc, dev), b"k")
}
pub fn kem_prekey(acc: &str, dev: u32, id: u32) -> Vec<u8> {
    with(kem_prekeys(acc, dev), &id.to_be_bytes())
}
pub fn ec_prekeys(acc: &str, dev: u32) -> Vec<u8> {
    with(prekeys(acc, dev), b"o")
}
pub fn ec_prekey(acc: &str, dev: u32, id: u32) -> Vec<u8> {
    with(ec_prekeys(acc, dev), &id.to_be_bytes())
}

/// Prefix of all KeyPackages of one device.
pub fn key_packages(acc: &str, dev: u32) -> Vec<u8> {
    let mut key = k(&[b"kp", acc.as_bytes()]);
    key.push(b'/');
    key.push(dev_byte(dev));
    key.push(b'/');
    key
}
pub fn account_key_packages(acc: &str) -> Vec<u8> {
    let mut key = k(&[b"kp", acc.as_bytes()]);
    key.push(b'/');
    key
}
pub fn last_resort_kp(acc: &str, dev: u32) -> Vec<u8> {
    with(key_packages(acc, dev), b"l")
}
pub fn one_time_kps(acc: &str, dev: u32) -> Vec<u8> {
    with(key_packages(acc, dev), b"o")
}
pub fn one_time_kp(acc: &str, dev: u32, key_ref: &[u8]) -> Vec<u8> {
    with(one_time_kps(acc, dev), key_ref)
}

fn with(mut key: Vec<u8>, tail: &[u8]) -> Vec<u8> {
    key.extend_from_slice(tail);
    key
}

fn dev_byte(dev: u32) -> u8 {
    // Device ids are validated to 1..=127 before any key is built.
    u8::try_from(dev).unwrap_or(u8::MAX)
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn values_carry_a_version_byte_and_unknown_versions_are_refused() {
        let bytes = encode(&("x".to_owned(), 7u32)).unwrap();
        assert_eq!(bytes[0], VERSION);
        let back: (String, u32) = decode(&bytes).unwrap();
        assert_eq!(back, ("x".to_owned(), 7));
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(decode::<(String, u32)>(&other).is_err());
        assert!(decode::<(String, u32)>(&[]).is_err());
    }

    #[test]
    fn per_device_prefixes_do_not_overlap() {
        let a = "00000000-0000-0000-0000-000000000001";
        assert!(kem_prekey(a, 1, 5).starts_with(&prekeys(a, 1)));
        assert!(!kem_prekey(a, 2, 5).starts_with(&prekeys(a, 1)));
        assert!(ec_prekey(a, 1, 5).starts_with(&ec_prekeys(a, 1)));
        assert!(!ec_prekey(a, 1, 5).starts_with(&kem_prekeys(a, 1)));
        assert!(device(a, 3).starts_with(&devices(a)));
    }
}
