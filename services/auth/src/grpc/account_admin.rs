//! `guardyn.internal.v1.AccountAdminService`: the in-process [`AuthAccountAdmin`] for an admin
//! service in another process. Internal (mesh listener only); its caller is the admin service,
//! which checked the admin's role, so there is no `caller()` check here.

use guardyn_common::admin::{AccountAdmin as _, AccountAdminError, RoleChange};
use guardyn_common::auth::Role;
use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_common::mesh::account_admin::{account_record, session_record, to_status};
use guardyn_proto::guardyn::internal::v1 as pb;
use pb::account_admin_service_server::AccountAdminService;
use tonic::{Request, Response, Status};

use crate::admin_seam::AuthAccountAdmin;

/// The internal account administration API.
#[derive(Clone, Debug)]
pub struct AccountAdminApi(pub(crate) AuthAccountAdmin);

/// A malformed id names no account, as in-process.
fn account(id: &str) -> Result<AccountId, Status> {
    AccountId::parse(id).ok_or_else(|| to_status(AccountAdminError::NotFound("account")))
}

fn roles(names: &[String], field: &str) -> Result<Vec<Role>, Status> {
    names
        .iter()
        .map(|n| Role::parse(n).ok_or_else(|| Status::invalid_argument(format!("{field}: {n:?}"))))
        .collect()
}

#[tonic::async_trait]
impl AccountAdminService for AccountAdminApi {
    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let r = request.into_inner();
        let page = self
            .0
            .list_accounts(&r.username_prefix, &r.after_username, r.limit)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::ListAccountsResponse {
            accounts: page.accounts.into_iter().map(account_record).collect(),
            next_after: page.next_after,
        }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let acc = account(&request.get_ref().account_id)?;
        let summary = self.0.get_account(acc).await.map_err(to_status)?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(account_record(summary)),
        }))
    }

    async fn set_roles(
        &self,
        request: Request<pb::SetRolesRequest>,
    ) -> Result<Response<pb::SetRolesResponse>, Status> {
        let r = request.into_inner();
        let acc = account(&r.account_id)?;
        let change = RoleChange {
            grant: roles(&r.grant, "grant")?,
            revoke: roles(&r.revoke, "revoke")?,
        };
        let now = self.0.set_roles(acc, &change).await.map_err(to_status)?;
        Ok(Response::new(pb::SetRolesResponse {
            roles: now.iter().map(|r| r.as_str().to_owned()).collect(),
        }))
    }

    async fn claim_owner(
        &self,
        request: Request<pb::ClaimOwnerRequest>,
    ) -> Result<Response<pb::ClaimOwnerResponse>, Status> {
        let acc = account(&request.get_ref().account_id)?;
        self.0.claim_owner(acc).await.map_err(to_status)?;
        Ok(Response::new(pb::ClaimOwnerResponse {}))
    }

    async fn set_suspended(
        &self,
        request: Request<pb::SetSuspendedRequest>,
    ) -> Result<Response<pb::SetSuspendedResponse>, Status> {
        let r = request.get_ref();
        let acc = account(&r.account_id)?;
        let sessions_revoked = self
            .0
            .set_suspended(acc, r.suspended)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::SetSuspendedResponse { sessions_revoked }))
    }

    async fn delete_account(
        &self,
        request: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        let acc = account(&request.get_ref().account_id)?;
        self.0.delete_account(acc).await.map_err(to_status)?;
        Ok(Response::new(pb::DeleteAccountResponse {}))
    }

    async fn reset_mfa(
        &self,
        request: Request<pb::ResetMfaRequest>,
    ) -> Result<Response<pb::ResetMfaResponse>, Status> {
        let acc = account(&request.get_ref().account_id)?;
        let was_enabled = self.0.reset_mfa(acc).await.map_err(to_status)?;
        Ok(Response::new(pb::ResetMfaResponse { was_enabled }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let acc = account(&request.get_ref().account_id)?;
        let sessions = self.0.list_sessions(acc).await.map_err(to_status)?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions.into_iter().map(session_record).collect(),
        }))
    }

    async fn terminate_sessions(
        &self,
        request: Request<pb::TerminateSessionsRequest>,
    ) -> Result<Response<pb::TerminateSessionsResponse>, Status> {
        let r = request.get_ref();
        let acc = account(&r.account_id)?;
        let session = Some(r.session_id.as_str()).filter(|s| !s.is_empty());
        let sessions_revoked = self
            .0
            .terminate_sessions(acc, session)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::TerminateSessionsResponse {
            sessions_revoked,
        }))
    }

    async fn remove_device(
        &self,
        request: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceResponse>, Status> {
        let r = request.get_ref();
        let acc = account(&r.account_id)?;
        let dev = DeviceId::new(r.device_id)
            .ok_or_else(|| to_status(AccountAdminError::NotFound("device")))?;
        self.0.remove_device(acc, dev).await.map_err(to_status)?;
        Ok(Response::new(pb::RemoveDeviceResponse {}))
    }
}
