//! Monitoring data of the cluster (roles owner, admin, auditor).

use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::monitoring_service_client::MonitoringServiceClient;

use crate::client::Client;
use crate::error::SdkError;

impl Client {
    /// The latest figures of every live instance, the cluster aggregate and the alerts in
    /// force.
    pub async fn monitoring_data(&self) -> Result<pb::MonitoringSnapshot, SdkError> {
        let response = self
            .inner
            .call(pb::GetMonitoringDataRequest {}, |ch, r| async move {
                MonitoringServiceClient::new(ch)
                    .get_monitoring_data(r)
                    .await
            })
            .await?;
        Ok(response.snapshot.unwrap_or_default())
    }

    /// A snapshot at once and then every `interval_secs` (1..=300; 0 = the server's default).
    pub async fn watch_monitoring(
        &self,
        interval_secs: u32,
    ) -> Result<tonic::Streaming<pb::WatchMonitoringResponse>, SdkError> {
        Ok(self
            .inner
            .call(
                pb::WatchMonitoringRequest { interval_secs },
                |ch, r| async move { MonitoringServiceClient::new(ch).watch_monitoring(r).await },
            )
            .await?)
    }
}
