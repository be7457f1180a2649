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
        self.0.require_step_up(&c.session_id).await?;
        self.0.remove_device(c.account_id, id, c.device_id).await?;
        Ok(Response::new(pb::RemoveDeviceResponse {}))
    }

    async fn request_link(
        &self,
        request: Request<pb::RequestLinkRequest>,
    ) -> Res<pb::RequestLinkResponse> {
        let ip = addr(&request);
        let new = convert::new_device(request.into_inner().device, "device")?;
        let t = self.0.request_link(new, ip).await?;
        Ok(Response::new(pb::RequestLinkResponse {
            link_code: t.code.to_string(),
            link_secret: t.secret.to_string(),
            expires_at: Some(ts_ms(t.expires_ms)),
        }))
    }

    async fn approve_link(
        &self,
        request: Request<pb::ApproveLinkRequest>,
    ) -> Res<pb::ApproveLinkResponse> {
        let c = caller(&request)?.clone();
        let r = request.into_inner();
        convert::code(&r.link_code, "link_code")?;
        self.0.require_step_up(&c.session_id).await?;
        let a = self
            .0
            .approve_link(c.account_id, c.device_id, &r.link_code)
            .await?;
        let identity_key = a.device.identity_key.clone();
        Ok(Response::new(pb::ApproveLinkResponse {
            device: Some(device(a.device_id, a.device, false)),
            identity_key,
        }))
    }

    async fn link_device(
        &self,
        request: Request<pb::LinkDeviceRequest>,
    ) -> Res<pb::LinkDeviceResponse> {
        let ip = addr(&request);
        let r = request.into_inner();
        convert::code(&r.link_code, "link_code")?;
        convert::code(&r.link_secret, "link_secret")?;
        let (account_id, device_id, t) =
            self.0.link_device(&r.link_code, &r.link_secret, ip).await?;
        Ok(Response::new(pb::LinkDeviceResponse {
            account_id: account_id.to_string(),
            device_id: device_id.get(),
            tokens: Some(tokens(t)),
        }))
    }

    async fn list_device_notices(
        &self,
        request: Request<pb::ListDeviceNoticesRequest>,
    ) -> Res<pb::ListDeviceNoticesResponse> {
        let c = caller(&request)?.clone();
        let notices = self
            .0
            .device_notices(c.account_id, c.device_id)
            .await?
            .into_iter()
            .map(|(id, n)| convert::notice(id, n))
            .collect();
        Ok(Response::new(pb::ListDeviceNoticesResponse { notices }))
    }

    async fn ack_device_notices(
        &self,
        request: Request<pb::AckDeviceNoticesRequest>,
    ) -> Res<pb::AckDeviceNoticesResponse> {
        let c = caller(&request)?.clone();
        let up_to = request.get_ref().up_to;
        self.0
            .ack_device_notices(c.account_id, c.device_id, up_to)
            .await?;
        Ok(Response::new(pb::AckDeviceNoticesResponse {}))
    }
}
