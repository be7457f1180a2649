//! Username lookup (LookupUsername) and its opt-out (SetUsernameDiscoverable).
//!
//! Built against enumeration: callers are authenticated and rate limited per account, a name
//! is matched exactly after the registration normalisation (no prefix or fuzzy search), and an
//! unknown, malformed or hidden name gives the same NOT_FOUND after the same two storage reads
//! (the username entry, then the hidden flag: of the owner, or of an account that cannot
//! exist).

use guardyn_common::ids::AccountId;
use guardyn_storage::record::{Record, encode};
use serde::{Deserialize, Serialize};

use crate::core::Core;
use crate::error::{AuthError, AuthResult};
use crate::limits::take;
use crate::model::UsernameEntry;
use crate::secrets;
use crate::store;

/// The value of `hidden/<acc>`: the owner hid its username from LookupUsername. Absent:
/// discoverable (the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HiddenUsername {
    pub since_ms: u64,
}

impl Record for HiddenUsername {
    const VERSION: u8 = store::VERSION;
}

/// The account whose hidden flag an unknown name reads (account ids are random v4 UUIDs, so
/// the nil one is never assigned).
const NO_ACCOUNT: AccountId = AccountId::from_uuid(uuid::Uuid::nil());

/// The one answer for every name that does not resolve.
fn not_found() -> AuthError {
    AuthError::NotFound {
        resource: "username",
    }
}

impl Core {
    /// LookupUsername: the account a discoverable username belongs to.
    pub async fn lookup_username(&self, caller: AccountId, raw: &str) -> AuthResult<AccountId> {
        take(&self.limits.lookup_per_account, &caller)?;
        // A malformed name reads the (never present) empty name: same reads, same answer,
        // and no oversized key.
        let name = secrets::normalize_username(raw).unwrap_or_default();
        let found = store::get::<UsernameEntry>(&*self.kv, &store::username(&name))
            .await?
            .map(|(UsernameEntry(acc), _)| acc);
        let hidden =
            store::get::<HiddenUsername>(&*self.kv, &store::hidden(found.unwrap_or(NO_ACCOUNT)))
                .await?
                .is_some();
        match found {
            Some(acc) if !hidden => Ok(acc),
            _ => Err(not_found()),
        }
    }

    /// SetUsernameDiscoverable for the caller's own account.
    pub async fn set_username_discoverable(
        &self,
        acc: AccountId,
        discoverable: bool,
    ) -> AuthResult<()> {
        let key = store::hidden(acc);
        if discoverable {
            self.kv.delete(&key).await?;
        } else {
            let record = HiddenUsername {
                since_ms: self.now_ms(),
            };
            self.kv.put(&key, &encode(&record)).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use guardyn_storage::record::decode;

    use super::*;

    #[test]
    fn the_hidden_flag_is_versioned_and_the_probe_account_is_nil() {
        let bytes = encode(&HiddenUsername { since_ms: 5 });
        assert_eq!(bytes[0], store::VERSION);
        assert_eq!(
            decode::<HiddenUsername>(&bytes).unwrap(),
            HiddenUsername { since_ms: 5 }
        );
        assert_eq!(
            store::hidden(NO_ACCOUNT),
            b"auth/v1/hidden/00000000-0000-0000-0000-000000000000".to_vec()
        );
    }
}
