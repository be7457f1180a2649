//! What administrators change on an account: its roles and whether it is suspended.
//!
//! Kept beside the account record (`admin/<acc>`, [`AdminState`]) rather than in it, so the
//! account record's layout stays as it is; an account without the record holds only `user`
//! and is not suspended. `owners` lists the owners, so that "no owner yet" (ClaimOwner) and
//! "not the last owner" are single compare-and-set conditions.
//!
//! Every token auth mints carries the roles read in the same transaction that records the
//! session (or its refresh), conditioned on this record being unchanged: a suspension or a
//! role change committed meanwhile makes that transaction retry, so no token outlives it.

use guardyn_common::auth::Role;
use guardyn_common::ids::AccountId;
use guardyn_storage::record::{Record, encode};
use guardyn_storage::{KvStore, Txn};
use serde::{Deserialize, Serialize};

use crate::error::{AuthError, AuthResult};
use crate::store;

/// `admin/<acc>`: roles beyond `user`, and the suspension.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminState {
    /// Lowercase role names other than `user`, sorted.
    pub roles: Vec<String>,
    pub suspended: bool,
    pub changed_ms: u64,
}

impl Record for AdminState {
    const VERSION: u8 = 1;
}

/// `owners`: the accounts holding the owner role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owners {
    pub accounts: Vec<String>,
}

impl Record for Owners {
    const VERSION: u8 = 1;
}

impl AdminState {
    /// The roles a token carries: `user`, then the granted ones.
    pub fn token_roles(&self) -> Vec<String> {
        let mut roles = vec![Role::User.as_str().to_owned()];
        roles.extend(
            self.roles
                .iter()
                .filter(|r| *r != Role::User.as_str())
                .cloned(),
        );
        roles
    }

    pub fn roles(&self) -> Vec<Role> {
        let mut roles = vec![Role::User];
        roles.extend(self.roles.iter().filter_map(|r| Role::parse(r)));
        roles.sort();
        roles.dedup();
        roles
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.iter().any(|r| r == role.as_str())
    }

    pub fn set(&mut self, role: Role, on: bool) {
        self.roles.retain(|r| r != role.as_str());
        if on && role != Role::User {
            self.roles.push(role.as_str().to_owned());
            self.roles.sort();
        }
    }
}

/// The account's state and its raw bytes (for a transaction condition; `None`: absent).
pub async fn load(kv: &dyn KvStore, acc: AccountId) -> AuthResult<(AdminState, Option<Vec<u8>>)> {
    Ok(
        match store::get::<AdminState>(kv, &store::admin_state(acc)).await? {
            Some((state, raw)) => (state, Some(raw)),
            None => (AdminState::default(), None),
        },
    )
}

/// Condition `txn` on the account's state being what was read, so the transaction that
/// records a new session or token does not race a suspension or a role change.
pub fn unchanged(txn: Txn, acc: AccountId, raw: Option<&[u8]>) -> Txn {
    txn.require_unchanged(store::admin_state(acc), raw)
}

/// Refuse a suspended account.
pub fn check_active(state: &AdminState) -> AuthResult<()> {
    if state.suspended {
        return Err(AuthError::AccountSuspended);
    }
    Ok(())
}

pub async fn owners(kv: &dyn KvStore) -> AuthResult<(Owners, Option<Vec<u8>>)> {
    Ok(match store::get::<Owners>(kv, &store::owners()).await? {
        Some((o, raw)) => (o, Some(raw)),
        None => (Owners::default(), None),
    })
}

/// `txn` writing `owners` as the new owner list, conditioned on the one read.
pub fn with_owners(txn: Txn, owners: &Owners, raw: Option<&[u8]>) -> Txn {
    txn.require_unchanged(store::owners(), raw)
        .put(store::owners(), encode(owners))
}
