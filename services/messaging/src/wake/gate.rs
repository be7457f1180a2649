//! Coalescing of wake-up jobs at the source: at most one per device per window (per instance;
//! the notification service coalesces across the cluster too), and the job counters.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use guardyn_common::{AccountId, DeviceId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Most devices remembered within one window. A device beyond it is not coalesced (one job per
/// message), which costs pushes, not correctness, and keeps the memory bounded (~100 bytes each).
const MAX_TRACKED: usize = 100_000;

type Device = (AccountId, DeviceId);

#[derive(Debug, Default)]
struct Inner {
    /// The last job per device: when (service clock, ms) and whether it was urgent.
    last: HashMap<Device, (u64, bool)>,
    /// The same entries in the order they were made, to forget them when their window ends.
    order: VecDeque<(u64, Device)>,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct WakeGate {
    window_ms: u64,
    inner: Mutex<Inner>,
    pub enqueued: Counter,
    pub coalesced: Counter,
    pub failed: Counter,
}

impl WakeGate {
    pub(crate) fn new(window_ms: u64) -> Self {
        Self {
            window_ms,
            inner: Mutex::default(),
            enqueued: Counter::default(),
            coalesced: Counter::default(),
            failed: Counter::default(),
        }
    }

    /// Add the counters to the process's metrics registry.
    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register(
            "messaging_wake_jobs_enqueued",
            "Wake-up jobs enqueued for devices without an open Listen stream",
            self.enqueued.clone(),
        );
        registry.register(
            "messaging_wake_jobs_coalesced",
            "Wake-up jobs not enqueued because one went out for the device within the window",
            self.coalesced.clone(),
        );
        registry.register(
            "messaging_wake_jobs_failed",
            "Wake-up jobs that could not be enqueued (the mail stays queued)",
            self.failed.clone(),
        );
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain collections: a panic elsewhere cannot leave them inconsistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a job for `device` goes out now. An urgent one still goes after a silent one
    /// in the same window, so that a silent push does not swallow an alert.
    pub(crate) fn admit(&self, device: Device, urgent: bool, now_ms: u64) -> bool {
        if self.window_ms == 0 {
            return true;
        }
        let mut inner = self.lock();
        while let Some(&(at, d)) = inner.order.front() {
            if now_ms.saturating_sub(at) < self.window_ms {
                break;
            }
            inner.order.pop_front();
            if inner.last.get(&d).is_some_and(|&(t, _)| t == at) {
                inner.last.remove(&d);
            }
        }
        if let Some(&(at, was_urgent)) = inner.last.get(&device)
            && now_ms.saturating_sub(at) < self.window_ms
            && (was_urgent || !urgent)
        {
            self.coalesced.inc();
            return false;
        }
        if inner.order.len() < MAX_TRACKED {
            inner.last.insert(device, (now_ms, urgent));
            inner.order.push_back((now_ms, device));
        }
        true
    }

    /// The job admitted at `at_ms` was not enqueued: let the device's next mail try again.
    pub(crate) fn forget(&self, device: Device, at_ms: u64) {
        let mut inner = self.lock();
        if inner.last.get(&device).is_some_and(|&(t, _)| t == at_ms) {
            inner.last.remove(&device);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn one_job_per_window_with_urgent_upgrades_and_retry_after_failure() {
        let g = WakeGate::new(1_000);
        let d = (AccountId::random(), DeviceId::new(1).unwrap());
        assert!(g.admit(d, false, 10));
        assert!(!g.admit(d, false, 500));
        assert!(g.admit(d, true, 600), "urgent after silent goes out");
        assert!(!g.admit(d, false, 700));
        assert!(!g.admit(d, true, 1_500));
        assert!(g.admit(d, false, 1_600), "the window ended");
        g.forget(d, 1_600);
        assert!(
            g.admit(d, false, 1_601),
            "a failed job does not hold the next one back"
        );
        assert_eq!(g.coalesced.get(), 3);
        assert!(g.lock().order.len() <= 4);
        let off = WakeGate::new(0);
        assert!(off.admit(d, false, 1) && off.admit(d, false, 1));
    }
}
