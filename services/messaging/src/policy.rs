//! The admin policy's limits messaging applies ([`guardyn_common::policy`]): the largest
//! message and how long queued and stored group messages are kept ("historical" retention).
//! Each is the stricter of `[messaging]` and the policy, so an unset policy changes nothing.

use crate::core::Core;

impl Core {
    /// Largest ciphertext of one envelope, in bytes.
    pub fn max_envelope_bytes(&self) -> usize {
        let policy = usize::try_from(self.policy.current().max_message_bytes).unwrap_or(usize::MAX);
        self.cfg.max_envelope_bytes.min(policy)
    }

    /// Largest MLS application message, in bytes.
    pub fn max_mls_message_bytes(&self) -> usize {
        let policy = usize::try_from(self.policy.current().max_message_bytes).unwrap_or(usize::MAX);
        self.cfg.max_mls_message_bytes.min(policy)
    }

    /// How long a queued envelope or stored group message is kept, in seconds. Applied when a
    /// message is stored (its log TTL) and when it is read (older ones are dropped), so a
    /// shorter retention also ends messages queued before the change.
    pub fn retention_secs(&self) -> u64 {
        self.cfg
            .retention_secs
            .min(self.policy.current().retention.historical_secs)
    }
}
