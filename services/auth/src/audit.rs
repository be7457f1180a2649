//! Append-only, hash-chained audit log of security events.
//!
//! Entry `n` is stored at `auth/v1/audit/<n as u64 BE>` (n = 1, 2, ...) and carries the SHA-256
//! of entry `n-1` (zeros for the first); its own hash covers its encoding including that link.
//! `auth/v1/audithead` holds the last sequence number and hash, written in the same transaction
//! as the entries (compare-and-set, so concurrent instances append in one order). Appends are
//! batched by one writer task per process ([`AuditLog`]): one transaction and one fsync for
//! every entry pending, instead of one each behind a process-wide lock. [`verify`]
//! walks the chain and detects any altered, inserted or removed entry, including the last one
//! (via the head). Entries never hold secrets: only kinds, ids and short non-secret details.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use guardyn_common::clock::SharedClock;
use guardyn_storage::record::{Record, decode, encode};
use guardyn_storage::{Direction, KeyRange, KvStore, StorageError, Txn};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

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
    SteppedUp,
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

/// Most entries written in one transaction.
const MAX_BATCH: usize = 256;

/// Appends waiting for the writer before callers are made to wait (backpressure).
const QUEUE: usize = 4096;

/// One append waiting for the writer.
struct Pending {
    kind: AuditKind,
    account_id: String,
    device_id: Option<u32>,
    detail: String,
    done: oneshot::Sender<AuthResult<()>>,
}

/// Appends entries through one writer task per process: it takes every append pending (up to
/// [`MAX_BATCH`]), chains them onto the head and commits them with the head in one
/// transaction (one fsync), then answers each caller. An `Ok` therefore means the entry is
/// durable, and the chain order is the order the writer took the entries in. Instances
/// sharing a store still serialise on the head's compare-and-set.
#[derive(Debug)]
pub struct AuditLog {
    queue: mpsc::Sender<Pending>,
    /// Entries left out by [`AuditLog::append_sampled`] since the last one written.
    suppressed: AtomicU64,
}

impl AuditLog {
    /// Starts the writer task (it ends when the log is dropped, after the pending appends).
    pub fn new(kv: Arc<dyn KvStore>, clock: SharedClock) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(kv, clock, rx));
        Self {
            queue,
            suppressed: AtomicU64::new(0),
        }
    }

    /// Append one entry and wait until it is durable.
    pub async fn append(
        &self,
        kind: AuditKind,
        account_id: &str,
        device_id: Option<u32>,
        detail: impl Into<String>,
    ) -> AuthResult<()> {
        let (done, answer) = oneshot::channel();
        let pending = Pending {
            kind,
            account_id: account_id.to_owned(),
            device_id,
            detail: detail.into(),
            done,
        };
        self.queue
            .send(pending)
            .await
            .map_err(|_| AuthError::Storage(StorageError::Closed))?;
        answer
            .await
            .map_err(|_| AuthError::Storage(StorageError::Closed))?
    }

    /// For floods (failed logins): when `write` is false the entry is only counted, and the
    /// count of entries left out goes into the detail of the next one written.
    pub async fn append_sampled(
        &self,
        write: bool,
        kind: AuditKind,
        account_id: &str,
        device_id: Option<u32>,
        detail: impl Into<String>,
    ) -> AuthResult<()> {
        if !write {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let mut detail = detail.into();
        let left_out = self.suppressed.swap(0, Ordering::Relaxed);
        if left_out > 0 {
            detail.push_str(&format!(" (+{left_out} similar entries not logged)"));
        }
        self.append(kind, account_id, device_id, detail).await
    }
}

async fn writer(kv: Arc<dyn KvStore>, clock: SharedClock, mut rx: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let result = write_batch(&*kv, &clock, &batch).await;
        if let Err(err) = &result {
            tracing::warn!(error = %err, entries = batch.len(), "audit append failed");
        }
        for p in batch.drain(..) {
            let _ = p.done.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(same_error(e)),
            });
        }
    }
}

/// Chain `batch` onto the head and commit it in one transaction.
async fn write_batch(kv: &dyn KvStore, clock: &SharedClock, batch: &[Pending]) -> AuthResult<()> {
    let head_key = store::audit_head();
    for _ in 0..store::MAX_ATTEMPTS {
        let head = store::get::<Head>(kv, &head_key).await?;
        let (mut seq, mut prev_hash, raw) = match &head {
            Some((h, raw)) => (h.seq, h.hash, Some(raw.as_slice())),
            None => (0, [0u8; 32], None),
        };
        let time_ms = clock.now_ms();
        let mut txn = Txn::new().require_unchanged(head_key.clone(), raw);
        for p in batch {
            seq += 1;
            let entry = AuditEntry {
                seq,
                time_ms,
                kind: p.kind,
                account_id: p.account_id.clone(),
                device_id: p.device_id,
                detail: p.detail.clone(),
                prev_hash,
            };
            let hash = entry_hash(&entry);
            txn = txn
                .require_absent(store::audit(seq))
                .put(store::audit(seq), encode(&Stored { entry, hash }));
            prev_hash = hash;
        }
        txn = txn.put(
            head_key.clone(),
            encode(&Head {
                seq,
                hash: prev_hash,
            }),
        );
        if store::commit(kv, txn).await? {
            return Ok(());
        }
    }
    Err(AuthError::Contention)
}

/// The batch's one failure, for each of its callers.
fn same_error(e: &AuthError) -> AuthError {
    match e {
        AuthError::Contention => AuthError::Contention,
        AuthError::Storage(s) => AuthError::Storage(match s {
            StorageError::InvalidRequest(m) => StorageError::InvalidRequest(m.clone()),
            StorageError::Corrupt(m) => StorageError::Corrupt(m.clone()),
            StorageError::Unavailable(m) => StorageError::Unavailable(m.clone()),
            StorageError::Closed => StorageError::Closed,
            other => StorageError::Backend(other.to_string()),
        }),
        other => AuthError::Corrupt(other.to_string()),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::print_stdout)]

    use std::time::Instant;

    use guardyn_common::clock::SystemClock;

    use super::*;

    /// The append this module had before the writer task: a process-wide lock, then one
    /// transaction (one fsync) per entry. Kept as the baseline of the measurement below.
    async fn append_one_by_one(kv: &dyn KvStore, lock: &tokio::sync::Mutex<()>, detail: String) {
        let _guard = lock.lock().await;
        let head_key = store::audit_head();
        loop {
            let head = store::get::<Head>(kv, &head_key).await.unwrap();
            let (seq, prev_hash, raw) = match &head {
                Some((h, raw)) => (h.seq + 1, h.hash, Some(raw.as_slice())),
                None => (1, [0u8; 32], None),
            };
            let entry = AuditEntry {
                seq,
                time_ms: 0,
                kind: AuditKind::LoginFailed,
                account_id: String::new(),
                device_id: None,
                detail: detail.clone(),
                prev_hash,
            };
            let hash = entry_hash(&entry);
            let txn = Txn::new()
                .require_unchanged(head_key.clone(), raw)
                .require_absent(store::audit(seq))
                .put(store::audit(seq), encode(&Stored { entry, hash }))
                .put(head_key.clone(), encode(&Head { seq, hash }));
            if store::commit(kv, txn).await.unwrap() {
                return;
            }
        }
    }

    async fn open() -> (
        tempfile::TempDir,
        Arc<guardyn_storage_embedded::EmbeddedStore>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = guardyn_storage_embedded::EmbeddedStore::open(dir.path(), Default::default())
            .await
            .unwrap();
        (dir, store)
    }

    /// Appends per second on the embedded engine (one fsync per engine commit), 2000 callers
    /// at once, through the writer task and through the former one-by-one append.
    /// `cargo test -p guardyn-auth --lib --release -- --ignored audit_append_throughput
    /// --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement"]
    async fn audit_append_throughput() {
        let concurrent = 2000u32;
        let (_dir, store) = open().await;
        let kv: Arc<dyn KvStore> = store.clone();
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..concurrent {
            let (kv, lock) = (kv.clone(), lock.clone());
            tasks.push(tokio::spawn(async move {
                append_one_by_one(&*kv, &lock, format!("par {i}")).await;
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let before = f64::from(concurrent) / start.elapsed().as_secs_f64();
        assert_eq!(verify(&*kv).await.unwrap(), u64::from(concurrent));
        store.close().await;
        println!("audit appends/s, one by one: {concurrent} concurrent {before:.0}");

        let (_dir, store) = open().await;
        let kv: Arc<dyn KvStore> = store.clone();
        let log = Arc::new(AuditLog::new(kv.clone(), Arc::new(SystemClock)));
        let sequential = 200u32;
        let start = Instant::now();
        for i in 0..sequential {
            log.append(AuditKind::LoginFailed, "", None, format!("seq {i}"))
                .await
                .unwrap();
        }
        let seq_rate = f64::from(sequential) / start.elapsed().as_secs_f64();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..concurrent {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                log.append(AuditKind::LoginFailed, "", None, format!("par {i}"))
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let par_rate = f64::from(concurrent) / start.elapsed().as_secs_f64();
        assert_eq!(
            verify(&*kv).await.unwrap(),
            u64::from(sequential + concurrent)
        );
        println!(
            "audit appends/s, batched: sequential {seq_rate:.0}, {concurrent} concurrent {par_rate:.0}"
        );
        drop(log);
        store.close().await;
    }
}
