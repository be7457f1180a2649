//! Key layout and the versioned records of everything the service persists (KV only; every
//! value a [`Record`]: `[version] ++ postcard`).
//!
//! Layout (accounts in canonical UUID form, devices as 3 decimal digits, times as u64
//! big-endian so bytewise order is time order):
//! - `notif/v1/d/<account>/<device>/t`: [`TokenSet`], the device's tokens (at most 4, one
//!   record so the limit holds under concurrent registrations).
//! - `notif/v1/d/<account>/<device>/s`: [`SettingsRecord`]; absent = ALERT, not muted.
//! - `notif/v1/d/<account>/<device>/p`: [`PushMarker`], the device's push state shared by every
//!   instance: last push, a push in flight, retry backoff.
//! - `notif/v1/d/<account>/<device>/x/<at ms>`: [`DeadLetter`], a wake-up given up.
//! - `notif/v1/x/<at ms>/<account>/<device>`: empty; the dead letter's entry for the sweeper.
//!
//! Everything of a device lives under its prefix, so device removal and account deletion are
//! prefix deletions.

use guardyn_common::{AccountId, DeviceId};
use guardyn_storage::Record;
use serde::{Deserialize, Serialize};

use crate::model::{Mode, NewToken, Settings, TokenId, TokenInfo};
use crate::providers::{Platform, Target, WebPushKeys};

pub(crate) fn account_prefix(account: AccountId) -> Vec<u8> {
    format!("notif/v1/d/{account}/").into_bytes()
}

pub(crate) fn device_prefix(account: AccountId, device: DeviceId) -> Vec<u8> {
    format!("notif/v1/d/{account}/{:03}/", device.get()).into_bytes()
}

fn device_key(account: AccountId, device: DeviceId, leaf: &[u8]) -> Vec<u8> {
    let mut k = device_prefix(account, device);
    k.extend_from_slice(leaf);
    k
}

pub(crate) fn tokens_key(account: AccountId, device: DeviceId) -> Vec<u8> {
    device_key(account, device, b"t")
}

pub(crate) fn settings_key(account: AccountId, device: DeviceId) -> Vec<u8> {
    device_key(account, device, b"s")
}

pub(crate) fn marker_key(account: AccountId, device: DeviceId) -> Vec<u8> {
    device_key(account, device, b"p")
}

pub(crate) fn dead_letter_key(account: AccountId, device: DeviceId, at_ms: u64) -> Vec<u8> {
    let mut k = device_key(account, device, b"x/");
    k.extend_from_slice(&at_ms.to_be_bytes());
    k
}

pub(crate) const DEAD_LETTER_INDEX: &[u8] = b"notif/v1/x/";

pub(crate) fn dead_letter_index_key(account: AccountId, device: DeviceId, at_ms: u64) -> Vec<u8> {
    let mut k = dead_letter_index_bound(at_ms);
    k.extend_from_slice(format!("/{account}/{:03}", device.get()).as_bytes());
    k
}

/// Every index entry written before `at_ms` sorts before this key.
pub(crate) fn dead_letter_index_bound(at_ms: u64) -> Vec<u8> {
    let mut k = DEAD_LETTER_INDEX.to_vec();
    k.extend_from_slice(&at_ms.to_be_bytes());
    k
}

/// The dead letter an index entry points at.
pub(crate) fn parse_dead_letter_index(key: &[u8]) -> Option<Vec<u8>> {
    let rest = key.strip_prefix(DEAD_LETTER_INDEX)?;
    let at = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    let rest = std::str::from_utf8(rest.get(8..)?)
        .ok()?
        .strip_prefix('/')?;
    let (account, device) = rest.split_once('/')?;
    let account = AccountId::parse(account)?;
    let device = DeviceId::new(device.parse().ok()?)?;
    Some(dead_letter_key(account, device, at))
}

/// Platforms as stored: their own enum so the persisted form does not follow the provider
/// module's declaration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum StoredPlatform {
    Apns,
    Fcm,
    WebPush,
}

impl From<Platform> for StoredPlatform {
    fn from(p: Platform) -> Self {
        match p {
            Platform::Apns => Self::Apns,
            Platform::Fcm => Self::Fcm,
            Platform::WebPush => Self::WebPush,
        }
    }
}

impl From<StoredPlatform> for Platform {
    fn from(p: StoredPlatform) -> Self {
        match p {
            StoredPlatform::Apns => Self::Apns,
            StoredPlatform::Fcm => Self::Fcm,
            StoredPlatform::WebPush => Self::WebPush,
        }
    }
}

/// One registered token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredToken {
    pub id: [u8; 16],
    pub platform: StoredPlatform,
    pub token: String,
    pub topic: String,
    pub apns_sandbox: bool,
    /// Web Push: p256dh (65 bytes) and auth (16 bytes); empty otherwise.
    pub p256dh: Vec<u8>,
    pub auth: Vec<u8>,
    pub registered_ms: u64,
}

impl std::fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredToken")
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

impl StoredToken {
    pub fn new(id: TokenId, t: NewToken, now_ms: u64) -> Self {
        let (p256dh, auth) = t.web_push.map(|k| (k.p256dh, k.auth)).unwrap_or_default();
        Self {
            id: id.0.into_bytes(),
            platform: t.platform.into(),
            token: t.token,
            topic: t.topic,
            apns_sandbox: t.apns_sandbox,
            p256dh,
            auth,
            registered_ms: now_ms,
        }
    }

    pub fn id(&self) -> TokenId {
        TokenId(uuid::Uuid::from_bytes(self.id))
    }

    pub fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id(),
            platform: self.platform.into(),
            hint: crate::model::hint(&self.token),
            topic: self.topic.clone(),
            apns_sandbox: self.apns_sandbox,
            registered_ms: self.registered_ms,
        }
    }

    pub fn target(&self) -> Target {
        let platform = Platform::from(self.platform);
        Target {
            platform,
            token: self.token.clone(),
            topic: self.topic.clone(),
            apns_sandbox: self.apns_sandbox,
            web_push: (platform == Platform::WebPush).then(|| WebPushKeys {
                p256dh: self.p256dh.clone(),
                auth: self.auth.clone(),
            }),
        }
    }
}

/// A device's tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenSet {
    pub tokens: Vec<StoredToken>,
}

impl Record for TokenSet {
    const VERSION: u8 = 1;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum StoredMode {
    Alert,
    Silent,
    None,
}

/// A device's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SettingsRecord {
    mode: StoredMode,
    mute_until_ms: u64,
}

impl Record for SettingsRecord {
    const VERSION: u8 = 1;
}

impl From<Settings> for SettingsRecord {
    fn from(s: Settings) -> Self {
        Self {
            mode: match s.mode {
                Mode::Alert => StoredMode::Alert,
                Mode::Silent => StoredMode::Silent,
                Mode::None => StoredMode::None,
            },
            mute_until_ms: s.mute_until_ms,
        }
    }
}

impl From<SettingsRecord> for Settings {
    fn from(s: SettingsRecord) -> Self {
        Self {
            mode: match s.mode {
                StoredMode::Alert => Mode::Alert,
                StoredMode::Silent => Mode::Silent,
                StoredMode::None => Mode::None,
            },
            mute_until_ms: s.mute_until_ms,
        }
    }
}

/// A device's push state, shared by every instance (see `jobs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PushMarker {
    /// Decision time of the last push a provider accepted, or of the last wake-up given up
    /// (dead-lettered or refused) (Unix ms; 0 = never). A wake-up
    /// for mail queued before it is already served: the woken device fetches its whole queue.
    pub served_ms: u64,
    /// A push in flight: decided at `claimed_ms`, held until `claim_until_ms` (after which a
    /// crashed sender's claim lapses and another instance pushes).
    pub claimed_ms: u64,
    pub claim_until_ms: u64,
    /// Retry answers in a row since the last push went out.
    pub attempts: u32,
    /// No push before this (backoff, Retry-After).
    pub not_before_ms: u64,
}

impl Record for PushMarker {
    const VERSION: u8 = 1;
}

/// A wake-up given up after `max_attempts` retry answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeadLetter {
    pub queued_at_ms: u64,
    pub failed_at_ms: u64,
    pub attempts: u32,
    pub urgent: bool,
    /// Per platform, the last answer (status class only: no token, no provider body).
    pub last_outcome: String,
}

impl Record for DeadLetter {
    const VERSION: u8 = 1;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dead_letter_index_points_at_its_record() {
        let a = AccountId::random();
        let d = DeviceId::new(12).unwrap();
        let idx = dead_letter_index_key(a, d, 77);
        assert_eq!(
            parse_dead_letter_index(&idx).unwrap(),
            dead_letter_key(a, d, 77)
        );
        assert!(idx.as_slice() < dead_letter_index_bound(78).as_slice());
        assert!(dead_letter_key(a, d, 77).starts_with(&device_prefix(a, d)));
        assert!(device_prefix(a, d).starts_with(&account_prefix(a)));
    }
}
