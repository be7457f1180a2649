//! AuthService handlers.

use std::sync::Arc;

use guardyn_common::caller;
use guardyn_common::ids::DeviceId;
use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_proto::guardyn::auth::v1::auth_service_server::AuthService;
use tonic::{Request, Response, Status};

use super::convert::{self, addr, tokens, ts_ms};
use super::paging;
use crate::accounts::LoginOutcome;
use crate::core::Core;
use crate::error::AuthError;

/// The AuthService implementation.
#[derive(Clone, Debug)]
pub struct AuthApi(pub Arc<Core>);

type Res<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Res<pb::RegisterResponse> {
        let ip = addr(&request);
        let r = request.into_inner();
        let device = convert::new_device(r.device, "device")?;
        let (account_id, t) = self
            .0
            .register(&r.username, &r.password, device, ip)
            .await?;
        Ok(Response::new(pb::RegisterResponse {
            account_id: account_id.to_string(),
            device_id: DeviceId::FIRST.get(),
            tokens: Some(tokens(t)),
        }))
    }

    async fn login(&self, request: Request<pb::LoginRequest>) -> Res<pb::LoginResponse> {
        let ip = addr(&request);
        let r = request.into_inner();
        let (account_id, outcome) = self
            .0
            .login(&r.username, &r.password, r.device_id, ip)
            .await?;
        let outcome = match outcome {
            LoginOutcome::Tokens(t) => pb::login_response::Outcome::Tokens(tokens(t)),
            LoginOutcome::Mfa { ticket, expires_ms } => {
                pb::login_response::Outcome::MfaChallenge(pb::MfaChallenge {
                    mfa_ticket: ticket.to_string(),
                    expires_at: Some(ts_ms(expires_ms)),
                })
            }
        };
        Ok(Response::new(pb::LoginResponse {
            outcome: Some(outcome),
            account_id: account_id.to_string(),
        }))
    }

    async fn complete_mfa_login(
        &self,
        request: Request<pb::CompleteMfaLoginRequest>,
    ) -> Res<pb::CompleteMfaLoginResponse> {
        let ip = addr(&request);
        let r = request.into_inner();
        convert::required(&r.mfa_ticket, "mfa_ticket")?;
        let factor = match r.code {
            Some(pb::complete_mfa_login_request::Code::TotpCode(c)) => convert::factor_totp(c),
            Some(pb::complete_mfa_login_request::Code::RecoveryCode(c)) => {
                convert::factor_recovery(c)
            }
            None => {
                return Err(AuthError::field("code", "a TOTP or recovery code is required").into());
            }
        };
        let (t, remaining) = self.0.complete_mfa_login(&r.mfa_ticket, factor, ip).await?;
        Ok(Response::new(pb::CompleteMfaLoginResponse {
            tokens: Some(tokens(t)),
            remaining_recovery_codes: remaining,
        }))
    }

    async fn refresh_session(
        &self,
        request: Request<pb::RefreshSessionRequest>,
    ) -> Res<pb::RefreshSessionResponse> {
        let ip = addr(&request);
        let r = request.into_inner();
        let t = self.0.refresh_from(&r.refresh_token, ip).await?;
        Ok(Response::new(pb::RefreshSessionResponse {
            tokens: Some(tokens(t)),
        }))
    }

    async fn logout(&self, request: Request<pb::LogoutRequest>) -> Res<pb::LogoutResponse> {
        let c = caller(&request)?.clone();
        if request.get_ref().all_sessions {
            self.0.require_step_up(&c.session_id).await?;
        }
        let n = self
            .0
            .logout(c.account_id, &c.session_id, request.get_ref().all_sessions)
            .await?;
        Ok(Response::new(pb::LogoutResponse {
            revoked_sessions: n,
        }))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Res<pb::ChangePasswordResponse> {
        let c = caller(&request)?.clone();
        let r = request.into_inner();
        self.0.require_step_up(&c.session_id).await?;
        let n = self
            .0
            .change_password(
                c.account_id,
                &c.session_id,
                &r.old_password,
                &r.new_password,
            )
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {
            revoked_sessions: n,
        }))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Res<pb::DeleteAccountResponse> {
        let c = caller(&request)?.clone();
        let r = request.into_inner();
        let factor = r.second_factor.map(|f| match f {
            pb::delete_account_request::SecondFactor::TotpCode(c) => convert::factor_totp(c),
            pb::delete_account_request::SecondFactor::RecoveryCode(c) => {
                convert::factor_recovery(c)
            }
        });
        self.0
            .delete_account(c.account_id, &r.password, factor)
            .await?;
        Ok(Response::new(pb::DeleteAccountResponse {}))
    }

    async fn step_up(&self, request: Request<pb::StepUpRequest>) -> Res<pb::StepUpResponse> {
        let c = caller(&request)?.clone();
        let r = request.into_inner();
        convert::required(&r.password, "password")?;
        let factor = r.second_factor.map(|f| match f {
            pb::step_up_request::SecondFactor::TotpCode(c) => convert::factor_totp(c),
            pb::step_up_request::SecondFactor::RecoveryCode(c) => convert::factor_recovery(c),
        });
        let until = self
            .0
            .step_up(c.account_id, &c.session_id, &r.password, factor)
            .await?;
        Ok(Response::new(pb::StepUpResponse {
            valid_until: Some(convert::ts_ms(until)),
        }))
    }

    async fn get_verification_keys(
        &self,
        _request: Request<pb::GetVerificationKeysRequest>,
    ) -> Res<pb::GetVerificationKeysResponse> {
        let keys = self
            .0
            .keys
            .published()
            .into_iter()
            .map(convert::verification_key)
            .collect();
        Ok(Response::new(pb::GetVerificationKeysResponse {
            keys,
            cache_ttl: Some(convert::duration_s(
                self.0.config.verification_keys_cache_secs,
            )),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Res<pb::ListSessionsResponse> {
        let c = caller(&request)?.clone();
        let r = request.get_ref();
        let size = paging::page_size(r.page_size)?;
        let after = paging::page_token(&r.page_token)?;
        let page = self
            .0
            .session_page(c.account_id, &c.session_id, size, after.as_deref())
            .await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: page.sessions.into_iter().map(convert::session).collect(),
            next_page_token: page
                .next_after
                .map(|sid| paging::encode_page_token(&sid))
                .unwrap_or_default(),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Res<pb::RevokeSessionResponse> {
        let c = caller(&request)?.clone();
        let sid = convert::session_id(&request.get_ref().session_id, "session_id")?;
        if sid != c.session_id {
            self.0.require_step_up(&c.session_id).await?;
        }
        self.0.revoke_own_session(c.account_id, &sid).await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn lookup_username(
        &self,
        request: Request<pb::LookupUsernameRequest>,
    ) -> Res<pb::LookupUsernameResponse> {
        let c = caller(&request)?.clone();
        let acc = self
            .0
            .lookup_username(c.account_id, &request.get_ref().username)
            .await?;
        Ok(Response::new(pb::LookupUsernameResponse {
            account_id: acc.to_string(),
        }))
    }

    async fn set_username_discoverable(
        &self,
        request: Request<pb::SetUsernameDiscoverableRequest>,
    ) -> Res<pb::SetUsernameDiscoverableResponse> {
        let c = caller(&request)?.clone();
        self.0
            .set_username_discoverable(c.account_id, request.get_ref().discoverable)
            .await?;
        Ok(Response::new(pb::SetUsernameDiscoverableResponse {}))
    }
}
