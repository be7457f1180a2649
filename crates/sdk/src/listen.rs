//! The receive side: a Listen stream pump that decrypts envelopes, saves the state, hands
//! events to the application and acknowledges.
//!
//! Ordering per batch: process (under the state lock) → save state → emit events → Ack.
//! A crash before the save redelivers and re-processes; a crash after it redelivers, and the
//! envelope is recognised by its queue position (`last_server_id`) and only acknowledged.

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
    acks: Vec<u64>,
    events: Vec<Event>,
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

    fn handle_envelope(&self, st: &mut State, env: &msg::DeliveredEnvelope) -> Vec<Event> {
        if env.server_id != 0 && env.server_id <= st.last_server_id {
            return Vec::new();
        }
        let result = if env.r#type == msg::EnvelopeType::Mls as i32 {
            self.open_mls(st, env).map(Vec::from_iter)
        } else {
            self.open_envelope(st, env)
        };
        if env.server_id != 0 {
            st.last_server_id = env.server_id;
        }
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
        if !batch.acks.is_empty() {
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
        if !batch.acks.is_empty() {
            let ids = std::mem::take(&mut batch.acks);
            let acked = self
                .call(
                    msg::AckRequest {
                        server_ids: ids,
                        up_to_server_id: 0,
                    },
                    |ch, r| async move { MessagingServiceClient::new(ch).ack(r).await },
                )
                .await;
            match acked {
                Ok(_) => {}
                // The envelopes are redelivered (the queue keeps them until acknowledged),
                // recognised by their queue position and acknowledged again: losing these acks
                // costs a redelivery, never a message.
                Err(status) if reconnectable(&status) => {
                    tracing::debug!(error = %status, "ack failed; the envelopes come again");
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
        let mut batch = Batch {
            acks: Vec::new(),
            events: Vec::new(),
        };
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
                        if env.r#type == msg::EnvelopeType::Mls as i32 {
                            self.prepare_mls(&env).await;
                        }
                        let mut st = self.state.lock().await;
                        batch.events.extend(self.handle_envelope(&mut st, &env));
                        if env.server_id != 0 {
                            batch.acks.push(env.server_id);
                        }
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
            if ended || batch.acks.len() >= ACK_BATCH {
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
