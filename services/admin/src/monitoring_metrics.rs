//! Monitoring's Prometheus metrics (`guardyn_admin_monitoring_*`). The process registry already
//! labels everything with its own `instance`, so the instance a figure is about is labelled
//! `monitored_instance`.

use guardyn_common::events::monitoring::Resource;
use guardyn_common::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    monitored_instance: String,
    resource: &'static str,
}

/// Alert counters and gauges.
#[derive(Debug, Clone)]
pub(crate) struct MonitoringMetrics {
    raised: Family<AlertLabels, Counter>,
    active: Family<AlertLabels, Gauge>,
    instances: Gauge,
}

impl MonitoringMetrics {
    pub(crate) fn register(metrics: &Metrics) -> Self {
        let m = Self {
            raised: Family::default(),
            active: Family::default(),
            instances: Gauge::default(),
        };
        metrics.with_service_registry("admin", |r| {
            let r = r.sub_registry_with_prefix("admin");
            r.register(
                "monitoring_alerts",
                "Alert thresholds crossed, by instance and resource (cpu, memory, disk)",
                m.raised.clone(),
            );
            r.register(
                "monitoring_alert_active",
                "1 while the instance's resource is above its alert threshold",
                m.active.clone(),
            );
            r.register(
                "monitoring_instances",
                "Instances heard from within three of their beacon intervals",
                m.instances.clone(),
            );
        });
        m
    }

    fn labels(instance_id: &str, resource: Resource) -> AlertLabels {
        AlertLabels {
            monitored_instance: instance_id.to_owned(),
            resource: resource.as_str(),
        }
    }

    pub(crate) fn raised(&self, instance_id: &str, resource: Resource) {
        let labels = Self::labels(instance_id, resource);
        self.raised.get_or_create(&labels).inc();
        self.active.get_or_create(&labels).set(1);
    }

    pub(crate) fn cleared(&self, instance_id: &str, resource: Resource) {
        self.active
            .get_or_create(&Self::labels(instance_id, resource))
            .set(0);
    }

    pub(crate) fn set_instances(&self, n: usize) {
        self.instances.set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
