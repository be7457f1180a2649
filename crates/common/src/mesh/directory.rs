//! [`DeviceDirectory`] across processes: a client of `guardyn.internal.v1.DeviceDirectoryService`,
//! which the process hosting auth serves on its mesh listener.
//!
//! Every method is a read (the claim check looks a claim up and does not consume it), so every
//! call is retried on `UNAVAILABLE` with [`retry_idempotent`]; each attempt carries the mesh
//! call deadline. Failures surface as [`MeshError::Call`] with the upstream status, so
//! [`MeshError::is_retryable`] tells an outage from a bug.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use guardyn_proto::guardyn::internal::v1 as pb;
use pb::device_directory_service_client::DeviceDirectoryServiceClient;

use super::{DeviceDirectory, DeviceEntry, MeshChannel, MeshConfig, MeshError, retry_idempotent};

/// [`DeviceDirectory`] over gRPC to the mesh listeners of auth's processes.
#[derive(Clone)]
pub struct RemoteDeviceDirectory {
    client: DeviceDirectoryServiceClient<MeshChannel>,
    attempts: u32,
    deadline: Duration,
}

impl fmt::Debug for RemoteDeviceDirectory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteDeviceDirectory")
            .field("attempts", &self.attempts)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl RemoteDeviceDirectory {
    /// Over `channel` (see [`super::channel`] on `mesh.directory_addresses`).
    pub fn new(channel: MeshChannel, config: &MeshConfig) -> Self {
        Self {
            client: DeviceDirectoryServiceClient::new(channel),
            attempts: config.max_attempts,
            deadline: Duration::from_millis(config.call_timeout_ms),
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        // Sent as grpc-timeout, so the server gives up when the caller has.
        request.set_timeout(self.deadline);
        request
    }
}

#[async_trait]
impl DeviceDirectory for RemoteDeviceDirectory {
    async fn devices(&self, account_id: &str) -> Result<Option<Vec<DeviceEntry>>, MeshError> {
        let response = retry_idempotent(self.attempts, || {
            let mut client = self.client.clone();
            let request = self.request(pb::ListDevicesRequest {
                account_id: account_id.to_owned(),
            });
            async move { client.list_devices(request).await }
        })
        .await?
        .into_inner();
        if !response.found {
            return Ok(None);
        }
        Ok(Some(
            response
                .devices
                .into_iter()
                .map(|d| DeviceEntry {
                    device_id: d.device_id,
                    registration_id: d.registration_id,
                })
                .collect(),
        ))
    }

    async fn mls_key_pinned(
        &self,
        account_id: &str,
        device_id: u32,
        signature_key: &[u8],
    ) -> Result<bool, MeshError> {
        let response = retry_idempotent(self.attempts, || {
            let mut client = self.client.clone();
            let request = self.request(pb::CheckMlsKeyPinnedRequest {
                account_id: account_id.to_owned(),
                device_id,
                signature_key: signature_key.to_vec(),
            });
            async move { client.check_mls_key_pinned(request).await }
        })
        .await?;
        Ok(response.into_inner().pinned)
    }

    async fn key_package_claimed(
        &self,
        account_id: &str,
        device_id: u32,
        key_package_ref: &[u8],
    ) -> Result<bool, MeshError> {
        let response = retry_idempotent(self.attempts, || {
            let mut client = self.client.clone();
            let request = self.request(pb::CheckKeyPackageClaimedRequest {
                account_id: account_id.to_owned(),
                device_id,
                key_package_ref: key_package_ref.to_vec(),
            });
            async move { client.check_key_package_claimed(request).await }
        })
        .await?;
        Ok(response.into_inner().claimed)
    }
}
