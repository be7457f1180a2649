//! Push tokens of a device: register (idempotent for an identical token), unregister, list,
//! and what the job runner needs (targets, pruning of dead tokens).

use guardyn_common::{AccountId, DeviceId};
use guardyn_storage::record::encode;
use guardyn_storage::{Txn, TxnOutcome};

use crate::core::Core;
use crate::error::NotificationError;
use crate::model::{NewToken, TokenId, TokenInfo};
use crate::providers::Platform;
use crate::store::{self, StoredToken, TokenSet};

impl Core {
    /// Whether this server has a sender for `platform`.
    pub fn platform_configured(&self, platform: Platform) -> bool {
        self.providers.get(platform).is_some()
    }

    /// Register `new` for the device; an identical token (same platform and token) is
    /// refreshed in place and keeps its id.
    pub async fn register_token(
        &self,
        account: AccountId,
        device: DeviceId,
        new: NewToken,
    ) -> Result<TokenId, NotificationError> {
        if !self.platform_configured(new.platform) {
            return Err(NotificationError::PlatformUnavailable(new.platform));
        }
        let key = store::tokens_key(account, device);
        loop {
            let stored = self.read::<TokenSet>(&key).await?;
            let raw = stored.as_ref().map(|s| s.raw.clone());
            let mut set = stored.map(|s| s.value).unwrap_or_default();
            let now = self.clock.now_ms();
            let same = set
                .tokens
                .iter()
                .position(|t| Platform::from(t.platform) == new.platform && t.token == new.token);
            let id = match same {
                Some(i) => {
                    let id = set.tokens[i].id();
                    set.tokens[i] = StoredToken::new(id, new.clone(), now);
                    id
                }
                None => {
                    if set.tokens.len() >= self.cfg.max_tokens_per_device {
                        return Err(NotificationError::TooManyTokens {
                            max: self.cfg.max_tokens_per_device,
                        });
                    }
                    let id = TokenId::random();
                    set.tokens.push(StoredToken::new(id, new.clone(), now));
                    id
                }
            };
            let txn = Txn::new()
                .require_unchanged(key.clone(), raw.as_deref())
                .put(key.clone(), encode(&set));
            if self.kv.commit(txn).await? == TxnOutcome::Committed {
                return Ok(id);
            }
        }
    }

    /// Remove one of the device's tokens; another device's id is not found.
    pub async fn unregister_token(
        &self,
        account: AccountId,
        device: DeviceId,
        id: TokenId,
    ) -> Result<(), NotificationError> {
        if self.remove_token(account, device, id, None).await? {
            Ok(())
        } else {
            Err(NotificationError::TokenNotFound)
        }
    }

    pub async fn list_tokens(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<Vec<TokenInfo>, NotificationError> {
        Ok(self
            .device_tokens(account, device)
            .await?
            .iter()
            .map(StoredToken::info)
            .collect())
    }

    pub async fn device_tokens(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<Vec<StoredToken>, NotificationError> {
        Ok(self
            .read::<TokenSet>(&store::tokens_key(account, device))
            .await?
            .map(|s| s.value.tokens)
            .unwrap_or_default())
    }

    /// Delete a token the provider declared dead, unless it was re-registered with another
    /// value since (`token` is the value that was pushed to).
    pub async fn prune_token(
        &self,
        account: AccountId,
        device: DeviceId,
        id: TokenId,
        token: &str,
    ) -> Result<bool, NotificationError> {
        self.remove_token(account, device, id, Some(token)).await
    }

    async fn remove_token(
        &self,
        account: AccountId,
        device: DeviceId,
        id: TokenId,
        only_if_token: Option<&str>,
    ) -> Result<bool, NotificationError> {
        let key = store::tokens_key(account, device);
        loop {
            let Some(stored) = self.read::<TokenSet>(&key).await? else {
                return Ok(false);
            };
            let mut set = stored.value;
            let before = set.tokens.len();
            set.tokens
                .retain(|t| t.id() != id || only_if_token.is_some_and(|v| v != t.token));
            if set.tokens.len() == before {
                return Ok(false);
            }
            let txn = Txn::new().require_equals(key.clone(), stored.raw);
            let txn = if set.tokens.is_empty() {
                txn.delete(key.clone())
            } else {
                txn.put(key.clone(), encode(&set))
            };
            if self.kv.commit(txn).await? == TxnOutcome::Committed {
                return Ok(true);
            }
        }
    }
}
