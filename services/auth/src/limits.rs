//! Abuse limits: token buckets (in memory, per process) and the login lockout (in the
//! KvStore, see [`crate::config::LockoutConfig`]).

use std::net::IpAddr;
use std::time::Duration;

use guardyn_common::ids::AccountId;
use guardyn_common::ratelimit::KeyedLimiter;
use guardyn_storage::record::encode;
use guardyn_storage::{KvStore, Txn};

use crate::config::{AuthLimits, LockoutConfig};
use crate::error::{AuthError, AuthResult};
use crate::model::Lockout;
use crate::store;

/// The service's token buckets.
#[derive(Debug)]
pub struct Limiters {
    pub login_per_address: KeyedLimiter<IpAddr>,
    /// Keyed by the normalized username (known or not).
    pub login_per_account: KeyedLimiter<String>,
    pub register_per_address: KeyedLimiter<IpAddr>,
    pub totp_per_account: KeyedLimiter<AccountId>,
    pub password_per_account: KeyedLimiter<AccountId>,
    /// Keyed by (caller, target account).
    pub prekey_fetch_per_target: KeyedLimiter<(AccountId, AccountId)>,
    pub link_code_per_account: KeyedLimiter<AccountId>,
    /// LookupUsername, keyed by the caller.
    pub lookup_per_account: KeyedLimiter<AccountId>,
}

impl Limiters {
    pub fn new(c: &AuthLimits) -> Self {
        Self {
            login_per_address: KeyedLimiter::new("login_per_address", c.login_per_address),
            login_per_account: KeyedLimiter::new("login_per_account", c.login_per_account),
            register_per_address: KeyedLimiter::new("register_per_address", c.register_per_address),
            totp_per_account: KeyedLimiter::new("totp_per_account", c.totp_per_account),
            password_per_account: KeyedLimiter::new("password_per_account", c.password_per_account),
            prekey_fetch_per_target: KeyedLimiter::new(
                "prekey_fetch_per_target",
                c.prekey_fetch_per_target,
            ),
            link_code_per_account: KeyedLimiter::new(
                "link_code_per_account",
                c.link_code_per_account,
            ),
            lookup_per_account: KeyedLimiter::new("lookup_per_account", c.lookup_per_account),
        }
    }
}

/// Take one token or fail with RATE_LIMITED.
pub fn take<K: std::hash::Hash + Eq + Clone>(limiter: &KeyedLimiter<K>, key: &K) -> AuthResult<()> {
    limiter.check(key).map_err(AuthError::Limited)
}

/// Refuse while `name` is locked out.
pub async fn check_lockout(kv: &dyn KvStore, name: &str, now_ms: u64) -> AuthResult<()> {
    if let Some((l, _)) = store::get::<Lockout>(kv, &store::lockout(name)).await?
        && l.locked_until_ms > now_ms
    {
        return Err(AuthError::LockedOut {
            retry_after: Duration::from_millis(l.locked_until_ms - now_ms),
        });
    }
    Ok(())
}

/// Count a failed login; from the threshold on, lock exponentially longer.
pub async fn record_failure(
    kv: &dyn KvStore,
    config: &LockoutConfig,
    name: &str,
    now_ms: u64,
) -> AuthResult<()> {
    let key = store::lockout(name);
    for _ in 0..store::MAX_ATTEMPTS {
        let current = store::get::<Lockout>(kv, &key).await?;
        let raw = current.as_ref().map(|(_, r)| r.clone());
        let mut l = current.map(|(l, _)| l).unwrap_or_default();
        l.failures = l.failures.saturating_add(1);
        l.last_failure_ms = now_ms;
        if l.failures >= config.threshold {
            let exp = (l.failures - config.threshold).min(30);
            let secs = config
                .base_secs
                .saturating_mul(1u64 << exp)
                .min(config.max_secs);
            l.locked_until_ms = now_ms.saturating_add(secs.saturating_mul(1000));
        }
        let txn = Txn::new()
            .require_unchanged(key.clone(), raw.as_deref())
            .put(key.clone(), encode(&l));
        if store::commit(kv, txn).await? {
            return Ok(());
        }
    }
    Err(AuthError::Contention)
}

/// A successful login clears the failure count.
pub async fn clear_failures(kv: &dyn KvStore, name: &str) -> AuthResult<()> {
    kv.delete(&store::lockout(name)).await?;
    Ok(())
}
