//! Multi-node implementation on NATS: core NATS for live events, JetStream for jobs.
//!
//! Jobs of every queue live in one work-queue stream ([`NatsConfig::jobs_stream`], subjects
//! `_<stream>.<queue>`, file storage, `max_age` = `job_max_age`), consumed through one durable
//! pull consumer per queue (explicit acks, `ack_wait` from the config, unlimited redeliveries).
//! A [`JobStream`] pulls one job at a time and only while it is being polled, so an idle or busy
//! consumer never sits on jobs another consumer could take.
//!
//! Job messages carry a version header ([`VERSION_HEADER`]) instead of a version byte, so the
//! stream's messages stay readable by NATS tooling.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{OnceCell, watch};

use crate::bus::{EventBus, check_payload};
use crate::config::{EventsConfig, NatsAuth, NatsConfig};
use crate::error::EventError;
use crate::subject::{Pattern, validate_queue_name, validate_subject};
use crate::trace::TraceContext;
use crate::types::{Event, Job, JobSettle, JobStream, Subscription, subscriber_channel};

const VERSION_HEADER: &str = "Guardyn-Job-Version";
const JOB_VERSION: &str = "1";
/// How long one pull request waits on the server for a job before it is renewed. Short, so a
/// pull abandoned by a cancelled consumer does not linger.
const PULL_EXPIRY: Duration = Duration::from_secs(5);
/// Pause before re-pulling after an error, so a broken backend is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The multi-node event bus.
pub struct NatsBus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    config: EventsConfig,
    jobs_stream: String,
    replicas: usize,
    stream: OnceCell<stream::Stream>,
    /// Bumped after each reconnection, once the subscriptions are back (see
    /// [`resync_after_reconnects`]); every subscription turns it into `Lagged`.
    resync: watch::Receiver<u64>,
    _resync_task: AbortOnDrop,
}

impl NatsBus {
    /// Connects to NATS. The initial connection must succeed within `connect_timeout`
    /// ([`EventError::Unavailable`] otherwise); after that the client reconnects forever.
    pub async fn connect(config: EventsConfig, nats: NatsConfig) -> Result<Self, EventError> {
        let (connected_tx, connected) = watch::channel(0u64);
        let connected_tx = Arc::new(connected_tx);
        let mut options = async_nats::ConnectOptions::new()
            .name(&nats.client_name)
            .connection_timeout(nats.connect_timeout)
            .require_tls(nats.require_tls)
            .max_reconnects(None)
            .event_callback(move |event| {
                let connected_tx = connected_tx.clone();
                async move {
                    tracing::info!(%event, "nats connection event");
                    if matches!(event, async_nats::Event::Connected) {
                        connected_tx.send_modify(|n| *n += 1);
                    }
                }
            });
        options = match nats.auth {
            NatsAuth::None => options,
            NatsAuth::Token(token) => options.token(token),
            NatsAuth::UserPassword { user, password } => options.user_and_password(user, password),
        };
        let client = options
            .connect(nats.url.as_str())
            .await
            .map_err(|e| EventError::Unavailable(format!("cannot connect to NATS: {e}")))?;
        let jetstream = jetstream::new(client.clone());
        let (resync_tx, resync) = watch::channel(0u64);
        let task = tokio::spawn(resync_after_reconnects(
            client.clone(),
            connected,
            resync_tx,
        ));
        Ok(Self {
            client,
            jetstream,
            config,
            jobs_stream: nats.jobs_stream,
            replicas: nats.replicas,
            stream: OnceCell::new(),
            resync,
            _resync_task: AbortOnDrop(task),
        })
    }

    fn job_subject(&self, queue: &str) -> String {
        format!("_{}.{queue}", self.jobs_stream)
    }

    /// The jobs stream, created on first use (idempotent: an existing stream is reused as is).
    async fn stream(&self) -> Result<&stream::Stream, EventError> {
        self.stream
            .get_or_try_init(|| async {
                let config = stream::Config {
                    name: self.jobs_stream.clone(),
                    subjects: vec![format!("_{}.>", self.jobs_stream)],
                    retention: stream::RetentionPolicy::WorkQueue,
                    storage: stream::StorageType::File,
                    max_age: self.config.job_max_age,
                    num_replicas: self.replicas,
                    ..Default::default()
                };
                self.jetstream
                    .get_or_create_stream(config)
                    .await
                    .map_err(|e| jetstream_error("create or get the jobs stream", e))
            })
            .await
    }

    async fn consumer(&self, queue: &str) -> Result<consumer::PullConsumer, EventError> {
        let stream = self.stream().await?;
        let config = consumer::pull::Config {
            durable_name: Some(queue.to_owned()),
            filter_subject: self.job_subject(queue),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            max_deliver: -1,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(queue, config.clone())
            .await
            .map_err(|e| jetstream_error("create or get the queue consumer", e))?;
        if consumer.cached_info().config.ack_wait == self.config.ack_wait {
            return Ok(consumer);
        }
        // The consumer outlives our process; follow a changed configuration.
        stream
            .update_consumer(config)
            .await
            .map_err(|e| jetstream_error("update the queue consumer", e))
    }
}

impl NatsBus {
    /// One round trip through the server. `flush` only empties our socket buffer; the server
    /// handles a connection's operations in order, so once a message we publish to a fresh
    /// inbox comes back, every earlier SUB of this connection is in place.
    async fn barrier(&self) -> Result<(), EventError> {
        round_trip(&self.client).await
    }
}

/// See [`NatsBus::barrier`].
async fn round_trip(client: &async_nats::Client) -> Result<(), EventError> {
    let unavailable = |e: &dyn fmt::Display| EventError::Unavailable(e.to_string());
    let inbox = client.new_inbox();
    let mut probe = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| unavailable(&e))?;
    client
        .publish(inbox, Bytes::new())
        .await
        .map_err(|e| unavailable(&e))?;
    client.flush().await.map_err(|e| unavailable(&e))?;
    match tokio::time::timeout(BARRIER_TIMEOUT, probe.next()).await {
        Ok(Some(_)) => Ok(()),
        _ => Err(EventError::Unavailable(
            "NATS did not answer a round trip after subscribing".into(),
        )),
    }
}

/// Events published while a connection was down, or before the server had our subscriptions
/// again, are gone: after each reconnection tell every subscription (`resync`), so subscribers
/// re-read what they follow from storage. Only once the subscriptions are back, or the
/// re-read could miss what is published before they are: the client sends every SUB first on
/// a new connection, so a completed round trip on it proves them in place.
async fn resync_after_reconnects(
    client: async_nats::Client,
    mut connected: watch::Receiver<u64>,
    resync: watch::Sender<u64>,
) {
    while connected.changed().await.is_ok() {
        // Every successful connection counts once: the first one is no reconnection.
        if *connected.borrow_and_update() < 2 {
            continue;
        }
        if let Err(e) = round_trip(&client).await {
            // Disconnected again: the next reconnection resynchronises once more.
            tracing::warn!(error = %e, "no round trip through NATS after reconnecting");
        }
        resync.send_modify(|n| *n += 1);
    }
}

/// How long [`NatsBus::barrier`] waits for its own message.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

fn jetstream_error(what: &str, e: impl fmt::Display) -> EventError {
    EventError::Unavailable(format!("JetStream: cannot {what}: {e}"))
}

impl fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsBus")
            .field("state", &self.client.connection_state())
            .field("jobs_stream", &self.jobs_stream)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Aborts the forwarding task (dropping the NATS subscriber, which unsubscribes).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[async_trait]
impl EventBus for NatsBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), EventError> {
        validate_subject(subject)?;
        check_payload(&payload, self.config.max_payload)?;
        let trace = TraceContext::current();
        let published = if trace.is_empty() {
            self.client.publish(subject.to_owned(), payload).await
        } else {
            self.client
                .publish_with_headers(subject.to_owned(), headers_of(&trace), payload)
                .await
        };
        published.map_err(|e| match e.kind() {
            async_nats::client::PublishErrorKind::MaxPayloadExceeded => {
                EventError::Backend(e.to_string())
            }
            _ => EventError::Unavailable(e.to_string()),
        })
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, EventError> {
        let pattern = Pattern::parse(pattern)?;
        let mut subscriber = self
            .client
            .subscribe(pattern.as_str().to_owned())
            .await
            .map_err(|e| EventError::Unavailable(e.to_string()))?;
        // Wait until the server has the subscription, so that anything published after we
        // return (from any connection) reaches it.
        self.barrier().await?;
        let (tx, rx) = subscriber_channel(self.config.subscriber_buffer);
        let task = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                // `>` and `*` also match internal traffic (inboxes, job subjects), which
                // callers can neither publish nor expect; the in-process bus never shows it.
                if validate_subject(&message.subject).is_err() {
                    continue;
                }
                let trace = message.headers.as_ref().map(trace_of).unwrap_or_default();
                let event = Event::new(message.subject.as_str().into(), message.payload, trace);
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let mut resync = self.resync.clone();
        resync.mark_unchanged();
        Ok(Subscription::new(pattern, rx, Box::new(AbortOnDrop(task))).resync_on(resync))
    }

    async fn enqueue(&self, queue: &str, payload: Bytes) -> Result<(), EventError> {
        validate_queue_name(queue)?;
        check_payload(&payload, self.config.max_payload)?;
        self.stream().await?;
        let mut headers = headers_of(&TraceContext::current());
        headers.insert(VERSION_HEADER, JOB_VERSION);
        let ack = self
            .jetstream
            .publish_with_headers(self.job_subject(queue), headers, payload)
            .await
            .map_err(|e| jetstream_error("publish a job", e))?;
        // The job is durable only once the stream acknowledged it.
        ack.await.map_err(|e| jetstream_error("store a job", e))?;
        Ok(())
    }

    async fn consume(&self, queue: &str) -> Result<JobStream, EventError> {
        validate_queue_name(queue)?;
        let consumer = self.consumer(queue).await?;
        let name: Arc<str> = queue.into();
        let jobs =
            futures::stream::unfold((consumer, name.clone()), |(consumer, name)| async move {
                let next = next_job(&consumer, &name).await;
                Some((next, (consumer, name)))
            });
        Ok(JobStream::new(name, jobs.boxed()))
    }

    async fn queue_depth(&self, queue: &str) -> Result<u64, EventError> {
        validate_queue_name(queue)?;
        let mut consumer = self.consumer(queue).await?;
        let info = consumer
            .info()
            .await
            .map_err(|e| jetstream_error("read the queue consumer", e))?;
        Ok(info.num_pending + info.num_ack_pending as u64)
    }
}

/// Pulls until one job arrives. Transient failures are logged and retried.
async fn next_job(consumer: &consumer::PullConsumer, queue: &Arc<str>) -> Result<Job, EventError> {
    loop {
        let batch = consumer
            .batch()
            .max_messages(1)
            .expires(PULL_EXPIRY)
            .messages()
            .await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(%queue, error = %e, "job pull request failed; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        match batch.next().await {
            Some(Ok(message)) => match decode(message, queue) {
                Some(job) => return Ok(job),
                None => continue,
            },
            Some(Err(e)) => {
                tracing::warn!(%queue, error = %e, "job pull failed; retrying");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            // The pull request expired without a job.
            None => {}
        }
    }
}

fn decode(message: jetstream::Message, queue: &Arc<str>) -> Option<Job> {
    let version = message
        .headers
        .as_ref()
        .and_then(|h| h.get(VERSION_HEADER))
        .map(|v| v.as_str().to_owned());
    if version.as_deref() != Some(JOB_VERSION) {
        // Leave it unacked rather than lose it: it is redelivered after ack_wait, to a
        // consumer that may understand it.
        tracing::error!(%queue, ?version, "skipping job with unknown format");
        return None;
    }
    let delivery_count = message
        .info()
        .ok()
        .and_then(|info| u64::try_from(info.delivered).ok())
        .unwrap_or(1);
    let payload = message.payload.clone();
    let trace = message.headers.as_ref().map(trace_of).unwrap_or_default();
    Some(Job::new(
        queue.clone(),
        payload,
        trace,
        delivery_count,
        Box::new(message),
    ))
}

/// The trace context as message headers.
fn headers_of(trace: &TraceContext) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in trace.fields() {
        // Parsed, because `insert` of a `&str` panics on a malformed name or value.
        if let (Ok(name), Ok(value)) = (
            name.parse::<async_nats::HeaderName>(),
            value.parse::<async_nats::HeaderValue>(),
        ) {
            headers.insert(name, value);
        }
    }
    headers
}

/// The trace context among a message's headers.
fn trace_of(headers: &async_nats::HeaderMap) -> TraceContext {
    TraceContext::from_pairs(
        headers
            .iter()
            .filter_map(|(name, values)| Some((name.as_ref(), values.first()?.as_str()))),
    )
}

/// A JetStream job message settles itself.
#[async_trait]
impl JobSettle for jetstream::Message {
    async fn ack(self: Box<Self>) -> Result<(), EventError> {
        // Double ack: returns once the server has recorded the ack, so `Ok` means "will not be
        // redelivered" rather than "ack sent".
        self.double_ack()
            .await
            .map_err(|e| EventError::Unavailable(format!("JetStream: cannot ack a job: {e}")))
    }

    async fn retry_after(self: Box<Self>, delay: Duration) -> Result<(), EventError> {
        self.ack_with(jetstream::AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| EventError::Unavailable(format!("JetStream: cannot nak a job: {e}")))
    }
}
