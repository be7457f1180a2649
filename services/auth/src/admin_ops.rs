//! What administrators do to accounts (the `AccountAdmin` seam's operations): list and read
//! accounts, change roles, claim the first owner, suspend, delete, reset MFA, end sessions,
//! remove devices. The admin service checks the caller's role and audits the action with its
//! actor and reason; auth's own audit entries (sessions revoked, devices removed) follow from
//! the paths reused here.

use std::ops::Bound;

use guardyn_common::admin::{AccountPage, AccountSummary, MAX_PAGE, RoleChange, SessionSummary};
use guardyn_common::auth::Role;
use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_storage::record::encode;
use guardyn_storage::{Direction, KeyRange, Txn};

use crate::admin_state::{self, AdminState};
use crate::core::Core;
use crate::deletion;
use crate::error::{AuthError, AuthResult};
use crate::model::{Account, SessionState, UsernameEntry};
use crate::store;

fn not_found() -> AuthError {
    AuthError::NotFound {
        resource: "account",
    }
}

impl Core {
    async fn existing_account(&self, acc: AccountId) -> AuthResult<(Account, Vec<u8>)> {
        store::get::<Account>(&*self.kv, &store::account(acc))
            .await?
            .ok_or_else(not_found)
    }

    pub async fn account_summary(&self, acc: AccountId) -> AuthResult<AccountSummary> {
        let (account, _) = self.existing_account(acc).await?;
        let (state, _) = admin_state::load(&*self.kv, acc).await?;
        let device_count = u32::try_from(self.devices(acc).await?.len()).unwrap_or(u32::MAX);
        Ok(AccountSummary {
            account_id: acc,
            username: account.username,
            created_ms: account.created_ms,
            roles: state.roles(),
            suspended: state.suspended,
            device_count,
            mfa_enabled: account.totp.is_some(),
        })
    }

    /// Accounts by username (the `username/` index, so in name order), after `after`.
    pub async fn account_page(
        &self,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> AuthResult<AccountPage> {
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        let index = store::username(prefix);
        let start = if after.is_empty() {
            Bound::Included(index.clone())
        } else {
            Bound::Excluded(store::username(after))
        };
        let range = KeyRange {
            start,
            ..KeyRange::prefix(&index)
        };
        let pairs = self.kv.scan(range, Direction::Forward, limit + 1).await?;
        let more = pairs.len() > limit;
        let mut page = AccountPage::default();
        for pair in pairs.into_iter().take(limit) {
            let UsernameEntry(acc) = guardyn_storage::record::decode(&pair.value)?;
            // An account deleted between the scan and here is skipped.
            match self.account_summary(acc).await {
                Ok(summary) => page.accounts.push(summary),
                Err(AuthError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            if more {
                let root = store::username("");
                page.next_after = String::from_utf8_lossy(&pair.key[root.len()..]).into_owned();
            }
        }
        Ok(page)
    }

    /// Write `state` for `acc`, conditioned on what was read; owner membership follows
    /// `state`. `false` on a conflict (the caller reads again).
    async fn write_admin_state(
        &self,
        acc: AccountId,
        raw: Option<&[u8]>,
        state: &AdminState,
    ) -> AuthResult<bool> {
        let (mut owners, owners_raw) = admin_state::owners(&*self.kv).await?;
        let id = acc.to_string();
        let was_owner = owners.accounts.contains(&id);
        let is_owner = state.has(Role::Owner);
        let mut txn = admin_state::unchanged(Txn::new(), acc, raw)
            .require_exists(store::account(acc))
            .put(store::admin_state(acc), encode(state));
        if was_owner != is_owner {
            if is_owner {
                owners.accounts.push(id);
            } else {
                owners.accounts.retain(|a| *a != id);
                if owners.accounts.is_empty() {
                    return Err(AuthError::LastOwner);
                }
            }
            txn = admin_state::with_owners(txn, &owners, owners_raw.as_deref());
        }
        store::commit(&*self.kv, txn).await
    }

    /// Refuse to take the last owner out of service (suspension, deletion).
    async fn check_not_last_owner(&self, acc: AccountId) -> AuthResult<()> {
        let (owners, _) = admin_state::owners(&*self.kv).await?;
        if owners.accounts == [acc.to_string()] {
            return Err(AuthError::LastOwner);
        }
        Ok(())
    }

    pub async fn change_roles(&self, acc: AccountId, change: &RoleChange) -> AuthResult<Vec<Role>> {
        self.existing_account(acc).await?;
        for _ in 0..store::MAX_ATTEMPTS {
            let (mut state, raw) = admin_state::load(&*self.kv, acc).await?;
            let before = state.roles();
            for role in &change.grant {
                state.set(*role, true);
            }
            for role in &change.revoke {
                state.set(*role, false);
            }
            state.changed_ms = self.now_ms();
            if !self.write_admin_state(acc, raw.as_deref(), &state).await? {
                continue;
            }
            let after = state.roles();
            // A removed role must not live on in tokens already issued.
            if before.iter().any(|r| !after.contains(r)) {
                self.revoke_account_sessions(acc, None).await?;
            }
            return Ok(after);
        }
        Err(AuthError::Contention)
    }

    /// Make `acc` the owner if there is none yet.
    pub async fn claim_owner(&self, acc: AccountId) -> AuthResult<()> {
        self.existing_account(acc).await?;
        for _ in 0..store::MAX_ATTEMPTS {
            let (owners, owners_raw) = admin_state::owners(&*self.kv).await?;
            if !owners.accounts.is_empty() {
                return Err(AuthError::OwnerExists);
            }
            let (mut state, raw) = admin_state::load(&*self.kv, acc).await?;
            state.set(Role::Owner, true);
            state.changed_ms = self.now_ms();
            let mut owners = owners;
            owners.accounts.push(acc.to_string());
            let txn = admin_state::unchanged(Txn::new(), acc, raw.as_deref())
                .require_exists(store::account(acc))
                .put(store::admin_state(acc), encode(&state));
            let txn = admin_state::with_owners(txn, &owners, owners_raw.as_deref());
            if store::commit(&*self.kv, txn).await? {
                return Ok(());
            }
        }
        Err(AuthError::Contention)
    }

    /// Suspend (and revoke every session: tokens are refused at once, streams close) or
    /// unsuspend. Returns the sessions revoked.
    pub async fn set_suspended(&self, acc: AccountId, suspended: bool) -> AuthResult<u32> {
        self.existing_account(acc).await?;
        if suspended {
            self.check_not_last_owner(acc).await?;
        }
        let mut written = false;
        for _ in 0..store::MAX_ATTEMPTS {
            let (mut state, raw) = admin_state::load(&*self.kv, acc).await?;
            state.suspended = suspended;
            state.changed_ms = self.now_ms();
            if self.write_admin_state(acc, raw.as_deref(), &state).await? {
                written = true;
                break;
            }
        }
        if !written {
            return Err(AuthError::Contention);
        }
        if !suspended {
            return Ok(0);
        }
        // New sessions and refreshes are refused from the commit above on; these are the
        // ones that already exist.
        self.revoke_account_sessions(acc, None).await
    }

    /// Delete through the crash-safe two-step deletion (`deletion.rs`).
    pub async fn admin_delete_account(&self, acc: AccountId) -> AuthResult<()> {
        self.existing_account(acc).await?;
        self.check_not_last_owner(acc).await?;
        deletion::mark_deleted(&*self.kv, acc, self.now_ms()).await?;
        if let Err(err) = self.purge_deleted_account(acc).await {
            tracing::warn!(account = %acc, error = %err, "account deleted; its purge is left to the sweeper");
        }
        Ok(())
    }

    /// Forget a deleted account's roles (its purge): it is no owner any more.
    pub async fn forget_admin_state(&self, acc: AccountId) -> AuthResult<()> {
        for _ in 0..store::MAX_ATTEMPTS {
            let (mut owners, owners_raw) = admin_state::owners(&*self.kv).await?;
            let id = acc.to_string();
            let mut txn = Txn::new().delete(store::admin_state(acc));
            if owners.accounts.contains(&id) {
                owners.accounts.retain(|a| *a != id);
                txn = admin_state::with_owners(txn, &owners, owners_raw.as_deref());
            }
            if store::commit(&*self.kv, txn).await? {
                return Ok(());
            }
        }
        Err(AuthError::Contention)
    }

    /// Turn TOTP off (and any pending enrolment) and drop the recovery codes. Whether it was on.
    pub async fn reset_mfa(&self, acc: AccountId) -> AuthResult<bool> {
        let key = store::account(acc);
        for _ in 0..store::MAX_ATTEMPTS {
            let (mut account, raw) = self.existing_account(acc).await?;
            let was_on = account.totp.is_some();
            account.totp = None;
            account.pending_totp = None;
            account.recovery_codes.clear();
            let txn = Txn::new()
                .require_equals(key.clone(), raw)
                .put(key.clone(), encode(&account));
            if store::commit(&*self.kv, txn).await? {
                self.kv.delete(&store::mfa_lockout(acc)).await?;
                return Ok(was_on);
            }
        }
        Err(AuthError::Contention)
    }

    /// The account's live, unexpired sessions.
    pub async fn admin_sessions(&self, acc: AccountId) -> AuthResult<Vec<SessionSummary>> {
        self.existing_account(acc).await?;
        let now = self.now_ms();
        Ok(self
            .account_sessions(acc)
            .await?
            .into_iter()
            .filter(|(_, s)| s.state == SessionState::Live && s.refresh_expires_ms > now)
            .map(|(sid, s)| SessionSummary {
                session_id: sid,
                device_id: s.device_id,
                created_ms: s.created_ms,
                last_refreshed_ms: s.last_refreshed_ms - s.last_refreshed_ms % 3_600_000,
                expires_ms: s.refresh_expires_ms,
            })
            .collect())
    }

    /// Revoke one live session of `acc` (NOT_FOUND when it is not one), or all of them.
    pub async fn terminate_sessions(&self, acc: AccountId, sid: Option<&str>) -> AuthResult<u32> {
        self.existing_account(acc).await?;
        match sid {
            None => self.revoke_account_sessions(acc, None).await,
            Some(sid) => {
                self.revoke_own_session(acc, sid).await?;
                Ok(1)
            }
        }
    }

    /// Remove a device as its own owner would (notices to the others, its session revoked).
    pub async fn admin_remove_device(&self, acc: AccountId, dev: DeviceId) -> AuthResult<()> {
        self.existing_account(acc).await?;
        // The removal notice names the removed device itself as the remover: no device of
        // the account asked for it.
        self.remove_device(acc, dev, dev).await
    }
}
