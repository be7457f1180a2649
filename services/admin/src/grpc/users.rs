//! `AdminUserService` and `BootstrapService` over gRPC: the caller's role first, then the
//! request's fields into domain values, then `users.rs`.

use std::sync::Arc;

use guardyn_common::admin::{AccountSummary, RoleChange, SessionSummary};
use guardyn_common::auth::Role;
use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_common::wire::timestamp;
use guardyn_common::{ApiError, AuthContext, caller};
use guardyn_proto::guardyn::admin::v1 as pb;
use pb::admin_user_service_server::{AdminUserService, AdminUserServiceServer};
use pb::bootstrap_service_server::{BootstrapService, BootstrapServiceServer};
use tonic::{Request, Response, Status};

use crate::users::{Action, Users, check_role_change};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;
/// Page tokens carry the last username of the previous page behind this tag.
const TOKEN_TAG: &str = "u1:";

/// The AdminUserService implementation.
#[derive(Debug, Clone)]
pub struct AdminUserApi {
    users: Arc<Users>,
}

/// The BootstrapService implementation.
#[derive(Debug, Clone)]
pub struct BootstrapApi {
    users: Arc<Users>,
}

pub(crate) fn users_server(users: Arc<Users>) -> AdminUserServiceServer<AdminUserApi> {
    AdminUserServiceServer::new(AdminUserApi { users })
}

pub(crate) fn bootstrap_server(users: Arc<Users>) -> BootstrapServiceServer<BootstrapApi> {
    BootstrapServiceServer::new(BootstrapApi { users })
}

fn role_in(field: &'static str, value: i32) -> Result<Role, ApiError> {
    match pb::Role::try_from(value) {
        Ok(pb::Role::Owner) => Ok(Role::Owner),
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Auditor) => Ok(Role::Auditor),
        Ok(pb::Role::User) => Ok(Role::User),
        Ok(pb::Role::Unspecified) | Err(_) => Err(ApiError::invalid_field(field, "not a role")),
    }
}

fn role_out(role: Role) -> i32 {
    match role {
        Role::Owner => pb::Role::Owner,
        Role::Admin => pb::Role::Admin,
        Role::Auditor => pb::Role::Auditor,
        Role::User => pb::Role::User,
    }
    .into()
}

fn account_out(a: AccountSummary) -> pb::AccountSummary {
    pb::AccountSummary {
        account_id: a.account_id.to_string(),
        username: a.username,
        created_at: Some(timestamp(a.created_ms)),
        roles: a.roles.into_iter().map(role_out).collect(),
        suspended: a.suspended,
        device_count: a.device_count,
        mfa_enabled: a.mfa_enabled,
    }
}

fn session_out(s: SessionSummary) -> pb::AccountSession {
    pb::AccountSession {
        session_id: s.session_id,
        device_id: s.device_id.get(),
        created_at: Some(timestamp(s.created_ms)),
        last_refreshed_at: Some(timestamp(s.last_refreshed_ms)),
        expires_at: Some(timestamp(s.expires_ms)),
    }
}

fn roles_of(who: &AuthContext) -> Vec<Role> {
    who.roles.iter().filter_map(|r| Role::parse(r)).collect()
}

/// A mutation's caller: an owner or admin, with a reason.
fn manager<T>(request: &Request<T>, reason: &str) -> Result<(Action, Vec<Role>), Status> {
    let who = caller(request)?;
    who.require_role(Role::MANAGE)?;
    Ok((Action::new(who.account_id, reason)?, roles_of(who)))
}

fn account(id: &str) -> Result<AccountId, ApiError> {
    AccountId::parse_field("account_id", id)
}

#[tonic::async_trait]
impl AdminUserService for AdminUserApi {
    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        caller(&request)?.require_role(Role::READ)?;
        let r = request.get_ref();
        let size = match r.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let after = match r.page_token.as_str() {
            "" => "",
            t => t.strip_prefix(TOKEN_TAG).ok_or_else(|| {
                ApiError::invalid_field("page_token", "not a token this server issued")
            })?,
        };
        let page = self.users.list(&r.username_prefix, after, size).await?;
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: page.accounts.into_iter().map(account_out).collect(),
            next_page_token: if page.next_after.is_empty() {
                String::new()
            } else {
                format!("{TOKEN_TAG}{}", page.next_after)
            },
        }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        caller(&request)?.require_role(Role::READ)?;
        let acc = account(&request.get_ref().account_id)?;
        let summary = self.users.get(acc).await?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(account_out(summary)),
        }))
    }

    async fn set_roles(
        &self,
        request: Request<pb::SetRolesRequest>,
    ) -> Result<Response<pb::SetRolesResponse>, Status> {
        let r = request.get_ref();
        let (action, caller_roles) = manager(&request, &r.reason)?;
        let acc = account(&r.account_id)?;
        let change = RoleChange {
            grant: r
                .grant
                .iter()
                .map(|v| role_in("grant", *v))
                .collect::<Result<_, _>>()?,
            revoke: r
                .revoke
                .iter()
                .map(|v| role_in("revoke", *v))
                .collect::<Result<_, _>>()?,
        };
        check_role_change(&caller_roles, &change)?;
        let roles = self.users.set_roles(acc, &change, &action).await?;
        Ok(Response::new(pb::SetRolesResponse {
            roles: roles.into_iter().map(role_out).collect(),
        }))
    }

    async fn suspend_account(
        &self,
        request: Request<pb::SuspendAccountRequest>,
    ) -> Result<Response<pb::SuspendAccountResponse>, Status> {
        let r = request.get_ref();
        let (action, _) = manager(&request, &r.reason)?;
        let acc = account(&r.account_id)?;
        let sessions_revoked = self.users.suspend(acc, &action).await?;
        Ok(Response::new(pb::SuspendAccountResponse {
            sessions_revoked,
        }))
    }

    async fn unsuspend_account(
        &self,
        request: Request<pb::UnsuspendAccountRequest>,
    ) -> Result<Response<pb::UnsuspendAccountResponse>, Status> {
        let r = request.get_ref();
        let (action, _) = manager(&request, &r.reason)?;
        let acc = account(&r.account_id)?;
        self.users.unsuspend(acc, &action).await?;
        Ok(Response::new(pb::UnsuspendAccountResponse {}))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let r = request.get_ref();
        let (action, _) = manager(&request, &r.reason)?;
        let acc = account(&r.account_id)?;
        self.users.delete(acc, &action).await?;
        Ok(Response::new(pb::DeleteAccountResponse {}))
    }

    async fn reset_mfa(
        &self,
        request: Request<pb::ResetMfaRequest>,
    ) -> Result<Response<pb::ResetMfaResponse>, Status> {
        let r = request.get_ref();
        let (action, _) = manager(&request, &r.reason)?;
        let acc = account(&r.account_id)?;
        let was_enabled = self.users.reset_mfa(acc, &action).await?;
        Ok(Response::new(pb::ResetMfaResponse { was_enabled }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        caller(&request)?.require_role(Role::READ)?;
        let acc = account(&request.get_ref().account_id)?;
        let sessions = self.users.sessions(acc).await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.into_iter().map(session_out).collect(),
        }))
    }

    async fn terminate_sessions(
        &self,
        request: Request<pb::TerminateSessionsRequest>,
    ) -> Result<Response<pb::TerminateSessionsResponse>, Status> {
        let r = request.get_ref();
        let (action, _) = manager(&request, &r.reason)?;
        let acc = account(&r.account_id)?;
        let session = Some(r.session_id.as_str()).filter(|s| !s.is_empty());
        if session.is_some_and(|s| s.len() > 64) {
            return Err(ApiError::invalid_field("session_id", "too long").into());
        }
        let sessions_revoked = self.users.terminate(acc, session, &action).await?;
        Ok(Response::new(pb::TerminateSessionsResponse {
            sessions_revoked,
        }))
    }

    async fn remove_device(
        &self,
        request: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceResponse>, Status> {
        let r = request.get_ref();
        let (action, _) = manager(&request, &r.reason)?;
        let acc = account(&r.account_id)?;
        let dev = DeviceId::parse_field("device_id", r.device_id)?;
        self.users.remove_device(acc, dev, &action).await?;
        Ok(Response::new(pb::RemoveDeviceResponse {}))
    }
}

#[tonic::async_trait]
impl BootstrapService for BootstrapApi {
    async fn claim_owner(
        &self,
        request: Request<pb::ClaimOwnerRequest>,
    ) -> Result<Response<pb::ClaimOwnerResponse>, Status> {
        // Any signed-in account may try: the code is the credential.
        let who = caller(&request)?.account_id;
        let code = request.get_ref().code.as_str();
        if code.trim().is_empty() || code.len() > 128 {
            return Err(ApiError::invalid_field("code", "1..=128 bytes").into());
        }
        self.users.claim_owner(who, code).await?;
        Ok(Response::new(pb::ClaimOwnerResponse {}))
    }
}
