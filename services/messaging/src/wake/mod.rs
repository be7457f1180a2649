//! The push trigger: once mail is durably queued for a device that has no open Listen stream
//! on this instance nor (as far as the claims, releases and announcements tell) on another,
//! enqueue a [`WakeJob`] on the durable [`WAKE_QUEUE`], which the notification service
//! consumes. Online-only mail never wakes. A failed enqueue is logged and counted and never
//! fails the send: the mail is stored and the device gets it when it next connects.

pub(crate) mod gate;

use futures::future::join_all;
use guardyn_common::events::Payload as _;
use guardyn_common::events::notification::{WAKE_QUEUE, WakeJob};
use guardyn_common::{AccountId, DeviceId};

use crate::core::Core;

impl Core {
    /// Mail was queued at `queued_at_ms` for each of `devices`; wake those that are offline.
    pub(crate) async fn wake_offline(
        &self,
        devices: &[(AccountId, DeviceId)],
        urgent: bool,
        queued_at_ms: u64,
    ) {
        if !self.cfg.wake_jobs {
            return;
        }
        let now = self.clock.now_ms();
        let due: Vec<(AccountId, DeviceId)> = devices
            .iter()
            .copied()
            .filter(|&(a, d)| !self.registry.is_connected(a, d) && !self.remote.streaming(a, d))
            .filter(|&d| self.wake.admit(d, urgent, now))
            .collect();
        // Concurrently, so the storage engine's group commit takes a fan-out's jobs together.
        let results = join_all(due.iter().map(|&(account, device)| {
            let job = WakeJob {
                account,
                device,
                urgent,
                queued_at_ms,
            };
            self.bus.enqueue(WAKE_QUEUE, job.encode())
        }))
        .await;
        for (device, result) in due.into_iter().zip(results) {
            match result {
                Ok(()) => {
                    self.wake.enqueued.inc();
                }
                Err(e) => {
                    self.wake.failed.inc();
                    self.wake.forget(device, now);
                    tracing::warn!(error = %e, "could not enqueue a wake-up job; the mail stays queued");
                }
            }
        }
    }
}
