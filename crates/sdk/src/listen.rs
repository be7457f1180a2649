//! The receive side: a Listen stream pump that decrypts envelopes, saves the state, hands
//! events to the application and acknowledges.
//!
//! Ordering per batch: process (under the state lock) → save state → emit events → Ack.
//! A crash before the save redelivers and re-processes; a crash after it redelivers, and the
//! envelope is recognised by its position and only acknowledged: the device queue position
//! (`last_server_id`) for queue envelopes, the position in the group's log
//! (`group_log_seen`) for MLS group traffic the server stores once per group.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{FutureExt as _, StreamExt as _};
use guardyn_proto::guardyn::messaging::v1 as msg;
use guardyn_proto::guardyn::messaging::v1::messaging_service_client::MessagingServiceClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::{Client, Inner};
use crate::error::SdkError;
use crate::events::{Address, Event};
use crate::state::State;

/// Acknowledge at least this often while a backlog streams in (the server pauses after
/// `max_in_flight`, default 256, unacknowledged envelopes).
const ACK_BATCH: usize = 64;

/// Limits of one AckRequest: the server's 64 group acks and 1,000 ids in all; each group id
/// is counted as one more id here, which keeps a request well inside the server's limit.
const ACK_MAX_GROUPS: usize = 64;
const ACK_MAX_IDS: usize = 1000;

/// First and longest wait before reopening a broken Listen stream.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Failures that say "the server is not reachable right now": UNAVAILABLE (refused
/// connection, a server shutting down, a proxy whose upstream died) and UNKNOWN, which is what
/// a connection broken mid-stream surfaces as (an h2 or I/O error carries no gRPC status).
fn reconnectable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown
    )
}

/// Live events of a client. Dropping it closes the Listen stream.
pub struct Inbox {
    rx: mpsc::Receiver<Event>,
    task: JoinHandle<()>,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").finish_non_exhaustive()
    }
}

impl Inbox {
    /// The next event; `None` once the stream ended and every event was handed out.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event, or `None` after `timeout`.
    pub async fn next_timeout(&mut self, timeout: Duration) -> Option<Event> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.task.abort();
        self.inner.pump_active.store(false, Ordering::SeqCst);
    }
}

enum Sink<'a> {
    Channel(mpsc::Sender<Event>),
    Collect(&'a mut Vec<Event>),
}

impl Sink<'_> {
    async fn emit(&mut self, events: Vec<Event>) -> bool {
        match self {
            Self::Channel(tx) => {
                for e in events {
                    if tx.send(e).await.is_err() {
                        return false;
                    }
                }
                true
            }
            Self::Collect(v) => {
                v.extend(events);
                true
            }
        }
    }
}

struct Batch {
    /// Device queue positions to acknowledge.
    acks: Vec<u64>,
    /// Group log positions to acknowledge, per group id.
    group_acks: BTreeMap<Vec<u8>, Vec<u64>>,
    events: Vec<Event>,
}

impl Batch {
    fn new() -> Self {
        Self {
            acks: Vec::new(),
            group_acks: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    /// Envelopes processed and not acknowledged yet.
    fn pending(&self) -> usize {
        self.acks.len() + self.group_acks.values().map(Vec::len).sum::<usize>()
    }

    /// Remembers a processed envelope for the next Ack: under its group for a group-log
    /// envelope, by queue position otherwise. Online-only envelopes (position 0) need none.
    fn ack(&mut self, env: &msg::DeliveredEnvelope) {
        if env.server_id == 0 {
            return;
        }
        match group_log_key(env) {
            Some(group_id) => self
                .group_acks
                .entry(group_id.to_vec())
                .or_default()
                .push(env.server_id),
            None if env.group_log => {
                // Cannot be acknowledged without its group; the server keeps offering it.
                tracing::warn!(
                    server_id = env.server_id,
                    "group-log envelope without group id"
                );
            }
            None => self.acks.push(env.server_id),
        }
    }
}

/// The group whose log an envelope comes from; `None` for a device-queue envelope (and for a
/// malformed group-log envelope without a group id).
fn group_log_key(env: &msg::DeliveredEnvelope) -> Option<&[u8]> {
    if env.group_log {
        env.group_id.as_deref()
    } else {
        None
    }
}

/// Whether the envelope was processed before (a redelivery after a lost Ack or a crash after
/// the state was saved).
fn already_processed(st: &State, env: &msg::DeliveredEnvelope) -> bool {
    if env.server_id == 0 {
        return false;
    }
    if env.group_log {
        // Group log positions count per group; the device queue position says nothing here.
        return group_log_key(env)
            .and_then(|g| st.group_log_seen.get(g))
            .is_some_and(|seen| env.server_id <= *seen);
    }
    env.server_id <= st.last_server_id
}

/// Records the envelope's position as processed.
fn mark_processed(st: &mut State, env: &msg::DeliveredEnvelope) {
    if env.server_id == 0 {
        return;
    }
    if env.group_log {
        if let Some(group_id) = group_log_key(env) {
            let seen = st.group_log_seen.entry(group_id.to_vec()).or_default();
            *seen = (*seen).max(env.server_id);
        }
    } else {
        st.last_server_id = env.server_id;
    }
}

/// Splits acknowledgements into requests within the server's limits
/// ([`ACK_MAX_GROUPS`] group acks and [`ACK_MAX_IDS`] ids per request).
fn ack_requests(
    server_ids: Vec<u64>,
    group_acks: BTreeMap<Vec<u8>, Vec<u64>>,
) -> Vec<msg::AckRequest> {
    let mut requests = Vec::new();
    let mut current = msg::AckRequest::default();
    let mut used = 0;
    for chunk in server_ids.chunks(ACK_MAX_IDS) {
        if used + chunk.len() > ACK_MAX_IDS {
            requests.push(std::mem::take(&mut current));
            used = 0;
        }
        current.server_ids.extend_from_slice(chunk);
        used += chunk.len();
    }
    for (group_id, ids) in group_acks {
        let mut rest = ids.as_slice();
        while !rest.is_empty() {
            // A group ack needs room for its group id and at least one server id.
            if current.group_acks.len() >= ACK_MAX_GROUPS || used + 2 > ACK_MAX_IDS {
                requests.push(std::mem::take(&mut current));
                used = 0;
            }
            let take = rest.len().min(ACK_MAX_IDS - used - 1);
            let (now, later) = rest.split_at(take);
            current.group_acks.push(msg::GroupAck {
                group_id: group_id.clone(),
                server_ids: now.to_vec(),
            });
            used += 1 + take;
            rest = later;
        }
    }
    if !current.server_ids.is_empty() || !current.group_acks.is_empty() {
        requests.push(current);
    }
    requests
}

impl Inner {
    /// The stored device notices as events (with the bookkeeping of a live notice), then
    /// acknowledged.
    pub(crate) async fn take_device_notices(self: &Arc<Self>) -> Result<Vec<Event>, SdkError> {
        use guardyn_proto::guardyn::auth::v1 as pb;
        use guardyn_proto::guardyn::auth::v1::device_service_client::DeviceServiceClient;
        use pb::DeviceNoticeKind as K;
        let resp = self
            .call(pb::ListDeviceNoticesRequest {}, |ch, r| async move {
                DeviceServiceClient::new(ch).list_device_notices(r).await
            })
            .await?;
        let Some(up_to) = resp.notices.iter().map(|n| n.notice_id).max() else {
            return Ok(Vec::new());
        };
        let mut events = Vec::with_capacity(resp.notices.len());
        for n in &resp.notices {
            let notice = match n.kind() {
                K::Linked => msg::server_notice::Notice::DeviceLinked(msg::DeviceLinked {
                    device_id: n.device_id,
                    name: n.device_name.clone(),
                }),
                K::Removed => msg::server_notice::Notice::DeviceRemoved(msg::DeviceRemoved {
                    device_id: n.device_id,
                }),
                K::Unspecified => continue,
            };
            // The same bookkeeping as a live notice on the Listen stream.
            let (event, _) = self
                .handle_notice(msg::ServerNotice {
                    occurred_at: n.at,
                    notice: Some(notice),
                })
                .await;
            events.extend(event);
        }
        self.call(pb::AckDeviceNoticesRequest { up_to }, |ch, r| async move {
            DeviceServiceClient::new(ch).ack_device_notices(r).await
        })
        .await?;
        Ok(events)
    }

    fn handle_envelope(
        &self,
        st: &mut State,
        env: &msg::DeliveredEnvelope,
        welcome_tree: Option<&[u8]>,
    ) -> Vec<Event> {
        if already_processed(st, env) {
            return Vec::new();
        }
        let result = if env.r#type == msg::EnvelopeType::Mls as i32 {
            self.open_mls(st, env, welcome_tree).map(Vec::from_iter)
        } else {
            self.open_envelope(st, env)
        };
        mark_processed(st, env);
        match result {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(error = %e, server_id = env.server_id, "dropping an envelope");
                vec![Event::Undecryptable {
                    sender: env.sender_account_id.clone().zip(env.sender_device_id).map(
                        |(account_id, device_id)| Address {
                            account_id,
                            device_id,
                        },
                    ),
                    reason: e.to_string(),
                }]
            }
        }
    }

    pub(crate) async fn handle_notice(
        self: &Arc<Self>,
        notice: msg::ServerNotice,
    ) -> (Option<Event>, bool) {
        use msg::server_notice::Notice;
        match notice.notice {
            Some(Notice::DeviceLinked(d)) => {
                let mut st = self.state.lock().await;
                if let Some(own) = &mut st.own_devices {
                    own.insert(d.device_id);
                }
                (
                    Some(Event::DeviceLinked {
                        device_id: d.device_id,
                    }),
                    false,
                )
            }
            Some(Notice::DeviceRemoved(d)) => {
                let mut st = self.state.lock().await;
                if let Some(own) = &mut st.own_devices {
                    own.remove(&d.device_id);
                }
                let key = (st.account_id.clone(), d.device_id);
                st.peers.remove(&key);
                st.trust.removed(&key);
                let ended = d.device_id == self.device_id;
                (
                    Some(Event::DeviceRemoved {
                        device_id: d.device_id,
                    }),
                    ended,
                )
            }
            Some(Notice::PrekeysLow(_)) => {
                let client = Client {
                    inner: Arc::clone(self),
                };
                tokio::spawn(async move {
                    if let Err(e) = client.top_up_keys().await {
                        tracing::warn!(error = %e, "replenishing prekeys failed");
                    }
                });
                (None, false)
            }
            Some(Notice::SessionRevoked(_)) => (
                Some(Event::StreamEnded {
                    reason: "session revoked".into(),
                }),
                true,
            ),
            Some(Notice::ClientConfigChanged(c)) => (
                Some(Event::ClientConfigChanged { version: c.version }),
                false,
            ),
            Some(Notice::SystemNotice(n)) => (Some(Event::SystemNotice(n.into())), false),
            Some(Notice::StreamReplaced(_)) => (
                Some(Event::StreamEnded {
                    reason: "another Listen for this device replaced this one".into(),
                }),
                true,
            ),
            None => (None, false),
        }
    }

    async fn flush(&self, batch: &mut Batch, sink: &mut Sink<'_>) -> Result<bool, SdkError> {
        if batch.pending() > 0 {
            let mut st = self.state.lock().await;
            self.persist(&mut st)?;
        }
        // Events produced outside the pump meanwhile (a send that met a new device or a
        // changed identity key) reach an open Inbox with the next batch or keepalive.
        if let Ok(mut stash) = self.stash.lock() {
            batch.events.extend(stash.drain(..));
        }
        let open = sink.emit(std::mem::take(&mut batch.events)).await;
        self.changed.send_modify(|n| *n += 1);
        let requests = ack_requests(
            std::mem::take(&mut batch.acks),
            std::mem::take(&mut batch.group_acks),
        );
        for request in requests {
            let acked = self
                .call(request, |ch, r| async move {
                    MessagingServiceClient::new(ch).ack(r).await
                })
                .await;
            match acked {
                Ok(_) => {}
                // The envelopes are redelivered (the queue and the group log keep them until
                // acknowledged), recognised by their position and acknowledged again: losing
                // these acks costs a redelivery, never a message.
                Err(status) if reconnectable(&status) => {
                    tracing::debug!(error = %status, "ack failed; the envelopes come again");
                    break;
                }
                Err(status) => return Err(status.into()),
            }
        }
        Ok(open)
    }

    /// Opens the Listen stream again after it broke, with exponential backoff while the
    /// server is unreachable (an instance died or restarts: the next attempt may reach another
    /// one). Any other refusal ends the attempts.
    async fn reopen_listen(&self) -> Result<tonic::Streaming<msg::ListenResponse>, tonic::Status> {
        let mut backoff = RECONNECT_FIRST;
        loop {
            tokio::time::sleep(backoff).await;
            match self.open_listen().await {
                Err(status) if reconnectable(&status) => {
                    tracing::debug!(error = %status, "reopening Listen failed; retrying");
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
                other => return other,
            }
        }
    }

    /// Runs a Listen stream until it ends (or, with `until_caught_up`, until the backlog is
    /// processed).
    async fn pump(
        self: &Arc<Self>,
        mut stream: tonic::Streaming<msg::ListenResponse>,
        mut sink: Sink<'_>,
        until_caught_up: bool,
    ) -> Result<(), SdkError> {
        let mut batch = Batch::new();
        loop {
            let next = match stream.next().now_or_never() {
                Some(item) => item,
                None => {
                    if !self.flush(&mut batch, &mut sink).await? {
                        return Ok(());
                    }
                    stream.next().await
                }
            };
            let mut ended = false;
            match next {
                None => {
                    batch.events.push(Event::StreamEnded {
                        reason: "the server closed the stream".into(),
                    });
                    ended = true;
                }
                Some(Err(status)) if crate::client::token_expired(&status) => {
                    // The server ends a stream when its access token expires: acknowledge
                    // what was processed, refresh (inside open_listen) and go on.
                    if !self.flush(&mut batch, &mut sink).await? {
                        return Ok(());
                    }
                    match self.open_listen().await {
                        Ok(reopened) => {
                            stream = reopened;
                            continue;
                        }
                        Err(status) => {
                            batch.events.push(Event::StreamEnded {
                                reason: format!("stream error: {}", SdkError::from(status)),
                            });
                            ended = true;
                        }
                    }
                }
                Some(Err(status)) if reconnectable(&status) && matches!(sink, Sink::Channel(_)) => {
                    // A live Inbox outlives the stream: the server went away (crash, restart,
                    // shutdown, a dead instance behind a balancer), the queue did not.
                    tracing::info!(error = %status, "Listen stream broke; reconnecting");
                    if !self.flush(&mut batch, &mut sink).await? {
                        return Ok(());
                    }
                    match self.reopen_listen().await {
                        Ok(reopened) => {
                            stream = reopened;
                            continue;
                        }
                        Err(status) => {
                            batch.events.push(Event::StreamEnded {
                                reason: format!("stream error: {}", SdkError::from(status)),
                            });
                            ended = true;
                        }
                    }
                }
                Some(Err(status)) => {
                    batch.events.push(Event::StreamEnded {
                        reason: format!("stream error: {}", SdkError::from(status)),
                    });
                    ended = true;
                }
                Some(Ok(resp)) => match resp.item {
                    Some(msg::listen_response::Item::Envelope(env)) => {
                        let welcome_tree = if env.r#type == msg::EnvelopeType::Mls as i32 {
                            self.prepare_mls(&env).await
                        } else {
                            None
                        };
                        let mut st = self.state.lock().await;
                        batch.events.extend(self.handle_envelope(
                            &mut st,
                            &env,
                            welcome_tree.as_deref(),
                        ));
                        batch.ack(&env);
                    }
                    Some(msg::listen_response::Item::QueueEmpty(_)) => {
                        batch.events.push(Event::CaughtUp);
                        ended = until_caught_up;
                    }
                    Some(msg::listen_response::Item::Notice(n)) => {
                        // A link or removal elsewhere is also stored as a notice for this
                        // device: take the stored ones, so each change is reported once
                        // whether it arrives live or on the next connect.
                        let stored = match &n.notice {
                            Some(msg::server_notice::Notice::DeviceLinked(_)) => true,
                            Some(msg::server_notice::Notice::DeviceRemoved(d)) => {
                                d.device_id != self.device_id
                            }
                            _ => false,
                        };
                        if stored {
                            match self.take_device_notices().await {
                                Ok(events) => batch.events.extend(events),
                                Err(_) => batch.events.extend(self.handle_notice(n).await.0),
                            }
                        } else {
                            let (ev, end) = self.handle_notice(n).await;
                            batch.events.extend(ev);
                            ended = end;
                        }
                    }
                    Some(msg::listen_response::Item::Keepalive(_)) | None => {}
                },
            }
            if ended || batch.pending() >= ACK_BATCH {
                let open = self.flush(&mut batch, &mut sink).await?;
                if ended || !open {
                    return Ok(());
                }
            }
        }
    }
}

impl Client {
    /// Opens the Listen stream and processes it in a background task until the returned
    /// [`Inbox`] is dropped. Only one Listen per device is served: opening another one (here
    /// or elsewhere) ends this one with [`Event::StreamEnded`]. A stream that breaks because
    /// the server is unreachable (UNAVAILABLE, or a connection lost mid-stream) is reopened
    /// with backoff (100 ms doubling to 5 s) until it is served again; what was queued
    /// meanwhile arrives then.
    pub async fn listen(&self) -> Result<Inbox, SdkError> {
        let stream = self.inner.open_listen().await?;
        // Device changes while this device was offline (the stream carries only live ones).
        let missed = self.device_notices().await?;
        let (tx, rx) = mpsc::channel(1024);
        let stashed: Vec<Event> = self
            .inner
            .stash
            .lock()
            .map(|mut s| s.drain(..).collect())
            .unwrap_or_default();
        for e in missed.into_iter().chain(stashed) {
            let _ = tx.try_send(e);
        }
        self.inner.pump_active.store(true, Ordering::SeqCst);
        let inner = Arc::clone(&self.inner);
        let task = tokio::spawn(async move {
            let error_tx = tx.clone();
            if let Err(e) = inner.pump(stream, Sink::Channel(tx), false).await {
                let _ = error_tx
                    .send(Event::StreamEnded {
                        reason: e.to_string(),
                    })
                    .await;
            }
            inner.pump_active.store(false, Ordering::SeqCst);
        });
        Ok(Inbox {
            rx,
            task,
            inner: Arc::clone(&self.inner),
        })
    }

    /// Processes everything queued for this device and returns the events (plus any stashed
    /// by earlier retries). Do not call it while an [`Inbox`] is open: it would replace that
    /// stream.
    pub async fn sync(&self) -> Result<Vec<Event>, SdkError> {
        let mut events: Vec<Event> = self
            .inner
            .stash
            .lock()
            .map(|mut s| s.drain(..).collect())
            .unwrap_or_default();
        let stream = self.inner.open_listen().await?;
        events.extend(self.device_notices().await?);
        self.inner
            .pump(stream, Sink::Collect(&mut events), true)
            .await?;
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use guardyn_crypto::IdentityKeyPair;

    use super::*;

    fn group_env(group: u8, server_id: u64) -> msg::DeliveredEnvelope {
        msg::DeliveredEnvelope {
            server_id,
            r#type: msg::EnvelopeType::Mls as i32,
            group_id: Some(vec![group; 4]),
            mls_kind: msg::MlsMessageKind::Application as i32,
            group_log: true,
            ..Default::default()
        }
    }

    fn queue_env(server_id: u64) -> msg::DeliveredEnvelope {
        msg::DeliveredEnvelope {
            server_id,
            r#type: msg::EnvelopeType::Ciphertext as i32,
            ..Default::default()
        }
    }

    #[test]
    fn group_log_positions_are_tracked_per_group_and_apart_from_the_queue() {
        let mut st = State::new(IdentityKeyPair::generate(), 7, "alice");
        st.last_server_id = 100;
        // Log positions below the queue position are new: they count per group.
        let first = group_env(1, 5);
        assert!(!already_processed(&st, &first));
        mark_processed(&mut st, &first);
        assert_eq!(st.last_server_id, 100);
        assert_eq!(st.group_log_seen.get(&vec![1; 4]), Some(&5));
        // A redelivery is recognised; the same position in another group is not.
        assert!(already_processed(&st, &first));
        assert!(already_processed(&st, &group_env(1, 4)));
        assert!(!already_processed(&st, &group_env(2, 5)));
        assert!(!already_processed(&st, &group_env(1, 6)));
        // Queue envelopes keep using the queue position, whatever the group logs say.
        assert!(already_processed(&st, &queue_env(100)));
        assert!(!already_processed(&st, &queue_env(101)));
        mark_processed(&mut st, &queue_env(101));
        assert_eq!(st.last_server_id, 101);
        assert_eq!(st.group_log_seen.get(&vec![1; 4]), Some(&5));
        // Online-only envelopes are never deduplicated.
        assert!(!already_processed(&st, &group_env(1, 0)));
    }

    #[test]
    fn group_log_envelopes_are_acknowledged_under_their_group() {
        let mut batch = Batch::new();
        batch.ack(&queue_env(3));
        batch.ack(&group_env(1, 5));
        batch.ack(&group_env(1, 6));
        batch.ack(&group_env(2, 5));
        batch.ack(&group_env(2, 0));
        assert_eq!(batch.pending(), 4);
        let requests = ack_requests(batch.acks, batch.group_acks);
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.server_ids, vec![3]);
        assert_eq!(r.up_to_server_id, 0);
        assert_eq!(
            r.group_acks,
            vec![
                msg::GroupAck {
                    group_id: vec![1; 4],
                    server_ids: vec![5, 6],
                },
                msg::GroupAck {
                    group_id: vec![2; 4],
                    server_ids: vec![5],
                },
            ]
        );
    }

    fn ids_in(r: &msg::AckRequest) -> usize {
        r.server_ids.len()
            + r.group_acks
                .iter()
                .map(|g| 1 + g.server_ids.len())
                .sum::<usize>()
    }

    #[test]
    fn acks_are_split_within_the_server_limits() {
        assert!(ack_requests(Vec::new(), BTreeMap::new()).is_empty());

        // Many groups: at most 64 group acks per request.
        let groups: BTreeMap<Vec<u8>, Vec<u64>> = (0..200u32)
            .map(|g| (g.to_be_bytes().to_vec(), vec![1, 2]))
            .collect();
        let requests = ack_requests((1..=10).collect(), groups.clone());
        assert_eq!(requests.len(), 4);
        for r in &requests {
            assert!(r.group_acks.len() <= ACK_MAX_GROUPS);
            assert!(ids_in(r) <= ACK_MAX_IDS);
        }
        let mut back: BTreeMap<Vec<u8>, Vec<u64>> = BTreeMap::new();
        for g in requests.iter().flat_map(|r| &r.group_acks) {
            back.entry(g.group_id.clone())
                .or_default()
                .extend(&g.server_ids);
        }
        assert_eq!(back, groups);
        let plain: Vec<u64> = requests.iter().flat_map(|r| r.server_ids.clone()).collect();
        assert_eq!(plain, (1..=10).collect::<Vec<_>>());

        // One group with many ids and many plain ids: at most 1000 ids per request.
        let big: BTreeMap<Vec<u8>, Vec<u64>> = [(vec![7], (1..=2500).collect())].into();
        let requests = ack_requests((1..=1500).collect(), big);
        for r in &requests {
            assert!(ids_in(r) <= ACK_MAX_IDS);
            assert!(r.group_acks.iter().all(|g| !g.server_ids.is_empty()));
        }
        let plain: Vec<u64> = requests.iter().flat_map(|r| r.server_ids.clone()).collect();
        assert_eq!(plain, (1..=1500).collect::<Vec<_>>());
        let logged: Vec<u64> = requests
            .iter()
            .flat_map(|r| &r.group_acks)
            .flat_map(|g| g.server_ids.clone())
            .collect();
        assert_eq!(logged, (1..=2500).collect::<Vec<_>>());
        // 4000 ids plus a group id per chunk fit in five requests.
        assert_eq!(requests.len(), 5);
    }
}
