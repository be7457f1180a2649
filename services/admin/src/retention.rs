//! The retention sweepers of the admin service's data, on the policy's retention per kind:
//! audit entries past `retention.audit_secs` are pruned behind a checkpoint
//! (`guardyn_audit::AuditLog::prune`), so the rest still verifies; security events received
//! longer ago than `retention.security_events_secs` are deleted, oldest first; system notices
//! are deleted once they expire. All run in bounded passes (`run_passes`).

use std::sync::Arc;
use std::time::Duration;

use guardyn_common::clock::run_passes;
use guardyn_common::policy::Retention;

use crate::core::Core;
use crate::error::AdminError;
use crate::security_events_store::SWEEP_BATCH;

/// Most audit entries one pass deletes (one transaction).
const AUDIT_BATCH: usize = 512;
/// How often expired system notices are deleted. Lists skip expired notices anyway, so this
/// only bounds how long they take space.
const NOTICE_SWEEP_INTERVAL: Duration = Duration::from_secs(600);

pub(crate) async fn run_audit(core: Arc<Core>) {
    let interval = Duration::from_secs(core.cfg.audit.sweep_interval_secs);
    sweep(core, interval, "audit", audit_pass).await;
}

pub(crate) async fn run_system_notices(core: Arc<Core>) {
    sweep(core, NOTICE_SWEEP_INTERVAL, "system notice", notices_pass).await;
}

pub(crate) async fn run_security_events(core: Arc<Core>) {
    let interval = Duration::from_secs(core.cfg.security_events.sweep_interval_secs);
    sweep(core, interval, "security event", security_events_pass).await;
}

/// Run `pass` every `interval` until shutdown; a failed pass is logged and retried later.
async fn sweep<F>(core: Arc<Core>, interval: Duration, what: &'static str, pass: F)
where
    F: AsyncFn(&Core) -> Result<bool, AdminError>,
{
    run_passes(&core.clock, &core.ctx.shutdown, interval, || async {
        pass(&core).await.unwrap_or_else(|err| {
            tracing::warn!(error = %err, "{what} retention pass failed");
            false
        })
    })
    .await;
}

/// The oldest time (Unix ms) still kept for the kind `keep_secs` picks from the policy.
async fn cutoff_ms(core: &Core, keep_secs: fn(&Retention) -> u64) -> Result<u64, AdminError> {
    let policy = guardyn_common::policy::load(&*core.kv).await?;
    let keep_ms = keep_secs(&policy.retention).saturating_mul(1000);
    Ok(core.clock.now_ms().saturating_sub(keep_ms))
}

async fn audit_pass(core: &Core) -> Result<bool, AdminError> {
    let cutoff = cutoff_ms(core, |r| r.audit_secs).await?;
    Ok(core
        .audit
        .prune(cutoff, AUDIT_BATCH)
        .await?
        .is_some_and(|p| p.full))
}

async fn security_events_pass(core: &Core) -> Result<bool, AdminError> {
    let cutoff = cutoff_ms(core, |r| r.security_events_secs).await?;
    let deleted = core.prune_security_events(cutoff).await?;
    if deleted > 0 {
        tracing::info!(deleted, "security events past retention deleted");
    }
    Ok(deleted >= SWEEP_BATCH)
}

async fn notices_pass(core: &Core) -> Result<bool, AdminError> {
    let deleted = core.sweep_notices(core.clock.now_ms()).await?;
    if deleted > 0 {
        tracing::info!(deleted, "expired system notices deleted");
    }
    Ok(deleted >= crate::notices_store::SWEEP_BATCH)
}
