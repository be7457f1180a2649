//! Monitoring: the latest beacon of every live instance, the cluster aggregate, and the alert
//! thresholds they are held against. An instance silent for three of its own beacon intervals
//! is forgotten (with its alerts). A threshold is reported once per crossing: [`Monitor::observe`]
//! answers a [`Change`] only when a resource moves to the other side of its threshold. The
//! message rate of an instance is the growth of its message counter between its last two
//! beacons (so it needs no counter of its own here and survives a lost beacon).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use guardyn_common::config::{ConfigError, Validate};
use guardyn_common::events::monitoring::{AlertRaised, InstanceReport, Resource};
use serde::{Deserialize, Serialize};

/// How many beacon intervals an instance may stay silent before it is dropped.
const SILENT_INTERVALS: u64 = 3;

/// `[admin.monitoring]`: alert when a resource goes above its threshold (percent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertThresholds {
    /// Host CPU use.
    pub cpu_percent: u32,
    /// Used host memory.
    pub memory_percent: u32,
    /// Used space of the data directory's filesystem.
    pub disk_percent: u32,
}

impl Default for AlertThresholds {
    fn default() -> Self {
        Self {
            cpu_percent: 80,
            memory_percent: 85,
            disk_percent: 90,
        }
    }
}

impl Validate for AlertThresholds {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        for (name, value) in [
            ("cpu_percent", self.cpu_percent),
            ("memory_percent", self.memory_percent),
            ("disk_percent", self.disk_percent),
        ] {
            if value > 100 {
                return Err(ConfigError::new(
                    format!("{prefix}.{name}"),
                    "must be 0..=100 (percent)",
                ));
            }
        }
        Ok(())
    }
}

impl AlertThresholds {
    pub(crate) fn of(&self, resource: Resource) -> u32 {
        match resource {
            Resource::Cpu => self.cpu_percent,
            Resource::Memory => self.memory_percent,
            Resource::Disk => self.disk_percent,
        }
    }
}

/// A resource moved across its threshold (or its side was not known yet).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Change {
    /// Now above: raise it (once per crossing).
    Above(AlertRaised),
    /// Now at or below.
    Below {
        instance_id: String,
        resource: Resource,
    },
}

/// The cluster taken together.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Cluster {
    pub instances: u32,
    pub cpu_percent_mean: f64,
    pub cpu_percent_max: f64,
    pub process_rss_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub connected_devices: u64,
    pub listen_streams: u64,
    pub open_streams: u64,
    /// Highest depth reported per queue (each instance sees the cluster-wide backlog).
    pub queue_depths: BTreeMap<String, u64>,
    pub push_backlog: Option<u64>,
    pub storage_bytes: Option<u64>,
    /// Sum of the instances' message rates.
    pub messages_sent_per_sec: f64,
}

/// What the admin instance knows at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Snapshot {
    pub taken_at_ms: u64,
    /// Ordered by instance id.
    pub instances: Vec<InstanceReport>,
    pub cluster: Cluster,
    /// Ordered by instance id, then resource.
    pub alerts: Vec<AlertRaised>,
}

#[derive(Debug)]
struct Heard {
    report: InstanceReport,
    /// This process's clock: instances' clocks may disagree.
    heard_at_ms: u64,
}

#[derive(Debug, Default)]
struct State {
    instances: BTreeMap<String, Heard>,
    /// Which side of each threshold the last beacon was on: `Some(alert)` above.
    sides: BTreeMap<(String, Resource), Option<AlertRaised>>,
}

/// The beacons heard, and the side of each threshold every instance is on.
#[derive(Debug)]
pub(crate) struct Monitor {
    thresholds: AlertThresholds,
    state: Mutex<State>,
}

impl Monitor {
    pub(crate) fn new(thresholds: AlertThresholds) -> Self {
        Self {
            thresholds,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keep `report` as its instance's latest and answer the thresholds it crossed since the
    /// previous one.
    pub(crate) fn observe(&self, mut report: InstanceReport, now_ms: u64) -> Vec<Change> {
        let mut state = self.state();
        report.messages_sent_per_sec = state
            .instances
            .get(&report.instance_id)
            .map_or(0.0, |prev| message_rate(&prev.report, &report));
        let mut changes = Vec::new();
        for resource in Resource::ALL {
            let value = resource.value(&report);
            let threshold = self.thresholds.of(resource);
            let key = (report.instance_id.clone(), resource);
            let above = value > f64::from(threshold);
            match (state.sides.get(&key), above) {
                (Some(Some(_)), true) | (Some(None), false) => continue,
                _ => {}
            }
            if above {
                let alert = AlertRaised {
                    instance_id: report.instance_id.clone(),
                    resource,
                    value_percent: value,
                    threshold_percent: threshold,
                    raised_at_ms: now_ms,
                };
                state.sides.insert(key, Some(alert.clone()));
                changes.push(Change::Above(alert));
            } else {
                state.sides.insert(key, None);
                changes.push(Change::Below {
                    instance_id: report.instance_id.clone(),
                    resource,
                });
            }
        }
        state.instances.insert(
            report.instance_id.clone(),
            Heard {
                report,
                heard_at_ms: now_ms,
            },
        );
        changes
    }

    /// The live instances (forgetting the silent ones), their aggregate and alerts in force.
    pub(crate) fn snapshot(&self, now_ms: u64) -> Snapshot {
        let mut state = self.state();
        state.instances.retain(|_, h| {
            let silent_ms = u64::from(h.report.interval_secs) * 1000 * SILENT_INTERVALS;
            now_ms.saturating_sub(h.heard_at_ms) <= silent_ms
        });
        let State { instances, sides } = &mut *state;
        sides.retain(|(id, _), _| instances.contains_key(id));
        let instances: Vec<InstanceReport> = instances.values().map(|h| h.report.clone()).collect();
        let alerts = sides.values().flatten().cloned().collect();
        Snapshot {
            taken_at_ms: now_ms,
            cluster: aggregate(&instances),
            instances,
            alerts,
        }
    }
}

/// Messages per second from `prev` to `next`, two beacons of one instance (by its own clock,
/// which both timestamps come from). A restarted process (another start time, a counter that
/// went down) or a beacon out of order has no rate yet: 0.
fn message_rate(prev: &InstanceReport, next: &InstanceReport) -> f64 {
    let same_run = prev.started_at_ms == next.started_at_ms;
    let elapsed_ms = next.reported_at_ms.saturating_sub(prev.reported_at_ms);
    match next
        .messages_sent_total
        .checked_sub(prev.messages_sent_total)
    {
        Some(sent) if same_run && elapsed_ms > 0 => sent as f64 * 1000.0 / elapsed_ms as f64,
        _ => 0.0,
    }
}

fn aggregate(instances: &[InstanceReport]) -> Cluster {
    let mut c = Cluster {
        instances: u32::try_from(instances.len()).unwrap_or(u32::MAX),
        ..Cluster::default()
    };
    for r in instances {
        c.cpu_percent_mean += r.cpu_percent;
        c.cpu_percent_max = c.cpu_percent_max.max(r.cpu_percent);
        c.process_rss_bytes += r.process_rss_bytes;
        c.memory_used_bytes += r.memory_used_bytes;
        c.memory_total_bytes += r.memory_total_bytes;
        c.connected_devices += r.connected_devices;
        c.listen_streams += r.listen_streams;
        c.open_streams += r.open_streams;
        c.messages_sent_per_sec += r.messages_sent_per_sec;
        for (queue, depth) in &r.queue_depths {
            let d = c.queue_depths.entry(queue.clone()).or_default();
            *d = (*d).max(*depth);
        }
        if let Some(b) = r.push_backlog {
            c.push_backlog = Some(c.push_backlog.unwrap_or(0).max(b));
        }
        if let Some(s) = r.storage_bytes {
            c.storage_bytes = Some(c.storage_bytes.unwrap_or(0) + s);
        }
    }
    if !instances.is_empty() {
        c.cpu_percent_mean /= instances.len() as f64;
    }
    c
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn report(id: &str, cpu: f64, interval_secs: u32) -> InstanceReport {
        InstanceReport {
            instance_id: id.into(),
            interval_secs,
            cpu_percent: cpu,
            memory_used_bytes: 10,
            memory_total_bytes: 100,
            disk_used_bytes: 95,
            disk_total_bytes: 100,
            connected_devices: 2,
            queue_depths: vec![("q".into(), 4)],
            push_backlog: Some(4),
            storage_bytes: Some(1000),
            ..InstanceReport::default()
        }
    }

    fn raised(changes: &[Change]) -> Vec<(String, Resource)> {
        changes
            .iter()
            .filter_map(|c| match c {
                Change::Above(a) => Some((a.instance_id.clone(), a.resource)),
                Change::Below { .. } => None,
            })
            .collect()
    }

    #[test]
    fn a_threshold_is_raised_once_per_crossing() {
        let m = Monitor::new(AlertThresholds::default());
        // First beacon: disk 95 % is above 90 %, CPU 50 % below 80 %.
        let first = m.observe(report("a", 50.0, 10), 0);
        assert_eq!(raised(&first), vec![("a".into(), Resource::Disk)]);
        assert_eq!(first.len(), 3, "every side is new: {first:?}");
        // Same sides again: nothing.
        assert!(m.observe(report("a", 60.0, 10), 1).is_empty());
        let up = m.observe(report("a", 81.0, 10), 2);
        assert_eq!(raised(&up), vec![("a".into(), Resource::Cpu)]);
        assert!(m.observe(report("a", 99.0, 10), 3).is_empty());
        let down = m.observe(report("a", 10.0, 10), 4);
        assert_eq!(
            down,
            vec![Change::Below {
                instance_id: "a".into(),
                resource: Resource::Cpu
            }]
        );
        assert_eq!(
            raised(&m.observe(report("a", 85.0, 10), 5)),
            vec![("a".into(), Resource::Cpu)]
        );
        let alerts = m.snapshot(6).alerts;
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].resource, Resource::Cpu);
        assert_eq!(alerts[0].threshold_percent, 80);
    }

    #[test]
    fn the_message_rate_is_the_counters_growth_between_two_beacons_of_one_run() {
        let m = Monitor::new(AlertThresholds::default());
        let beacon = |id: &str, started: u64, at: u64, total: u64| InstanceReport {
            started_at_ms: started,
            reported_at_ms: at,
            messages_sent_total: total,
            ..report(id, 1.0, 10)
        };
        m.observe(beacon("a", 0, 10_000, 100), 0);
        m.observe(beacon("b", 0, 10_000, 7), 0);
        // One beacon each: no rate yet.
        assert_eq!(m.snapshot(0).cluster.messages_sent_per_sec, 0.0);
        m.observe(beacon("a", 0, 12_000, 130), 1);
        m.observe(beacon("b", 0, 14_000, 27), 1);
        let s = m.snapshot(1);
        assert_eq!(s.instances[0].messages_sent_per_sec, 15.0);
        assert_eq!(s.instances[1].messages_sent_per_sec, 5.0);
        assert_eq!(s.cluster.messages_sent_per_sec, 20.0);
        // "a" restarted: its counter began again, which is no negative rate.
        m.observe(beacon("a", 20_000, 21_000, 3), 2);
        assert_eq!(m.snapshot(2).instances[0].messages_sent_per_sec, 0.0);
        // Nothing sent since: the rate falls back to 0.
        m.observe(beacon("b", 0, 15_000, 27), 2);
        assert_eq!(m.snapshot(2).cluster.messages_sent_per_sec, 0.0);
    }

    #[test]
    fn the_cluster_aggregates_live_instances_and_forgets_silent_ones() {
        let m = Monitor::new(AlertThresholds::default());
        m.observe(report("b", 40.0, 1), 0);
        m.observe(report("a", 20.0, 10), 0);
        let s = m.snapshot(3_000);
        let ids: Vec<&str> = s.instances.iter().map(|r| r.instance_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(s.cluster.instances, 2);
        assert_eq!(s.cluster.cpu_percent_mean, 30.0);
        assert_eq!(s.cluster.cpu_percent_max, 40.0);
        assert_eq!(s.cluster.connected_devices, 4);
        assert_eq!(s.cluster.queue_depths.get("q"), Some(&4));
        assert_eq!(s.cluster.push_backlog, Some(4));
        assert_eq!(s.cluster.storage_bytes, Some(2000));
        assert_eq!(s.alerts.len(), 2);
        // "b" beacons every second: silent for more than 3 s, it is gone with its alert.
        let s = m.snapshot(3_001);
        assert_eq!(s.instances.len(), 1);
        assert_eq!(s.instances[0].instance_id, "a");
        assert_eq!(s.alerts.len(), 1);
        assert_eq!(s.alerts[0].instance_id, "a");
    }
}
