//! Which devices have a Listen stream open on another instance: their claims minus their
//! releases, each entry leased. The holder re-announces its streams periodically
//! ([`crate::announce`]), which renews the leases, heals claims and releases the bus lost (live
//! events are at-most-once), and lets the streams of an instance that stopped fall out after one
//! lease. So a lost release delays a device's wake-ups by at most a lease, and a lost claim
//! costs one needless wake-up.
//!
//! Measured in real (monotonic) time, like presence's peer leases: whether a process still
//! holds a connection is an infrastructure fact, not business time that tests move.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use guardyn_common::{AccountId, DeviceId};
use tokio::time::Instant;

/// Most remote streams remembered (about 100 bytes each). Beyond it new ones are not recorded:
/// their devices then get wake-ups they do not need, which is harmless, instead of the process
/// growing without bound.
const MAX_REMOTE_STREAMS: usize = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct Holder {
    instance: [u8; 16],
    stream: u64,
    until: Instant,
}

/// See the module docs.
#[derive(Debug)]
pub(crate) struct RemoteStreams {
    me: [u8; 16],
    /// How long a claim counts before the holder's next announcement renews it.
    claim_lease: Duration,
    map: Mutex<HashMap<(AccountId, DeviceId), Holder>>,
}

impl RemoteStreams {
    pub(crate) fn new(me: [u8; 16], claim_lease: Duration) -> Self {
        Self {
            me,
            claim_lease,
            map: Mutex::default(),
        }
    }

    fn map(&self) -> MutexGuard<'_, HashMap<(AccountId, DeviceId), Holder>> {
        // A plain map: a panic elsewhere cannot leave it inconsistent.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `instance` opened stream `stream` for the device: the newest claim wins.
    pub(crate) fn claimed(
        &self,
        account: AccountId,
        device: DeviceId,
        instance: [u8; 16],
        stream: u64,
    ) {
        if instance == self.me {
            return;
        }
        let holder = Holder {
            instance,
            stream,
            until: Instant::now() + self.claim_lease,
        };
        let mut map = self.map();
        if map.len() < MAX_REMOTE_STREAMS || map.contains_key(&(account, device)) {
            map.insert((account, device), holder);
        }
    }

    /// `instance` still holds these streams, for `lease` from now. An entry of another
    /// instance that is still leased stands: it comes from a claim this announcement may
    /// predate (the announcer then closes its stream and releases it).
    pub(crate) fn announced(
        &self,
        instance: [u8; 16],
        lease: Duration,
        streams: &[(AccountId, DeviceId, u64)],
    ) {
        if instance == self.me {
            return;
        }
        let now = Instant::now();
        let until = now + lease;
        let mut map = self.map();
        for &(account, device, stream) in streams {
            let full = map.len() >= MAX_REMOTE_STREAMS;
            match map.entry((account, device)) {
                Entry::Occupied(mut e) => {
                    let h = e.get_mut();
                    if h.instance == instance {
                        h.stream = stream;
                        h.until = h.until.max(until);
                    } else if h.until <= now {
                        *h = Holder {
                            instance,
                            stream,
                            until,
                        };
                    }
                }
                Entry::Vacant(e) => {
                    if !full {
                        e.insert(Holder {
                            instance,
                            stream,
                            until,
                        });
                    }
                }
            }
        }
    }

    /// `instance` closed stream `stream` of the device; a newer claim stands.
    pub(crate) fn released(
        &self,
        account: AccountId,
        device: DeviceId,
        instance: [u8; 16],
        stream: u64,
    ) {
        let mut map = self.map();
        if let Entry::Occupied(e) = map.entry((account, device))
            && e.get().instance == instance
            && e.get().stream == stream
        {
            e.remove();
        }
    }

    /// A stream of this instance took the device over (its claim closes the others).
    pub(crate) fn forget(&self, account: AccountId, device: DeviceId) {
        self.map().remove(&(account, device));
    }

    /// Whether another instance holds an open stream of the device.
    pub(crate) fn streaming(&self, account: AccountId, device: DeviceId) -> bool {
        self.map()
            .get(&(account, device))
            .is_some_and(|h| h.until > Instant::now())
    }

    /// Drop the entries whose lease ran out; returns how many remain.
    pub(crate) fn prune(&self) -> usize {
        let now = Instant::now();
        let mut map = self.map();
        map.retain(|_, h| h.until > now);
        map.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const ME: [u8; 16] = [1; 16];
    const B: [u8; 16] = [2; 16];
    const C: [u8; 16] = [3; 16];
    const HOUR: Duration = Duration::from_secs(3600);

    fn dev() -> (AccountId, DeviceId) {
        (AccountId::random(), DeviceId::new(1).unwrap())
    }

    #[test]
    fn a_release_ends_only_the_stream_it_names() {
        let r = RemoteStreams::new(ME, HOUR);
        let (a, d) = dev();
        r.claimed(a, d, B, 1);
        assert!(r.streaming(a, d));
        // C claimed after B: B's release of its older stream changes nothing.
        r.claimed(a, d, C, 7);
        r.released(a, d, B, 1);
        assert!(r.streaming(a, d));
        r.released(a, d, C, 7);
        assert!(!r.streaming(a, d));
        // Our own claims are not remote.
        r.claimed(a, d, ME, 3);
        assert!(!r.streaming(a, d));
    }

    #[test]
    fn leases_run_out_unless_announced_again() {
        let r = RemoteStreams::new(ME, Duration::ZERO);
        let (a, d) = dev();
        r.claimed(a, d, B, 1);
        assert!(!r.streaming(a, d), "a zero lease is over at once");
        r.announced(B, HOUR, &[(a, d, 1)]);
        assert!(r.streaming(a, d));
        assert_eq!(r.prune(), 1);
        r.announced(C, HOUR, &[(a, d, 2)]);
        r.released(a, d, C, 2);
        assert!(
            r.streaming(a, d),
            "B's live entry stood against C's announcement"
        );
        r.released(a, d, B, 1);
        assert!(!r.streaming(a, d));
        r.announced(B, HOUR, &[(a, d, 1)]);
        r.forget(a, d);
        assert!(!r.streaming(a, d));
        assert_eq!(r.prune(), 0);
    }
}
