//! The `AccountAdmin` seam: what the admin service may do to accounts, which auth owns.
//!
//! Admin never depends on auth: in one process auth implements [`AccountAdmin`] directly
//! (`guardyn_service::Seams::account_admin`); across processes
//! [`crate::mesh::account_admin::RemoteAccountAdmin`] calls auth's mesh listener
//! (`guardyn.internal.v1.AccountAdminService`). The caller has already checked the calling
//! admin's role and records the action in the audit log; the implementation enforces the
//! invariants of the account records themselves (one owner at least, owner claimed once).

use std::fmt;

use async_trait::async_trait;

use crate::auth::Role;
use crate::ids::{AccountId, DeviceId};
use crate::mesh::MeshError;

/// Longest page [`AccountAdmin::list_accounts`] returns.
pub const MAX_PAGE: u32 = 200;

/// One account as an administrator sees it: never keys, passwords or message content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountSummary {
    pub account_id: AccountId,
    pub username: String,
    pub created_ms: u64,
    /// Always includes [`Role::User`].
    pub roles: Vec<Role>,
    pub suspended: bool,
    pub device_count: u32,
    pub mfa_enabled: bool,
}

/// A page of accounts in username order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountPage {
    pub accounts: Vec<AccountSummary>,
    /// The username to continue after; empty on the last page.
    pub next_after: String,
}

/// One live session of an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSummary {
    pub session_id: String,
    pub device_id: DeviceId,
    pub created_ms: u64,
    /// Coarsened to the hour.
    pub last_refreshed_ms: u64,
    pub expires_ms: u64,
}

/// A role change: roles to add and to remove.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleChange {
    pub grant: Vec<Role>,
    pub revoke: Vec<Role>,
}

/// Why an account operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountAdminError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the last owner cannot lose the owner role")]
    LastOwner,
    #[error("the account already has an owner")]
    OwnerExists,
    #[error("the account's last device cannot be removed; delete the account instead")]
    LastDevice,
    /// The store or the remote auth process failed (retryable when the mesh says so).
    #[error("{0}")]
    Mesh(#[from] MeshError),
}

/// Account administration, implemented by the service that owns accounts (auth).
#[async_trait]
pub trait AccountAdmin: Send + Sync + fmt::Debug + 'static {
    /// Accounts whose username starts with `prefix`, after the username `after` (exclusive),
    /// at most `limit` (capped at [`MAX_PAGE`]).
    async fn list_accounts(
        &self,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> Result<AccountPage, AccountAdminError>;

    async fn get_account(&self, account: AccountId) -> Result<AccountSummary, AccountAdminError>;

    /// Apply `change`; the next token of the account carries the new roles. Removing any role
    /// revokes the account's sessions. Returns the roles now held.
    async fn set_roles(
        &self,
        account: AccountId,
        change: &RoleChange,
    ) -> Result<Vec<Role>, AccountAdminError>;

    /// Make `account` the owner, only while no account is one ([`AccountAdminError::OwnerExists`]).
    async fn claim_owner(&self, account: AccountId) -> Result<(), AccountAdminError>;

    /// Suspend (every session revoked at once, sign-ins refused with ACCOUNT_SUSPENDED) or
    /// lift the suspension. Returns how many sessions were revoked.
    async fn set_suspended(
        &self,
        account: AccountId,
        suspended: bool,
    ) -> Result<u32, AccountAdminError>;

    /// Delete the account (auth's crash-safe deletion).
    async fn delete_account(&self, account: AccountId) -> Result<(), AccountAdminError>;

    /// Turn TOTP off and drop the recovery codes. Returns whether TOTP was on.
    async fn reset_mfa(&self, account: AccountId) -> Result<bool, AccountAdminError>;

    async fn list_sessions(
        &self,
        account: AccountId,
    ) -> Result<Vec<SessionSummary>, AccountAdminError>;

    /// Revoke one live session of the account, or all of them. Returns how many.
    async fn terminate_sessions(
        &self,
        account: AccountId,
        session: Option<&str>,
    ) -> Result<u32, AccountAdminError>;

    async fn remove_device(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<(), AccountAdminError>;
}
