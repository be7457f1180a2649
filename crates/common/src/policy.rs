//! The organisation's policy: one versioned record an admin replaces as a whole
//! (`guardyn.admin.v1.PolicyService`), read by every service that enforces a part of it.
//!
//! Every version is kept (`admin/v1/policy/v/<version, u64 BE>`); `admin/v1/policy/current`
//! holds a copy of the current one, so a reader needs one point read. A new version is written
//! with compare-and-set on `current`, so two admins racing get consecutive versions and the
//! loser's change is never silently dropped from the history.
//!
//! Services do not read storage per request: a [`PolicyCache`] holds the current policy and
//! is refreshed on the bus subject [`crate::events::policy::POLICY_CHANGED`] and periodically
//! (a missed event costs at most one period). Where a server setting limits the same thing
//! (`auth.password_min_length`, `auth.max_devices`, `messaging.max_envelope_bytes`,
//! `media.max_blob_bytes`, `messaging.retention_secs`) the stricter of the two applies, and the
//! defaults ([`Policy::default`], version 0) restrict nothing beyond those settings (the
//! loosest value of each range), so an unset policy changes nothing; retention defaults are
//! seed 004's.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use guardyn_storage::record::{self, Record};
use guardyn_storage::{Direction, KeyRange, KvStore, StorageError, Txn, TxnOutcome};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::FieldViolation;

const CURRENT_KEY: &[u8] = b"admin/v1/policy/current";
const VERSIONS_PREFIX: &[u8] = b"admin/v1/policy/v/";

/// A write that lost this many compare-and-set races in a row gives up (`Unavailable`):
/// admins do not set policies hundreds of times a second.
const MAX_SAVE_ATTEMPTS: usize = 16;

/// How often a [`PolicyCache`] re-reads the policy without being told of a change.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(2);

/// Rules for new passwords.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordPolicy {
    /// Fewest characters (Unicode scalar values).
    pub min_length: u32,
    /// Refuse passwords from the embedded list of the most common ones.
    pub check_breached: bool,
}

/// How long each kind of data is kept, in seconds (seed 004).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Presence and typing state.
    pub realtime_secs: u64,
    /// Queued messages and stored group messages.
    pub historical_secs: u64,
    /// Audit log entries.
    pub audit_secs: u64,
    /// Client security events.
    pub security_events_secs: u64,
}

/// One version of the policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// 0 for the defaults (never set), then 1, 2, ...
    pub version: u64,
    pub password: PasswordPolicy,
    /// Accounts without TOTP may only enrol it.
    pub mfa_required: bool,
    /// Most devices of one account.
    pub max_devices: u32,
    /// Heartbeat intervals devices may be told to use, seconds.
    pub heartbeat_min_secs: u32,
    pub heartbeat_max_secs: u32,
    /// Largest ciphertext of one message envelope, bytes.
    pub max_message_bytes: u64,
    /// Largest attachment (media blob), bytes.
    pub max_attachment_bytes: u64,
    pub retention: Retention,
}

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// Allowed ranges, shared by validation and the proto documentation.
pub const MIN_LENGTH_RANGE: std::ops::RangeInclusive<u32> = 8..=128;
pub const MAX_DEVICES_RANGE: std::ops::RangeInclusive<u32> = 1..=127;
pub const HEARTBEAT_RANGE_SECS: std::ops::RangeInclusive<u32> = 15..=300;
pub const MESSAGE_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=64 * 1024 * 1024;
pub const ATTACHMENT_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=1024 * 1024 * 1024 * 1024;
pub const REALTIME_RANGE_SECS: std::ops::RangeInclusive<u64> = 60..=30 * DAY;
pub const HISTORICAL_RANGE_SECS: std::ops::RangeInclusive<u64> = HOUR..=5 * 365 * DAY;
pub const AUDIT_RANGE_SECS: std::ops::RangeInclusive<u64> = DAY..=10 * 365 * DAY;
pub const SECURITY_EVENTS_RANGE_SECS: std::ops::RangeInclusive<u64> = DAY..=10 * 365 * DAY;

impl Default for PasswordPolicy {
    fn default() -> Self {
        // The floor: auth.password_min_length (12 by default) still applies. The common-password
        // check is opt-in so an unset policy refuses nothing that was accepted before.
        Self {
            min_length: *MIN_LENGTH_RANGE.start(),
            check_breached: false,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            realtime_secs: DAY,
            historical_secs: 90 * DAY,
            audit_secs: 365 * DAY,
            security_events_secs: 2 * 365 * DAY,
        }
    }
}

impl Default for Policy {
    /// No limit beyond the server settings, and seed 004's retention.
    fn default() -> Self {
        Self {
            version: 0,
            password: PasswordPolicy::default(),
            mfa_required: false,
            max_devices: *MAX_DEVICES_RANGE.end(),
            heartbeat_min_secs: *HEARTBEAT_RANGE_SECS.start(),
            heartbeat_max_secs: *HEARTBEAT_RANGE_SECS.end(),
            max_message_bytes: *MESSAGE_BYTES_RANGE.end(),
            max_attachment_bytes: *ATTACHMENT_BYTES_RANGE.end(),
            retention: Retention::default(),
        }
    }
}

fn check<T: PartialOrd + std::fmt::Display>(
    out: &mut Vec<FieldViolation>,
    field: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) {
    if !range.contains(&value) {
        out.push(FieldViolation {
            field: field.to_owned(),
            description: format!(
                "must be between {} and {} (got {value})",
                range.start(),
                range.end()
            ),
        });
    }
}

impl Policy {
    /// Every value out of its range, each named by its path under `prefix` (the request
    /// field holding the policy, e.g. `policy`). Empty when the policy is valid.
    pub fn violations(&self, prefix: &str) -> Vec<FieldViolation> {
        let f = |name: &str| format!("{prefix}.{name}");
        let mut out = Vec::new();
        check(
            &mut out,
            &f("password.min_length"),
            self.password.min_length,
            MIN_LENGTH_RANGE,
        );
        check(
            &mut out,
            &f("max_devices"),
            self.max_devices,
            MAX_DEVICES_RANGE,
        );
        check(
            &mut out,
            &f("heartbeat_min_secs"),
            self.heartbeat_min_secs,
            HEARTBEAT_RANGE_SECS,
        );
        check(
            &mut out,
            &f("heartbeat_max_secs"),
            self.heartbeat_max_secs,
            HEARTBEAT_RANGE_SECS,
        );
        if self.heartbeat_min_secs > self.heartbeat_max_secs {
            out.push(FieldViolation {
                field: f("heartbeat_min_secs"),
                description: "must not exceed heartbeat_max_secs".to_owned(),
            });
        }
        check(
            &mut out,
            &f("max_message_bytes"),
            self.max_message_bytes,
            MESSAGE_BYTES_RANGE,
        );
        check(
            &mut out,
            &f("max_attachment_bytes"),
            self.max_attachment_bytes,
            ATTACHMENT_BYTES_RANGE,
        );
        let r = &self.retention;
        check(
            &mut out,
            &f("retention.realtime_secs"),
            r.realtime_secs,
            REALTIME_RANGE_SECS,
        );
        check(
            &mut out,
            &f("retention.historical_secs"),
            r.historical_secs,
            HISTORICAL_RANGE_SECS,
        );
        check(
            &mut out,
            &f("retention.audit_secs"),
            r.audit_secs,
            AUDIT_RANGE_SECS,
        );
        check(
            &mut out,
            &f("retention.security_events_secs"),
            r.security_events_secs,
            SECURITY_EVENTS_RANGE_SECS,
        );
        out
    }

    /// `requested` heartbeat interval brought into the policy's range.
    pub fn clamp_heartbeat_secs(&self, requested: u64) -> u64 {
        let lo = u64::from(self.heartbeat_min_secs);
        let hi = u64::from(self.heartbeat_max_secs).max(lo);
        requested.clamp(lo, hi)
    }
}

/// A stored policy version and who set it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub policy: Policy,
    /// Account id of the admin who set it (`None` for the defaults).
    pub set_by: Option<String>,
    pub reason: String,
    /// Unix milliseconds (0 for the defaults).
    pub set_at_ms: u64,
}

impl Record for PolicyVersion {
    const VERSION: u8 = 1;
}

fn version_key(version: u64) -> Vec<u8> {
    let mut key = VERSIONS_PREFIX.to_vec();
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// The current policy with its metadata; the defaults (version 0) when none was ever set.
pub async fn load_version(kv: &dyn KvStore) -> Result<PolicyVersion, StorageError> {
    match kv.get(CURRENT_KEY).await? {
        Some(bytes) => record::decode(&bytes),
        None => Ok(PolicyVersion::default()),
    }
}

/// The current policy; [`Policy::default`] (version 0) when none was ever set.
pub async fn load(kv: &dyn KvStore) -> Result<Policy, StorageError> {
    Ok(load_version(kv).await?.policy)
}

/// Store `policy` as the next version (its `version` field is replaced) and make it current.
/// The caller validates it first ([`Policy::violations`]).
pub async fn save(
    kv: &dyn KvStore,
    mut policy: Policy,
    set_by: &str,
    reason: &str,
    now_ms: u64,
) -> Result<PolicyVersion, StorageError> {
    for _ in 0..MAX_SAVE_ATTEMPTS {
        let current = kv.get(CURRENT_KEY).await?;
        let previous = match &current {
            Some(bytes) => record::decode::<PolicyVersion>(bytes)?.policy.version,
            None => 0,
        };
        policy.version = previous
            .checked_add(1)
            .ok_or_else(|| StorageError::Corrupt("policy version counter exhausted".to_owned()))?;
        let entry = PolicyVersion {
            policy: policy.clone(),
            set_by: Some(set_by.to_owned()),
            reason: reason.to_owned(),
            set_at_ms: now_ms,
        };
        let value = record::encode(&entry);
        let key = version_key(policy.version);
        let txn = Txn::new()
            .require_unchanged(CURRENT_KEY, current.as_deref())
            .require_absent(key.clone())
            .put(key, value.clone())
            .put(CURRENT_KEY, value);
        if let TxnOutcome::Committed = kv.commit(txn).await? {
            return Ok(entry);
        }
    }
    Err(StorageError::Unavailable(
        "policy: too many concurrent changes".to_owned(),
    ))
}

/// Up to `limit` stored versions after `after` (0: from the first), oldest first.
pub async fn history(
    kv: &dyn KvStore,
    after: u64,
    limit: usize,
) -> Result<Vec<PolicyVersion>, StorageError> {
    let start = match after.checked_add(1) {
        Some(next) => version_key(next),
        None => return Ok(Vec::new()),
    };
    let end = KeyRange::prefix(VERSIONS_PREFIX).end;
    let range = KeyRange {
        start: std::ops::Bound::Included(start),
        end,
    };
    kv.scan(range, Direction::Forward, limit)
        .await?
        .iter()
        .map(|pair| record::decode(&pair.value))
        .collect()
}

/// The current policy of this process, cheap to read on every request.
#[derive(Clone, Debug)]
pub struct PolicyCache {
    current: Arc<watch::Sender<Arc<Policy>>>,
}

impl PolicyCache {
    /// A cache holding `policy` until refreshed.
    pub fn new(policy: Policy) -> Self {
        Self {
            current: Arc::new(watch::Sender::new(Arc::new(policy))),
        }
    }

    pub fn current(&self) -> Arc<Policy> {
        self.current.borrow().clone()
    }

    /// Notified whenever the cached policy changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Policy>> {
        self.current.subscribe()
    }

    /// Hold `policy` unless a newer version is already held (a slow read must not undo a
    /// faster one).
    pub fn offer(&self, policy: Policy) {
        self.current.send_if_modified(|held| {
            if policy.version > held.version {
                *held = Arc::new(policy);
                true
            } else {
                false
            }
        });
    }

    /// Re-read the current policy from storage.
    pub async fn refresh(&self, kv: &dyn KvStore) -> Result<(), StorageError> {
        self.offer(load(kv).await?);
        Ok(())
    }

    /// Refresh on every item of `changes` (the bus subscription to
    /// [`crate::events::policy::POLICY_CHANGED`], lag notices included) and every
    /// [`REFRESH_INTERVAL`], until `shutdown`. A failed read is logged and retried on the next
    /// tick; the cached policy stays in force meanwhile.
    pub async fn follow<S>(self, kv: Arc<dyn KvStore>, changes: S, shutdown: CancellationToken)
    where
        S: Stream + Send + Unpin,
    {
        let mut changes = changes.fuse();
        let mut tick = tokio::time::interval(REFRESH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                Some(_) = changes.next() => {}
            }
            if let Err(err) = self.refresh(kv.as_ref()).await {
                tracing::warn!(error = %err, "policy refresh failed; keeping the cached policy");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(Policy::default().violations("policy").is_empty());
        let mut p = Policy::default();
        p.password.min_length = 4;
        p.heartbeat_min_secs = 200;
        p.heartbeat_max_secs = 100;
        p.retention.audit_secs = 10;
        let fields: Vec<String> = p
            .violations("policy")
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "policy.password.min_length",
                "policy.heartbeat_min_secs",
                "policy.retention.audit_secs"
            ]
        );
    }

    #[test]
    fn heartbeat_is_clamped_into_the_range() {
        let p = Policy {
            heartbeat_min_secs: 60,
            heartbeat_max_secs: 120,
            ..Policy::default()
        };
        assert_eq!(p.clamp_heartbeat_secs(30), 60);
        assert_eq!(p.clamp_heartbeat_secs(90), 90);
        assert_eq!(p.clamp_heartbeat_secs(300), 120);
    }

    #[test]
    fn records_round_trip() {
        let v = PolicyVersion {
            policy: Policy {
                version: 3,
                mfa_required: true,
                ..Policy::default()
            },
            set_by: Some("a".into()),
            reason: "why".into(),
            set_at_ms: 5,
        };
        assert_eq!(
            record::decode::<PolicyVersion>(&record::encode(&v)).unwrap(),
            v
        );
    }

    #[test]
    fn the_cache_never_goes_back_to_an_older_version() {
        let cache = PolicyCache::new(Policy::default());
        let v2 = Policy {
            version: 2,
            ..Policy::default()
        };
        cache.offer(v2);
        cache.offer(Policy {
            version: 1,
            mfa_required: true,
            ..Policy::default()
        });
        assert_eq!(cache.current().version, 2);
        assert!(!cache.current().mfa_required);
    }
}
