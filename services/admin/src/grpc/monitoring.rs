//! `MonitoringService` over gRPC: role check, then the monitor's snapshot in wire form.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use guardyn_common::ApiError;
use guardyn_common::auth::Role;
use guardyn_common::caller;
use guardyn_common::wire::timestamp;
use guardyn_proto::guardyn::admin::v1::monitoring_service_server::{
    MonitoringService, MonitoringServiceServer,
};
use guardyn_proto::guardyn::admin::v1::{
    ClusterStatus, GetMonitoringDataRequest, GetMonitoringDataResponse, MonitoringSnapshot,
    QueueDepth, WatchMonitoringRequest, WatchMonitoringResponse,
};
use tonic::{Request, Response, Status};

use crate::core::Core;
use crate::monitoring::{Cluster, Monitor, Snapshot};

/// Seconds between streamed snapshots when the client does not say.
const DEFAULT_WATCH_SECS: u32 = 5;
const MAX_WATCH_SECS: u32 = 300;

/// The MonitoringService implementation.
#[derive(Debug, Clone)]
pub struct MonitoringApi {
    core: Arc<Core>,
    monitor: Arc<Monitor>,
}

pub(crate) fn monitoring_server(
    core: Arc<Core>,
    monitor: Arc<Monitor>,
) -> MonitoringServiceServer<MonitoringApi> {
    MonitoringServiceServer::new(MonitoringApi { core, monitor })
}

impl MonitoringApi {
    fn snapshot(&self) -> MonitoringSnapshot {
        snapshot_out(self.monitor.snapshot(self.core.clock.now_ms()))
    }
}

fn queues_out(depths: impl IntoIterator<Item = (String, u64)>) -> Vec<QueueDepth> {
    depths
        .into_iter()
        .map(|(queue, depth)| QueueDepth { queue, depth })
        .collect()
}

fn cluster_out(c: Cluster) -> ClusterStatus {
    ClusterStatus {
        instances: c.instances,
        cpu_percent_mean: c.cpu_percent_mean,
        cpu_percent_max: c.cpu_percent_max,
        process_rss_bytes: c.process_rss_bytes,
        memory_used_bytes: c.memory_used_bytes,
        memory_total_bytes: c.memory_total_bytes,
        connected_devices: c.connected_devices,
        listen_streams: c.listen_streams,
        open_streams: c.open_streams,
        queue_depths: queues_out(c.queue_depths.into_iter().collect::<BTreeMap<_, _>>()),
        push_backlog: c.push_backlog,
        storage_bytes: c.storage_bytes,
        messages_sent_per_sec: c.messages_sent_per_sec,
    }
}

fn snapshot_out(s: Snapshot) -> MonitoringSnapshot {
    MonitoringSnapshot {
        taken_at: Some(timestamp(s.taken_at_ms)),
        instances: s.instances.iter().map(|r| r.to_status()).collect(),
        cluster: Some(cluster_out(s.cluster)),
        alerts: s.alerts.iter().map(|a| a.to_alert()).collect(),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchMonitoringResponse, Status>> + Send>>;

#[tonic::async_trait]
impl MonitoringService for MonitoringApi {
    async fn get_monitoring_data(
        &self,
        request: Request<GetMonitoringDataRequest>,
    ) -> Result<Response<GetMonitoringDataResponse>, Status> {
        caller(&request)?.require_role(Role::READ)?;
        Ok(Response::new(GetMonitoringDataResponse {
            snapshot: Some(self.snapshot()),
        }))
    }

    type WatchMonitoringStream = WatchStream;

    async fn watch_monitoring(
        &self,
        request: Request<WatchMonitoringRequest>,
    ) -> Result<Response<Self::WatchMonitoringStream>, Status> {
        let who = caller(&request)?;
        who.require_role(Role::READ)?;
        let auth = self.core.ctx.verifier.guard_stream(who);
        let secs = match request.get_ref().interval_secs {
            0 => DEFAULT_WATCH_SECS,
            s if s <= MAX_WATCH_SECS => s,
            _ => {
                return Err(ApiError::invalid_field(
                    "interval_secs",
                    format!("at most {MAX_WATCH_SECS}"),
                )
                .into());
            }
        };
        let mut tick = tokio::time::interval(Duration::from_secs(secs.into()));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let api = self.clone();
        let shutdown = self.core.ctx.shutdown.clone();
        let snapshots = futures::stream::unfold(tick, move |mut tick| {
            let api = api.clone();
            async move {
                tick.tick().await;
                let item = WatchMonitoringResponse {
                    snapshot: Some(api.snapshot()),
                };
                Some((Ok(item), tick))
            }
        })
        .take_until(async move { shutdown.cancelled_owned().await });
        Ok(Response::new(Box::pin(auth.wrap(snapshots))))
    }
}
