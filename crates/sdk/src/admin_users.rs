//! Admin calls of the user lifecycle (`AdminUserService`: reads for owner, admin and auditor,
//! changes for owner and admin, each with a reason) and the first owner's claim
//! (`BootstrapService.ClaimOwner`).

use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::admin_user_service_client::AdminUserServiceClient;
use guardyn_proto::guardyn::admin::v1::bootstrap_service_client::BootstrapServiceClient;

use crate::client::Client;
use crate::error::SdkError;

impl Client {
    /// Redeem the enrolment code `guardyn admin bootstrap` printed: this account becomes the
    /// owner. The session is refreshed at once, so the next calls carry the owner role.
    pub async fn claim_owner(&self, code: &str) -> Result<(), SdkError> {
        let request = pb::ClaimOwnerRequest {
            code: code.to_owned(),
        };
        self.inner
            .call(request, |ch, r| async move {
                BootstrapServiceClient::new(ch).claim_owner(r).await
            })
            .await?;
        self.refresh_roles().await
    }

    /// Exchange the session's tokens now, so the access token carries the account's current
    /// roles (a role granted since the last sign-in or refresh).
    pub async fn refresh_roles(&self) -> Result<(), SdkError> {
        let token = self
            .inner
            .access_token()
            .ok_or_else(|| tonic::Status::unauthenticated("not signed in"))?;
        self.inner.refresh(&token).await?;
        self.save().await
    }

    /// One page of accounts (username order, optional username prefix).
    pub async fn admin_list_accounts(
        &self,
        request: pb::ListAccountsRequest,
    ) -> Result<pb::ListAccountsResponse, SdkError> {
        Ok(self
            .inner
            .call(request, |ch, r| async move {
                AdminUserServiceClient::new(ch).list_accounts(r).await
            })
            .await?)
    }

    /// One account.
    pub async fn admin_account(&self, account_id: &str) -> Result<pb::AccountSummary, SdkError> {
        let request = pb::GetAccountRequest {
            account_id: account_id.to_owned(),
        };
        let response = self
            .inner
            .call(request, |ch, r| async move {
                AdminUserServiceClient::new(ch).get_account(r).await
            })
            .await?;
        response
            .account
            .ok_or_else(|| tonic::Status::internal("GetAccount answered without an account").into())
    }

    /// Grant and remove roles; returns the roles now held.
    pub async fn admin_set_roles(
        &self,
        request: pb::SetRolesRequest,
    ) -> Result<Vec<pb::Role>, SdkError> {
        let response = self
            .inner
            .call(request, |ch, r| async move {
                AdminUserServiceClient::new(ch).set_roles(r).await
            })
            .await?;
        Ok(response.roles().collect())
    }

    /// Suspend (true) or unsuspend (false); returns the sessions ended.
    pub async fn admin_set_suspended(
        &self,
        account_id: &str,
        suspended: bool,
        reason: &str,
    ) -> Result<u32, SdkError> {
        let (account_id, reason) = (account_id.to_owned(), reason.to_owned());
        if suspended {
            let request = pb::SuspendAccountRequest { account_id, reason };
            let r = self
                .inner
                .call(request, |ch, r| async move {
                    AdminUserServiceClient::new(ch).suspend_account(r).await
                })
                .await?;
            return Ok(r.sessions_revoked);
        }
        let request = pb::UnsuspendAccountRequest { account_id, reason };
        self.inner
            .call(request, |ch, r| async move {
                AdminUserServiceClient::new(ch).unsuspend_account(r).await
            })
            .await?;
        Ok(0)
    }

    /// Delete an account.
    pub async fn admin_delete_account(
        &self,
        account_id: &str,
        reason: &str,
    ) -> Result<(), SdkError> {
        let request = pb::DeleteAccountRequest {
            account_id: account_id.to_owned(),
            reason: reason.to_owned(),
        };
        self.inner
            .call(request, |ch, r| async move {
                AdminUserServiceClient::new(ch).delete_account(r).await
            })
            .await?;
        Ok(())
    }

    /// Turn an account's TOTP off; returns whether it was on.
    pub async fn admin_reset_mfa(&self, account_id: &str, reason: &str) -> Result<bool, SdkError> {
        let request = pb::ResetMfaRequest {
            account_id: account_id.to_owned(),
            reason: reason.to_owned(),
        };
        let r = self
            .inner
            .call(request, |ch, r| async move {
                AdminUserServiceClient::new(ch).reset_mfa(r).await
            })
            .await?;
        Ok(r.was_enabled)
    }

    /// An account's live sessions.
    pub async fn admin_sessions(
        &self,
        account_id: &str,
    ) -> Result<Vec<pb::AccountSession>, SdkError> {
        let request = pb::ListSessionsRequest {
            account_id: account_id.to_owned(),
        };
        let r = self
            .inner
            .call(request, |ch, r| async move {
                AdminUserServiceClient::new(ch).list_sessions(r).await
            })
            .await?;
        Ok(r.sessions)
    }

    /// End one session (`Some`) or all sessions of an account; returns how many ended.
    pub async fn admin_terminate_sessions(
        &self,
        account_id: &str,
        session_id: Option<&str>,
        reason: &str,
    ) -> Result<u32, SdkError> {
        let request = pb::TerminateSessionsRequest {
            account_id: account_id.to_owned(),
            session_id: session_id.unwrap_or_default().to_owned(),
            reason: reason.to_owned(),
        };
        let r = self
            .inner
            .call(request, |ch, r| async move {
                AdminUserServiceClient::new(ch).terminate_sessions(r).await
            })
            .await?;
        Ok(r.sessions_revoked)
    }

    /// Remove a device of an account.
    pub async fn admin_remove_device(
        &self,
        account_id: &str,
        device_id: u32,
        reason: &str,
    ) -> Result<(), SdkError> {
        let request = pb::RemoveDeviceRequest {
            account_id: account_id.to_owned(),
            device_id,
            reason: reason.to_owned(),
        };
        self.inner
            .call(request, |ch, r| async move {
                AdminUserServiceClient::new(ch).remove_device(r).await
            })
            .await?;
        Ok(())
    }
}
