//! Real-time data retention (the admin policy's `retention.realtime_secs`). The only real-time
//! datum presence keeps is an account's last seen (typing is never stored): one older than the
//! retention is never shown (the cutoff is applied by [`crate::model::AccountView::seen_by`] on
//! every read path), and this sweeper deletes it from storage and from the in-memory views,
//! every `presence.retention_sweep_secs` (and whenever a manual clock jumps).

use std::sync::Arc;
use std::time::Duration;

use guardyn_common::clock::run_passes;

use crate::core::Core;

/// Presence keys (records and device entries) read per batch.
const BATCH: usize = 512;

impl Core {
    pub(crate) fn last_seen_cutoff_ms(&self) -> u64 {
        crate::views::cutoff_ms(&self.clock, &self.policy)
    }
}

/// The sweeper task; stops at shutdown. A pass reads one batch, resuming where the previous
/// (full) one stopped, so a large key space drains in bounded steps.
pub(crate) async fn run(core: Arc<Core>) {
    let interval = Duration::from_secs(core.config.retention_sweep_secs);
    let cursor = tokio::sync::Mutex::new(None::<Vec<u8>>);
    run_passes(&core.clock, &core.shutdown, interval, || {
        let core = &core;
        let cursor = &cursor;
        async move {
            let mut cursor = cursor.lock().await;
            let cutoff = core.last_seen_cutoff_ms();
            match core
                .store
                .forget_last_seen(cursor.as_deref(), BATCH, cutoff)
                .await
            {
                Ok(batch) => {
                    if batch.forgotten > 0 {
                        tracing::debug!(forgotten = batch.forgotten, "presence retention sweep");
                    }
                    *cursor = batch.next;
                    if cursor.is_none() {
                        // The store is done; the views follow, so a watcher told of the
                        // expiry finds storage agreeing.
                        core.views.forget_last_seen();
                    }
                    cursor.is_some()
                }
                Err(err) => {
                    tracing::warn!(error = %err, "presence retention sweep failed");
                    false
                }
            }
        }
    })
    .await;
}
