//! The monitoring beacon every process publishes, whatever services it hosts: its own figures
//! (host CPU and memory, the data directory's disk, its streams, the queues' backlog, the
//! embedded engine's size, the messages it accepted so far) on `monitoring.beacon` every
//! `monitoring.beacon_interval_secs`. The admin service aggregates the beacons it hears (and
//! turns two message counts into a rate); nothing polls the instances.

mod sample;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use guardyn_common::clock::SharedClock;
use guardyn_common::config::{ConfigError, Validate, key};
use guardyn_common::events::Payload as _;
use guardyn_common::events::monitoring::{BEACON, InstanceReport, MESSAGE_SEND_METHODS};
use guardyn_common::events::notification::WAKE_QUEUE;
use guardyn_common::server::ServerContext;
use guardyn_events::EventBus;
use serde::{Deserialize, Serialize};

use sample::Sampler;

/// `[monitoring]`: what every process reports about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitoringConfig {
    /// Seconds between two beacons of this process. The admin service forgets an instance
    /// silent for three of its intervals.
    pub beacon_interval_secs: u32,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            beacon_interval_secs: 10,
        }
    }
}

impl Validate for MonitoringConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !(1..=3600).contains(&self.beacon_interval_secs) {
            return Err(ConfigError::new(
                key(prefix, "beacon_interval_secs"),
                "must be between 1 and 3600",
            ));
        }
        Ok(())
    }
}

/// What a process's beacon describes, fixed at start.
#[derive(Debug)]
pub struct Beacon {
    pub bus: Arc<dyn EventBus>,
    pub clock: SharedClock,
    pub ctx: ServerContext,
    pub interval_secs: u32,
    /// `--service` names hosted.
    pub services: Vec<String>,
    pub data_dir: PathBuf,
    /// Whether the storage engine lives in `data_dir` (its size is then the directory's).
    pub embedded: bool,
}

/// `--service` names of the hosted gRPC services (`guardyn.auth.v1.AuthService` → `auth`).
pub fn service_names(grpc_names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = grpc_names
        .iter()
        .filter_map(|n| n.strip_prefix("guardyn.")?.split('.').next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

impl Beacon {
    /// Publish a beacon at once and then every interval until shutdown. A failed publish is
    /// logged and the next one tried: the admin service forgets this instance only after
    /// three missed intervals.
    pub async fn run(self) {
        let started_at_ms = self.clock.now_ms();
        let mut sampler = Sampler::new(self.data_dir.clone(), self.embedded);
        let mut tick = tokio::time::interval(Duration::from_secs(self.interval_secs.into()));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let report = self.report(&mut sampler, started_at_ms).await;
            if let Err(e) = self.bus.publish(BEACON, report.encode()).await {
                tracing::warn!(error = %e, "could not publish the monitoring beacon");
            }
        }
    }

    async fn report(&self, sampler: &mut Sampler, started_at_ms: u64) -> InstanceReport {
        let host = sampler.sample().await;
        let stats = self.ctx.stats.snapshot();
        // Cluster-wide: every instance sees the same backlog.
        let push_backlog = match self.bus.queue_depth(WAKE_QUEUE).await {
            Ok(depth) => Some(depth),
            Err(e) => {
                tracing::debug!(error = %e, "wake queue depth unknown");
                None
            }
        };
        InstanceReport {
            instance_id: self.ctx.instance_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            services: self.services.clone(),
            started_at_ms,
            reported_at_ms: self.clock.now_ms(),
            interval_secs: self.interval_secs,
            cpu_percent: host.cpu_percent,
            process_cpu_percent: host.process_cpu_percent,
            process_rss_bytes: host.process_rss_bytes,
            memory_used_bytes: host.memory_used_bytes,
            memory_total_bytes: host.memory_total_bytes,
            disk_used_bytes: host.disk_used_bytes,
            disk_total_bytes: host.disk_total_bytes,
            connected_devices: stats.connected_devices,
            listen_streams: stats.listen_streams,
            open_streams: stats.open_streams,
            queue_depths: push_backlog
                .map(|d| vec![(WAKE_QUEUE.to_owned(), d)])
                .unwrap_or_default(),
            push_backlog,
            storage_bytes: host.storage_bytes,
            messages_sent_total: self.ctx.metrics.handled_ok(&MESSAGE_SEND_METHODS),
            messages_sent_per_sec: 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosted_services_are_named_by_their_package() {
        assert_eq!(
            service_names(&[
                "guardyn.auth.v1.AuthService",
                "guardyn.auth.v1.MfaService",
                "guardyn.admin.v1.MonitoringService",
                "grpc.health.v1.Health",
            ]),
            vec!["admin".to_owned(), "auth".to_owned()]
        );
    }
}
