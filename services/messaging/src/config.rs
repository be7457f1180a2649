//! `[messaging]` configuration.

use guardyn_common::config::{ConfigError, Validate, key};
use guardyn_common::ratelimit::RateLimit;
use serde::{Deserialize, Serialize};

/// Limits and timings of the messaging service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagingConfig {
    /// Largest ciphertext of one envelope, in bytes.
    pub max_envelope_bytes: usize,
    /// Most envelopes (destination devices) in one SendMessage.
    pub max_devices_per_send: usize,
    /// Most envelopes queued for one device; sends beyond it fail with QUOTA_EXCEEDED.
    pub max_queue_len: u64,
    /// Most ciphertext bytes queued for one device (group messages count their full length for
    /// every recipient device).
    pub max_queue_bytes: u64,
    /// Most envelopes one sending account may have queued for one device: its share of the
    /// queue, so that a flooding sender cannot block the device's other contacts.
    pub max_sender_queue_len: u64,
    /// Most ciphertext bytes one sending account may have queued for one device.
    pub max_sender_queue_bytes: u64,
    /// Envelopes a Listen stream sends before it waits for acknowledgements.
    pub max_in_flight: usize,
    /// MiB of envelopes Listen streams hold, all streams of the process together: a queue
    /// envelope from its read until HTTP/2 takes it, a group-log envelope from before its read
    /// until the client acknowledges it. Thousands of streams catching up on large messages at
    /// once wait for room instead of holding their whole backlogs in memory.
    pub listen_buffer_mib: u64,
    /// Seconds an unacknowledged group-log envelope keeps its room in the Listen buffer: a
    /// client that does not acknowledge cannot keep others waiting longer (it still gets no
    /// more than 1 MiB of group envelopes unacknowledged).
    pub listen_hold_secs: u64,
    /// How long a queued envelope (and a stored group message) is kept, in seconds.
    pub retention_secs: u64,
    /// How long a client message id is remembered for idempotent retries, in seconds.
    pub idempotency_secs: u64,
    /// A Listen stream sends a keepalive after this many seconds of silence.
    pub keepalive_secs: u64,
    /// Largest Echo payload, in bytes.
    pub max_echo_bytes: usize,
    /// Largest MLS commit, proposal, GroupInfo or application message, in bytes.
    pub max_mls_message_bytes: usize,
    /// Largest MLS Welcome, in bytes.
    pub max_welcome_bytes: usize,
    /// Most member devices of one group.
    pub max_group_members: usize,
    /// Seconds between passes of the sweeper that deletes expired idempotency records
    /// (1..=86400).
    pub sweep_interval_secs: u64,
    /// Keys the sweeper reads per pass (1..=10000).
    pub sweep_batch: usize,
    /// Enqueue a wake-up job (`notification-wake`, consumed by the notification service) when
    /// mail is queued for a device with no open Listen stream in the cluster. Off for
    /// deployments without push, so the queue does not grow unconsumed.
    pub wake_jobs: bool,
    /// At most one wake-up job per device per this many milliseconds, per instance
    /// (0..=600000; 0 = one per stored message).
    pub wake_coalesce_ms: u64,
    /// Seconds between two re-announcements of this instance's Listen streams to the others
    /// (1..=300); an announced stream counts as open for three intervals.
    pub stream_announce_secs: u64,
    /// Per-account rate limits.
    pub limits: MessagingLimits,
}

/// Token buckets per sending account (burst, refill per minute).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagingLimits {
    /// SendMessage and SendGroupMessage.
    pub send_per_account: RateLimit,
    /// CreateGroup.
    pub create_group_per_account: RateLimit,
    /// SendCommit with a Welcome (a commit that adds devices).
    pub welcome_per_account: RateLimit,
    /// GetGroupInfo and GetRatchetTree: each answer carries a group's ratchet tree (about 200
    /// bytes per member, 2 MB at 10,000).
    pub tree_fetch_per_account: RateLimit,
}

impl Default for MessagingLimits {
    fn default() -> Self {
        Self {
            send_per_account: RateLimit::new(300, 3000),
            create_group_per_account: RateLimit::new(20, 20),
            welcome_per_account: RateLimit::new(30, 30),
            tree_fetch_per_account: RateLimit::new(100, 300),
        }
    }
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            max_envelope_bytes: 256 * 1024,
            max_devices_per_send: 127,
            max_queue_len: 10_000,
            max_queue_bytes: 256 * 1024 * 1024,
            max_sender_queue_len: 2_500,
            max_sender_queue_bytes: 64 * 1024 * 1024,
            max_in_flight: 256,
            listen_buffer_mib: 64,
            listen_hold_secs: 30,
            retention_secs: 30 * 24 * 60 * 60,
            idempotency_secs: 24 * 60 * 60,
            keepalive_secs: 30,
            max_echo_bytes: 64 * 1024,
            max_mls_message_bytes: 256 * 1024,
            max_welcome_bytes: 1024 * 1024,
            max_group_members: 10_000,
            sweep_interval_secs: 300,
            sweep_batch: 500,
            wake_jobs: true,
            wake_coalesce_ms: 2_000,
            stream_announce_secs: 10,
            limits: MessagingLimits::default(),
        }
    }
}

impl Validate for MessagingConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let positive: [(&str, u64); 14] = [
            ("max_envelope_bytes", self.max_envelope_bytes as u64),
            ("max_devices_per_send", self.max_devices_per_send as u64),
            ("max_queue_len", self.max_queue_len),
            ("max_sender_queue_len", self.max_sender_queue_len),
            ("max_in_flight", self.max_in_flight as u64),
            ("listen_buffer_mib", self.listen_buffer_mib),
            ("listen_hold_secs", self.listen_hold_secs),
            ("retention_secs", self.retention_secs),
            ("idempotency_secs", self.idempotency_secs),
            ("keepalive_secs", self.keepalive_secs),
            ("max_echo_bytes", self.max_echo_bytes as u64),
            ("max_mls_message_bytes", self.max_mls_message_bytes as u64),
            ("max_welcome_bytes", self.max_welcome_bytes as u64),
            ("max_group_members", self.max_group_members as u64),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(key(prefix, field), "must be at least 1"));
            }
        }
        // Storage values are capped at 2 MiB (guardyn_storage::MAX_VALUE_LEN); leave room for
        // the envelope header.
        for (field, value) in [
            ("max_envelope_bytes", self.max_envelope_bytes),
            ("max_mls_message_bytes", self.max_mls_message_bytes),
            ("max_welcome_bytes", self.max_welcome_bytes),
        ] {
            if value > 1024 * 1024 {
                return Err(ConfigError::new(
                    key(prefix, field),
                    "must be at most 1 MiB",
                ));
            }
        }
        if !(1..=86_400).contains(&self.sweep_interval_secs) {
            return Err(ConfigError::new(
                key(prefix, "sweep_interval_secs"),
                "must be between 1 and 86400",
            ));
        }
        if !(1..=10_000).contains(&self.sweep_batch) {
            return Err(ConfigError::new(
                key(prefix, "sweep_batch"),
                "must be between 1 and 10000",
            ));
        }
        if self.wake_coalesce_ms > 600_000 {
            return Err(ConfigError::new(
                key(prefix, "wake_coalesce_ms"),
                "must be at most 600000",
            ));
        }
        if !(1..=300).contains(&self.stream_announce_secs) {
            return Err(ConfigError::new(
                key(prefix, "stream_announce_secs"),
                "must be between 1 and 300",
            ));
        }
        // A byte quota smaller than the largest message would refuse that message forever.
        let largest = self
            .max_envelope_bytes
            .max(self.max_mls_message_bytes)
            .max(self.max_welcome_bytes) as u64;
        for (field, value) in [
            ("max_queue_bytes", self.max_queue_bytes),
            ("max_sender_queue_bytes", self.max_sender_queue_bytes),
        ] {
            if value < largest {
                return Err(ConfigError::new(
                    key(prefix, field),
                    "must be at least the largest envelope, MLS message and Welcome",
                ));
            }
        }
        let limits = key(prefix, "limits");
        for (name, limit) in [
            ("send_per_account", &self.limits.send_per_account),
            (
                "create_group_per_account",
                &self.limits.create_group_per_account,
            ),
            ("welcome_per_account", &self.limits.welcome_per_account),
            (
                "tree_fetch_per_account",
                &self.limits.tree_fetch_per_account,
            ),
        ] {
            limit.validate(&key(&limits, name))?;
        }
        if self.max_devices_per_send > 127 {
            return Err(ConfigError::new(
                key(prefix, "max_devices_per_send"),
                "must be at most 127 (device ids are 1..127)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn defaults_are_valid_and_zero_is_named() {
        MessagingConfig::default().validate("messaging").unwrap();
        let c = MessagingConfig {
            max_in_flight: 0,
            ..MessagingConfig::default()
        };
        assert_eq!(
            c.validate("messaging").unwrap_err().key,
            "messaging.max_in_flight"
        );
        let c = MessagingConfig {
            max_sender_queue_bytes: 1024,
            ..MessagingConfig::default()
        };
        assert_eq!(
            c.validate("messaging").unwrap_err().key,
            "messaging.max_sender_queue_bytes"
        );
        for (c, field) in [
            (
                MessagingConfig {
                    wake_coalesce_ms: 600_001,
                    ..MessagingConfig::default()
                },
                "messaging.wake_coalesce_ms",
            ),
            (
                MessagingConfig {
                    stream_announce_secs: 0,
                    ..MessagingConfig::default()
                },
                "messaging.stream_announce_secs",
            ),
        ] {
            assert_eq!(c.validate("messaging").unwrap_err().key, field);
        }
        let mut c = MessagingConfig::default();
        c.limits.welcome_per_account = RateLimit::new(0, 1);
        assert_eq!(
            c.validate("messaging").unwrap_err().key,
            "messaging.limits.welcome_per_account"
        );
    }
}
