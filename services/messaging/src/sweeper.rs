//! The idempotency record sweeper: deletes `msg/v1/idem/` records whose `expires_at_ms`
//! passed (completed sends past `messaging.idempotency_secs`, reservations past their lease),
//! in bounded passes on the service clock.
//!
//! A pass reads at most `messaging.sweep_batch` keys, resuming after the last key of the
//! previous pass (a cursor in memory, wrapping around at the end). Each delete is conditioned
//! on the bytes read (`require_equals`), so a record a send renewed meanwhile is kept.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use guardyn_common::clock::run_passes;
use guardyn_storage::record::decode;
use guardyn_storage::{Direction, KeyRange, Txn};

use crate::core::Core;
use crate::error::MessagingError;
use crate::store::{IDEMPOTENCY_ROOT, IdempotencyRecord};

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Swept {
    pub read: usize,
    pub deleted: usize,
}

impl Core {
    /// One bounded pass at `now_ms`, continuing after `cursor` (updated: `None` to start over).
    pub(crate) async fn sweep_idempotency(
        &self,
        cursor: &mut Option<Vec<u8>>,
        now_ms: u64,
    ) -> Result<Swept, MessagingError> {
        let batch = self.cfg.sweep_batch;
        let range = match cursor.take() {
            Some(last) => KeyRange {
                start: Bound::Excluded(last),
                ..KeyRange::prefix(IDEMPOTENCY_ROOT)
            },
            None => KeyRange::prefix(IDEMPOTENCY_ROOT),
        };
        let pairs = self.kv.scan(range, Direction::Forward, batch).await?;
        if pairs.len() >= batch {
            *cursor = pairs.last().map(|p| p.key.clone());
        }
        let mut out = Swept {
            read: pairs.len(),
            deleted: 0,
        };
        for pair in pairs {
            let expired = match decode::<IdempotencyRecord>(&pair.value) {
                Ok(rec) => rec.expires_at_ms <= now_ms,
                Err(err) => {
                    tracing::warn!(error = %err, "sweeper skips an unreadable idempotency record");
                    false
                }
            };
            if !expired {
                continue;
            }
            let txn = Txn::new()
                .require_equals(pair.key.clone(), pair.value)
                .delete(pair.key);
            if self.kv.commit(txn).await?.is_committed() {
                out.deleted += 1;
            }
        }
        Ok(out)
    }
}

/// The sweeper task: a pass every `messaging.sweep_interval_secs` (and whenever a manual clock
/// jumps); a pass that filled its batch is followed by another at once. Stops at shutdown.
pub(crate) async fn run(core: Arc<Core>) {
    let interval = Duration::from_secs(core.cfg.sweep_interval_secs);
    let cursor = tokio::sync::Mutex::new(None);
    run_passes(&core.clock, &core.shutdown, interval, || {
        let core = &core;
        let cursor = &cursor;
        async move {
            let mut cursor = cursor.lock().await;
            match core
                .sweep_idempotency(&mut cursor, core.clock.now_ms())
                .await
            {
                Ok(s) => s.read >= core.cfg.sweep_batch,
                Err(err) => {
                    tracing::warn!(error = %err, "idempotency sweep failed");
                    false
                }
            }
        }
    })
    .await;
}
