//! The Listen stream: drain the stored queue in order, then the logs of the device's groups from
//! its cursors ([`crate::groups::cursors`]), mark the end of the backlog, then follow
//! `messaging.mail.<account>.<device>` events and group-log wake-ups, never more than
//! `max_in_flight` envelopes unacknowledged (queue and group logs together). The stream ends
//! when its token expires (TOKEN_EXPIRED) or its session is revoked (SESSION_REVOKED, or
//! DEVICE_REMOVED when the revocation is a device removal), checked by its [`StreamAuth`]
//! before every send and while it waits.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::{FutureExt as _, StreamExt as _};
use guardyn_common::auth::StreamAuth;
use guardyn_common::events::Payload as _;
use guardyn_common::events::messaging::{Envelope, ListenRelease, MailEvent, unlisten_subject};
use guardyn_common::stats::ListenGuard;
use guardyn_common::{AccountId, ApiError, DeviceId, GroupId, Reason};
use guardyn_events::{Delivery, Subscription};
use guardyn_storage::LogEntry;
use guardyn_storage::record;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::Instrument as _;

use crate::core::Core;
use crate::error::MessagingError;
use crate::hold::{Grant, Sent};
use crate::store::{self, GroupMessage, Membership, QueueEntry};
use crate::streams::{Close, Notice, StreamCtl};

/// Largest batch read from the queue at once.
const READ_BATCH: usize = 64;

/// Payload bytes a batch read aims at: a stream reads one entry at a time (and one more to see
/// where the backlog ends) while its entries are large, so that thousands of streams catching
/// up on 200 KB commits hold a few hundred KB each, not their whole backlogs.
pub(crate) const READ_BYTES: usize = 256 * 1024;

/// Bytes of queue envelopes one stream may hold between reading and HTTP/2, and bytes of group
/// envelopes it may have unacknowledged: a client that stops reading or acknowledging pins at
/// most this much.
pub(crate) const STREAM_BUFFER_BYTES: usize = 1024 * 1024;

impl Core {
    /// The permits of [`Core::listen_buffer`].
    pub(crate) fn listen_buffer_size(&self) -> usize {
        listen_buffer_permits(self.cfg.listen_buffer_mib)
    }
}

/// [`crate::core::Core::listen_buffer`]'s permits for `mib` MiB.
pub(crate) fn listen_buffer_permits(mib: u64) -> usize {
    usize::try_from(mib.saturating_mul(1024 * 1024))
        .unwrap_or(usize::MAX)
        .min(tokio::sync::Semaphore::MAX_PERMITS)
}

/// What a Listen stream sends, in order.
#[derive(Debug)]
pub(crate) enum Item {
    Envelope(Envelope),
    /// An envelope read from its group's log (server id = position there).
    GroupLog(Envelope),
    /// The stored backlog is drained (sent once per stream).
    QueueEmpty,
    Keepalive,
    Notice {
        at_ms: u64,
        notice: Notice,
    },
}

/// One sent item with its shares of the stream's and the process's Listen buffer, given back
/// when the transport takes the item (this is dropped). Group-log envelopes travel without:
/// their room stays with the stream until they are acknowledged ([`crate::hold`]).
#[derive(Debug)]
pub(crate) struct Out {
    pub item: Result<Item, ApiError>,
    _room: Option<(OwnedSemaphorePermit, Option<OwnedSemaphorePermit>)>,
}

/// Boxed because a channel allocates its first block of 32 slots when created: at the
/// unboxed size that block was about 6 KiB per connected device, idle or not.
pub(crate) type Tx = mpsc::Sender<Box<Out>>;

/// One device's stream state.
pub(crate) struct Listener {
    pub core: Arc<Core>,
    pub ctl: Arc<StreamCtl>,
    pub account: AccountId,
    pub device: DeviceId,
    pub sub: Subscription,
    pub tx: Tx,
    /// Taken before the stream registered, so no revocation falls in between.
    pub auth: StreamAuth,
    /// The groups whose log this stream reads (and is woken by).
    pub groups: HashMap<GroupId, GroupCursor>,
    /// The largest payload of the last batch read ([`READ_BYTES`] before the first).
    pub entry_bytes: usize,
    /// This stream's share of the Listen buffer ([`STREAM_BUFFER_BYTES`]).
    pub buffer: Arc<tokio::sync::Semaphore>,
    /// The last pass ended for want of acknowledgements (window or room).
    pub needs_acks: bool,
    /// Counts the device as streaming (process stats) until the stream has ended.
    pub _connected: ListenGuard,
}

/// How far a stream got through one group's log.
#[derive(Debug, Default)]
pub(crate) struct GroupCursor {
    /// Sent and not acknowledged, ascending.
    in_flight: Vec<Sent>,
    /// Highest position sent (or skipped).
    sent_upto: u64,
}

/// How far a stream got through its queue.
#[derive(Default)]
struct Cursor {
    /// Sent and not acknowledged (server ids = sequences), oldest first.
    in_flight: VecDeque<u64>,
    /// Highest sequence sent (or skipped).
    sent_upto: u64,
    /// `QueueEmpty` was sent.
    backlog_done: bool,
    /// The device's memberships as last read; `None`: read them on the next pass (at the
    /// start, and whenever they change: [`MailEvent::MembershipsChanged`]).
    memberships: Option<Vec<Membership>>,
}

/// What one group's part of a pass did.
struct GroupPass {
    sent: usize,
    /// The log holds more for this device.
    more: bool,
    /// Out of room until acknowledgements come: the pass ends here.
    blocked: bool,
}

impl GroupPass {
    fn blocked(sent: usize) -> Self {
        Self {
            sent,
            more: true,
            blocked: true,
        }
    }
}

enum End {
    /// The client went away.
    Gone,
    Closed(Close),
    /// The token expired.
    Expired(ApiError),
    Shutdown,
    Failed(MessagingError),
}

impl Listener {
    pub(crate) async fn run(mut self) {
        let end = match self.serve().await {
            Ok(()) => End::Shutdown,
            Err(e) => e,
        };
        self.core
            .registry
            .unregister(self.account, self.device, self.ctl.id);
        for group in self.groups.keys() {
            self.core.registry.unwatch_group(group, self.ctl.id);
        }
        // The other instances stop counting the device as streaming here (and wake it again).
        let release = ListenRelease {
            instance: self.core.registry.instance,
            stream: self.ctl.id,
        };
        if let Err(e) = self
            .core
            .bus
            .publish(
                &unlisten_subject(self.account, self.device),
                release.encode(),
            )
            .await
        {
            tracing::warn!(error = %e, "could not publish a listen release");
        }
        let at_ms = self.core.clock.now_ms();
        let notice = |notice: Notice| Ok(Item::Notice { at_ms, notice });
        let last: Vec<Result<Item, ApiError>> = match end {
            End::Gone => Vec::new(),
            End::Closed(Close::Replaced) => vec![notice(Notice::StreamReplaced)],
            End::Closed(Close::SessionRevoked(session_id)) => vec![
                notice(Notice::SessionRevoked { session_id }),
                Err(ApiError::new(
                    Reason::SessionRevoked,
                    "the session was revoked",
                )),
            ],
            End::Closed(Close::DeviceRemoved) => vec![
                notice(Notice::DeviceRemoved {
                    device: self.device,
                }),
                Err(ApiError::new(
                    Reason::DeviceRemoved,
                    "the device was removed",
                )),
            ],
            End::Expired(e) => vec![Err(e)],
            End::Shutdown => vec![Err(ApiError::new(
                Reason::Unavailable,
                "the server is shutting down; reconnect",
            ))],
            End::Failed(e) => vec![Err(e.into())],
        };
        for item in last {
            let out = Out { item, _room: None };
            if self.tx.send(Box::new(out)).await.is_err() {
                break;
            }
        }
    }

    async fn send(&self, item: Item) -> Result<(), End> {
        if let Err(e) = self.auth.check() {
            return Err(self.auth_ended(e).await);
        }
        // Group-log envelopes hold their room in `GroupCursor::in_flight` instead.
        let bytes = match &item {
            Item::Envelope(e) => e.content.len(),
            _ => 0,
        };
        // The stream's share first, then the process's: an envelope larger than either takes
        // all of it. A stream that holds room for group envelopes does not wait for more (see
        // `crate::hold`): it goes without the process's share for this one.
        let room = if bytes == 0 {
            None
        } else {
            let own = self.buffer.clone();
            let own = own.acquire_many_owned(crate::hold::permits(bytes, STREAM_BUFFER_BYTES));
            let own = own.await.map_err(|_| End::Shutdown)?;
            let cap = self.core.listen_buffer_size();
            let n = crate::hold::permits(bytes, cap);
            let all = self.core.listen_buffer.clone();
            let all = if self.holds_group_room() {
                all.try_acquire_many_owned(n).ok()
            } else {
                Some(all.acquire_many_owned(n).await.map_err(|_| End::Shutdown)?)
            };
            Some((own, all))
        };
        let out = Out {
            item: Ok(item),
            _room: room,
        };
        self.tx.send(Box::new(out)).await.map_err(|_| End::Gone)
    }

    /// How the stream ends when its authentication did: a revocation of a device that is gone
    /// from the directory is a removal, as for the bus event.
    async fn auth_ended(&self, e: ApiError) -> End {
        if e.reason() != Reason::SessionRevoked {
            return End::Expired(e);
        }
        if device_removed(&self.core, self.account, self.device).await {
            End::Closed(Close::DeviceRemoved)
        } else {
            End::Closed(Close::SessionRevoked(self.ctl.session_id.clone()))
        }
    }

    async fn serve(&mut self) -> Result<(), End>
    where
        Self: Sized,
    {
        // An `Ok` never leaves this loop; the signature keeps `?` usable.
        let partition = store::queue_partition(self.account, self.device);
        let keepalive = Duration::from_secs(self.core.cfg.keepalive_secs);
        let mut cursor = Cursor::default();
        // The span of the mail event that woke the stream: the next pass delivers that mail,
        // in the trace of the send that stored it.
        let mut woken_by: Option<tracing::Span> = None;
        // This future is what an idle stream costs while it waits in the `select!` below, so
        // the work between waits (a pass, an event, a send) runs boxed: inline, the largest of
        // them sized every idle stream's task (2.5 KiB of the 9 a stream cost; 1.6 boxed).
        loop {
            for (at_ms, notice) in self.ctl.take_notices() {
                Box::pin(self.send(Item::Notice { at_ms, notice })).await?;
            }
            self.ctl.awaiting_acks.store(true, Ordering::SeqCst);
            self.needs_acks = false;
            let pass = Box::pin(self.pass(&partition, &mut cursor));
            let more = match woken_by.take() {
                Some(span) => pass.instrument(span).await?,
                None => pass.await?,
            };
            if !self.needs_acks {
                self.ctl.awaiting_acks.store(false, Ordering::SeqCst);
            }
            if more {
                continue;
            }
            let keepalive_at = tokio::time::Instant::now() + keepalive;
            tokio::select! {
                () = self.core.shutdown.cancelled() => return Err(End::Shutdown),
                ended = self.auth.ended_or(keepalive_at) => match ended {
                    Some(e) => return Err(Box::pin(self.auth_ended(e)).await),
                    None => {
                        // A mail event lost between instances waits at most this long.
                        self.ctl.queue_woken.store(true, Ordering::SeqCst);
                        Box::pin(self.send(Item::Keepalive)).await?;
                    }
                },
                () = self.ctl.cancel.cancelled() => {
                    return Err(self.ctl.close_reason().map_or(End::Shutdown, End::Closed));
                }
                () = self.ctl.wake.notified() => {}
                () = self.tx.closed() => return Err(End::Gone),
                d = self.sub.next() => {
                    Box::pin(self.on_delivery(d, &mut cursor, &mut woken_by)).await?;
                }
            }
            // A send wakes the stream twice (the local wake-up and its mail event), and a burst
            // of sends queues one event each: whatever is already waiting is folded into the
            // next pass, so a burst costs one read of the queue rather than one per wake-up.
            // Anything arriving after this drain wakes the loop again, so none is lost; the
            // drain is bounded so that a flood of events still lets passes run.
            let _ = self.ctl.wake.notified().now_or_never();
            for _ in 0..READ_BATCH {
                let Some(d) = self.sub.next().now_or_never() else {
                    break;
                };
                Box::pin(self.on_delivery(d, &mut cursor, &mut woken_by)).await?;
            }
        }
    }

    /// Handle one item of the mail subscription: an online-only envelope is sent at once, a
    /// queue or membership change leaves its span in `woken_by` for the next pass.
    async fn on_delivery(
        &mut self,
        d: Option<Delivery>,
        cursor: &mut Cursor,
        woken_by: &mut Option<tracing::Span>,
    ) -> Result<(), End> {
        match d {
            Some(Delivery::Event(ev)) => {
                let span = tracing::info_span!("mail_event", otel.kind = "consumer");
                ev.trace_context().set_parent_of(&span);
                match MailEvent::decode(ev.payload()) {
                    Ok(MailEvent::OnlineOnly(env)) => {
                        self.send(Item::Envelope(env)).instrument(span).await?;
                    }
                    Ok(MailEvent::Stored) => {
                        self.ctl.queue_woken.store(true, Ordering::SeqCst);
                        *woken_by = Some(span);
                    }
                    Ok(MailEvent::MembershipsChanged) => {
                        cursor.memberships = None;
                        *woken_by = Some(span);
                    }
                    Err(e) => tracing::warn!(error = %e, "ignoring a malformed mail event"),
                }
                Ok(())
            }
            // Missed events only mean "re-read the queue".
            Some(Delivery::Lagged { .. }) => {
                self.ctl.queue_woken.store(true, Ordering::SeqCst);
                Ok(())
            }
            None => Err(End::Shutdown),
        }
    }

    /// How many entries to read next, for `room` in the window: about [`READ_BYTES`] of
    /// entries the size of the last batch's largest.
    fn read_limit(&self, room: usize) -> usize {
        let by_size = (READ_BYTES / self.entry_bytes.max(1)).max(1);
        room.min(READ_BATCH).min(by_size)
    }

    fn note_read(&mut self, batch: &[LogEntry]) {
        if let Some(largest) = batch.iter().map(|e| e.payload.len()).max() {
            self.entry_bytes = largest;
        }
    }

    /// Forget acknowledged envelopes, then send what the window has room for, from the queue
    /// first and then from the group logs; `true` when more is stored than was sent.
    async fn pass(&mut self, partition: &[u8], cursor: &mut Cursor) -> Result<bool, End> {
        let relisted = self.refresh_memberships(cursor).await?;
        let memberships = cursor.memberships.as_deref().unwrap_or_default();
        let (now, hold) = (
            Instant::now(),
            Duration::from_secs(self.core.cfg.listen_hold_secs),
        );
        for m in memberships {
            if let Some(gc) = self.groups.get_mut(&m.group) {
                gc.in_flight.retain(|s| !m.is_acked(s.seq));
                for s in &mut gc.in_flight {
                    s.expire(now, hold);
                }
            }
        }
        let group_in_flight = self
            .groups
            .values()
            .map(|g| g.in_flight.len())
            .sum::<usize>();
        let window = self.core.cfg.max_in_flight;
        // Acknowledged queue entries leave `in_flight` only when the queue is read again, and
        // that read is skipped while the stale count still leaves a full batch of room: a
        // stale count only understates the room, so the window still holds, and a busy
        // stream reads its in-flight entries once per few batches instead of every pass.
        let stale_room = window.saturating_sub(cursor.in_flight.len() + group_in_flight);
        if stale_room < READ_BATCH.min(window)
            && let Some(&first) = cursor.in_flight.front()
        {
            // What is still stored at or below `sent_upto` is still in flight.
            let still = self
                .core
                .log
                .read(partition, first, cursor.in_flight.len())
                .await
                .map_err(|e| End::Failed(e.into()))?;
            cursor.in_flight = still
                .iter()
                .map(|e| e.seq)
                .filter(|s| *s <= cursor.sent_upto)
                .collect();
        }
        let mut room = window.saturating_sub(cursor.in_flight.len() + group_in_flight);
        if room == 0 {
            self.needs_acks = true;
            return Ok(false);
        }
        // The queue is read when something may have been appended to it since it was last
        // read to its end, and whenever the memberships were listed again: a new member's
        // Welcome, queued before its membership existed, goes out before the group's log.
        if self.ctl.queue_woken.swap(false, Ordering::SeqCst) | relisted {
            let want = self.read_limit(room);
            // One entry more than we may send tells whether the backlog ends here.
            let mut batch = self
                .core
                .log
                .read(partition, cursor.sent_upto + 1, want + 1)
                .await
                .map_err(|e| End::Failed(e.into()))?;
            self.note_read(&batch);
            let more = batch.len() > want;
            batch.truncate(want);
            for entry in batch {
                cursor.sent_upto = entry.seq;
                if let Some(env) = self.resolve(partition, entry).await? {
                    cursor.in_flight.push_back(env.server_id);
                    room -= 1;
                    self.send(Item::Envelope(env)).await?;
                }
            }
            if more {
                self.ctl.queue_woken.store(true, Ordering::SeqCst);
                return Ok(true);
            }
        }
        let mut more = false;
        for m in memberships {
            if room == 0 {
                self.needs_acks = true;
                return Ok(false);
            }
            let done = self.pass_group(m, room).await?;
            if done.blocked {
                self.needs_acks = true;
                return Ok(false);
            }
            room -= done.sent;
            more |= done.more;
        }
        if !more && !cursor.backlog_done {
            cursor.backlog_done = true;
            self.send(Item::QueueEmpty).await?;
        }
        Ok(more)
    }

    /// Bring `cursor.memberships` up to date: listed again when they changed, and re-read where
    /// an entry of the group is in flight (its acknowledgements move the cursor). A device in
    /// no group reads nothing here. `true` when they were listed again.
    async fn refresh_memberships(&mut self, cursor: &mut Cursor) -> Result<bool, End> {
        if self.ctl.memberships_changed.swap(false, Ordering::Relaxed) {
            cursor.memberships = None;
        }
        let relisted = cursor.memberships.is_none();
        let list = match &mut cursor.memberships {
            Some(list) => list,
            slot @ None => {
                // Listed before the queue is read: a membership exists only once its Welcome
                // is queued, so a new member's Welcome is sent before anything of the log.
                let list = self
                    .core
                    .memberships(self.account, self.device)
                    .await
                    .map_err(End::Failed)?;
                self.follow(&list);
                slot.insert(list)
            }
        };
        for m in list.iter_mut() {
            if self
                .groups
                .get(&m.group)
                .is_some_and(|g| !g.in_flight.is_empty())
            {
                let key = store::membership_key(self.account, self.device, &m.group);
                let raw = self
                    .core
                    .kv
                    .get(&key)
                    .await
                    .map_err(|e| End::Failed(e.into()))?;
                // Gone (the device's records were purged): nothing of it is for the device.
                *m = match raw {
                    Some(raw) => record::decode(&raw).map_err(|e| End::Failed(e.into()))?,
                    None => Membership::new(m.group.clone(), u64::MAX, u64::MAX),
                };
            }
        }
        Ok(relisted)
    }

    /// Read the groups of `memberships` (and be woken by them) and no others.
    fn follow(&mut self, memberships: &[Membership]) {
        let registry = &self.core.registry;
        let id = self.ctl.id;
        self.groups.retain(|g, _| {
            let keep = memberships.iter().any(|m| &m.group == g);
            if !keep {
                registry.unwatch_group(g, id);
            }
            keep
        });
        for m in memberships {
            if !self.groups.contains_key(&m.group) {
                registry.watch_group(&m.group, &self.ctl);
                self.groups.insert(m.group.clone(), GroupCursor::default());
            }
        }
    }

    /// Send up to `room` entries of one group's log that are for this device, each taking its
    /// size of the room reserved before the read ([`crate::hold`]).
    async fn pass_group(&mut self, m: &Membership, room: usize) -> Result<GroupPass, End> {
        let me = (self.account, self.device);
        let from = self
            .groups
            .get(&m.group)
            .map_or(0, |g| g.sent_upto)
            .saturating_add(1)
            .max(m.start());
        let mut unacked = self.unacked_group_bytes();
        if unacked >= STREAM_BUFFER_BYTES {
            return Ok(GroupPass::blocked(0));
        }
        let want = self.read_limit(room);
        // Room for the entries read, the one read ahead included, before they are read.
        let estimate = self.entry_bytes.saturating_mul(want + 1);
        let Some(mut grant) = self.reserve(estimate).await? else {
            return Ok(GroupPass::blocked(0));
        };
        let mut batch = self
            .core
            .log
            .read(&store::group_log(&m.group), from, want + 1)
            .await
            .map_err(|e| End::Failed(e.into()))?;
        self.note_read(&batch);
        let more = batch.len() > want;
        batch.truncate(want);
        let retention_ms = self.core.retention_secs().saturating_mul(1000);
        let now = self.core.clock.now_ms();
        let mut sent = 0;
        for entry in batch {
            let stored = record::decode::<GroupMessage>(&entry.payload)
                .map_err(|e| End::Failed(e.into()))?;
            // Expiry by the service clock, as for queue entries (the log's TTL runs on the
            // engine's wall clock).
            let audience = stored.audience.filter(|a| {
                m.wants(entry.seq, a, me)
                    && !m.is_acked(entry.seq)
                    && now < a.envelope.server_timestamp_ms.saturating_add(retention_ms)
            });
            let Some(audience) = audience else {
                self.mark_sent(&m.group, entry.seq, None);
                continue;
            };
            let bytes = entry.payload.len();
            let fits = unacked == 0 || unacked.saturating_add(bytes) <= STREAM_BUFFER_BYTES;
            let Some(held) = fits.then(|| grant.take(bytes)).flatten() else {
                // Not sent: read again once there is room, reserved for its real size. A
                // stream that holds room waits for its acknowledgements; one that holds none
                // waits for the buffer on its next pass.
                self.entry_bytes = self.entry_bytes.max(bytes);
                if self.holds_group_room() || unacked > 0 {
                    return Ok(GroupPass::blocked(sent));
                }
                return Ok(GroupPass {
                    sent,
                    more: true,
                    blocked: false,
                });
            };
            unacked = unacked.saturating_add(bytes);
            let mut env = audience.envelope;
            env.content = stored.content;
            env.server_id = entry.seq;
            self.mark_sent(&m.group, entry.seq, Some(Sent::new(entry.seq, bytes, held)));
            sent += 1;
            self.send(Item::GroupLog(env)).await?;
        }
        Ok(GroupPass {
            sent,
            more,
            blocked: false,
        })
    }

    /// `seq` of `group` was sent (with what it holds) or skipped.
    fn mark_sent(&mut self, group: &GroupId, seq: u64, sent: Option<Sent>) {
        if let Some(gc) = self.groups.get_mut(group) {
            gc.sent_upto = seq;
            gc.in_flight.extend(sent);
        }
    }

    /// Bytes of group envelopes sent and not acknowledged, all groups together.
    fn unacked_group_bytes(&self) -> usize {
        self.groups
            .values()
            .flat_map(|g| &g.in_flight)
            .map(|s| s.bytes)
            .sum()
    }

    /// Whether some unacknowledged group envelope still holds room in the Listen buffer.
    fn holds_group_room(&self) -> bool {
        self.groups
            .values()
            .flat_map(|g| &g.in_flight)
            .any(Sent::holds_room)
    }

    /// Reserve `bytes` of the Listen buffer: waiting for it when the stream holds none, else
    /// as much of it as is free, if that is room for one entry (`None`: wait for
    /// acknowledgements instead).
    async fn reserve(&self, bytes: usize) -> Result<Option<Grant>, End> {
        let buffer = self.core.listen_buffer.clone();
        let cap = self.core.listen_buffer_size();
        let n = crate::hold::permits(bytes, cap);
        if self.holds_group_room() {
            // What is free, if it is room for one entry.
            let one = crate::hold::permits(self.entry_bytes, cap);
            let n = n.min(u32::try_from(buffer.available_permits()).unwrap_or(u32::MAX));
            if n < one {
                return Ok(None);
            }
            let permit = buffer.clone().try_acquire_many_owned(n).ok();
            return Ok(permit.map(|p| Grant::new(p, buffer, cap)));
        }
        // Free room (the usual case) is taken without setting up the wait.
        if let Ok(permit) = buffer.clone().try_acquire_many_owned(n) {
            return Ok(Some(Grant::new(permit, buffer, cap)));
        }
        let permit = tokio::select! {
            p = buffer.clone().acquire_many_owned(n) => p.map_err(|_| End::Shutdown)?,
            () = self.core.shutdown.cancelled() => return Err(End::Shutdown),
            () = self.ctl.cancel.cancelled() => {
                return Err(self.ctl.close_reason().map_or(End::Shutdown, End::Closed));
            }
            () = self.tx.closed() => return Err(End::Gone),
        };
        Ok(Some(Grant::new(permit, buffer, cap)))
    }

    /// The envelope to deliver for a queue entry; `None` (after deleting the entry) when it
    /// expired by the service clock or its stored group message is gone.
    async fn resolve(&self, partition: &[u8], entry: LogEntry) -> Result<Option<Envelope>, End> {
        let fail = |e: MessagingError| End::Failed(e);
        let seq = entry.seq;
        let decoded = record::decode::<QueueEntry>(&entry.payload).map_err(|e| fail(e.into()))?;
        let mut env = match decoded {
            QueueEntry::Inline(env) => env,
            QueueEntry::GroupRef {
                seq: gseq,
                mut envelope,
                ..
            } => {
                let Some(gid) = envelope.group.clone() else {
                    return Err(fail(
                        guardyn_storage::StorageError::Corrupt("group ref".into()).into(),
                    ));
                };
                let stored = self
                    .core
                    .log
                    .read(&store::group_log(&gid), gseq, 1)
                    .await
                    .map_err(|e| fail(e.into()))?;
                match stored.first() {
                    Some(m) if m.seq == gseq => {
                        envelope.content = record::decode::<GroupMessage>(&m.payload)
                            .map_err(|e| fail(e.into()))?
                            .content;
                        envelope
                    }
                    _ => {
                        self.drop_entry(partition, seq).await?;
                        return Ok(None);
                    }
                }
            }
        };
        // The log's own TTL runs on the storage engine's wall clock; the service clock decides
        // too, so that expiry is the same everywhere the clock is injected.
        let accepted = env.server_timestamp_ms;
        let expires = accepted.saturating_add(self.core.retention_secs().saturating_mul(1000));
        if self.core.clock.now_ms() >= expires {
            self.drop_entry(partition, seq).await?;
            return Ok(None);
        }
        env.server_id = seq;
        Ok(Some(env))
    }

    async fn drop_entry(&self, partition: &[u8], seq: u64) -> Result<(), End> {
        self.core
            .log
            .delete(partition, &[seq])
            .await
            .map_err(|e| End::Failed(e.into()))
    }
}

/// Whether a revoked session's device is gone from the directory: auth deletes a removed
/// device (and a deleted account) before it revokes its sessions, so such a revocation is a
/// removal and the stream ends with DeviceRemoved. An unreachable directory counts as not
/// removed (the stream still ends, as revoked).
pub(crate) async fn device_removed(core: &Core, account: AccountId, device: DeviceId) -> bool {
    match core.directory.devices(&account.to_string()).await {
        Ok(Some(devices)) => !devices.iter().any(|d| d.device_id == device.get()),
        Ok(None) => true,
        Err(err) => {
            tracing::warn!(error = %err, "device directory unavailable; closing as revoked");
            false
        }
    }
}
