//! The notification service's durable job (`proto/guardyn/notification/v1/events.proto`).

use guardyn_proto::guardyn::notification::v1 as pb;

use super::{DecodeError, Payload, bad};
use crate::ids::{AccountId, DeviceId};

/// The durable queue messaging enqueues [`WakeJob`]s on.
pub const WAKE_QUEUE: &str = "notification-wake";

/// Wake a device that has no open Listen stream anywhere in the cluster: it got mail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WakeJob {
    pub account: AccountId,
    pub device: DeviceId,
    /// Any of the queued envelopes was urgent.
    pub urgent: bool,
    /// When the envelope was queued (Unix ms, service clock).
    pub queued_at_ms: u64,
}

impl Payload for WakeJob {
    type Wire = pb::WakeJob;
    const WHAT: &'static str = "notification.wake";
    fn to_wire(&self) -> Self::Wire {
        pb::WakeJob {
            account_id: self.account.to_string(),
            device_id: self.device.get(),
            urgent: self.urgent,
            queued_at_ms: self.queued_at_ms,
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        Ok(Self {
            account: AccountId::parse(&w.account_id)
                .ok_or_else(|| bad(Self::WHAT, "account_id"))?,
            device: DeviceId::new(w.device_id).ok_or_else(|| bad(Self::WHAT, "device_id"))?,
            urgent: w.urgent,
            queued_at_ms: w.queued_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn wake_jobs_round_trip_and_bad_ids_are_refused() {
        let job = WakeJob {
            account: AccountId::random(),
            device: DeviceId::new(3).unwrap(),
            urgent: true,
            queued_at_ms: 42,
        };
        assert_eq!(WakeJob::decode(&job.encode()).unwrap(), job);
        let mut wire = job.to_wire();
        wire.device_id = 0;
        assert!(WakeJob::from_wire(wire).is_err());
    }
}
