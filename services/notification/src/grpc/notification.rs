//! `NotificationService` over gRPC. Every RPC acts on the calling device only: the account and
//! device come from the access token, never from the request.

use guardyn_common::ApiError;
use guardyn_common::caller;
use guardyn_proto::guardyn::notification::v1::{
    GetNotificationSettingsRequest, GetNotificationSettingsResponse, ListPushTokensRequest,
    ListPushTokensResponse, RegisterPushTokenRequest, RegisterPushTokenResponse,
    SetNotificationSettingsRequest, SetNotificationSettingsResponse, UnregisterPushTokenRequest,
    UnregisterPushTokenResponse, notification_service_server::NotificationService,
};
use tonic::{Request, Response, Status};

use super::{NotificationApi, convert};
use crate::model::TokenId;

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    async fn register_push_token(
        &self,
        request: Request<RegisterPushTokenRequest>,
    ) -> Result<Response<RegisterPushTokenResponse>, Status> {
        let who = caller(&request)?;
        let (account, device) = (who.account_id, who.device_id);
        let new = convert::new_token(request.into_inner(), &self.core.cfg)?;
        self.core.write_limiter.check(&(account, device))?;
        let id = self.core.register_token(account, device, new).await?;
        Ok(Response::new(RegisterPushTokenResponse {
            push_token_id: id.to_string(),
        }))
    }

    async fn unregister_push_token(
        &self,
        request: Request<UnregisterPushTokenRequest>,
    ) -> Result<Response<UnregisterPushTokenResponse>, Status> {
        let who = caller(&request)?;
        let (account, device) = (who.account_id, who.device_id);
        let id = TokenId::parse(&request.get_ref().push_token_id).ok_or_else(|| {
            ApiError::invalid_field("push_token_id", "must be a token id from RegisterPushToken")
        })?;
        self.core.write_limiter.check(&(account, device))?;
        self.core.unregister_token(account, device, id).await?;
        Ok(Response::new(UnregisterPushTokenResponse {}))
    }

    async fn list_push_tokens(
        &self,
        request: Request<ListPushTokensRequest>,
    ) -> Result<Response<ListPushTokensResponse>, Status> {
        let who = caller(&request)?;
        let tokens = self.core.list_tokens(who.account_id, who.device_id).await?;
        Ok(Response::new(ListPushTokensResponse {
            push_tokens: tokens.into_iter().map(convert::token_info).collect(),
        }))
    }

    async fn set_notification_settings(
        &self,
        request: Request<SetNotificationSettingsRequest>,
    ) -> Result<Response<SetNotificationSettingsResponse>, Status> {
        let who = caller(&request)?;
        let (account, device) = (who.account_id, who.device_id);
        let settings = convert::settings(request.into_inner().settings)?;
        self.core.write_limiter.check(&(account, device))?;
        let stored = self.core.set_settings(account, device, settings).await?;
        Ok(Response::new(SetNotificationSettingsResponse {
            settings: Some(convert::settings_out(stored)),
        }))
    }

    async fn get_notification_settings(
        &self,
        request: Request<GetNotificationSettingsRequest>,
    ) -> Result<Response<GetNotificationSettingsResponse>, Status> {
        let who = caller(&request)?;
        let s = self.core.settings(who.account_id, who.device_id).await?;
        Ok(Response::new(GetNotificationSettingsResponse {
            settings: Some(convert::settings_out(s)),
        }))
    }
}
