//! DeviceService handlers.

use std::sync::Arc;

use guardyn_common::caller;
use guardyn_common::ids::DeviceId;
use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_proto::guardyn::auth::v1::device_service_server::DeviceService;
use tonic::{Request, Response, Status};

use super::convert::{self, addr, device, tokens, ts_ms};
use crate::core::Core;
use crate::devices::check_name;

/// The DeviceService implementation.
#[derive(Clone, Debug)]
pub struct DeviceApi(pub Arc<Core>);

type Res<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl DeviceService for DeviceApi {
    async fn list_devices(
        &self,
        request: Request<pb::ListDevicesRequest>,
    ) -> Res<pb::ListDevicesResponse> {
        let c = caller(&request)?.clone();
        let devices = self
            .0
            .devices(c.account_id)
            .await?
            .into_iter()
            .map(|(id, d)| device(id, d, id == c.device_id))
            .collect();
        Ok(Response::new(pb::ListDevicesResponse { devices }))
    }

    async fn rename_device(
        &self,
        request: Request<pb::RenameDeviceRequest>,
    ) -> Res<pb::RenameDeviceResponse> {
        let c = caller(&request)?.clone();
        let r = request.into_inner();
        let id = DeviceId::parse_field("device_id", r.device_id)?;
        let name = check_name(&r.name, "name")?;
        let d = self.0.rename_device(c.account_id, id, name).await?;
        Ok(Response::new(pb::RenameDeviceResponse {
            device: Some(device(id, d, id == c.device_id)),
        }))
    }

    async fn remove_device(
        &self,
        request: Request<pb::RemoveDeviceRequest>,
    ) -> Res<pb::RemoveDeviceResponse> {
        let c = caller(&request)?.clone();
        let id = DeviceId::parse_field("device_id", request.get_ref().device_id)?;
        self.0.remove_device(c.account_id, id).await?;
        Ok(Response::new(pb::RemoveDeviceResponse {}))
    }

    async fn create_link_code(
        &self,
        request: Request<pb::CreateLinkCodeRequest>,
    ) -> Res<pb::CreateLinkCodeResponse> {
        let c = caller(&request)?.clone();
        let (code, expires_ms) = self.0.create_link_code(c.account_id, c.device_id).await?;
        Ok(Response::new(pb::CreateLinkCodeResponse {
            link_code: code.to_string(),
            expires_at: Some(ts_ms(expires_ms)),
        }))
    }

    async fn link_device(
        &self,
        request: Request<pb::LinkDeviceRequest>,
    ) -> Res<pb::LinkDeviceResponse> {
        let ip = addr(&request);
        let r = request.into_inner();
        convert::required(&r.link_code, "link_code")?;
        let new = convert::new_device(r.device, "device")?;
        let (account_id, device_id, t) = self.0.link_device(&r.link_code, new, ip).await?;
        Ok(Response::new(pb::LinkDeviceResponse {
            account_id: account_id.to_string(),
            device_id: device_id.get(),
            tokens: Some(tokens(t)),
        }))
    }
}
