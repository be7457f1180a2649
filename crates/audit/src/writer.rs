//! The one writer task per log: batches pending appends into one transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use guardyn_common::clock::SharedClock;
use guardyn_storage::record::{decode, encode};
use guardyn_storage::{KvStore, StorageError, Txn, TxnOutcome};
use tokio::sync::{mpsc, oneshot};

use crate::model::{AuditError, AuditRecord, MAX_ATTEMPTS};
use crate::record::{AuditEntry, Link, Stored, entry_key, head_key};

/// Most entries written in one transaction.
const MAX_BATCH: usize = 256;

/// Appends waiting for the writer before callers are made to wait (backpressure).
const QUEUE: usize = 4096;

struct Pending {
    record: AuditRecord,
    done: oneshot::Sender<Result<(), AuditError>>,
}

/// Appends entries through one writer task: it takes every append pending (up to
/// [`MAX_BATCH`]), chains them onto the head and commits them with the head in one
/// transaction (one fsync), then answers each caller. An `Ok` therefore means the entry is
/// durable, and the chain order is the order the writer took the entries in. Several logs on
/// one store (services, instances) serialise on the head's compare-and-set.
#[derive(Debug)]
pub struct AuditLog {
    queue: mpsc::Sender<Pending>,
    /// Entries left out by [`AuditLog::append_sampled`] since the last one written.
    suppressed: AtomicU64,
    pub(crate) kv: Arc<dyn KvStore>,
}

impl AuditLog {
    /// Starts the writer task (it ends when the log is dropped, after the pending appends).
    pub fn new(kv: Arc<dyn KvStore>, clock: SharedClock) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(kv.clone(), clock, rx));
        Self {
            queue,
            suppressed: AtomicU64::new(0),
            kv,
        }
    }

    /// Append one entry and wait until it is durable.
    pub async fn append(&self, record: AuditRecord) -> Result<(), AuditError> {
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Pending { record, done })
            .await
            .map_err(|_| AuditError::Storage(StorageError::Closed))?;
        answer
            .await
            .map_err(|_| AuditError::Storage(StorageError::Closed))?
    }

    /// For floods (failed logins): when `write` is false the entry is only counted, and the
    /// count of entries left out goes into the detail of the next one written.
    pub async fn append_sampled(
        &self,
        write: bool,
        mut record: AuditRecord,
    ) -> Result<(), AuditError> {
        if !write {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let left_out = self.suppressed.swap(0, Ordering::Relaxed);
        if left_out > 0 {
            record
                .detail
                .push_str(&format!(" (+{left_out} similar entries not logged)"));
        }
        self.append(record).await
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
                Err(e) => Err(e.duplicate()),
            });
        }
    }
}

/// Chain `batch` onto the head and commit it in one transaction.
async fn write_batch(
    kv: &dyn KvStore,
    clock: &SharedClock,
    batch: &[Pending],
) -> Result<(), AuditError> {
    let head_key = head_key();
    for _ in 0..MAX_ATTEMPTS {
        let raw = kv.get(&head_key).await?;
        let (mut seq, mut prev_hash) = match &raw {
            Some(raw) => {
                let h: Link = decode(raw)?;
                (h.seq, h.hash)
            }
            None => (0, [0u8; 32]),
        };
        let time_ms = clock.now_ms();
        let mut txn = Txn::new().require_unchanged(head_key.clone(), raw.as_deref());
        for p in batch {
            seq += 1;
            let r = &p.record;
            let stored = Stored::new(AuditEntry {
                seq,
                time_ms,
                kind: r.kind,
                account_id: r.account_id.clone(),
                device_id: r.device_id,
                actor: r.actor.clone(),
                reason: r.reason.clone(),
                detail: r.detail.clone(),
                prev_hash,
            });
            prev_hash = stored.hash;
            txn = txn
                .require_absent(entry_key(seq))
                .put(entry_key(seq), encode(&stored));
        }
        txn = txn.put(
            head_key.clone(),
            encode(&Link {
                seq,
                hash: prev_hash,
            }),
        );
        if matches!(kv.commit(txn).await?, TxnOutcome::Committed) {
            return Ok(());
        }
    }
    Err(AuditError::Contention)
}
