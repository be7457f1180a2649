//! Retention: deleting the oldest entries while the rest stays verifiable.
//!
//! Pruning deletes a run of the oldest entries and, in the same transaction, moves the
//! checkpoint to the last one deleted (its seq and hash), from which [`crate::verify`] starts.
//! It deletes only entries that still verify (a broken link stays, as evidence), and each
//! prune is itself audited (`AuditPruned`).

use guardyn_storage::record::{decode, encode};
use guardyn_storage::{Direction, KeyRange, Txn, TxnOutcome};

use crate::kind::AuditKind;
use crate::model::{AuditError, AuditRecord, MAX_ATTEMPTS};
use crate::record::{Link, checkpoint_key, entry_key, head_key, read};
use crate::writer::AuditLog;

/// What one [`AuditLog::prune`] pass deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pruned {
    pub first_seq: u64,
    pub last_seq: u64,
    /// Whether the pass deleted as many as it was allowed to (more may be due).
    pub full: bool,
}

impl AuditLog {
    /// Delete up to `max` of the oldest entries written before `cutoff_ms` and audit it. `None` when nothing was due.
    pub async fn prune(&self, cutoff_ms: u64, max: usize) -> Result<Option<Pruned>, AuditError> {
        for _ in 0..MAX_ATTEMPTS {
            match self.prune_once(cutoff_ms, max).await? {
                Attempt::Conflict => continue,
                Attempt::Nothing => return Ok(None),
                Attempt::Done(p) => {
                    self.append(AuditRecord::new(
                        AuditKind::AuditPruned,
                        "",
                        None,
                        format!(
                            "entries {}..={} older than {cutoff_ms} ms deleted",
                            p.first_seq, p.last_seq
                        ),
                    ))
                    .await?;
                    return Ok(Some(p));
                }
            }
        }
        Err(AuditError::Contention)
    }

    async fn prune_once(&self, cutoff_ms: u64, max: usize) -> Result<Attempt, AuditError> {
        let kv = &*self.kv;
        let raw_checkpoint = kv.get(&checkpoint_key()).await?;
        let checkpoint = raw_checkpoint.as_deref().map(decode::<Link>).transpose()?;
        let Some(head) = kv
            .get(&head_key())
            .await?
            .map(|r| decode::<Link>(&r))
            .transpose()?
        else {
            return Ok(Attempt::Nothing);
        };
        let first_seq = checkpoint.map_or(1, |c| c.seq + 1);
        if first_seq > head.seq {
            return Ok(Attempt::Nothing);
        }
        let pairs = kv
            .scan(
                KeyRange::between(&entry_key(first_seq), &entry_key(head.seq + 1)),
                Direction::Forward,
                max,
            )
            .await?;
        let mut prev = checkpoint.map_or([0u8; 32], |c| c.hash);
        let mut txn = Txn::new().require_unchanged(checkpoint_key(), raw_checkpoint.as_deref());
        let mut last = None;
        for (i, pair) in pairs.iter().enumerate() {
            let Ok(entry) = read(&pair.value) else { break };
            let intact = entry.entry.seq == first_seq + i as u64
                && entry.actual_hash == entry.stored_hash
                && entry.entry.prev_hash == prev;
            if !intact {
                tracing::warn!(
                    seq = first_seq + i as u64,
                    "audit chain broken: pruning stops before it"
                );
                break;
            }
            if entry.entry.time_ms >= cutoff_ms {
                break;
            }
            prev = entry.actual_hash;
            last = Some(entry.entry.seq);
            txn = txn
                .require_equals(pair.key.clone(), pair.value.clone())
                .delete(pair.key.clone());
        }
        let Some(last_seq) = last else {
            return Ok(Attempt::Nothing);
        };
        txn = txn.put(
            checkpoint_key(),
            encode(&Link {
                seq: last_seq,
                hash: prev,
            }),
        );
        Ok(match kv.commit(txn).await? {
            TxnOutcome::Committed => Attempt::Done(Pruned {
                first_seq,
                last_seq,
                full: (last_seq - first_seq + 1) as usize >= max,
            }),
            _ => Attempt::Conflict,
        })
    }
}

enum Attempt {
    Nothing,
    Conflict,
    Done(Pruned),
}
