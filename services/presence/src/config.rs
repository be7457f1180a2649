//! `[presence]` configuration.

use std::time::Duration;

use guardyn_common::config::{ConfigError, Validate, key};
use guardyn_common::ratelimit::RateLimit;
use serde::{Deserialize, Serialize};

/// Heartbeat intervals the policy allows, in seconds.
pub const HEARTBEAT_RANGE_SECS: std::ops::RangeInclusive<u64> = 15..=300;

/// Heartbeat intervals a device may miss before it counts as offline.
pub const MISSED_HEARTBEATS: u64 = 3;

/// Presence settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceConfig {
    /// Interval devices are told to heartbeat at, seconds (15..=300). A device is offline
    /// after missing 3 of them.
    pub heartbeat_interval_secs: u64,
    /// Most accounts one Subscribe may watch.
    pub max_subscribe_accounts: usize,
    /// Lifetime of a typing = true indicator without a refresh, seconds.
    pub typing_ttl_secs: u64,
    /// SetTyping calls per device.
    pub typing_rate: RateLimit,
    /// Longest custom status text, in characters.
    pub max_custom_text_chars: usize,
    /// Interval of this instance's liveness beacon to its peers, seconds. A peer that hears
    /// nothing from an instance for 3 intervals treats that instance's devices as offline.
    pub instance_beacon_secs: u64,
    /// Interval of the sweep that deletes last-seen times older than the policy's
    /// `retention.realtime_secs`, seconds. Reads never show an expired one meanwhile.
    pub retention_sweep_secs: u64,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_secs: 30,
            max_subscribe_accounts: 500,
            typing_ttl_secs: 10,
            typing_rate: RateLimit::new(20, 120),
            max_custom_text_chars: 140,
            instance_beacon_secs: 10,
            retention_sweep_secs: 3600,
        }
    }
}

impl PresenceConfig {
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_secs)
    }

    /// Time after a heartbeat at which the device counts as offline.
    pub fn device_expiry_ms(&self) -> u64 {
        self.heartbeat_interval_secs * MISSED_HEARTBEATS * 1000
    }

    pub fn typing_ttl_ms(&self) -> u64 {
        self.typing_ttl_secs * 1000
    }

    pub fn instance_lease(&self) -> Duration {
        Duration::from_secs(self.instance_beacon_secs * 3)
    }
}

impl Validate for PresenceConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !HEARTBEAT_RANGE_SECS.contains(&self.heartbeat_interval_secs) {
            return Err(ConfigError::new(
                key(prefix, "heartbeat_interval_secs"),
                "must be between 15 and 300",
            ));
        }
        if !(1..=10_000).contains(&self.max_subscribe_accounts) {
            return Err(ConfigError::new(
                key(prefix, "max_subscribe_accounts"),
                "must be between 1 and 10000",
            ));
        }
        if !(1..=60).contains(&self.typing_ttl_secs) {
            return Err(ConfigError::new(
                key(prefix, "typing_ttl_secs"),
                "must be between 1 and 60",
            ));
        }
        self.typing_rate.validate(&key(prefix, "typing_rate"))?;
        if !(1..=1000).contains(&self.max_custom_text_chars) {
            return Err(ConfigError::new(
                key(prefix, "max_custom_text_chars"),
                "must be between 1 and 1000",
            ));
        }
        if !(1..=300).contains(&self.instance_beacon_secs) {
            return Err(ConfigError::new(
                key(prefix, "instance_beacon_secs"),
                "must be between 1 and 300",
            ));
        }
        if !(1..=86_400).contains(&self.retention_sweep_secs) {
            return Err(ConfigError::new(
                key(prefix, "retention_sweep_secs"),
                "must be between 1 and 86400",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_key() {
        PresenceConfig::default().validate("presence").unwrap();
        let bad = PresenceConfig {
            heartbeat_interval_secs: 10,
            ..PresenceConfig::default()
        };
        assert_eq!(
            bad.validate("presence").unwrap_err().key,
            "presence.heartbeat_interval_secs"
        );
        let bad = PresenceConfig {
            typing_rate: RateLimit::new(0, 1),
            ..PresenceConfig::default()
        };
        assert_eq!(
            bad.validate("presence").unwrap_err().key,
            "presence.typing_rate"
        );
    }
}
