//! The security-event retention sweeper: events received longer ago than the policy's
//! `retention.security_events_secs` are deleted, oldest first, in bounded passes.

use std::sync::Arc;
use std::time::Duration;

use guardyn_common::clock::run_passes;

use crate::core::Core;
use crate::security_events_store::SWEEP_BATCH;

pub(crate) async fn run(core: Arc<Core>) {
    let interval = Duration::from_secs(core.cfg.security_events.sweep_interval_secs);
    run_passes(&core.clock, &core.ctx.shutdown, interval, || {
        let core = &core;
        async move {
            match pass(core).await {
                Ok(full) => full,
                Err(err) => {
                    tracing::warn!(error = %err, "security event retention pass failed");
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
        .security_events_secs;
    let cutoff = core
        .clock
        .now_ms()
        .saturating_sub(keep_secs.saturating_mul(1000));
    let deleted = core.prune_security_events(cutoff).await?;
    if deleted > 0 {
        tracing::info!(deleted, "security events past retention deleted");
    }
    Ok(deleted >= SWEEP_BATCH)
}
