//! Account deletion in two steps, so that a crash between them leaves nothing usable.
//!
//! 1. [`mark_deleted`], one transaction: the account record, its username, its hidden flag and
//!    its link code go, and a tombstone `deleted/<acc>` is written. From this commit on no
//!    login finds the name, and no refresh or new session passes (both require the account
//!    record), so the account is dead at once even if nothing else happens.
//! 2. [`Core::purge_deleted_account`]: revoke and delete every session, delete devices,
//!    prekeys, KeyPackages, notices, retired ids and the second-factor lockout, announce
//!    `auth.account.deleted`, audit, and only then delete the tombstone. Every part is
//!    idempotent: DeleteAccount runs it right away, and the sweeper runs it again for every
//!    tombstone it finds (after a restart, for a purge the process did not finish).

use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_storage::record::{Record, encode};
use guardyn_storage::{KvStore, Txn};
use serde::{Deserialize, Serialize};

use crate::core::Core;
use crate::error::{AuthError, AuthResult};
use crate::events::AccountDeleted;
use crate::model::{Account, SessionState};
use crate::store;
use guardyn_audit::AuditKind;

/// `deleted/<acc>`: the account was deleted; its data may not be purged yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub deleted_ms: u64,
    /// The devices the account had, for the deletion event (any found later are added).
    pub devices: Vec<DeviceId>,
}

impl Record for Tombstone {
    const VERSION: u8 = 1;
}

/// Step 1: make the account unusable in one transaction and leave a tombstone. Public so a
/// test can stop here, as a process killed right after this commit would.
pub async fn mark_deleted(kv: &dyn KvStore, acc: AccountId, now_ms: u64) -> AuthResult<()> {
    let akey = store::account(acc);
    for _ in 0..store::MAX_ATTEMPTS {
        let Some((account, raw)) = store::get::<Account>(kv, &akey).await? else {
            return Err(AuthError::DeviceRemoved);
        };
        let mut devices = Vec::new();
        for pair in store::scan_prefix(kv, &store::devices(acc), 256).await? {
            devices.extend(store::device_of_key(&pair.key));
        }
        let tombstone = Tombstone {
            deleted_ms: now_ms,
            devices,
        };
        let mut txn = Txn::new()
            .require_equals(akey.clone(), raw)
            .delete(akey.clone())
            .delete(store::username(&account.username))
            .delete(store::hidden(acc))
            .put(store::tombstone(acc), encode(&tombstone));
        if let Some(h) = account.link_code {
            txn = txn.delete(store::link_code(&h));
        }
        if store::commit(kv, txn).await? {
            return Ok(());
        }
    }
    Err(AuthError::Contention)
}

impl Core {
    /// Step 2: purge what a deleted account left. `true` once the tombstone is gone (now or
    /// by an earlier run); `false` when there is none to act on because the account exists.
    pub async fn purge_deleted_account(&self, acc: AccountId) -> AuthResult<bool> {
        let tkey = store::tombstone(acc);
        let Some((tombstone, raw)) = store::get::<Tombstone>(&*self.kv, &tkey).await? else {
            return Ok(true);
        };
        if self.kv.get(&store::account(acc)).await?.is_some() {
            // Account ids are random, so this is corruption rather than a new account.
            tracing::warn!(account = %acc, "a tombstoned account exists; leaving it");
            return Ok(false);
        }
        let mut devices = tombstone.devices.clone();
        for (id, _) in self.devices(acc).await? {
            if !devices.contains(&id) {
                devices.push(id);
            }
        }
        for (sid, s) in self.account_sessions(acc).await? {
            if s.state == SessionState::Live {
                self.revoke_session(&sid, SessionState::DeviceRemoved)
                    .await?;
            }
            self.kv.delete(&store::session(&sid)).await?;
            self.kv.delete(&store::account_session(acc, &sid)).await?;
        }
        for prefix in [
            store::account_sessions(acc),
            store::devices(acc),
            store::account_prekeys(acc),
            store::account_key_packages(acc),
            store::account_notices(acc),
            store::retired_devices(acc),
        ] {
            self.delete_prefix(&prefix).await?;
        }
        self.kv.delete(&store::mfa_lockout(acc)).await?;
        self.forget_admin_state(acc).await?;
        self.events
            .publish(&AccountDeleted {
                account: acc,
                devices,
            })
            .await;
        self.audit(AuditKind::AccountDeleted, acc, None, "").await?;
        let txn = Txn::new().require_equals(tkey.clone(), raw).delete(tkey);
        store::commit(&*self.kv, txn).await
    }
}
