//! `guardyn.internal.v1.DeviceDirectoryService`: the in-process [`AuthDirectory`] for other
//! processes of the mesh. Registered as an internal service, so only the mesh listener serves
//! it; its callers are services, not devices, hence no `caller()` check here.

use guardyn_common::mesh::{DeviceDirectory as _, MeshError};
use guardyn_proto::guardyn::internal::v1 as pb;
use pb::device_directory_service_server::DeviceDirectoryService;
use tonic::{Request, Response, Status};

use crate::directory::AuthDirectory;

/// The internal directory API.
#[derive(Clone, Debug)]
pub struct DirectoryApi(pub(crate) AuthDirectory);

fn status(e: MeshError) -> Status {
    match e {
        MeshError::Call(s) => s,
        other => Status::unavailable(other.to_string()),
    }
}

#[tonic::async_trait]
impl DeviceDirectoryService for DirectoryApi {
    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let devices = self
            .0
            .devices(&request.into_inner().account_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListDevicesResponse {
            found: devices.is_some(),
            devices: devices
                .unwrap_or_default()
                .into_iter()
                .map(|d| pb::DirectoryDevice {
                    device_id: d.device_id,
                    registration_id: d.registration_id,
                })
                .collect(),
        }))
    }

    async fn check_mls_key_pinned(
        &self,
        request: Request<pb::CheckMlsKeyPinnedRequest>,
    ) -> Result<Response<pb::CheckMlsKeyPinnedResponse>, Status> {
        let r = request.into_inner();
        let pinned = self
            .0
            .mls_key_pinned(&r.account_id, r.device_id, &r.signature_key)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CheckMlsKeyPinnedResponse { pinned }))
    }

    async fn check_key_package_claimed(
        &self,
        request: Request<pb::CheckKeyPackageClaimedRequest>,
    ) -> Result<Response<pb::CheckKeyPackageClaimedResponse>, Status> {
        let r = request.into_inner();
        let claimed = self
            .0
            .key_package_claimed(&r.account_id, r.device_id, &r.key_package_ref)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CheckKeyPackageClaimedResponse {
            claimed,
        }))
    }
}
