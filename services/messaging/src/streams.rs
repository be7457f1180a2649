//! Which Listen streams this process holds, and how they are told to stop or re-read.
//!
//! One live stream per device: registering a new stream closes the previous one with
//! [`Close::Replaced`]; other instances learn of the new stream from a
//! `messaging.listen.<account>.<device>` claim and close theirs the same way.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use guardyn_common::{AccountId, DeviceId, GroupId};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Something a device is told on its stream (not queued: a stream opened later does not get
/// it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    StreamReplaced,
    SessionRevoked {
        session_id: String,
    },
    DeviceRemoved {
        device: DeviceId,
    },
    DeviceLinked {
        device: DeviceId,
        name: String,
    },
    PreKeysLow {
        one_time_prekeys: u32,
        one_time_kem_prekeys: u32,
        has_last_resort_kem_prekey: bool,
        key_packages: u32,
    },
    ClientConfigChanged {
        version: u64,
    },
    /// An operator's notice to this account (or to every account).
    SystemNotice(guardyn_common::events::notices::SystemNotice),
}

/// Why a stream was closed from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Close {
    Replaced,
    SessionRevoked(String),
    DeviceRemoved,
}

/// The control handle of one stream.
#[derive(Debug)]
pub(crate) struct StreamCtl {
    pub id: u64,
    pub session_id: String,
    pub cancel: CancellationToken,
    pub reason: Mutex<Option<Close>>,
    /// Woken when the queue may have changed (acknowledgements on this instance) or a notice
    /// is waiting.
    pub wake: Notify,
    /// Notices to send, with the time they occurred (ms).
    notices: Mutex<VecDeque<(u64, Notice)>>,
    /// The device's group memberships changed (set here; the stream re-reads them).
    pub memberships_changed: AtomicBool,
    /// The stream may be waiting for acknowledgements (out of window or of room): set before
    /// each pass reads what is acknowledged, cleared after a pass that needs none, so an
    /// acknowledgement committed after that read always finds it set ([`Registry::acked`]).
    pub awaiting_acks: AtomicBool,
    /// Something may have been appended to the device's queue since the stream last read it
    /// to its end: set by every wake-up for the queue ([`Registry::wake`], a mail event, the
    /// keepalive, the start), taken by the pass that reads it. A wake-up for a group log or
    /// an acknowledgement leaves it, so a group message costs its members no queue read.
    pub queue_woken: AtomicBool,
}

/// Most notices waiting for one stream; a stream that falls further behind loses the oldest
/// (notices are hints the client can re-learn, see ServerNotice).
const MAX_PENDING_NOTICES: usize = 32;

impl StreamCtl {
    fn close(&self, why: Close) {
        let mut r = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        if r.is_none() {
            *r = Some(why);
        }
        self.cancel.cancel();
    }

    fn push_notice(&self, at_ms: u64, notice: Notice) {
        let mut q = self.notices.lock().unwrap_or_else(PoisonError::into_inner);
        if q.len() >= MAX_PENDING_NOTICES {
            q.pop_front();
        }
        q.push_back((at_ms, notice));
        drop(q);
        self.wake.notify_one();
    }

    /// Take the waiting notices.
    pub(crate) fn take_notices(&self) -> Vec<(u64, Notice)> {
        self.notices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect()
    }

    pub(crate) fn close_reason(&self) -> Option<Close> {
        self.reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The streams of this process, by (account, device).
#[derive(Debug)]
pub(crate) struct Registry {
    pub instance: [u8; 16],
    next_id: AtomicU64,
    streams: Mutex<HashMap<(AccountId, DeviceId), Arc<StreamCtl>>>,
    /// The streams reading each group's log, by stream id: woken together when it grows.
    groups: Mutex<HashMap<GroupId, HashMap<u64, Arc<StreamCtl>>>>,
}

impl Registry {
    pub(crate) fn new() -> Self {
        Self {
            instance: *uuid::Uuid::new_v4().as_bytes(),
            next_id: AtomicU64::new(1),
            streams: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(AccountId, DeviceId), Arc<StreamCtl>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Register a new stream for the device, closing the previous one.
    pub(crate) fn register(
        &self,
        account: AccountId,
        device: DeviceId,
        session_id: &str,
    ) -> Arc<StreamCtl> {
        let ctl = Arc::new(StreamCtl {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            session_id: session_id.to_owned(),
            cancel: CancellationToken::new(),
            reason: Mutex::new(None),
            wake: Notify::new(),
            notices: Mutex::new(VecDeque::new()),
            memberships_changed: AtomicBool::new(false),
            awaiting_acks: AtomicBool::new(true),
            queue_woken: AtomicBool::new(true),
        });
        if let Some(old) = self.map().insert((account, device), ctl.clone()) {
            old.close(Close::Replaced);
        }
        ctl
    }

    /// Forget a stream that ended (unless a newer one already took its place).
    pub(crate) fn unregister(&self, account: AccountId, device: DeviceId, id: u64) {
        let mut map = self.map();
        let key = (account, device);
        if map.get(&key).is_some_and(|c| c.id == id) {
            map.remove(&key);
        }
    }

    /// Another instance opened a stream for the device.
    pub(crate) fn claimed_elsewhere(&self, account: AccountId, device: DeviceId) {
        if let Some(old) = self.map().remove(&(account, device)) {
            old.close(Close::Replaced);
        }
    }

    pub(crate) fn revoke_session(&self, account: AccountId, device: DeviceId, session_id: &str) {
        let map = self.map();
        if let Some(s) = map.get(&(account, device))
            && s.session_id == session_id
        {
            s.close(Close::SessionRevoked(session_id.to_owned()));
        }
    }

    /// Whether this process holds the device's stream and it belongs to `session_id`.
    pub(crate) fn has_session(
        &self,
        account: AccountId,
        device: DeviceId,
        session_id: &str,
    ) -> bool {
        self.map()
            .get(&(account, device))
            .is_some_and(|s| s.session_id == session_id)
    }

    /// Queue `notice` on the account's streams held here whose device passes `to`.
    pub(crate) fn notify(
        &self,
        account: AccountId,
        to: impl Fn(DeviceId) -> bool,
        at_ms: u64,
        notice: &Notice,
    ) {
        for ((a, d), s) in self.map().iter() {
            if *a == account && to(*d) {
                s.push_notice(at_ms, notice.clone());
            }
        }
    }

    /// Queue `notice` on every stream of the `accounts` held here (one pass over the streams,
    /// however long the list).
    pub(crate) fn notify_accounts(
        &self,
        accounts: &std::collections::HashSet<AccountId>,
        at_ms: u64,
        notice: &Notice,
    ) {
        for ((a, _), s) in self.map().iter() {
            if accounts.contains(a) {
                s.push_notice(at_ms, notice.clone());
            }
        }
    }

    /// Queue `notice` on every stream held here (server-wide news such as a new client
    /// configuration).
    pub(crate) fn notify_all(&self, at_ms: u64, notice: &Notice) {
        for s in self.map().values() {
            s.push_notice(at_ms, notice.clone());
        }
    }

    pub(crate) fn remove_device(&self, account: AccountId, device: DeviceId) {
        if let Some(s) = self.map().get(&(account, device)) {
            s.close(Close::DeviceRemoved);
        }
    }

    pub(crate) fn remove_account(&self, account: AccountId) {
        for ((a, _), s) in self.map().iter() {
            if *a == account {
                s.close(Close::DeviceRemoved);
            }
        }
    }

    /// The device joined or left a group: its stream re-reads its memberships.
    pub(crate) fn memberships_changed(&self, account: AccountId, device: DeviceId) {
        if let Some(s) = self.map().get(&(account, device)) {
            s.memberships_changed.store(true, Ordering::Relaxed);
            s.wake.notify_one();
        }
    }

    /// The device acknowledged envelopes: its stream here is woken if it may be waiting for
    /// them. `false` when the device streams on no stream of this instance (its stream
    /// elsewhere learns it from the bus).
    pub(crate) fn acked(&self, account: AccountId, device: DeviceId) -> bool {
        let Some(s) = self.map().get(&(account, device)).cloned() else {
            return false;
        };
        if s.awaiting_acks.load(Ordering::SeqCst) {
            s.wake.notify_one();
        }
        true
    }

    /// The device's queue grew: its stream here reads it on its next pass.
    pub(crate) fn wake(&self, account: AccountId, device: DeviceId) {
        if let Some(s) = self.map().get(&(account, device)) {
            s.queue_woken.store(true, Ordering::SeqCst);
            s.wake.notify_one();
        }
    }

    fn group_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<GroupId, HashMap<u64, Arc<StreamCtl>>>> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wake `ctl` whenever the group's log grows.
    pub(crate) fn watch_group(&self, group: &GroupId, ctl: &Arc<StreamCtl>) {
        self.group_map()
            .entry(group.clone())
            .or_default()
            .insert(ctl.id, Arc::clone(ctl));
    }

    pub(crate) fn unwatch_group(&self, group: &GroupId, stream: u64) {
        let mut map = self.group_map();
        if let Some(streams) = map.get_mut(group) {
            streams.remove(&stream);
            if streams.is_empty() {
                map.remove(group);
            }
        }
    }

    /// Wake every stream here that reads the group's log.
    pub(crate) fn wake_group(&self, group: &GroupId) {
        if let Some(streams) = self.group_map().get(group) {
            for s in streams.values() {
                s.wake.notify_one();
            }
        }
    }

    pub(crate) fn wake_all_groups(&self) {
        for streams in self.group_map().values() {
            for s in streams.values() {
                s.wake.notify_one();
            }
        }
    }

    pub(crate) fn is_connected(&self, account: AccountId, device: DeviceId) -> bool {
        self.map().contains_key(&(account, device))
    }

    /// Every stream held here: (account, device, stream id).
    pub(crate) fn open_streams(&self) -> Vec<(AccountId, DeviceId, u64)> {
        self.map().iter().map(|(&(a, d), s)| (a, d, s.id)).collect()
    }
}
