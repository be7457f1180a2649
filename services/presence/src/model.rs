//! Domain types and the one place that decides what a viewer sees of an account.

use std::collections::HashMap;

pub use guardyn_common::events::presence::{InstanceId, Status, Visibility};
pub use guardyn_common::ids::{AccountId, DeviceId};

/// What others see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Offline,
    Online,
    Away,
    DoNotDisturb,
}

/// The durable, user-set part of an account's presence plus its last seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub status: Status,
    pub custom_text: String,
    pub visibility: Visibility,
    /// The stored allow list, kept while another visibility is selected.
    pub allow_list: Vec<AccountId>,
    pub last_seen_ms: Option<u64>,
}

/// One device online on one instance, with the generation of its online period.
pub type DeviceSlot = (InstanceId, u32);

/// Everything known about one account, aggregated over all instances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountView {
    pub settings: Settings,
    /// Online devices, per instance, with their generation.
    pub devices: HashMap<DeviceSlot, u64>,
}

/// The presence of an account as one viewer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub account: AccountId,
    pub state: State,
    pub custom_text: String,
    /// Coarsened to the minute.
    pub last_seen_ms: Option<u64>,
}

impl AccountView {
    pub fn online(&self) -> bool {
        !self.devices.is_empty()
    }

    /// Whether `viewer` may see the account at all (typing in groups): not invisible and
    /// allowed by visibility, or the account itself.
    pub fn shows_activity_to(&self, account: AccountId, viewer: AccountId) -> bool {
        viewer == account
            || (self.settings.status != Status::Invisible
                && self.settings.visibility.allows(viewer))
    }

    /// The single visibility rule used by every read path (GetPresence, Subscribe snapshot and
    /// updates): INVISIBLE shows as OFFLINE to others, last seen only while offline and only to
    /// viewers the visibility setting allows. An account always sees itself in full, except
    /// that a last seen before `keep_after_ms` (the real-time retention, see `retention`) is
    /// shown to nobody, as if the account had never been online.
    pub fn seen_by(&self, account: AccountId, viewer: AccountId, keep_after_ms: u64) -> Seen {
        let myself = viewer == account;
        let s = &self.settings;
        let state = if !self.online() || (s.status == Status::Invisible && !myself) {
            State::Offline
        } else {
            match s.status {
                Status::Online | Status::Invisible => State::Online,
                Status::Away => State::Away,
                Status::DoNotDisturb => State::DoNotDisturb,
            }
        };
        let custom_text = if state == State::Offline {
            String::new()
        } else {
            s.custom_text.clone()
        };
        let last_seen_ms = if state == State::Offline && (myself || s.visibility.allows(viewer)) {
            s.last_seen_ms
                .filter(|ms| *ms >= keep_after_ms)
                .map(|ms| ms - ms % 60_000)
        } else {
            None
        };
        Seen {
            account,
            state,
            custom_text,
            last_seen_ms,
        }
    }

    /// A device came online. Returns false for a stale event (an older generation).
    pub fn device_online(&mut self, slot: DeviceSlot, generation: u64) -> bool {
        match self.devices.get(&slot) {
            Some(g) if *g >= generation => false,
            _ => {
                self.devices.insert(slot, generation);
                true
            }
        }
    }

    /// A device went offline at `at_ms`. Only the matching (or an older) generation is
    /// removed, so an offline event overtaken by the next online period is ignored. When the
    /// last device leaves, last seen is recorded, except for INVISIBLE accounts.
    pub fn device_offline(&mut self, slot: DeviceSlot, generation: u64, at_ms: u64) -> bool {
        match self.devices.get(&slot) {
            Some(g) if *g <= generation => {
                self.devices.remove(&slot);
                self.note_if_offline(at_ms);
                true
            }
            _ => false,
        }
    }

    /// Drop every device of a dead instance.
    pub fn drop_instance(&mut self, instance: InstanceId, at_ms: u64) -> bool {
        let before = self.devices.len();
        self.devices.retain(|(i, _), _| *i != instance);
        let changed = self.devices.len() != before;
        if changed {
            self.note_if_offline(at_ms);
        }
        changed
    }

    /// A device was removed from the account: its online period ends on every instance.
    pub fn remove_device(&mut self, device: DeviceId, at_ms: u64) -> bool {
        let before = self.devices.len();
        self.devices.retain(|(_, d), _| *d != device.get());
        let changed = self.devices.len() != before;
        if changed {
            self.note_if_offline(at_ms);
        }
        changed
    }

    fn note_if_offline(&mut self, at_ms: u64) {
        if self.devices.is_empty() && self.settings.status != Status::Invisible {
            self.settings.last_seen_ms = Some(at_ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    fn id(n: u128) -> AccountId {
        AccountId::from_uuid(Uuid::from_u128(n))
    }

    #[test]
    fn invisible_is_offline_to_others_and_keeps_the_old_last_seen() {
        let (me, other) = (id(1), id(2));
        let inst = Uuid::from_u128(9);
        let mut v = AccountView::default();
        v.device_online((inst, 1), 1);
        assert_eq!(v.seen_by(me, other, 0).state, State::Online);
        v.device_offline((inst, 1), 1, 120_000);
        assert_eq!(v.seen_by(me, other, 0).last_seen_ms, Some(120_000));
        v.settings.status = Status::Invisible;
        v.device_online((inst, 1), 2);
        assert_eq!(v.seen_by(me, other, 0).state, State::Offline);
        assert_eq!(v.seen_by(me, me, 0).state, State::Online);
        v.device_offline((inst, 1), 2, 999_000);
        assert_eq!(v.seen_by(me, other, 0).last_seen_ms, Some(120_000));
    }

    #[test]
    fn last_seen_follows_visibility_and_is_coarsened() {
        let (me, friend, stranger) = (id(1), id(2), id(3));
        let mut v = AccountView::default();
        v.settings.last_seen_ms = Some(61_500);
        v.settings.visibility = Visibility::AllowList([friend].into_iter().collect());
        assert_eq!(v.seen_by(me, friend, 0).last_seen_ms, Some(60_000));
        assert_eq!(v.seen_by(me, stranger, 0).last_seen_ms, None);
        v.settings.visibility = Visibility::Nobody;
        assert_eq!(v.seen_by(me, friend, 0).last_seen_ms, None);
        assert_eq!(v.seen_by(me, me, 0).last_seen_ms, Some(60_000));
        // Past the retention it is gone for everyone, the account itself included.
        assert_eq!(v.seen_by(me, me, 61_501).last_seen_ms, None);
        assert_eq!(v.seen_by(me, me, 61_500).last_seen_ms, Some(60_000));
    }

    #[test]
    fn a_stale_offline_does_not_remove_a_newer_online_period() {
        let inst = Uuid::from_u128(9);
        let mut v = AccountView::default();
        assert!(v.device_online((inst, 1), 2));
        assert!(!v.device_offline((inst, 1), 1, 5));
        assert!(v.online());
        assert!(!v.device_online((inst, 1), 1));
        assert!(v.device_offline((inst, 1), 2, 5));
        assert!(!v.online());
    }
}
