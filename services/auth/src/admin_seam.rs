//! The in-process [`AccountAdmin`] seam: the admin service's operations on accounts, served
//! by auth (which owns them) without a network hop.

use std::sync::Arc;

use async_trait::async_trait;
use guardyn_common::admin::{
    AccountAdmin, AccountAdminError, AccountPage, AccountSummary, RoleChange, SessionSummary,
};
use guardyn_common::auth::Role;
use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_common::mesh::MeshError;

use crate::core::Core;
use crate::error::AuthError;

/// Auth's account administration, in-process.
#[derive(Clone, Debug)]
pub struct AuthAccountAdmin(pub(crate) Arc<Core>);

/// Domain refusals keep their meaning; anything else travels as the status auth would send.
fn map(e: AuthError) -> AccountAdminError {
    match e {
        AuthError::NotFound { resource } => AccountAdminError::NotFound(resource),
        AuthError::DeviceRemoved => AccountAdminError::NotFound("account"),
        AuthError::LastOwner => AccountAdminError::LastOwner,
        AuthError::OwnerExists => AccountAdminError::OwnerExists,
        AuthError::LastDevice => AccountAdminError::LastDevice,
        other => AccountAdminError::Mesh(MeshError::Call(tonic::Status::from(other))),
    }
}

#[async_trait]
impl AccountAdmin for AuthAccountAdmin {
    async fn list_accounts(
        &self,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> Result<AccountPage, AccountAdminError> {
        self.0.account_page(prefix, after, limit).await.map_err(map)
    }

    async fn get_account(&self, account: AccountId) -> Result<AccountSummary, AccountAdminError> {
        self.0.account_summary(account).await.map_err(map)
    }

    async fn set_roles(
        &self,
        account: AccountId,
        change: &RoleChange,
    ) -> Result<Vec<Role>, AccountAdminError> {
        self.0.change_roles(account, change).await.map_err(map)
    }

    async fn claim_owner(&self, account: AccountId) -> Result<(), AccountAdminError> {
        self.0.claim_owner(account).await.map_err(map)
    }

    async fn set_suspended(
        &self,
        account: AccountId,
        suspended: bool,
    ) -> Result<u32, AccountAdminError> {
        self.0.set_suspended(account, suspended).await.map_err(map)
    }

    async fn delete_account(&self, account: AccountId) -> Result<(), AccountAdminError> {
        self.0.admin_delete_account(account).await.map_err(map)
    }

    async fn reset_mfa(&self, account: AccountId) -> Result<bool, AccountAdminError> {
        self.0.reset_mfa(account).await.map_err(map)
    }

    async fn list_sessions(
        &self,
        account: AccountId,
    ) -> Result<Vec<SessionSummary>, AccountAdminError> {
        self.0.admin_sessions(account).await.map_err(map)
    }

    async fn terminate_sessions(
        &self,
        account: AccountId,
        session: Option<&str>,
    ) -> Result<u32, AccountAdminError> {
        self.0
            .terminate_sessions(account, session)
            .await
            .map_err(map)
    }

    async fn remove_device(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<(), AccountAdminError> {
        self.0
            .admin_remove_device(account, device)
            .await
            .map_err(map)
    }
}
