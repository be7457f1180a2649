//! The admin policy's heartbeat range ([`guardyn_common::policy`]): devices are told an
//! interval inside it, and count as offline after missing [`MISSED_HEARTBEATS`] of them.

use crate::config::MISSED_HEARTBEATS;
use crate::core::Core;

impl Core {
    /// `presence.heartbeat_interval_secs` brought into the policy's range.
    pub fn heartbeat_secs(&self) -> u64 {
        self.policy
            .current()
            .clamp_heartbeat_secs(self.config.heartbeat_interval_secs)
    }

    /// Time after a heartbeat at which the device counts as offline.
    pub fn device_expiry_ms(&self) -> u64 {
        self.heartbeat_secs() * MISSED_HEARTBEATS * 1000
    }
}
