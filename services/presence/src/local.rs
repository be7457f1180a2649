//! The devices connected to this instance and the typing indicators they started: in memory
//! only, expired by the timing wheel.
//!
//! A heartbeat of a device already online is one hash-map update (no allocation, no wheel
//! operation, no I/O, no event): only transitions (online, offline, typing start/stop/expiry)
//! cost more.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{AccountId, DeviceId};
use crate::wheel::TimerWheel;

/// Where a typing indicator goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TypingTarget {
    Peer(AccountId),
    Group(Arc<[u8]>),
}

#[derive(Debug)]
enum TimerKey {
    /// Device expiry of one online period (generation).
    Device(AccountId, DeviceId, u64),
    /// Typing expiry of one typing period (epoch).
    Typing(Box<(AccountId, TypingTarget)>, u64),
}

#[derive(Debug)]
struct LocalDevice {
    deadline_ms: u64,
    generation: u64,
}

#[derive(Debug)]
struct Typing {
    expires_ms: u64,
    epoch: u64,
}

/// Result of a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heartbeat {
    /// Already online here: only the expiry moved.
    Refreshed,
    /// A new online period began.
    CameOnline { generation: u64 },
}

/// Something that expired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expired {
    Device {
        account: AccountId,
        device: DeviceId,
        generation: u64,
    },
    Typing {
        sender: AccountId,
        target: TypingTarget,
    },
}

/// See the module docs.
#[derive(Debug)]
pub struct LocalTable {
    devices: HashMap<(AccountId, DeviceId), LocalDevice>,
    typing: HashMap<(AccountId, TypingTarget), Typing>,
    wheel: TimerWheel<TimerKey>,
    /// Per account, the devices whose online period was announced (stored, then published):
    /// a bitmask of device ids (1..=127). Lets this instance say which devices of an account
    /// it holds without scanning `devices` (see `Core::hold_local_devices`). Changed on
    /// transitions only, never by a refreshing heartbeat.
    announced: HashMap<AccountId, u128>,
    /// Generations start at the creation time in ms so that they keep increasing across
    /// restarts of an instance that kept its id (they are compared per instance only).
    next_generation: u64,
    next_epoch: u64,
}

/// Wheel resolution: presence deadlines are tens of seconds, typing ones a few seconds.
const TICK_MS: u64 = 250;

impl LocalTable {
    pub fn new(now_ms: u64) -> Self {
        Self {
            devices: HashMap::new(),
            typing: HashMap::new(),
            announced: HashMap::new(),
            wheel: TimerWheel::new(TICK_MS, now_ms),
            next_generation: now_ms,
            next_epoch: 0,
        }
    }

    pub fn online_devices(&self) -> usize {
        self.devices.len()
    }

    /// Timer entries pending (devices + typing, including lazily cancelled ones).
    pub fn timers(&self) -> usize {
        self.wheel.len()
    }

    /// The device is alive now; it expires at `now_ms + expiry_ms` unless heartbeated again.
    pub fn heartbeat(
        &mut self,
        account: AccountId,
        device: DeviceId,
        now_ms: u64,
        expiry_ms: u64,
    ) -> Heartbeat {
        let deadline_ms = now_ms + expiry_ms;
        if let Some(d) = self.devices.get_mut(&(account, device)) {
            d.deadline_ms = d.deadline_ms.max(deadline_ms);
            return Heartbeat::Refreshed;
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        self.devices.insert(
            (account, device),
            LocalDevice {
                deadline_ms,
                generation,
            },
        );
        self.wheel
            .insert(deadline_ms, TimerKey::Device(account, device, generation));
        Heartbeat::CameOnline { generation }
    }

    /// Undo a [`Heartbeat::CameOnline`] whose announcement failed.
    pub fn forget_device(&mut self, account: AccountId, device: DeviceId, generation: u64) {
        if self
            .devices
            .get(&(account, device))
            .is_some_and(|d| d.generation == generation)
        {
            self.devices.remove(&(account, device));
            self.unannounce(account, device);
        }
    }

    /// The online period `generation` of a device is stored and about to be published: from
    /// now on it counts in [`LocalTable::announced_devices`]. Nothing when that period already
    /// ended.
    pub fn announced(&mut self, account: AccountId, device: DeviceId, generation: u64) {
        if self
            .devices
            .get(&(account, device))
            .is_some_and(|d| d.generation == generation)
        {
            *self.announced.entry(account).or_default() |= 1u128 << device.get();
        }
    }

    fn unannounce(&mut self, account: AccountId, device: DeviceId) {
        if let Some(mask) = self.announced.get_mut(&account) {
            *mask &= !(1u128 << device.get());
            if *mask == 0 {
                self.announced.remove(&account);
            }
        }
    }

    /// The announced devices of `account` online here, with the generation of their online
    /// period.
    pub fn announced_devices(&self, account: AccountId) -> Vec<(DeviceId, u64)> {
        let mut mask = self.announced.get(&account).copied().unwrap_or(0);
        let mut out = Vec::new();
        while mask != 0 {
            let bit = mask.trailing_zeros();
            mask &= mask - 1;
            if let Some(d) = DeviceId::new(bit)
                && let Some(e) = self.devices.get(&(account, d))
            {
                out.push((d, e.generation));
            }
        }
        out
    }

    /// Take a device offline now (it was removed from its account). Returns the generation of
    /// the online period that ended, if the device was online here. Its wheel entry becomes
    /// stale and is dropped when its slot comes up.
    pub fn remove_device(&mut self, account: AccountId, device: DeviceId) -> Option<u64> {
        let generation = self.devices.remove(&(account, device))?.generation;
        self.unannounce(account, device);
        Some(generation)
    }

    /// Withdraw every typing indicator `sender` started here; returns their targets. Scans the
    /// active indicators only (a few per typing user), and only for an account deletion.
    pub fn remove_typing_of(&mut self, sender: AccountId) -> Vec<TypingTarget> {
        let mut targets = Vec::new();
        self.typing.retain(|(s, target), _| {
            if *s == sender {
                targets.push(target.clone());
                false
            } else {
                true
            }
        });
        targets
    }

    /// Start or refresh a typing indicator. Returns the expiry.
    pub fn start_typing(
        &mut self,
        sender: AccountId,
        target: TypingTarget,
        now_ms: u64,
        ttl_ms: u64,
    ) -> u64 {
        let expires_ms = now_ms + ttl_ms;
        let key = (sender, target);
        if let Some(t) = self.typing.get_mut(&key) {
            t.expires_ms = expires_ms;
            return expires_ms;
        }
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.wheel
            .insert(expires_ms, TimerKey::Typing(Box::new(key.clone()), epoch));
        self.typing.insert(key, Typing { expires_ms, epoch });
        expires_ms
    }

    /// Stop a typing indicator; returns whether it was active.
    pub fn stop_typing(&mut self, sender: AccountId, target: TypingTarget) -> bool {
        self.typing.remove(&(sender, target)).is_some()
    }

    /// Fire the timers due at `now_ms`: returns what expired; entries that were refreshed in
    /// the meantime are rescheduled at their current deadline.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Expired> {
        let mut due = Vec::new();
        self.wheel.advance(now_ms, &mut due);
        let mut expired = Vec::new();
        for key in due {
            match key {
                TimerKey::Device(account, device, generation) => {
                    let Some(d) = self.devices.get(&(account, device)) else {
                        continue;
                    };
                    if d.generation != generation {
                        continue;
                    }
                    if d.deadline_ms > now_ms {
                        let deadline = d.deadline_ms;
                        self.wheel
                            .insert(deadline, TimerKey::Device(account, device, generation));
                    } else {
                        self.devices.remove(&(account, device));
                        self.unannounce(account, device);
                        expired.push(Expired::Device {
                            account,
                            device,
                            generation,
                        });
                    }
                }
                TimerKey::Typing(key, epoch) => {
                    let Some(t) = self.typing.get(&*key) else {
                        continue;
                    };
                    if t.epoch != epoch {
                        continue;
                    }
                    if t.expires_ms > now_ms {
                        let at = t.expires_ms;
                        self.wheel.insert(at, TimerKey::Typing(key, epoch));
                    } else {
                        self.typing.remove(&*key);
                        let (sender, target) = *key;
                        expired.push(Expired::Typing { sender, target });
                    }
                }
            }
        }
        expired
    }

    /// When [`LocalTable::expire`] should run next.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.wheel.next_due_ms()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use uuid::Uuid;

    use super::*;

    fn id(n: u128) -> AccountId {
        AccountId::from_uuid(Uuid::from_u128(n))
    }

    fn dev(n: u32) -> DeviceId {
        DeviceId::new(n).unwrap()
    }

    #[test]
    fn a_device_expires_only_after_its_last_heartbeat_plus_the_expiry() {
        let mut t = LocalTable::new(0);
        let Heartbeat::CameOnline { generation } = t.heartbeat(id(1), dev(1), 0, 90_000) else {
            panic!("first heartbeat brings the device online");
        };
        assert_eq!(
            t.heartbeat(id(1), dev(1), 30_000, 90_000),
            Heartbeat::Refreshed
        );
        assert_eq!(t.expire(90_000), vec![]);
        assert_eq!(t.expire(119_999), vec![]);
        assert_eq!(
            t.expire(120_000),
            vec![Expired::Device {
                account: id(1),
                device: dev(1),
                generation
            }]
        );
        assert_eq!(t.online_devices(), 0);
        assert!(matches!(
            t.heartbeat(id(1), dev(1), 130_000, 90_000),
            Heartbeat::CameOnline { generation: g } if g > generation
        ));
    }

    #[test]
    fn a_stale_timer_of_an_earlier_online_period_does_nothing() {
        let mut t = LocalTable::new(0);
        let Heartbeat::CameOnline { generation } = t.heartbeat(id(1), dev(1), 0, 90_000) else {
            panic!()
        };
        t.forget_device(id(1), dev(1), generation);
        t.heartbeat(id(1), dev(1), 60_000, 90_000);
        assert_eq!(t.expire(100_000), vec![]);
        assert_eq!(t.online_devices(), 1);
        assert_eq!(t.expire(150_000).len(), 1);
        assert_eq!(t.timers(), 0);
    }

    #[test]
    fn a_removed_device_is_gone_at_once_and_its_timer_fires_nothing() {
        let mut t = LocalTable::new(0);
        let Heartbeat::CameOnline { generation } = t.heartbeat(id(1), dev(2), 0, 90_000) else {
            panic!()
        };
        t.heartbeat(id(1), dev(1), 0, 90_000);
        assert_eq!(t.remove_device(id(1), dev(2)), Some(generation));
        assert_eq!(t.remove_device(id(1), dev(2)), None);
        assert_eq!(t.online_devices(), 1);
        let expired = t.expire(100_000);
        assert_eq!(
            expired,
            vec![Expired::Device {
                account: id(1),
                device: dev(1),
                generation: generation + 1
            }]
        );
        t.start_typing(id(1), TypingTarget::Peer(id(2)), 100_000, 10_000);
        t.start_typing(id(3), TypingTarget::Peer(id(2)), 100_000, 10_000);
        assert_eq!(t.remove_typing_of(id(1)), vec![TypingTarget::Peer(id(2))]);
        assert_eq!(
            t.expire(120_000),
            vec![Expired::Typing {
                sender: id(3),
                target: TypingTarget::Peer(id(2))
            }]
        );
    }

    #[test]
    fn announced_devices_are_those_stored_and_still_online() {
        let mut t = LocalTable::new(0);
        let Heartbeat::CameOnline { generation: g1 } = t.heartbeat(id(1), dev(1), 0, 90_000) else {
            panic!()
        };
        let Heartbeat::CameOnline { generation: g2 } = t.heartbeat(id(1), dev(127), 0, 90_000)
        else {
            panic!()
        };
        t.heartbeat(id(2), dev(1), 0, 90_000);
        assert_eq!(t.announced_devices(id(1)), vec![], "not stored yet");
        t.announced(id(1), dev(1), g1);
        t.announced(id(1), dev(127), g2);
        // A stale generation marks nothing.
        t.announced(id(2), dev(1), g1);
        assert_eq!(
            t.announced_devices(id(1)),
            vec![(dev(1), g1), (dev(127), g2)]
        );
        assert_eq!(t.announced_devices(id(2)), vec![]);
        assert_eq!(t.remove_device(id(1), dev(127)), Some(g2));
        assert_eq!(t.announced_devices(id(1)), vec![(dev(1), g1)]);
        t.heartbeat(id(1), dev(1), 60_000, 90_000);
        assert_eq!(t.expire(90_000).len(), 1, "only the device of id(2)");
        assert_eq!(t.announced_devices(id(1)), vec![(dev(1), g1)]);
        assert_eq!(t.expire(150_000).len(), 1);
        assert_eq!(t.announced_devices(id(1)), vec![]);
        assert!(t.announced.is_empty());
    }

    #[test]
    fn typing_expires_unless_refreshed_and_stops_explicitly() {
        let mut t = LocalTable::new(0);
        let peer = TypingTarget::Peer(id(2));
        assert_eq!(t.start_typing(id(1), peer.clone(), 0, 10_000), 10_000);
        t.start_typing(id(1), peer.clone(), 8_000, 10_000);
        assert_eq!(t.expire(10_000), vec![]);
        assert_eq!(
            t.expire(18_000),
            vec![Expired::Typing {
                sender: id(1),
                target: peer.clone()
            }]
        );
        t.start_typing(id(1), peer.clone(), 20_000, 10_000);
        assert!(t.stop_typing(id(1), peer.clone()));
        assert!(!t.stop_typing(id(1), peer));
        assert_eq!(t.expire(40_000), vec![]);
    }
}
