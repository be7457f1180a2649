//! Live counters of one process that its monitoring beacon reports: open server streams and
//! the devices holding a Listen stream here. Services update them through RAII guards, so a
//! stream that ends in any way (error, client gone, shutdown) is counted out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::ids::{AccountId, DeviceId};

/// The process's live counters; cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct ProcessStats {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    open_streams: AtomicU64,
    /// Open Listen streams per device: a replaced stream overlaps its successor briefly.
    listens: Mutex<HashMap<(AccountId, DeviceId), u64>>,
}

/// What [`ProcessStats`] counts at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Server streams of any kind open on this process.
    pub open_streams: u64,
    /// Open Listen streams.
    pub listen_streams: u64,
    /// Distinct devices with at least one open Listen stream here.
    pub connected_devices: u64,
}

impl ProcessStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one open server stream until the guard drops.
    pub fn stream(&self) -> StreamGuard {
        self.inner.open_streams.fetch_add(1, Ordering::Relaxed);
        StreamGuard {
            stats: self.clone(),
        }
    }

    /// Count a device's Listen stream (and the device as connected) until the guard drops.
    pub fn listen(&self, account: AccountId, device: DeviceId) -> ListenGuard {
        *self.listens().entry((account, device)).or_insert(0) += 1;
        ListenGuard {
            stats: self.clone(),
            key: (account, device),
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let listens = self.listens();
        StatsSnapshot {
            open_streams: self.inner.open_streams.load(Ordering::Relaxed),
            listen_streams: listens.values().sum(),
            connected_devices: listens.len() as u64,
        }
    }

    fn listens(&self) -> std::sync::MutexGuard<'_, HashMap<(AccountId, DeviceId), u64>> {
        self.inner
            .listens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// One open server stream; counted out on drop.
#[derive(Debug)]
pub struct StreamGuard {
    stats: ProcessStats,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.stats
            .inner
            .open_streams
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// One open Listen stream of a device; counted out on drop.
#[derive(Debug)]
pub struct ListenGuard {
    stats: ProcessStats,
    key: (AccountId, DeviceId),
}

impl Drop for ListenGuard {
    fn drop(&mut self) {
        let mut listens = self.stats.listens();
        if let Some(n) = listens.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                listens.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn guards_count_streams_and_devices_until_they_drop() {
        let stats = ProcessStats::new();
        let (a, d1, d2) = (
            AccountId::random(),
            DeviceId::new(1).unwrap(),
            DeviceId::new(2).unwrap(),
        );
        let s = stats.stream();
        let l1 = stats.listen(a, d1);
        // A replacing stream of the same device overlaps the old one.
        let l1b = stats.listen(a, d1);
        let l2 = stats.listen(a, d2);
        assert_eq!(
            stats.snapshot(),
            StatsSnapshot {
                open_streams: 1,
                listen_streams: 3,
                connected_devices: 2
            }
        );
        drop((l1, l2, s));
        assert_eq!(
            stats.snapshot(),
            StatsSnapshot {
                open_streams: 0,
                listen_streams: 1,
                connected_devices: 1
            }
        );
        drop(l1b);
        assert_eq!(stats.snapshot(), StatsSnapshot::default());
    }
}
