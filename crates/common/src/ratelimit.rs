//! Keyed token-bucket rate limits (GCRA, via `governor`) that fail with `RESOURCE_EXHAUSTED`,
//! reason `RATE_LIMITED`, and a `RetryInfo` saying when to come back.

use std::fmt;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, key};
use crate::error::{ApiError, Reason};

/// A bucket: `burst` calls at once, refilled at `per_minute` calls per minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub burst: u32,
    pub per_minute: u32,
}

impl RateLimit {
    pub const fn new(burst: u32, per_minute: u32) -> Self {
        Self { burst, per_minute }
    }

    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.burst == 0 || self.per_minute == 0 {
            return Err(ConfigError::new(
                prefix,
                "burst and per_minute must both be at least 1",
            ));
        }
        if self.per_minute > 6_000_000 {
            return Err(ConfigError::new(
                key(prefix, "per_minute"),
                "must be at most 6000000",
            ));
        }
        Ok(())
    }

    fn quota(&self) -> Quota {
        // Validated non-zero; max(1) keeps an unvalidated value from panicking.
        let burst = NonZeroU32::new(self.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let period = Duration::from_secs(60) / self.per_minute.max(1);
        Quota::with_period(period.max(Duration::from_micros(10)))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }
}

/// Per-key limiter, e.g. per account or per client address.
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    name: &'static str,
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> fmt::Debug for KeyedLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("name", &self.name)
            .field("keys", &self.limiter.len())
            .finish()
    }
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `name` appears in the error's metadata (`limit`), e.g. `login_per_account`.
    pub fn new(name: &'static str, limit: RateLimit) -> Self {
        Self {
            name,
            limiter: DefaultKeyedRateLimiter::keyed(limit.quota()),
            checks: AtomicU64::new(0),
        }
    }

    /// Take one token for `key`, or refuse with the time until one is available.
    pub fn check(&self, key: &K) -> Result<(), ApiError> {
        // Forget idle keys now and then so the map stays as large as the active set.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::new(Reason::RateLimited, "too many requests, retry later")
                .with_metadata("limit", self.name)
                .with_retry_after(wait.max(Duration::from_millis(1)))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_burst_is_allowed_then_refused_with_retry_info_per_key() {
        let l = KeyedLimiter::new("test", RateLimit::new(3, 60));
        for _ in 0..3 {
            l.check(&"a").unwrap();
        }
        let err = l.check(&"a").unwrap_err();
        assert_eq!(err.reason(), Reason::RateLimited);
        let status: tonic::Status = err.into();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        use tonic_types::StatusExt;
        let retry = status
            .get_details_retry_info()
            .unwrap()
            .retry_delay
            .unwrap();
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(1),
            "{retry:?}"
        );
        // Another key has its own bucket.
        l.check(&"b").unwrap();
    }

    #[test]
    fn zero_limits_are_rejected_by_validation() {
        assert!(RateLimit::new(0, 10).validate("auth.login").is_err());
        assert!(RateLimit::new(1, 0).validate("auth.login").is_err());
        RateLimit::new(5, 10).validate("auth.login").unwrap();
    }
}
