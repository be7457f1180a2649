//! MfaService handlers.

use std::sync::Arc;

use guardyn_common::caller;
use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_proto::guardyn::auth::v1::mfa_service_server::MfaService;
use tonic::{Request, Response, Status};

use super::convert::{self, ts_ms};
use crate::core::Core;
use crate::error::AuthError;

/// The MfaService implementation.
#[derive(Clone, Debug)]
pub struct MfaApi(pub Arc<Core>);

type Res<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl MfaService for MfaApi {
    async fn begin_totp_enrollment(
        &self,
        request: Request<pb::BeginTotpEnrollmentRequest>,
    ) -> Res<pb::BeginTotpEnrollmentResponse> {
        let c = caller(&request)?.clone();
        self.0.require_step_up(&c.session_id).await?;
        let e = self.0.begin_totp(c.account_id).await?;
        Ok(Response::new(pb::BeginTotpEnrollmentResponse {
            otpauth_uri: e.uri.to_string(),
            secret: e.secret_b32.to_string(),
            expires_at: Some(ts_ms(e.expires_ms)),
        }))
    }

    async fn confirm_totp_enrollment(
        &self,
        request: Request<pb::ConfirmTotpEnrollmentRequest>,
    ) -> Res<pb::ConfirmTotpEnrollmentResponse> {
        let c = caller(&request)?.clone();
        self.0.require_step_up(&c.session_id).await?;
        let codes = self
            .0
            .confirm_totp(c.account_id, &request.get_ref().totp_code)
            .await?;
        Ok(Response::new(pb::ConfirmTotpEnrollmentResponse {
            recovery_codes: codes.iter().map(|c| c.to_string()).collect(),
        }))
    }

    async fn disable_totp(
        &self,
        request: Request<pb::DisableTotpRequest>,
    ) -> Res<pb::DisableTotpResponse> {
        let c = caller(&request)?.clone();
        let r = request.into_inner();
        let factor = match r.second_factor {
            Some(pb::disable_totp_request::SecondFactor::TotpCode(c)) => convert::factor_totp(c),
            Some(pb::disable_totp_request::SecondFactor::RecoveryCode(c)) => {
                convert::factor_recovery(c)
            }
            None => {
                return Err(AuthError::field(
                    "second_factor",
                    "a TOTP or recovery code is required",
                )
                .into());
            }
        };
        self.0
            .disable_totp(c.account_id, &r.password, factor)
            .await?;
        Ok(Response::new(pb::DisableTotpResponse {}))
    }

    async fn regenerate_recovery_codes(
        &self,
        request: Request<pb::RegenerateRecoveryCodesRequest>,
    ) -> Res<pb::RegenerateRecoveryCodesResponse> {
        let c = caller(&request)?.clone();
        let codes = self
            .0
            .regenerate_recovery_codes(c.account_id, &request.get_ref().totp_code)
            .await?;
        Ok(Response::new(pb::RegenerateRecoveryCodesResponse {
            recovery_codes: codes.iter().map(|c| c.to_string()).collect(),
        }))
    }

    async fn get_mfa_status(
        &self,
        request: Request<pb::GetMfaStatusRequest>,
    ) -> Res<pb::GetMfaStatusResponse> {
        let c = caller(&request)?.clone();
        let (enabled, remaining) = self.0.mfa_status(c.account_id).await?;
        Ok(Response::new(pb::GetMfaStatusResponse {
            totp_enabled: enabled.is_some(),
            totp_enabled_at: enabled.map(ts_ms),
            remaining_recovery_codes: remaining,
        }))
    }
}
