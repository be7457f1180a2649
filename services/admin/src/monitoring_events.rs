//! The beacons on the bus, and what a threshold crossing raises: a `monitoring.alert` event, a
//! metric and an audit entry, once per crossing cluster-wide. Every admin instance hears every
//! beacon, so the instances agree through storage on who raises: the first to create the
//! crossing's marker key (a compare-and-set on its absence) raises it, the others only show it;
//! the marker is removed when the resource is back below, which arms the next crossing.

use std::sync::Arc;

use futures::StreamExt as _;
use guardyn_audit::{AuditKind, AuditRecord};
use guardyn_common::events::Payload as _;
use guardyn_common::events::monitoring::{ALERT, AlertRaised, BEACON, InstanceReport, Resource};
use guardyn_events::{Delivery, Subscription};
use guardyn_storage::Txn;

use crate::core::Core;
use crate::error::AdminError;
use crate::monitoring::{Change, Monitor};
use crate::monitoring_metrics::MonitoringMetrics;

/// Key of the marker of an alert in force: `monitoring/v1/alert/<resource>/<instance id>`.
fn marker_key(instance_id: &str, resource: Resource) -> Vec<u8> {
    format!("monitoring/v1/alert/{}/{instance_id}", resource.as_str()).into_bytes()
}

/// Subscribe to the beacons now (so none published once serving starts is missed) and follow
/// them until shutdown.
pub(crate) async fn spawn(
    core: Arc<Core>,
    monitor: Arc<Monitor>,
    metrics: MonitoringMetrics,
) -> Result<(), AdminError> {
    let sub = core.bus.subscribe(BEACON).await?;
    tokio::spawn(follow(core, monitor, metrics, sub));
    Ok(())
}

async fn follow(
    core: Arc<Core>,
    monitor: Arc<Monitor>,
    metrics: MonitoringMetrics,
    mut sub: Subscription,
) {
    loop {
        let delivery = tokio::select! {
            _ = core.ctx.shutdown.cancelled() => return,
            d = sub.next() => d,
        };
        let event = match delivery {
            Some(Delivery::Event(event)) => event,
            // The next beacon of each instance brings it back.
            Some(Delivery::Lagged { missed }) => {
                tracing::warn!(missed, "monitoring beacons missed");
                continue;
            }
            None => return,
        };
        let report = match InstanceReport::decode(event.payload()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable monitoring beacon");
                continue;
            }
        };
        let now = core.clock.now_ms();
        for change in monitor.observe(report, now) {
            if let Err(e) = apply(&core, &metrics, change).await {
                tracing::error!(error = %e, "could not record a monitoring alert");
            }
        }
        metrics.set_instances(monitor.snapshot(now).instances.len());
    }
}

async fn apply(core: &Core, metrics: &MonitoringMetrics, change: Change) -> Result<(), AdminError> {
    match change {
        Change::Above(alert) => {
            let key = marker_key(&alert.instance_id, alert.resource);
            let won = core
                .kv
                .commit(Txn::new().require_absent(key.clone()).put(key, [1u8]))
                .await?
                .is_committed();
            if won {
                raise(core, metrics, &alert).await?;
            }
        }
        Change::Below {
            instance_id,
            resource,
        } => {
            metrics.cleared(&instance_id, resource);
            let _ = core
                .kv
                .commit(Txn::new().delete(marker_key(&instance_id, resource)))
                .await?;
        }
    }
    Ok(())
}

async fn raise(
    core: &Core,
    metrics: &MonitoringMetrics,
    alert: &AlertRaised,
) -> Result<(), AdminError> {
    let what = format!(
        "{} at {:.1} % on instance {}, above the {} % threshold",
        alert.resource.as_str(),
        alert.value_percent,
        alert.instance_id,
        alert.threshold_percent
    );
    tracing::warn!(
        instance = %alert.instance_id,
        resource = alert.resource.as_str(),
        value_percent = alert.value_percent,
        threshold_percent = alert.threshold_percent,
        "monitoring alert"
    );
    // Audit first: whoever hears the alert event can read its audit entry.
    let mut record = AuditRecord::new(
        AuditKind::MonitoringAlert,
        "",
        None,
        format!(
            "instance={} resource={} value_percent={:.1} threshold_percent={}",
            alert.instance_id,
            alert.resource.as_str(),
            alert.value_percent,
            alert.threshold_percent
        ),
    );
    record.reason = what;
    core.audit.append(record).await?;
    metrics.raised(&alert.instance_id, alert.resource);
    core.bus.publish(ALERT, alert.encode()).await?;
    Ok(())
}
