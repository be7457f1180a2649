//! Roles and the user lifecycle: the admin side of the `AccountAdmin` seam. Each mutation
//! takes the acting admin and a reason, goes to auth (which owns accounts) and is recorded in
//! the audit log with both. Role checks of the caller happen at the edge (`grpc/users.rs`);
//! the rule that only owners hand out or take away owner and admin lives here.

use std::path::PathBuf;
use std::sync::Arc;

use guardyn_audit::{AuditKind, AuditRecord};
use guardyn_common::admin::{
    AccountAdmin, AccountPage, AccountSummary, RoleChange, SessionSummary,
};
use guardyn_common::auth::Role;
use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_common::ratelimit::{KeyedLimiter, RateLimit};

use crate::core::Core;
use crate::error::AdminError;
use crate::users_bootstrap;

/// Longest reason an admin may give.
pub const MAX_REASON: usize = 500;
/// ClaimOwner attempts: per account, and from everyone together (the code has 128 bits, so
/// this only keeps a flood from filling the logs).
const CLAIM_PER_ACCOUNT: RateLimit = RateLimit::new(5, 5);
const CLAIM_GLOBAL: RateLimit = RateLimit::new(20, 20);

/// Who acts, and why.
#[derive(Clone, Debug)]
pub struct Action {
    pub actor: AccountId,
    pub reason: String,
}

impl Action {
    /// A mutation's reason is required: 1..=500 bytes, not only whitespace.
    pub fn new(actor: AccountId, reason: &str) -> Result<Self, AdminError> {
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON {
            return Err(AdminError::UsersInvalid {
                field: "reason",
                why: format!("required, 1..={MAX_REASON} bytes"),
            });
        }
        Ok(Self {
            actor,
            reason: reason.to_owned(),
        })
    }
}

/// Whether a caller holding `caller_roles` may make `change`: owner and admin are granted and
/// removed by owners only; `user` is never granted or removed.
pub fn check_role_change(caller_roles: &[Role], change: &RoleChange) -> Result<(), AdminError> {
    let all = change.grant.iter().chain(change.revoke.iter());
    if all.clone().any(|r| *r == Role::User) {
        return Err(AdminError::UsersInvalid {
            field: "grant",
            why: "the user role is always held".into(),
        });
    }
    if change.grant.iter().any(|r| change.revoke.contains(r)) {
        return Err(AdminError::UsersInvalid {
            field: "revoke",
            why: "a role cannot be granted and removed at once".into(),
        });
    }
    if change.grant.is_empty() && change.revoke.is_empty() {
        return Err(AdminError::UsersInvalid {
            field: "grant",
            why: "nothing to change".into(),
        });
    }
    let privileged = all
        .into_iter()
        .any(|r| matches!(r, Role::Owner | Role::Admin));
    if privileged && !caller_roles.contains(&Role::Owner) {
        return Err(AdminError::OwnerRequired);
    }
    Ok(())
}

/// The user-lifecycle part of the admin service.
#[derive(Debug)]
pub struct Users {
    core: Arc<Core>,
    accounts: Arc<dyn AccountAdmin>,
    /// Where `guardyn admin bootstrap` leaves the enrolment code's hash.
    data_dir: PathBuf,
    claim_per_account: KeyedLimiter<AccountId>,
    claim_global: KeyedLimiter<()>,
}

impl Users {
    pub fn new(core: Arc<Core>, accounts: Arc<dyn AccountAdmin>, data_dir: PathBuf) -> Self {
        Self {
            core,
            accounts,
            data_dir,
            claim_per_account: KeyedLimiter::new("claim_owner_per_account", CLAIM_PER_ACCOUNT),
            claim_global: KeyedLimiter::new("claim_owner", CLAIM_GLOBAL),
        }
    }

    async fn audit(
        &self,
        kind: AuditKind,
        target: AccountId,
        device: Option<DeviceId>,
        action: &Action,
        detail: String,
    ) -> Result<(), AdminError> {
        let record = AuditRecord::new(kind, target.to_string(), device.map(DeviceId::get), detail)
            .by(action.actor.to_string(), action.reason.clone());
        Ok(self.core.audit.append(record).await?)
    }

    pub async fn list(
        &self,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> Result<AccountPage, AdminError> {
        Ok(self
            .accounts
            .list_accounts(&prefix.to_lowercase(), after, limit)
            .await?)
    }

    pub async fn get(&self, account: AccountId) -> Result<AccountSummary, AdminError> {
        Ok(self.accounts.get_account(account).await?)
    }

    pub async fn set_roles(
        &self,
        account: AccountId,
        change: &RoleChange,
        action: &Action,
    ) -> Result<Vec<Role>, AdminError> {
        let roles = self.accounts.set_roles(account, change).await?;
        let names = |rs: &[Role]| rs.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(",");
        let detail = format!(
            "granted [{}] removed [{}] now [{}]",
            names(&change.grant),
            names(&change.revoke),
            names(&roles)
        );
        self.audit(AuditKind::RoleChanged, account, None, action, detail)
            .await?;
        Ok(roles)
    }

    pub async fn suspend(&self, account: AccountId, action: &Action) -> Result<u32, AdminError> {
        let revoked = self.accounts.set_suspended(account, true).await?;
        let detail = format!("{revoked} sessions revoked");
        self.audit(AuditKind::AccountSuspended, account, None, action, detail)
            .await?;
        Ok(revoked)
    }

    pub async fn unsuspend(&self, account: AccountId, action: &Action) -> Result<(), AdminError> {
        self.accounts.set_suspended(account, false).await?;
        self.audit(
            AuditKind::AccountUnsuspended,
            account,
            None,
            action,
            String::new(),
        )
        .await
    }

    pub async fn delete(&self, account: AccountId, action: &Action) -> Result<(), AdminError> {
        self.accounts.delete_account(account).await?;
        self.audit(
            AuditKind::AccountDeletedByAdmin,
            account,
            None,
            action,
            String::new(),
        )
        .await
    }

    pub async fn reset_mfa(&self, account: AccountId, action: &Action) -> Result<bool, AdminError> {
        let was_on = self.accounts.reset_mfa(account).await?;
        let detail = format!("totp was {}", if was_on { "on" } else { "off" });
        self.audit(AuditKind::MfaReset, account, None, action, detail)
            .await?;
        Ok(was_on)
    }

    pub async fn sessions(&self, account: AccountId) -> Result<Vec<SessionSummary>, AdminError> {
        Ok(self.accounts.list_sessions(account).await?)
    }

    pub async fn terminate(
        &self,
        account: AccountId,
        session: Option<&str>,
        action: &Action,
    ) -> Result<u32, AdminError> {
        let n = self.accounts.terminate_sessions(account, session).await?;
        let detail = match session {
            Some(sid) => format!("session {sid}"),
            None => format!("all sessions ({n})"),
        };
        self.audit(AuditKind::SessionsTerminated, account, None, action, detail)
            .await?;
        Ok(n)
    }

    pub async fn remove_device(
        &self,
        account: AccountId,
        device: DeviceId,
        action: &Action,
    ) -> Result<(), AdminError> {
        self.accounts.remove_device(account, device).await?;
        self.audit(
            AuditKind::DeviceRemovedByAdmin,
            account,
            Some(device),
            action,
            String::new(),
        )
        .await
    }

    /// Redeem the bootstrap code: `caller` becomes the first owner. Rate limited; the code is
    /// consumed only by a successful claim.
    pub async fn claim_owner(&self, caller: AccountId, code: &str) -> Result<(), AdminError> {
        self.claim_per_account
            .check(&caller)
            .map_err(AdminError::Limited)?;
        self.claim_global.check(&()).map_err(AdminError::Limited)?;
        let now = self.core.clock.now_ms();
        users_bootstrap::check(&self.data_dir, code, now)?;
        self.accounts.claim_owner(caller).await?;
        users_bootstrap::consume(&self.data_dir)?;
        let action = Action {
            actor: caller,
            reason: "redeemed the bootstrap enrolment code".into(),
        };
        self.audit(
            AuditKind::OwnerClaimed,
            caller,
            None,
            &action,
            String::new(),
        )
        .await
    }
}
