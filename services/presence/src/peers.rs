//! Liveness of the other instances, from their beacons and events.
//!
//! Measured in real (monotonic) time, not with the injected clock: whether a process is still
//! running is an infrastructure fact, and tests that jump the business clock by minutes must
//! not declare every peer dead.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::InstanceId;

#[derive(Debug, Default)]
struct Inner {
    leases: HashMap<InstanceId, Instant>,
    dead: HashSet<InstanceId>,
}

/// See the module docs.
#[derive(Debug)]
pub struct Peers {
    me: InstanceId,
    lease: Duration,
    inner: Mutex<Inner>,
}

impl Peers {
    pub fn new(me: InstanceId, lease: Duration) -> Self {
        Self {
            me,
            lease,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain maps: a panic elsewhere cannot leave them inconsistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The instance showed a sign of life (beacon or event) valid for `lease`.
    pub fn touch(&self, instance: InstanceId, lease: Option<Duration>) {
        if instance == self.me {
            return;
        }
        let until = Instant::now() + lease.unwrap_or(self.lease);
        let mut inner = self.lock();
        inner.dead.remove(&instance);
        let entry = inner.leases.entry(instance).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Whether devices of `instance` count. An instance never heard of (found in storage
    /// before its first beacon arrived) counts, provisionally: it gets one lease to show up.
    pub fn alive(&self, instance: InstanceId) -> bool {
        if instance == self.me {
            return true;
        }
        let mut inner = self.lock();
        if inner.dead.contains(&instance) {
            return false;
        }
        let until = Instant::now() + self.lease;
        inner.leases.entry(instance).or_insert(until);
        true
    }

    /// Instances whose lease ran out since the last sweep; from now on they are dead.
    pub fn sweep(&self) -> Vec<InstanceId> {
        let now = Instant::now();
        let mut inner = self.lock();
        let expired: Vec<InstanceId> = inner
            .leases
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            inner.leases.remove(id);
            inner.dead.insert(*id);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn a_silent_instance_dies_after_its_lease_and_revives_on_a_beacon() {
        let me = Uuid::from_u128(1);
        let other = Uuid::from_u128(2);
        // A zero lease runs out at once: no sleeping needed.
        let peers = Peers::new(me, Duration::ZERO);
        assert!(peers.alive(other), "unknown instances count provisionally");
        assert_eq!(peers.sweep(), vec![other]);
        assert!(!peers.alive(other));
        assert!(peers.alive(me));
        peers.touch(other, Some(Duration::from_secs(3600)));
        assert!(peers.alive(other));
        assert!(peers.sweep().is_empty());
    }
}
