//! Monitoring's subjects and payloads (`proto/guardyn/admin/v1/monitoring_events.proto`): the
//! beacon every process publishes with its own figures, and the alert the admin service raises
//! when a beacon crosses a threshold.

use guardyn_proto::guardyn::admin::v1 as pb;

use super::{DecodeError, Payload, bad};
use crate::wire;

/// Every process's beacon (one subject: instance ids are free-form, not subject tokens).
pub const BEACON: &str = "monitoring.beacon";

/// Alerts raised by the admin service.
pub const ALERT: &str = "monitoring.alert";

/// The RPCs whose OK answers count as messages sent (the beacon's `messages_sent_total`, read
/// from the per-RPC metrics every process keeps anyway).
pub const MESSAGE_SEND_METHODS: [&str; 2] = [
    "/guardyn.messaging.v1.MessagingService/SendMessage",
    "/guardyn.messaging.v1.GroupService/SendGroupMessage",
];

/// One process's figures at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstanceReport {
    pub instance_id: String,
    pub version: String,
    /// `--service` names hosted, sorted.
    pub services: Vec<String>,
    pub started_at_ms: u64,
    pub reported_at_ms: u64,
    pub interval_secs: u32,
    pub cpu_percent: f64,
    pub process_cpu_percent: f64,
    pub process_rss_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub connected_devices: u64,
    pub listen_streams: u64,
    pub open_streams: u64,
    /// (queue, jobs stored and not acknowledged).
    pub queue_depths: Vec<(String, u64)>,
    pub push_backlog: Option<u64>,
    pub storage_bytes: Option<u64>,
    /// Messages accepted since the process started (a counter: only its growth means much).
    pub messages_sent_total: u64,
    /// Messages accepted per second between this process's last two beacons: computed by
    /// whoever hears them (the admin service), never sent in a beacon.
    pub messages_sent_per_sec: f64,
}

impl InstanceReport {
    pub fn uptime_secs(&self) -> u64 {
        self.reported_at_ms.saturating_sub(self.started_at_ms) / 1000
    }

    /// Used host memory, percent of the total (0 when the total is unknown).
    pub fn memory_percent(&self) -> f64 {
        percent(self.memory_used_bytes, self.memory_total_bytes)
    }

    /// Used space of the data directory's filesystem, percent (0 when unknown).
    pub fn disk_percent(&self) -> f64 {
        percent(self.disk_used_bytes, self.disk_total_bytes)
    }

    /// The wire form inside beacons and monitoring responses.
    pub fn to_status(&self) -> pb::InstanceStatus {
        pb::InstanceStatus {
            instance_id: self.instance_id.clone(),
            version: self.version.clone(),
            services: self.services.clone(),
            uptime_secs: self.uptime_secs(),
            reported_at: Some(wire::timestamp(self.reported_at_ms)),
            beacon_interval_secs: self.interval_secs,
            cpu_percent: self.cpu_percent,
            process_cpu_percent: self.process_cpu_percent,
            process_rss_bytes: self.process_rss_bytes,
            memory_used_bytes: self.memory_used_bytes,
            memory_total_bytes: self.memory_total_bytes,
            disk_used_bytes: self.disk_used_bytes,
            disk_total_bytes: self.disk_total_bytes,
            connected_devices: self.connected_devices,
            listen_streams: self.listen_streams,
            open_streams: self.open_streams,
            queue_depths: self
                .queue_depths
                .iter()
                .map(|(queue, depth)| pb::QueueDepth {
                    queue: queue.clone(),
                    depth: *depth,
                })
                .collect(),
            push_backlog: self.push_backlog,
            storage_bytes: self.storage_bytes,
            messages_sent_per_sec: self.messages_sent_per_sec,
        }
    }
}

fn percent(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / total as f64
    }
}

impl Payload for InstanceReport {
    type Wire = pb::InstanceBeacon;
    const WHAT: &'static str = "monitoring.beacon";

    fn to_wire(&self) -> Self::Wire {
        pb::InstanceBeacon {
            status: Some(self.to_status()),
            started_at_ms: self.started_at_ms,
            reported_at_ms: self.reported_at_ms,
            messages_sent_total: self.messages_sent_total,
        }
    }

    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        let s = w.status.ok_or_else(|| bad(Self::WHAT, "status"))?;
        if s.instance_id.is_empty() {
            return Err(bad(Self::WHAT, "instance_id"));
        }
        if s.beacon_interval_secs == 0 {
            return Err(bad(Self::WHAT, "beacon_interval_secs"));
        }
        Ok(Self {
            instance_id: s.instance_id,
            version: s.version,
            services: s.services,
            started_at_ms: w.started_at_ms,
            reported_at_ms: w.reported_at_ms,
            interval_secs: s.beacon_interval_secs,
            cpu_percent: s.cpu_percent,
            process_cpu_percent: s.process_cpu_percent,
            process_rss_bytes: s.process_rss_bytes,
            memory_used_bytes: s.memory_used_bytes,
            memory_total_bytes: s.memory_total_bytes,
            disk_used_bytes: s.disk_used_bytes,
            disk_total_bytes: s.disk_total_bytes,
            connected_devices: s.connected_devices,
            listen_streams: s.listen_streams,
            open_streams: s.open_streams,
            queue_depths: s
                .queue_depths
                .into_iter()
                .map(|q| (q.queue, q.depth))
                .collect(),
            push_backlog: s.push_backlog,
            storage_bytes: s.storage_bytes,
            messages_sent_total: w.messages_sent_total,
            // A rate is the hearer's to compute: one from the wire is not trusted.
            messages_sent_per_sec: 0.0,
        })
    }
}

/// A resource with an alert threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Cpu,
    Memory,
    Disk,
}

impl Resource {
    pub const ALL: [Resource; 3] = [Self::Cpu, Self::Memory, Self::Disk];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Memory => "memory",
            Self::Disk => "disk",
        }
    }

    pub fn to_wire(self) -> pb::MonitoredResource {
        match self {
            Self::Cpu => pb::MonitoredResource::Cpu,
            Self::Memory => pb::MonitoredResource::Memory,
            Self::Disk => pb::MonitoredResource::Disk,
        }
    }

    fn from_wire(value: i32) -> Option<Self> {
        match pb::MonitoredResource::try_from(value).ok()? {
            pb::MonitoredResource::Cpu => Some(Self::Cpu),
            pb::MonitoredResource::Memory => Some(Self::Memory),
            pb::MonitoredResource::Disk => Some(Self::Disk),
            pb::MonitoredResource::Unspecified => None,
        }
    }

    /// The report's value of this resource, percent.
    pub fn value(self, report: &InstanceReport) -> f64 {
        match self {
            Self::Cpu => report.cpu_percent,
            Self::Memory => report.memory_percent(),
            Self::Disk => report.disk_percent(),
        }
    }
}

/// An instance crossed a threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRaised {
    pub instance_id: String,
    pub resource: Resource,
    pub value_percent: f64,
    pub threshold_percent: u32,
    pub raised_at_ms: u64,
}

impl AlertRaised {
    /// The wire form inside monitoring responses.
    pub fn to_alert(&self) -> pb::MonitoringAlert {
        pb::MonitoringAlert {
            instance_id: self.instance_id.clone(),
            resource: self.resource.to_wire().into(),
            value_percent: self.value_percent,
            threshold_percent: self.threshold_percent,
            raised_at: Some(wire::timestamp(self.raised_at_ms)),
        }
    }
}

impl Payload for AlertRaised {
    type Wire = pb::MonitoringAlertRaised;
    const WHAT: &'static str = "monitoring.alert";

    fn to_wire(&self) -> Self::Wire {
        pb::MonitoringAlertRaised {
            alert: Some(self.to_alert()),
            raised_at_ms: self.raised_at_ms,
        }
    }

    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        let a = w.alert.ok_or_else(|| bad(Self::WHAT, "alert"))?;
        Ok(Self {
            resource: Resource::from_wire(a.resource).ok_or_else(|| bad(Self::WHAT, "resource"))?,
            instance_id: a.instance_id,
            value_percent: a.value_percent,
            threshold_percent: a.threshold_percent,
            raised_at_ms: w.raised_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn beacons_and_alerts_round_trip_and_bad_ones_are_refused() {
        let report = InstanceReport {
            instance_id: "node-a".into(),
            version: "0.1.0".into(),
            services: vec!["admin".into(), "auth".into()],
            started_at_ms: 1_000,
            reported_at_ms: 61_000,
            interval_secs: 10,
            memory_used_bytes: 50,
            memory_total_bytes: 200,
            queue_depths: vec![("notification-wake".into(), 3)],
            push_backlog: Some(3),
            messages_sent_total: 42,
            ..InstanceReport::default()
        };
        assert_eq!(InstanceReport::decode(&report.encode()).unwrap(), report);
        assert_eq!(report.uptime_secs(), 60);
        assert_eq!(Resource::Memory.value(&report), 25.0);
        let mut wire = report.to_wire();
        wire.status.as_mut().unwrap().beacon_interval_secs = 0;
        assert!(InstanceReport::from_wire(wire).is_err());

        let alert = AlertRaised {
            instance_id: "node-a".into(),
            resource: Resource::Disk,
            value_percent: 93.5,
            threshold_percent: 90,
            raised_at_ms: 5,
        };
        assert_eq!(AlertRaised::decode(&alert.encode()).unwrap(), alert);
        let mut wire = alert.to_wire();
        wire.alert.as_mut().unwrap().resource = 0;
        assert!(AlertRaised::from_wire(wire).is_err());
    }
}
