//! Abuse limits: token buckets (in memory, per process) and persisted, exponential lockouts
//! (in the KvStore, so they hold across restarts and instances): failed logins per (client
//! address, username) and, with a higher threshold, per username from anywhere
//! ([`crate::config::LockoutConfig`]); failed second factors per account
//! ([`crate::config::SecondFactorLockout`]).

use std::net::IpAddr;
use std::time::Duration;

use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_common::ratelimit::KeyedLimiter;
use guardyn_storage::record::encode;
use guardyn_storage::{KvStore, Txn};

use crate::config::{AuthLimits, LockoutConfig, SecondFactorLockout};
use crate::error::{AuthError, AuthResult};
use crate::model::Lockout;
use crate::store;

/// The service's token buckets.
#[derive(Debug)]
pub struct Limiters {
    pub login_per_address: KeyedLimiter<IpAddr>,
    /// Keyed by (client address, normalized username), known or not: an attacker exhausting it
    /// does not stop the owner signing in from elsewhere.
    pub login_per_account: KeyedLimiter<(IpAddr, String)>,
    /// Keyed by the normalized username alone, with a higher allowance than the above.
    pub login_per_username: KeyedLimiter<String>,
    /// PreKey and KeyPackage uploads per device (each one appends to the audit log).
    pub prekey_upload_per_device: KeyedLimiter<(AccountId, DeviceId)>,
    /// Audit entries for failed logins, all names and addresses together (one key): beyond
    /// it, failures are counted and the count lands in the next entry written.
    pub failed_login_audit: KeyedLimiter<()>,
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
            login_per_username: KeyedLimiter::new("login_per_username", c.login_per_username),
            prekey_upload_per_device: KeyedLimiter::new(
                "prekey_upload_per_device",
                c.prekey_upload_per_device,
            ),
            failed_login_audit: KeyedLimiter::new("failed_login_audit", c.failed_login_audit),
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

/// How a persisted lockout grows and fades: from `threshold` counted failures on, every
/// further failure locks for `base_secs * 2^(failures - threshold)`, capped at `max_secs`.
/// With `decay_secs` > 0 one failure is forgiven per `decay_secs` without a failure once the
/// lock ended (so honest typos fade while a patient attacker, who fails again as soon as each
/// lock ends, keeps the count); with 0 the count only goes when the sweeper deletes the
/// record. The sweeper deletes a record once it stayed quiet for `max_secs` with nothing left
/// to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockPolicy {
    pub threshold: u32,
    pub base_secs: u64,
    pub max_secs: u64,
    pub decay_secs: u64,
}

impl LockPolicy {
    /// The per (client address, username) login lockout.
    pub fn login(c: &LockoutConfig) -> Self {
        Self {
            threshold: c.threshold,
            base_secs: c.base_secs,
            max_secs: c.max_secs,
            decay_secs: 0,
        }
    }

    /// The softer lockout of a username from every address together.
    pub fn login_global(c: &LockoutConfig) -> Self {
        Self {
            threshold: c.global_threshold,
            base_secs: c.base_secs,
            max_secs: c.max_secs,
            decay_secs: c.global_decay_secs,
        }
    }

    /// The per-account second-factor lockout.
    pub fn second_factor(c: &SecondFactorLockout) -> Self {
        Self {
            threshold: c.threshold,
            base_secs: c.base_secs,
            max_secs: c.max_secs,
            decay_secs: c.decay_secs,
        }
    }

    /// Failures still counted at `now_ms`.
    pub fn failures_at(&self, l: &Lockout, now_ms: u64) -> u32 {
        if self.decay_secs == 0 {
            return l.failures;
        }
        let quiet_since = l.last_failure_ms.max(l.locked_until_ms);
        let forgiven = now_ms.saturating_sub(quiet_since) / self.decay_secs.saturating_mul(1000);
        l.failures
            .saturating_sub(u32::try_from(forgiven).unwrap_or(u32::MAX))
    }

    /// The record no longer matters: not locked, no failure for `max_secs`, and (with decay)
    /// nothing left to count.
    pub fn expired(&self, l: &Lockout, now_ms: u64) -> bool {
        let quiet = self.max_secs.saturating_mul(1000);
        l.locked_until_ms <= now_ms
            && l.last_failure_ms.saturating_add(quiet) <= now_ms
            && (self.decay_secs == 0 || self.failures_at(l, now_ms) == 0)
    }

    fn fail(&self, l: &mut Lockout, now_ms: u64) {
        l.failures = self.failures_at(l, now_ms).saturating_add(1);
        l.last_failure_ms = now_ms;
        if l.failures >= self.threshold {
            let exp = (l.failures - self.threshold).min(30);
            let secs = self
                .base_secs
                .saturating_mul(1u64 << exp)
                .min(self.max_secs);
            l.locked_until_ms = now_ms.saturating_add(secs.saturating_mul(1000));
        }
    }
}

/// Refuse while the lockout at `key` holds; `limit` names it in the error.
pub async fn check_lock(
    kv: &dyn KvStore,
    key: &[u8],
    now_ms: u64,
    limit: &'static str,
) -> AuthResult<()> {
    if let Some((l, _)) = store::get::<Lockout>(kv, key).await?
        && l.locked_until_ms > now_ms
    {
        return Err(AuthError::LockedOut {
            retry_after: Duration::from_millis(l.locked_until_ms - now_ms),
            limit,
        });
    }
    Ok(())
}

/// Count one failure at `key` under `policy` (compare-and-set, so concurrent failures on any
/// instance all count).
pub async fn count_failure(
    kv: &dyn KvStore,
    key: &[u8],
    policy: &LockPolicy,
    now_ms: u64,
) -> AuthResult<()> {
    for _ in 0..store::MAX_ATTEMPTS {
        let current = store::get::<Lockout>(kv, key).await?;
        let raw = current.as_ref().map(|(_, r)| r.clone());
        let mut l = current.map(|(l, _)| l).unwrap_or_default();
        policy.fail(&mut l, now_ms);
        let txn = Txn::new()
            .require_unchanged(key.to_vec(), raw.as_deref())
            .put(key.to_vec(), encode(&l));
        if store::commit(kv, txn).await? {
            return Ok(());
        }
    }
    Err(AuthError::Contention)
}

/// An attempt counted as a failure before it was checked ([`begin_attempt`]).
#[derive(Debug)]
pub struct Attempt {
    key: Vec<u8>,
    /// The lock before and after counting the attempt.
    locked_before_ms: u64,
    locked_after_ms: u64,
}

/// Count an attempt as a failure *before* checking it, refusing while locked: concurrent
/// attempts (on any instance) then cannot get past the threshold together, as they could if
/// each checked the lock first and counted its failure afterwards. A success undoes the count
/// with [`release`].
pub async fn begin_attempt(
    kv: &dyn KvStore,
    key: &[u8],
    policy: &LockPolicy,
    now_ms: u64,
    limit: &'static str,
) -> AuthResult<Attempt> {
    for _ in 0..store::MAX_ATTEMPTS {
        let current = store::get::<Lockout>(kv, key).await?;
        let raw = current.as_ref().map(|(_, r)| r.clone());
        let mut l = current.map(|(l, _)| l).unwrap_or_default();
        if l.locked_until_ms > now_ms {
            return Err(AuthError::LockedOut {
                retry_after: Duration::from_millis(l.locked_until_ms - now_ms),
                limit,
            });
        }
        let locked_before_ms = l.locked_until_ms;
        policy.fail(&mut l, now_ms);
        let txn = Txn::new()
            .require_unchanged(key.to_vec(), raw.as_deref())
            .put(key.to_vec(), encode(&l));
        if store::commit(kv, txn).await? {
            return Ok(Attempt {
                key: key.to_vec(),
                locked_before_ms,
                locked_after_ms: l.locked_until_ms,
            });
        }
    }
    Err(AuthError::Contention)
}

/// The attempt was not a wrong guess: take its count back, and the lock it set unless a later
/// failure replaced it. (The time of the last failure stays: restoring it would let the
/// decay count the same quiet time twice.)
pub async fn release(kv: &dyn KvStore, attempt: &Attempt) -> AuthResult<()> {
    for _ in 0..store::MAX_ATTEMPTS {
        let Some((mut l, raw)) = store::get::<Lockout>(kv, &attempt.key).await? else {
            return Ok(());
        };
        l.failures = l.failures.saturating_sub(1);
        if attempt.locked_after_ms != attempt.locked_before_ms
            && l.locked_until_ms == attempt.locked_after_ms
        {
            l.locked_until_ms = attempt.locked_before_ms;
        }
        let txn = Txn::new()
            .require_equals(attempt.key.clone(), raw)
            .put(attempt.key.clone(), encode(&l));
        if store::commit(kv, txn).await? {
            return Ok(());
        }
    }
    Err(AuthError::Contention)
}

/// Refuse a login while `name` is locked out for this client address, or for every address.
pub async fn check_login_lockout(
    kv: &dyn KvStore,
    name: &str,
    addr: IpAddr,
    now_ms: u64,
) -> AuthResult<()> {
    check_lock(
        kv,
        &store::lockout_from(name, addr),
        now_ms,
        "login_lockout",
    )
    .await?;
    check_lock(kv, &store::lockout(name), now_ms, "login_lockout_global").await
}

/// Count a failed login for (address, name) and for the name from any address.
pub async fn record_login_failure(
    kv: &dyn KvStore,
    config: &LockoutConfig,
    name: &str,
    addr: IpAddr,
    now_ms: u64,
) -> AuthResult<()> {
    let own = LockPolicy::login(config);
    count_failure(kv, &store::lockout_from(name, addr), &own, now_ms).await?;
    count_failure(
        kv,
        &store::lockout(name),
        &LockPolicy::login_global(config),
        now_ms,
    )
    .await
}

/// A successful login clears the failures of its address. The global count is left to decay:
/// clearing it would hand a distributed guesser a fresh allowance at every login of the owner.
pub async fn clear_login_failures(kv: &dyn KvStore, name: &str, addr: IpAddr) -> AuthResult<()> {
    kv.delete(&store::lockout_from(name, addr)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECAYING: LockPolicy = LockPolicy {
        threshold: 3,
        base_secs: 10,
        max_secs: 40,
        decay_secs: 100,
    };

    #[test]
    fn locks_grow_to_the_cap_and_decay_only_once_quiet_after_the_lock() {
        let mut l = Lockout::default();
        for _ in 0..2 {
            DECAYING.fail(&mut l, 0);
        }
        assert_eq!((l.failures, l.locked_until_ms), (2, 0));
        DECAYING.fail(&mut l, 0);
        assert_eq!(l.locked_until_ms, 10_000);
        DECAYING.fail(&mut l, 10_000);
        assert_eq!(l.locked_until_ms, 30_000);
        for _ in 0..5 {
            DECAYING.fail(&mut l, 30_000);
        }
        assert_eq!(l.locked_until_ms, 70_000, "capped at max_secs");
        // Nothing decays while locked, then one failure per decay period.
        assert_eq!(DECAYING.failures_at(&l, 70_000), 9);
        assert_eq!(DECAYING.failures_at(&l, 170_000), 8);
        assert!(!DECAYING.expired(&l, 170_000));
        assert!(DECAYING.expired(&l, 70_000 + 9 * 100_000));
        // Without decay the count stays until the record is swept.
        let plain = LockPolicy {
            decay_secs: 0,
            ..DECAYING
        };
        assert_eq!(plain.failures_at(&l, u64::MAX / 2), 9);
        assert!(plain.expired(&l, 30_000 + 40_000));
        assert!(!plain.expired(&l, 69_999));
    }
}
