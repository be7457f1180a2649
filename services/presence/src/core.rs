//! The shared state of one presence instance ([`Core`]) and the operations behind the RPCs,
//! in domain types. Also the bus source of each watched topic, which only [`Core::subscribe`]
//! starts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures::StreamExt as _;
use guardyn_common::clock::SharedClock;
use guardyn_common::events::presence::{AccountEvent, Change, TypingSignal};
use guardyn_common::policy::PolicyCache;
use guardyn_events::{Delivery, EventBus};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::PresenceConfig;
use crate::error::PresenceError;
use crate::events::{publish_change, publish_typing};
use crate::local::{Heartbeat, LocalTable, TypingTarget};
use crate::model::{
    AccountId, AccountView, DeviceId, InstanceId, Seen, Settings, Status, Visibility,
};
use crate::peers::Peers;
use crate::store::Store;
use crate::views::{Cutoff, Item, TopicKey, Views, Watcher};

/// See the module docs.
#[derive(Debug)]
pub struct Core {
    pub config: PresenceConfig,
    pub instance: InstanceId,
    pub(crate) clock: SharedClock,
    pub(crate) store: Store,
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) local: Mutex<LocalTable>,
    pub(crate) views: Views,
    pub(crate) peers: Peers,
    /// Wakes the expiry driver when a timer was added that may be due before its sleep ends.
    pub(crate) wake: Notify,
    pub(crate) shutdown: CancellationToken,
    /// The admin policy in force (the heartbeat interval range, the real-time retention).
    pub(crate) policy: PolicyCache,
    /// The source task of every watched topic, with a task id.
    topic_tasks: Mutex<HashMap<TopicKey, (u64, CancellationToken)>>,
    /// The open stream of each device on this instance (a new Subscribe replaces it).
    streams: Mutex<HashMap<(AccountId, DeviceId), (u64, CancellationToken)>>,
    next_id: AtomicU64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every guarded structure stays consistent between statements; a panic elsewhere must not
    // take presence down with it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a Subscribe gets: its item channel and the handles that end it.
#[derive(Debug)]
pub struct Subscription {
    pub rx: mpsc::Receiver<Item>,
    pub broken: CancellationToken,
    pub replaced: CancellationToken,
    pub guard: SubscriptionGuard,
}

/// Unregisters a stream when dropped.
#[derive(Debug)]
pub struct SubscriptionGuard {
    core: Arc<Core>,
    watcher: u64,
    device: (AccountId, DeviceId),
    topics: Vec<TopicKey>,
}

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        for key in &self.topics {
            self.core.unwatch(*key, self.watcher);
        }
        let mut streams = lock(&self.core.streams);
        if streams
            .get(&self.device)
            .is_some_and(|(id, _)| *id == self.watcher)
        {
            streams.remove(&self.device);
        }
    }
}

impl Core {
    pub fn new(
        config: PresenceConfig,
        store: Store,
        bus: Arc<dyn EventBus>,
        clock: SharedClock,
        shutdown: CancellationToken,
        policy: PolicyCache,
    ) -> Arc<Self> {
        let instance = uuid::Uuid::new_v4();
        let now = clock.now_ms();
        let cutoff = Cutoff::new({
            let (clock, policy) = (clock.clone(), policy.clone());
            move || crate::views::cutoff_ms(&clock, &policy)
        });
        Arc::new(Self {
            peers: Peers::new(instance, config.instance_lease()),
            config,
            instance,
            clock,
            store,
            bus,
            local: Mutex::new(LocalTable::new(now)),
            views: Views::new(cutoff),
            wake: Notify::new(),
            shutdown,
            policy,
            topic_tasks: Mutex::default(),
            streams: Mutex::default(),
            next_id: AtomicU64::new(1),
        })
    }

    pub(crate) async fn publish(&self, account: AccountId, at_ms: u64, change: Change) {
        publish_change(&*self.bus, self.instance, account, at_ms, change).await;
    }

    /// A device is alive. Only the first heartbeat of an online period writes and publishes.
    pub async fn heartbeat(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<(), PresenceError> {
        let now = self.clock.now_ms();
        let outcome = lock(&self.local).heartbeat(account, device, now, self.device_expiry_ms());
        if let Heartbeat::CameOnline { generation } = outcome {
            if let Err(err) = self
                .store
                .device_online(account, self.instance, device, generation)
                .await
            {
                lock(&self.local).forget_device(account, device, generation);
                return Err(err);
            }
            lock(&self.local).announced(account, device, generation);
            self.wake.notify_one();
            self.publish(
                account,
                now,
                Change::DeviceOnline {
                    device: device.get(),
                    generation,
                },
            )
            .await;
        }
        Ok(())
    }

    pub async fn set_status(
        &self,
        account: AccountId,
        status: Status,
        custom_text: String,
    ) -> Result<(), PresenceError> {
        let text = custom_text.clone();
        self.store
            .update_settings(account, move |s| {
                s.status = status;
                s.custom_text.clone_from(&text);
            })
            .await?;
        let now = self.clock.now_ms();
        self.publish(
            account,
            now,
            Change::Status {
                status,
                custom_text,
            },
        )
        .await;
        Ok(())
    }

    /// `allow_list` replaces the stored list only when given (ALLOW_LIST).
    pub async fn set_visibility(
        &self,
        account: AccountId,
        visibility: Visibility,
        allow_list: Option<Vec<AccountId>>,
    ) -> Result<(), PresenceError> {
        let settings = self
            .store
            .update_settings(account, move |s| {
                if let Some(list) = &allow_list {
                    s.allow_list.clone_from(list);
                }
                s.visibility = match &visibility {
                    Visibility::AllowList(_) => {
                        Visibility::AllowList(s.allow_list.iter().copied().collect())
                    }
                    other => other.clone(),
                };
            })
            .await?;
        let now = self.clock.now_ms();
        self.publish(
            account,
            now,
            Change::Visibility {
                visibility: settings.visibility,
            },
        )
        .await;
        Ok(())
    }

    pub async fn settings(&self, account: AccountId) -> Result<Settings, PresenceError> {
        self.store.settings(account).await
    }

    /// Start or stop a typing indicator; published only, never stored.
    pub async fn set_typing(&self, sender: AccountId, target: TypingTarget, typing: bool) {
        let now = self.clock.now_ms();
        let expires_ms = if typing {
            let at = lock(&self.local).start_typing(
                sender,
                target.clone(),
                now,
                self.config.typing_ttl_ms(),
            );
            self.wake.notify_one();
            at
        } else {
            if !lock(&self.local).stop_typing(sender, target.clone()) {
                // Nothing was announced (or it already expired and was withdrawn).
                return;
            }
            now
        };
        self.announce_typing(sender, target, typing, now, expires_ms)
            .await;
    }

    pub(crate) async fn announce_typing(
        &self,
        sender: AccountId,
        target: TypingTarget,
        typing: bool,
        now: u64,
        expires_ms: u64,
    ) {
        match target {
            TypingTarget::Peer(peer) => {
                let signal = TypingSignal {
                    sender,
                    typing,
                    expires_ms,
                };
                publish_typing(&*self.bus, peer, &signal).await;
            }
            TypingTarget::Group(group) => {
                self.publish(
                    sender,
                    now,
                    Change::GroupTyping {
                        group,
                        typing,
                        expires_ms,
                    },
                )
                .await;
            }
        }
    }

    /// Presence of `accounts` as `viewer` sees it: from the live view when this instance
    /// watches the account, from storage otherwise.
    pub async fn presence(
        self: &Arc<Self>,
        viewer: AccountId,
        accounts: &[AccountId],
    ) -> Result<Vec<Seen>, PresenceError> {
        let mut out = Vec::with_capacity(accounts.len());
        for &account in accounts {
            let view = match self.views.view(account) {
                Some(v) => v,
                None => self.load(account).await?,
            };
            out.push(view.seen_by(account, viewer, self.last_seen_cutoff_ms()));
        }
        Ok(out)
    }

    /// Read an account from storage; device entries of dead instances are cleaned up on the
    /// side.
    pub(crate) async fn load(
        self: &Arc<Self>,
        account: AccountId,
    ) -> Result<AccountView, PresenceError> {
        let (view, dead) = self.store.load(account, |i| self.peers.alive(i)).await?;
        for d in dead {
            let core = self.clone();
            tokio::spawn(async move {
                let now = core.clock.now_ms();
                if let Err(err) = core
                    .store
                    .drop_instance(account, d.instance, now, |i| core.peers.alive(i))
                    .await
                {
                    tracing::warn!(%account, error = %err, "stale presence entries not removed");
                }
            });
        }
        Ok(view)
    }

    /// Open a Subscribe stream for `viewer`'s device watching `accounts` (deduplicated).
    pub fn subscribe(
        self: &Arc<Self>,
        viewer: AccountId,
        device: DeviceId,
        accounts: &[AccountId],
    ) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut topics: Vec<TopicKey> = accounts.iter().map(|a| TopicKey::Account(*a)).collect();
        topics.push(TopicKey::Inbox(viewer));
        let (tx, rx) = mpsc::channel(topics.len() + 256);
        let watcher = Arc::new(Watcher::new(id, viewer, tx, topics.len()));
        let replaced = CancellationToken::new();
        if let Some((_, old)) = lock(&self.streams).insert((viewer, device), (id, replaced.clone()))
        {
            old.cancel();
        }
        for key in &topics {
            self.watch(*key, &watcher);
        }
        Subscription {
            rx,
            broken: watcher.broken.clone(),
            replaced,
            guard: SubscriptionGuard {
                core: self.clone(),
                watcher: id,
                device: (viewer, device),
                topics,
            },
        }
    }

    fn watch(self: &Arc<Self>, key: TopicKey, watcher: &Arc<Watcher>) {
        let mut tasks = lock(&self.topic_tasks);
        if self.views.watch(key, watcher) {
            let task_id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let cancel = self.shutdown.child_token();
            tasks.insert(key, (task_id, cancel.clone()));
            tokio::spawn(self.clone().run_topic(key, task_id, cancel));
        }
    }

    fn unwatch(&self, key: TopicKey, watcher: u64) {
        let mut tasks = lock(&self.topic_tasks);
        if self.views.unwatch(key, watcher)
            && let Some((_, cancel)) = tasks.remove(&key)
        {
            cancel.cancel();
        }
    }

    /// A topic's source failed: end its watchers, unless a newer task already replaced it.
    fn topic_failed(&self, key: TopicKey, task_id: u64) {
        let mut tasks = lock(&self.topic_tasks);
        if tasks.get(&key).is_some_and(|(id, _)| *id == task_id) {
            tasks.remove(&key);
            self.views.fail(key);
        }
    }

    /// End the open Subscribe stream of a device on this instance (it ends OK, as when
    /// replaced: a removed device or deleted account has nothing to resubscribe for).
    pub(crate) fn end_stream(&self, account: AccountId, device: DeviceId) {
        if let Some((_, cancel)) = lock(&self.streams).remove(&(account, device)) {
            cancel.cancel();
        }
    }

    /// The bus source of one topic: subscribe, load the initial state, then apply events until
    /// the last watcher leaves (`cancel`) or the server stops.
    async fn run_topic(self: Arc<Self>, key: TopicKey, task_id: u64, cancel: CancellationToken) {
        let subject = key.subject();
        let account = key.account();
        let mut sub = match self.bus.subscribe(&subject).await {
            Ok(sub) => sub,
            Err(err) => {
                tracing::warn!(%subject, error = %err, "presence subscription failed");
                self.topic_failed(key, task_id);
                return;
            }
        };
        match key {
            TopicKey::Account(_) => {
                if !self.load_topic(key, task_id).await {
                    return;
                }
            }
            TopicKey::Inbox(_) => self.views.inbox_ready(account),
        }
        loop {
            let delivery = tokio::select! {
                _ = cancel.cancelled() => return,
                d = sub.next() => d,
            };
            match delivery {
                Some(Delivery::Event(event)) => match key {
                    TopicKey::Account(_) => {
                        if let Some(ev) = AccountEvent::decode(event.payload()) {
                            self.peers.touch(ev.instance, None);
                            self.apply_event(account, &ev);
                        }
                    }
                    TopicKey::Inbox(_) => {
                        if let Some(signal) = TypingSignal::decode(event.payload()) {
                            self.views.deliver_typing(account, &signal);
                        }
                    }
                },
                // Events were lost: the stored state is the truth to resynchronise from.
                Some(Delivery::Lagged { .. }) => {
                    if matches!(key, TopicKey::Account(_)) && !self.load_topic(key, task_id).await {
                        return;
                    }
                }
                None => {
                    self.topic_failed(key, task_id);
                    return;
                }
            }
        }
    }

    /// Apply an account event from the bus to the account's view.
    ///
    /// The bus orders the events of one instance, not those of different instances: another
    /// instance's offline can overtake the echo of this instance's own online event for the
    /// same account (seen with NATS under CPU load), and the view would show the account
    /// offline, with a last seen, while this instance holds a live device of it. What this
    /// instance holds it knows without the bus, so before a remote change that takes a device
    /// away, its own announced devices are put in the view (the echo then changes nothing).
    fn apply_event(&self, account: AccountId, ev: &AccountEvent) {
        if ev.instance != self.instance && matches!(ev.change, Change::DeviceOffline { .. }) {
            self.hold_local_devices(account);
        }
        self.views.apply(account, ev);
    }

    /// Make the view of `account` (if watched here) show this instance's announced devices of
    /// it. The local table stays locked meanwhile (lock order: local table, then views) so
    /// that a device removed or an account deleted concurrently (local table first, views
    /// after) cannot be put back; an expiry racing with this is undone by its own offline
    /// event, which follows on the bus.
    pub(crate) fn hold_local_devices(&self, account: AccountId) {
        let local = lock(&self.local);
        let held = local.announced_devices(account);
        if !held.is_empty() {
            self.views.hold_devices(account, self.instance, &held);
        }
    }

    /// (Re)load a watched account's state from storage into its view; false (and the topic
    /// failed) when storage could not be read.
    async fn load_topic(self: &Arc<Self>, key: TopicKey, task_id: u64) -> bool {
        let account = key.account();
        match self.load(account).await {
            Ok(view) => {
                self.views.install(key, view);
                true
            }
            Err(err) => {
                tracing::warn!(%account, error = %err, "presence state not loaded");
                self.topic_failed(key, task_id);
                false
            }
        }
    }

    /// Devices online on this instance (metrics, benchmark).
    pub fn local_devices(&self) -> usize {
        lock(&self.local).online_devices()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use guardyn_common::clock::ManualClock;
    use uuid::Uuid;

    use super::*;
    use crate::local::Heartbeat;
    use crate::model::State;

    async fn next(rx: &mut mpsc::Receiver<Item>) -> Item {
        // A safety net against a hang: every awaited item follows an event already published.
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap()
    }

    async fn next_state(rx: &mut mpsc::Receiver<Item>) -> State {
        match next(rx).await {
            Item::Presence(seen) => seen.state,
            other => panic!("expected presence, got {other:?}"),
        }
    }

    /// Another instance's offline overtook the echo of this instance's own online event of
    /// the same account (CI, NATS under load): the account must stay online for the viewers
    /// here, since this instance holds a live device of it.
    #[tokio::test]
    async fn a_remote_offline_overtaking_our_own_online_does_not_show_offline() {
        let dir = tempfile::tempdir().unwrap();
        let kv = guardyn_storage_embedded::EmbeddedStore::open(dir.path(), Default::default())
            .await
            .unwrap();
        let bus: Arc<dyn EventBus> = Arc::new(guardyn_events::InProcessBus::new(
            kv.clone(),
            guardyn_events::EventsConfig::default(),
        ));
        let clock = ManualClock::new();
        let core = Core::new(
            PresenceConfig::default(),
            Store::new(kv.clone()),
            bus.clone(),
            Arc::new(clock.clone()),
            CancellationToken::new(),
            PolicyCache::new(Default::default()),
        );
        let x = AccountId::from_uuid(Uuid::new_v4());
        let viewer = AccountId::from_uuid(Uuid::new_v4());
        let remote = Uuid::new_v4();
        let mut sub = core.subscribe(viewer, DeviceId::FIRST, &[x]);
        assert_eq!(next_state(&mut sub.rx).await, State::Offline);
        assert_eq!(next(&mut sub.rx).await, Item::Ready);

        let now = core.clock.now_ms();
        let remote_change = |change| publish_change(&*bus, remote, x, now, change);
        remote_change(Change::DeviceOnline {
            device: 1,
            generation: 1,
        })
        .await;
        assert_eq!(next_state(&mut sub.rx).await, State::Online);

        // Device 2 of x came online here (stored and announced); its event is still in flight.
        let device = DeviceId::new(2).unwrap();
        {
            let mut local = lock(&core.local);
            let Heartbeat::CameOnline { generation } =
                local.heartbeat(x, device, now, core.device_expiry_ms())
            else {
                panic!("a new device comes online");
            };
            local.announced(x, device, generation);
        }
        remote_change(Change::DeviceOffline {
            device: 1,
            generation: 1,
        })
        .await;
        // A visible change after it, on the same subject: the next item tells what the viewer
        // saw of the offline (the bus keeps one publisher's order).
        remote_change(Change::Status {
            status: Status::Away,
            custom_text: String::new(),
        })
        .await;
        assert_eq!(next_state(&mut sub.rx).await, State::Away);
        assert_eq!(
            core.presence(viewer, &[x]).await.unwrap()[0].state,
            State::Away
        );
        drop(sub);
        kv.close().await;
    }
}
