//! The audit retention sweeper: entries older than the policy's `retention.audit_secs` are
//! pruned behind a checkpoint (`guardyn_audit::AuditLog::prune`), so the rest still verifies.

use std::sync::Arc;
use std::time::Duration;

use guardyn_common::clock::run_passes;

use crate::core::Core;

/// Most entries one pass deletes (one transaction).
const BATCH: usize = 512;

pub(crate) async fn run(core: Arc<Core>) {
    let interval = Duration::from_secs(core.cfg.audit.sweep_interval_secs);
    run_passes(&core.clock, &core.ctx.shutdown, interval, || {
        let core = &core;
        async move {
            match pass(core).await {
                Ok(full) => full,
                Err(err) => {
                    tracing::warn!(error = %err, "audit retention pass failed");
                    false
                }
            }
        }
    })
    .await;
}

async fn pass(core: &Core) -> Result<bool, crate::error::AdminError> {
    let keep_secs = guardyn_common::policy::load(&*core.kv)
        .await?
        .retention
        .audit_secs;
    let cutoff = core
        .clock
        .now_ms()
        .saturating_sub(keep_secs.saturating_mul(1000));
    Ok(core
        .audit
        .prune(cutoff, BATCH)
        .await?
        .is_some_and(|p| p.full))
}
