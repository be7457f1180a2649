//! Persisted records (encoded by [`crate::store`]). Times are Unix milliseconds of the
//! injected clock unless named `_s` (Unix seconds of the token clock).
//!
//! Secrets held here (password hashes, sealed TOTP secrets and signing seeds, refresh-token and
//! code hashes) never show in `Debug` output. TOTP secrets and signing seeds are stored sealed
//! with the master key ([`crate::sealing`]), never in clear.

use std::fmt;

use guardyn_common::ids::{AccountId, DeviceId};
use serde::{Deserialize, Serialize};

/// Account ids inside records are stored as their canonical 36-character string (the layout
/// the records were first written with) and parsed back on read; device ids as their `u32`.
mod account_str {
    use guardyn_common::ids::AccountId;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &AccountId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<AccountId, D::Error> {
        let s = String::deserialize(d)?;
        AccountId::parse(&s).ok_or_else(|| D::Error::custom("not an account id"))
    }
}

/// The value of `username/<name>`: the account's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsernameEntry(#[serde(with = "account_str")] pub AccountId);

/// An Argon2id password hash with its parameters, so parameters can change without
/// invalidating stored hashes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordHash {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub salt: [u8; 16],
    pub hash: [u8; 32],
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totp {
    /// The TOTP secret sealed for `Purpose::Totp(account id)`.
    #[serde(with = "serde_bytes")]
    pub sealed_secret: Vec<u8>,
    pub enabled_ms: u64,
    /// Highest TOTP time step accepted so far: a code is accepted at most once.
    pub last_step: u64,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTotp {
    /// Sealed like [`Totp::sealed_secret`]; moved there on confirmation.
    #[serde(with = "serde_bytes")]
    pub sealed_secret: Vec<u8>,
    pub expires_ms: u64,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub username: String,
    pub password: PasswordHash,
    pub created_ms: u64,
    /// One above the highest device id handed out so far. Ids of removed devices are reused
    /// (lowest free first, `device_ids.rs`), so this no longer picks the next id.
    pub next_device_id: u32,
    pub totp: Option<Totp>,
    pub pending_totp: Option<PendingTotp>,
    /// SHA-256 of each unused recovery code.
    pub recovery_codes: Vec<[u8; 32]>,
    /// Unused since linking moved to device-approved requests ([`LinkRequest`]); kept so the
    /// record layout of version 1 stays readable. Always `None` in new writes.
    pub link_code: Option<[u8; 32]>,
    /// Bumped in the transaction of every change to the account's set of devices (a link, a
    /// removal), so that the record's bytes change with the set: the device directory's cache
    /// (`directory.rs`) is validated by them. Version 2 of the record; 0 when read from 1.
    pub device_set: u64,
}

/// A version-1 account record (before `device_set`).
#[derive(Deserialize)]
pub struct AccountV1 {
    pub username: String,
    pub password: PasswordHash,
    pub created_ms: u64,
    pub next_device_id: u32,
    pub totp: Option<Totp>,
    pub pending_totp: Option<PendingTotp>,
    pub recovery_codes: Vec<[u8; 32]>,
    pub link_code: Option<[u8; 32]>,
}

impl From<AccountV1> for Account {
    fn from(a: AccountV1) -> Self {
        Self {
            username: a.username,
            password: a.password,
            created_ms: a.created_ms,
            next_device_id: a.next_device_id,
            totp: a.totp,
            pending_totp: a.pending_totp,
            recovery_codes: a.recovery_codes,
            link_code: a.link_code,
            device_set: 0,
        }
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .field("totp_enabled", &self.totp.is_some())
            .field("recovery_codes", &self.recovery_codes.len())
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub name: String,
    pub registration_id: u32,
    #[serde(with = "serde_bytes")]
    pub identity_key: Vec<u8>,
    pub created_ms: u64,
    /// Coarsened to the day.
    pub last_seen_ms: u64,
    /// The device's live session, if any (at most one per device).
    pub session_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionState {
    Live,
    Revoked,
    DeviceRemoved,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    #[serde(with = "account_str")]
    pub account_id: AccountId,
    pub device_id: DeviceId,
    pub created_ms: u64,
    pub last_refreshed_ms: u64,
    /// SHA-256 of the current refresh token.
    pub refresh_hash: [u8; 32],
    pub refresh_expires_ms: u64,
    /// Hashes of consumed refresh tokens (most recent last, bounded): presenting one of them
    /// again is token theft and revokes the session.
    pub used_hashes: Vec<[u8; 32]>,
    /// Latest `exp` (Unix seconds) of any access token issued for the session.
    pub access_exp_max_s: u64,
    pub state: SessionState,
    /// When the session last proved the password (and second factor, when enabled): at sign
    /// in or through StepUp; 0 for a session that never did (a linked device's first one).
    /// Record version 2; version 1 sessions read as 0.
    pub stepped_up_ms: u64,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("account_id", &self.account_id)
            .field("device_id", &self.device_id)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// A version-1 session (before `stepped_up_ms`).
#[derive(Deserialize)]
pub struct SessionV1 {
    #[serde(with = "account_str")]
    pub account_id: AccountId,
    pub device_id: DeviceId,
    pub created_ms: u64,
    pub last_refreshed_ms: u64,
    pub refresh_hash: [u8; 32],
    pub refresh_expires_ms: u64,
    pub used_hashes: Vec<[u8; 32]>,
    pub access_exp_max_s: u64,
    pub state: SessionState,
}

impl From<SessionV1> for Session {
    fn from(s: SessionV1) -> Self {
        Self {
            account_id: s.account_id,
            device_id: s.device_id,
            created_ms: s.created_ms,
            last_refreshed_ms: s.last_refreshed_ms,
            refresh_hash: s.refresh_hash,
            refresh_expires_ms: s.refresh_expires_ms,
            used_hashes: s.used_hashes,
            access_exp_max_s: s.access_exp_max_s,
            state: s.state,
            stepped_up_ms: 0,
        }
    }
}

/// A new device's public keys while its link request waits for approval.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDevice {
    pub name: String,
    pub registration_id: u32,
    #[serde(with = "serde_bytes")]
    pub identity_key: Vec<u8>,
    pub signed: Option<StoredPreKey>,
    pub last_resort_kem: Option<StoredPreKey>,
    pub kem: Vec<StoredPreKey>,
    pub ec: Vec<StoredPreKey>,
}

/// Who approved a link request, and the device it created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkApproval {
    #[serde(with = "account_str")]
    pub account_id: AccountId,
    pub device_id: DeviceId,
    pub approved_by: DeviceId,
}

/// `link/<sha256(code)>`: a new device waiting to be approved (record version 2). Version 1
/// records were account-issued link codes, which no longer link anything: they read as an
/// expired request so the sweeper removes them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRequest {
    pub device: PendingDevice,
    /// SHA-256 of the secret only the new device holds.
    pub secret_hash: [u8; 32],
    pub expires_ms: u64,
    pub approved: Option<LinkApproval>,
}

impl fmt::Debug for LinkRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkRequest")
            .field("device", &self.device.name)
            .field("expires_ms", &self.expires_ms)
            .field("approved", &self.approved)
            .finish_non_exhaustive()
    }
}

/// A version-1 `link/` record: an account-issued link code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCode {
    #[serde(with = "account_str")]
    pub account_id: AccountId,
    pub created_by: DeviceId,
    pub expires_ms: u64,
}

/// What a [`DeviceNotice`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoticeKind {
    Linked,
    Removed,
}

/// `notice/<acc>/<dev>/<id>`: a device change the receiving device has not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceNotice {
    pub kind: NoticeKind,
    pub device_id: DeviceId,
    pub device_name: String,
    #[serde(with = "serde_bytes")]
    pub identity_key: Vec<u8>,
    pub by: DeviceId,
    pub at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaTicket {
    #[serde(with = "account_str")]
    pub account_id: AccountId,
    pub device_id: DeviceId,
    pub expires_ms: u64,
    pub attempts_left: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockout {
    pub failures: u32,
    pub locked_until_ms: u64,
    /// When the last failure was counted (service clock; record version 2). Version 1 records
    /// read as their `locked_until_ms`.
    pub last_failure_ms: u64,
}

/// A stored public prekey (signed EC, KEM or one-time EC; `signature` empty for the latter).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPreKey {
    pub key_id: u32,
    #[serde(with = "serde_bytes")]
    pub public_key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// A stored KeyPackage, as uploaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKeyPackage {
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    pub not_after: u64,
}

/// One token-signing key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// The Ed25519 seed sealed for `Purpose::SigningKey(kid)`.
    #[serde(with = "serde_bytes")]
    pub sealed_seed: Vec<u8>,
    pub created_ms: u64,
    /// When a newer key took over; tokens it signed stay valid until they expire.
    pub retired_ms: Option<u64>,
    /// When the key starts signing: a successor is published this long before it is used,
    /// so every verifier knows it first (record version 2; version 1 keys signed at once).
    pub active_ms: u64,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_ms", &self.created_ms)
            .field("retired_ms", &self.retired_ms)
            .field("active_ms", &self.active_ms)
            .finish_non_exhaustive()
    }
}

/// The signing key set, newest last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeys {
    pub keys: Vec<SigningKey>,
}
