//! Append-only, hash-chained audit log of security events.
//!
//! Entry `n` is stored at `auth/v1/audit/<n as u64 BE>` (n = 1, 2, ...) and carries the SHA-256
//! of entry `n-1` (zeros for the first); its own hash covers its encoding including that link.
//! `auth/v1/audithead` holds the last sequence number and hash, written in the same transaction
//! as the entry (compare-and-set, so concurrent instances append in one order). [`verify`]
//! walks the chain and detects any altered, inserted or removed entry, including the last one
//! (via the head). Entries never hold secrets: only kinds, ids and short non-secret details.

use std::sync::Arc;

use guardyn_common::clock::SharedClock;
use guardyn_storage::record::{Record, decode, encode};
use guardyn_storage::{Direction, KeyRange, KvStore, Txn};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::{AuthError, AuthResult};
use crate::secrets::sha256;
use crate::store;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditKind {
    AccountRegistered,
    LoginSucceeded,
    LoginFailed,
    MfaLoginFailed,
    DeviceLinked,
    DeviceRemoved,
    MfaEnabled,
    MfaDisabled,
    RecoveryCodesRegenerated,
    RecoveryCodeUsed,
    SessionRevoked,
    RefreshTokenReused,
    PasswordChanged,
    AccountDeleted,
    PreKeysUploaded,
    KeyPackagesUploaded,
}

/// One audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub time_ms: u64,
    pub kind: AuditKind,
    /// Empty when the event has no known account (e.g. a failed login for an unknown name).
    pub account_id: String,
    pub device_id: Option<u32>,
    /// Non-secret context (a client address, a session id, a count).
    pub detail: String,
    pub prev_hash: [u8; 32],
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: [u8; 32],
}

/// The first problem [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditViolation {
    #[error("entry {0} is missing (expected next in the chain)")]
    Missing(u64),
    #[error("entry {0} does not decode")]
    Undecodable(u64),
    #[error("entry {0} was altered (hash mismatch)")]
    Altered(u64),
    #[error("entry {0} does not link to its predecessor")]
    BrokenLink(u64),
    #[error("the chain ends at {found} but the head says {expected}")]
    Truncated { expected: u64, found: u64 },
    #[error("storage: {0}")]
    Storage(String),
}

impl Record for AuditEntry {
    const VERSION: u8 = store::VERSION;
}

impl Record for Head {
    const VERSION: u8 = store::VERSION;
}

impl Record for Stored {
    const VERSION: u8 = store::VERSION;
}

/// The hash covers the entry's stored encoding (version byte included).
fn entry_hash(entry: &AuditEntry) -> [u8; 32] {
    sha256(&encode(entry))
}

#[derive(Serialize, Deserialize)]
struct Stored {
    entry: AuditEntry,
    hash: [u8; 32],
}

/// Appends entries.
#[derive(Debug)]
pub struct AuditLog {
    kv: Arc<dyn KvStore>,
    clock: SharedClock,
    // Serialises this process's appends so they do not fight over the head key.
    lock: Mutex<()>,
}

impl AuditLog {
    pub fn new(kv: Arc<dyn KvStore>, clock: SharedClock) -> Self {
        Self {
            kv,
            clock,
            lock: Mutex::new(()),
        }
    }

    pub async fn append(
        &self,
        kind: AuditKind,
        account_id: &str,
        device_id: Option<u32>,
        detail: impl Into<String>,
    ) -> AuthResult<()> {
        let detail = detail.into();
        let _guard = self.lock.lock().await;
        let head_key = store::audit_head();
        for _ in 0..store::MAX_ATTEMPTS {
            let head = store::get::<Head>(&*self.kv, &head_key).await?;
            let (seq, prev_hash, raw) = match &head {
                Some((h, raw)) => (h.seq + 1, h.hash, Some(raw.as_slice())),
                None => (1, [0u8; 32], None),
            };
            let entry = AuditEntry {
                seq,
                time_ms: self.clock.now_ms(),
                kind,
                account_id: account_id.to_owned(),
                device_id,
                detail: detail.clone(),
                prev_hash,
            };
            let hash = entry_hash(&entry);
            let txn = Txn::new()
                .require_unchanged(head_key.clone(), raw)
                .require_absent(store::audit(seq))
                .put(store::audit(seq), encode(&Stored { entry, hash }))
                .put(head_key.clone(), encode(&Head { seq, hash }));
            if store::commit(&*self.kv, txn).await? {
                return Ok(());
            }
        }
        Err(AuthError::Contention)
    }
}

/// Read every entry in order (tests and, later, admin tools).
pub async fn entries(kv: &dyn KvStore) -> AuthResult<Vec<AuditEntry>> {
    let mut out = Vec::new();
    let mut start = store::audit(0);
    let end = store::audit(u64::MAX);
    loop {
        let batch = kv
            .scan(KeyRange::between(&start, &end), Direction::Forward, 1000)
            .await?;
        let Some(last) = batch.last() else { break };
        start = last.key.clone();
        start.push(0);
        for pair in &batch {
            let stored: Stored = decode(&pair.value)?;
            out.push(stored.entry);
        }
    }
    Ok(out)
}

/// Check the whole chain. Returns the number of entries on success.
pub async fn verify(kv: &dyn KvStore) -> Result<u64, AuditViolation> {
    let storage = |e: AuthError| AuditViolation::Storage(e.to_string());
    let head = store::get::<Head>(kv, &store::audit_head())
        .await
        .map_err(storage)?
        .map(|(h, _)| h);
    let mut expected_seq = 1u64;
    let mut prev = [0u8; 32];
    let prefix = store::audit_prefix();
    let mut start = store::audit(0);
    let end = store::audit(u64::MAX);
    loop {
        let batch = kv
            .scan(KeyRange::between(&start, &end), Direction::Forward, 1000)
            .await
            .map_err(|e| AuditViolation::Storage(e.to_string()))?;
        let Some(last) = batch.last() else { break };
        start = last.key.clone();
        start.push(0);
        for pair in &batch {
            // The sequence number is the key's last 8 bytes (it may contain b'/').
            let seq = pair
                .key
                .strip_prefix(prefix.as_slice())
                .and_then(|s| <[u8; 8]>::try_from(s).ok())
                .map(u64::from_be_bytes)
                .ok_or(AuditViolation::Undecodable(expected_seq))?;
            if seq != expected_seq {
                return Err(AuditViolation::Missing(expected_seq));
            }
            let stored: Stored =
                decode(&pair.value).map_err(|_| AuditViolation::Undecodable(seq))?;
            if stored.entry.seq != seq {
                return Err(AuditViolation::Altered(seq));
            }
            let hash = entry_hash(&stored.entry);
            if hash != stored.hash {
                return Err(AuditViolation::Altered(seq));
            }
            if stored.entry.prev_hash != prev {
                return Err(AuditViolation::BrokenLink(seq));
            }
            prev = hash;
            expected_seq += 1;
        }
    }
    let found = expected_seq - 1;
    match head {
        None if found == 0 => Ok(0),
        None => Err(AuditViolation::Truncated { expected: 0, found }),
        Some(h) if h.seq != found => Err(AuditViolation::Truncated {
            expected: h.seq,
            found,
        }),
        Some(h) if h.hash != prev => Err(AuditViolation::Altered(found)),
        Some(_) => Ok(found),
    }
}
