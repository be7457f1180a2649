//! The subscriber side: per watched account, the presence aggregated over every instance, and
//! the open Subscribe streams ("watchers") to push changes to.
//!
//! Only accounts watched by a stream on this instance have a view here, so memory follows the
//! local subscriptions, not the user base. Every change is evaluated per watcher through
//! [`AccountView::seen_by`] (the one visibility rule), and a watcher gets an update only when
//! what *it* sees changed: an invisible account's devices coming and going, or a last-seen
//! change a viewer may not see, produce nothing for that viewer.
//!
//! Last seen is filtered through the real-time retention on every read (a cutoff computed by
//! the [`Cutoff`] given at construction), and [`Views::forget_last_seen`] drops expired values
//! from memory and tells the watchers.
//!
//! Synchronous and runtime-free (sends are `try_send`), so the benchmark drives it directly.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use guardyn_common::events::presence::{
    AccountEvent, Change, TypingSignal, account_subject, inbox_subject,
};

use guardyn_common::clock::SharedClock;
use guardyn_common::policy::PolicyCache;

use crate::model::{AccountId, AccountView, DeviceId, InstanceId, Seen};

/// What a Subscribe stream receives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Presence(Seen),
    Typing {
        sender: AccountId,
        group: Option<Arc<[u8]>>,
        typing: bool,
        expires_ms: u64,
    },
    /// Every initial state has been sent.
    Ready,
}

/// One open Subscribe stream.
#[derive(Debug)]
pub struct Watcher {
    pub id: u64,
    pub viewer: AccountId,
    tx: mpsc::Sender<Item>,
    /// Topics whose initial state is still to come; `Ready` follows the last one.
    pending: AtomicUsize,
    /// Cancelled when the stream cannot keep up or its source failed: it ends with
    /// UNAVAILABLE and the client resubscribes.
    pub broken: CancellationToken,
}

impl Watcher {
    pub fn new(id: u64, viewer: AccountId, tx: mpsc::Sender<Item>, topics: usize) -> Self {
        Self {
            id,
            viewer,
            tx,
            pending: AtomicUsize::new(topics),
            broken: CancellationToken::new(),
        }
    }

    fn send(&self, item: Item) {
        if self.tx.try_send(item).is_err() {
            self.broken.cancel();
        }
    }

    fn initial_done(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.send(Item::Ready);
        }
    }
}

/// What a topic carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TopicKey {
    /// Presence of an account (bus subject `presence.<id>`).
    Account(AccountId),
    /// Typing addressed to an account (bus subject `presence.<id>.typing`).
    Inbox(AccountId),
}

impl TopicKey {
    pub fn account(self) -> AccountId {
        match self {
            Self::Account(a) | Self::Inbox(a) => a,
        }
    }

    /// The bus subject this topic's events arrive on.
    pub fn subject(self) -> String {
        match self {
            Self::Account(a) => account_subject(a),
            Self::Inbox(a) => inbox_subject(a),
        }
    }
}

#[derive(Debug, Default)]
struct Topic {
    /// False until the initial state is installed (accounts) or the bus subscription is up
    /// (inboxes).
    ready: bool,
    view: AccountView,
    watchers: Vec<Arc<Watcher>>,
}

const SHARDS: usize = 16;

/// The oldest last seen (Unix ms) that may still be shown, read at each use: it moves with
/// the clock and the policy.
#[derive(Clone)]
pub struct Cutoff(Arc<dyn Fn() -> u64 + Send + Sync>);

impl Cutoff {
    pub fn new(f: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    fn ms(&self) -> u64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Cutoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cutoff")
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Views {
    shards: Vec<Mutex<HashMap<TopicKey, Topic>>>,
    cutoff: Cutoff,
}

impl Default for Views {
    /// Views that keep every last seen (benchmark, unit tests).
    fn default() -> Self {
        Self::new(Cutoff::new(|| 0))
    }
}

impl Views {
    pub fn new(cutoff: Cutoff) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            cutoff,
        }
    }

    fn shard(&self, key: &TopicKey) -> std::sync::MutexGuard<'_, HashMap<TopicKey, Topic>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let i = (h.finish() % SHARDS as u64) as usize;
        // A panic under the lock leaves at worst a stale watcher list; keep serving.
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Add a watcher. Returns true when the topic is new and its source must be started.
    pub fn watch(&self, key: TopicKey, watcher: &Arc<Watcher>) -> bool {
        let mut shard = self.shard(&key);
        let created = !shard.contains_key(&key);
        let topic = shard.entry(key).or_default();
        topic.watchers.push(watcher.clone());
        if topic.ready {
            if let TopicKey::Account(account) = key {
                let seen = topic
                    .view
                    .seen_by(account, watcher.viewer, self.cutoff.ms());
                watcher.send(Item::Presence(seen));
            }
            watcher.initial_done();
        }
        created
    }

    /// Remove a watcher. Returns true when the topic has no watcher left (and is gone): its
    /// source should stop.
    pub fn unwatch(&self, key: TopicKey, watcher: u64) -> bool {
        let mut shard = self.shard(&key);
        let Some(topic) = shard.get_mut(&key) else {
            return false;
        };
        topic.watchers.retain(|w| w.id != watcher);
        if topic.watchers.is_empty() {
            shard.remove(&key);
            return true;
        }
        false
    }

    /// Install the state read from storage: the initial state for watchers still waiting,
    /// the differences for the others (a resynchronisation after lost events).
    pub fn install(&self, key: TopicKey, view: AccountView) {
        let mut shard = self.shard(&key);
        let Some(topic) = shard.get_mut(&key) else {
            return;
        };
        let TopicKey::Account(account) = key else {
            return;
        };
        let was_ready = topic.ready;
        let old = std::mem::replace(&mut topic.view, view);
        topic.ready = true;
        let cutoff = self.cutoff.ms();
        for w in &topic.watchers {
            let seen = topic.view.seen_by(account, w.viewer, cutoff);
            if !was_ready {
                w.send(Item::Presence(seen));
                w.initial_done();
            } else if old.seen_by(account, w.viewer, cutoff) != seen {
                w.send(Item::Presence(seen));
            }
        }
    }

    /// An inbox's bus subscription is up.
    pub fn inbox_ready(&self, account: AccountId) {
        let mut shard = self.shard(&TopicKey::Inbox(account));
        if let Some(topic) = shard.get_mut(&TopicKey::Inbox(account))
            && !topic.ready
        {
            topic.ready = true;
            for w in &topic.watchers {
                w.initial_done();
            }
        }
    }

    /// The topic's source failed: its watchers end (they resubscribe) and it is removed.
    pub fn fail(&self, key: TopicKey) {
        if let Some(topic) = self.shard(&key).remove(&key) {
            for w in topic.watchers {
                w.broken.cancel();
            }
        }
    }

    /// Apply a bus event to a watched account and push what changed for each watcher.
    pub fn apply(&self, account: AccountId, event: &AccountEvent) {
        let key = TopicKey::Account(account);
        let mut shard = self.shard(&key);
        let Some(topic) = shard.get_mut(&key) else {
            return;
        };
        if let Change::GroupTyping {
            group,
            typing,
            expires_ms,
        } = &event.change
        {
            for w in &topic.watchers {
                if w.viewer != account && topic.view.shows_activity_to(account, w.viewer) {
                    w.send(Item::Typing {
                        sender: account,
                        group: Some(group.clone()),
                        typing: *typing,
                        expires_ms: *expires_ms,
                    });
                }
            }
            return;
        }
        let cutoff = self.cutoff.ms();
        let before = seen_by_each(account, topic, cutoff);
        let view = &mut topic.view;
        let changed = match &event.change {
            Change::DeviceOnline { device, generation } => {
                view.device_online((event.instance, *device), *generation)
            }
            Change::DeviceOffline { device, generation } => {
                view.device_offline((event.instance, *device), *generation, event.at_ms)
            }
            Change::Status {
                status,
                custom_text,
            } => {
                view.settings.status = *status;
                view.settings.custom_text.clone_from(custom_text);
                true
            }
            Change::Visibility { visibility } => {
                view.settings.visibility = visibility.clone();
                true
            }
            Change::GroupTyping { .. } => false,
        };
        if changed {
            Self::push_changes(account, topic, &before, cutoff);
        }
    }

    fn push_changes(account: AccountId, topic: &Topic, before: &[Seen], cutoff: u64) {
        for (w, old) in topic.watchers.iter().zip(before) {
            let seen = topic.view.seen_by(account, w.viewer, cutoff);
            if &seen != old {
                w.send(Item::Presence(seen));
            }
        }
    }

    /// Deliver a typing indicator to the streams of its addressee.
    pub fn deliver_typing(&self, to: AccountId, signal: &TypingSignal) {
        let key = TopicKey::Inbox(to);
        let shard = self.shard(&key);
        if let Some(topic) = shard.get(&key) {
            for w in &topic.watchers {
                w.send(Item::Typing {
                    sender: signal.sender,
                    group: None,
                    typing: signal.typing,
                    expires_ms: signal.expires_ms,
                });
            }
        }
    }

    /// A device was removed from its account (auth): its slots on every instance go, last
    /// seen is recorded if it was the last online device. Covers instances that are dead or
    /// missed the event; the owning instance's own offline event then changes nothing.
    pub fn remove_device(&self, account: AccountId, device: DeviceId, now_ms: u64) {
        self.update(account, |view| view.remove_device(device, now_ms));
    }

    /// The account was deleted (auth): its watchers see it offline with no last seen, as an
    /// account that never existed.
    pub fn account_deleted(&self, account: AccountId) {
        self.update(account, |view| {
            let changed = *view != AccountView::default();
            *view = AccountView::default();
            changed
        });
    }

    /// Devices of `instance` (this one: see `Core::hold_local_devices`) known online without
    /// the bus: added to a watched account's view where missing or older, pushing what
    /// changes.
    pub fn hold_devices(&self, account: AccountId, instance: InstanceId, held: &[(DeviceId, u64)]) {
        self.update(account, |view| {
            let mut changed = false;
            for &(device, generation) in held {
                changed |= view.device_online((instance, device.get()), generation);
            }
            changed
        });
    }

    /// The watched accounts whose view holds a device of `instance`.
    pub fn accounts_on(&self, instance: InstanceId) -> Vec<AccountId> {
        let mut accounts = Vec::new();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, topic) in shard.iter() {
                if let TopicKey::Account(account) = *key
                    && topic.view.devices.keys().any(|(i, _)| *i == instance)
                {
                    accounts.push(account);
                }
            }
        }
        accounts
    }

    /// Change a watched account's view and push what each watcher sees change.
    fn update(&self, account: AccountId, change: impl FnOnce(&mut AccountView) -> bool) {
        let key = TopicKey::Account(account);
        let mut shard = self.shard(&key);
        let Some(topic) = shard.get_mut(&key) else {
            return;
        };
        let cutoff = self.cutoff.ms();
        let before = seen_by_each(account, topic, cutoff);
        if change(&mut topic.view) && topic.ready {
            Self::push_changes(account, topic, &before, cutoff);
        }
    }

    /// Drop every last seen older than the retention from the views and push the change to
    /// the watchers. A watcher that subscribed after the value expired (and so never saw it)
    /// may get its unchanged state once more. Returns how many views changed.
    pub fn forget_last_seen(&self) -> usize {
        let cutoff = self.cutoff.ms();
        let mut forgotten = 0;
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, topic) in shard.iter_mut() {
                let TopicKey::Account(account) = *key else {
                    continue;
                };
                if topic
                    .view
                    .settings
                    .last_seen_ms
                    .is_none_or(|ms| ms >= cutoff)
                {
                    continue;
                }
                // What the watchers may have been shown before the value expired.
                let before = seen_by_each(account, topic, 0);
                topic.view.settings.last_seen_ms = None;
                forgotten += 1;
                if topic.ready {
                    Self::push_changes(account, topic, &before, cutoff);
                }
            }
        }
        forgotten
    }

    /// An instance died: its devices go offline in every view. Returns the accounts that
    /// had devices there.
    pub fn drop_instance(&self, instance: InstanceId, now_ms: u64) -> Vec<AccountId> {
        let mut affected = Vec::new();
        let cutoff = self.cutoff.ms();
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for (key, topic) in shard.iter_mut() {
                let TopicKey::Account(account) = *key else {
                    continue;
                };
                let before = seen_by_each(account, topic, cutoff);
                if topic.view.drop_instance(instance, now_ms) {
                    affected.push(account);
                    Self::push_changes(account, topic, &before, cutoff);
                }
            }
        }
        affected
    }

    /// The aggregated view of a watched account, when this instance has one.
    pub fn view(&self, account: AccountId) -> Option<AccountView> {
        let key = TopicKey::Account(account);
        let shard = self.shard(&key);
        shard.get(&key).filter(|t| t.ready).map(|t| t.view.clone())
    }

    /// Watched topics (for tests and metrics).
    pub fn topics(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// What each watcher of a topic sees now.
fn seen_by_each(account: AccountId, topic: &Topic, cutoff: u64) -> Vec<Seen> {
    topic
        .watchers
        .iter()
        .map(|w| topic.view.seen_by(account, w.viewer, cutoff))
        .collect()
}

/// The oldest last seen (Unix ms) that may still be shown or kept.
pub(crate) fn cutoff_ms(clock: &SharedClock, policy: &PolicyCache) -> u64 {
    let keep_ms = policy
        .current()
        .retention
        .realtime_secs
        .saturating_mul(1000);
    clock.now_ms().saturating_sub(keep_ms)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use uuid::Uuid;

    use super::*;
    use crate::model::{State, Status};

    fn id(n: u128) -> AccountId {
        AccountId::from_uuid(Uuid::from_u128(n))
    }

    fn event(change: Change) -> AccountEvent {
        AccountEvent {
            instance: Uuid::from_u128(100),
            at_ms: 60_000,
            change,
        }
    }

    #[test]
    fn watchers_get_the_snapshot_then_ready_then_only_what_they_see_change() {
        let views = Views::default();
        let (tx, mut rx) = mpsc::channel(16);
        let w = Arc::new(Watcher::new(1, id(2), tx, 1));
        assert!(views.watch(TopicKey::Account(id(1)), &w));
        assert!(rx.try_recv().is_err(), "nothing before the state is loaded");
        views.install(TopicKey::Account(id(1)), AccountView::default());
        assert!(matches!(rx.try_recv().unwrap(), Item::Presence(s) if s.state == State::Offline));
        assert_eq!(rx.try_recv().unwrap(), Item::Ready);

        views.apply(
            id(1),
            &event(Change::DeviceOnline {
                device: 1,
                generation: 1,
            }),
        );
        assert!(matches!(rx.try_recv().unwrap(), Item::Presence(s) if s.state == State::Online));
        // A second device changes nothing the viewer can see.
        views.apply(
            id(1),
            &event(Change::DeviceOnline {
                device: 2,
                generation: 2,
            }),
        );
        assert!(rx.try_recv().is_err());
        views.apply(
            id(1),
            &event(Change::Status {
                status: Status::Invisible,
                custom_text: String::new(),
            }),
        );
        assert!(matches!(rx.try_recv().unwrap(), Item::Presence(s) if s.state == State::Offline));
        assert!(views.unwatch(TopicKey::Account(id(1)), 1));
        assert_eq!(views.topics(), 0);
    }

    #[test]
    fn removed_devices_and_deleted_accounts_reach_the_watchers() {
        let views = Views::default();
        let (tx, mut rx) = mpsc::channel(16);
        let w = Arc::new(Watcher::new(1, id(2), tx, 1));
        views.watch(TopicKey::Account(id(1)), &w);
        views.install(TopicKey::Account(id(1)), AccountView::default());
        while rx.try_recv().is_ok() {}
        for device in [1, 2] {
            views.apply(
                id(1),
                &event(Change::DeviceOnline {
                    device,
                    generation: 1,
                }),
            );
        }
        assert!(matches!(rx.try_recv().unwrap(), Item::Presence(s) if s.state == State::Online));
        // Another device stays online: nothing the viewer sees changes.
        views.remove_device(id(1), DeviceId::new(2).unwrap(), 120_000);
        assert!(rx.try_recv().is_err());
        views.remove_device(id(1), DeviceId::FIRST, 120_000);
        assert!(matches!(
            rx.try_recv().unwrap(),
            Item::Presence(s) if s.state == State::Offline && s.last_seen_ms == Some(120_000)
        ));
        views.account_deleted(id(1));
        assert!(matches!(
            rx.try_recv().unwrap(),
            Item::Presence(s) if s.state == State::Offline && s.last_seen_ms.is_none()
        ));
        views.account_deleted(id(1));
        assert!(rx.try_recv().is_err(), "nothing left to change");
    }

    #[test]
    fn expired_last_seen_is_hidden_then_forgotten_and_pushed() {
        use std::sync::atomic::AtomicU64;
        let cutoff = Arc::new(AtomicU64::new(0));
        let views = Views::new(Cutoff::new({
            let cutoff = cutoff.clone();
            move || cutoff.load(Ordering::Relaxed)
        }));
        let (tx, mut rx) = mpsc::channel(16);
        let w = Arc::new(Watcher::new(1, id(2), tx, 1));
        views.watch(TopicKey::Account(id(1)), &w);
        let mut view = AccountView::default();
        view.settings.last_seen_ms = Some(120_000);
        views.install(TopicKey::Account(id(1)), view);
        assert!(
            matches!(rx.try_recv().unwrap(), Item::Presence(s) if s.last_seen_ms == Some(120_000))
        );
        assert_eq!(rx.try_recv().unwrap(), Item::Ready);
        assert_eq!(views.forget_last_seen(), 0, "not expired yet");
        cutoff.store(120_001, Ordering::Relaxed);
        assert_eq!(views.forget_last_seen(), 1);
        assert!(matches!(
            rx.try_recv().unwrap(),
            Item::Presence(s) if s.state == State::Offline && s.last_seen_ms.is_none()
        ));
        assert_eq!(views.view(id(1)).unwrap().settings.last_seen_ms, None);
        assert_eq!(views.forget_last_seen(), 0);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn a_watcher_that_cannot_keep_up_is_broken() {
        let views = Views::default();
        let (tx, _rx) = mpsc::channel(1);
        let w = Arc::new(Watcher::new(1, id(2), tx, 1));
        views.watch(TopicKey::Account(id(1)), &w);
        views.install(TopicKey::Account(id(1)), AccountView::default());
        assert!(w.broken.is_cancelled());
    }
}
