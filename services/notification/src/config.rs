//! `[notification]` configuration.

use guardyn_common::config::{ConfigError, Validate, key};
use guardyn_common::ratelimit::RateLimit;
use serde::{Deserialize, Serialize};

use crate::providers::ProvidersConfig;
use crate::providers::apns::ApnsConfig;
use crate::providers::fcm::FcmConfig;
use crate::providers::webpush::WebPushConfig;

/// The contract's cap on tokens per device (`RegisterPushToken`).
pub const MAX_TOKENS_PER_DEVICE: usize = 4;

/// Push providers, coalescing, retries and limits of the notification service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationConfig {
    /// APNs (`[notification.apns]`); left out, APNs tokens are refused.
    pub apns: Option<ApnsConfig>,
    /// FCM (`[notification.fcm]`); left out, FCM tokens are refused.
    pub fcm: Option<FcmConfig>,
    /// Web Push and UnifiedPush (`[notification.web_push]`); left out, subscriptions are
    /// refused.
    pub web_push: Option<WebPushConfig>,
    /// At most one push per device per this many milliseconds: mail queued within the window
    /// after a push is left to that push (the woken device fetches its whole queue).
    pub coalesce_ms: u64,
    /// Provider answers asking to retry (429, 5xx, transport errors) before a wake-up is
    /// dead-lettered.
    pub max_attempts: u32,
    /// First retry delay, doubled per attempt (with jitter), in milliseconds.
    pub backoff_base_ms: u64,
    /// Longest retry delay, in milliseconds (a longer Retry-After is still honoured).
    pub backoff_max_ms: u64,
    /// Tokens one device may hold (1..=4).
    pub max_tokens_per_device: usize,
    /// Dead-letter records are deleted this many seconds after they were written.
    pub dead_letter_retention_secs: u64,
    /// Wake-up jobs handled at once by this process.
    pub concurrency: usize,
    /// How long a push being sent holds its device (another instance waits, a crashed one's
    /// claim lapses), in milliseconds; longer than a provider request can take.
    pub claim_ms: u64,
    /// Seconds between two passes of the dead-letter sweeper.
    pub sweep_interval_secs: u64,
    /// RegisterPushToken, UnregisterPushToken and SetNotificationSettings calls per device.
    pub write_rate: RateLimit,
}

impl NotificationConfig {
    /// The provider sections, as the senders take them.
    pub fn providers(&self) -> ProvidersConfig {
        ProvidersConfig {
            apns: self.apns.clone(),
            fcm: self.fcm.clone(),
            web_push: self.web_push.clone(),
        }
    }

    /// `http://` Web Push endpoints are accepted on loopback hosts (local fakes in tests).
    pub fn allow_http_endpoints(&self) -> bool {
        self.web_push.as_ref().is_some_and(|w| w.allow_http)
    }
}

impl Default for NotificationConfig {
    fn default() -> Self {
        Self {
            apns: None,
            fcm: None,
            web_push: None,
            coalesce_ms: 3_000,
            max_attempts: 8,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            max_tokens_per_device: MAX_TOKENS_PER_DEVICE,
            dead_letter_retention_secs: 7 * 24 * 60 * 60,
            concurrency: 32,
            claim_ms: 60_000,
            sweep_interval_secs: 300,
            write_rate: RateLimit::new(20, 20),
        }
    }
}

impl Validate for NotificationConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let positive: [(&str, u64); 7] = [
            ("max_attempts", u64::from(self.max_attempts)),
            ("backoff_base_ms", self.backoff_base_ms),
            ("backoff_max_ms", self.backoff_max_ms),
            (
                "dead_letter_retention_secs",
                self.dead_letter_retention_secs,
            ),
            ("concurrency", self.concurrency as u64),
            ("claim_ms", self.claim_ms),
            ("sweep_interval_secs", self.sweep_interval_secs),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(key(prefix, field), "must be at least 1"));
            }
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return Err(ConfigError::new(
                key(prefix, "backoff_max_ms"),
                "must be at least backoff_base_ms",
            ));
        }
        if !(1..=MAX_TOKENS_PER_DEVICE).contains(&self.max_tokens_per_device) {
            return Err(ConfigError::new(
                key(prefix, "max_tokens_per_device"),
                format!("must be between 1 and {MAX_TOKENS_PER_DEVICE}"),
            ));
        }
        self.write_rate.validate(&key(prefix, "write_rate"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        NotificationConfig::default()
            .validate("notification")
            .unwrap();
        let key_of = |c: NotificationConfig| c.validate("notification").unwrap_err().key;
        let d = NotificationConfig::default;
        assert_eq!(
            key_of(NotificationConfig {
                max_attempts: 0,
                ..d()
            }),
            "notification.max_attempts"
        );
        assert_eq!(
            key_of(NotificationConfig {
                max_tokens_per_device: 5,
                ..d()
            }),
            "notification.max_tokens_per_device"
        );
        assert_eq!(
            key_of(NotificationConfig {
                backoff_max_ms: 10,
                ..d()
            }),
            "notification.backoff_max_ms"
        );
    }
}
