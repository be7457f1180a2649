//! Values handed to callers: events, subscriptions, jobs and job streams.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;

use crate::error::EventError;
use crate::lane::{LaneReceiver, LaneSender, lane};
use crate::subject::Pattern;
use crate::trace::TraceContext;

/// A live event. `Debug` prints the payload length only: payloads may be ciphertext.
#[derive(Clone, PartialEq, Eq)]
pub struct Event {
    subject: Arc<str>,
    payload: Bytes,
    trace: TraceContext,
}

impl Event {
    pub(crate) fn new(subject: Arc<str>, payload: Bytes, trace: TraceContext) -> Self {
        Self {
            subject,
            payload,
            trace,
        }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// The context of the span that published the event (empty when none was recorded).
    pub fn trace_context(&self) -> &TraceContext {
        &self.trace
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("subject", &&*self.subject)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// One item of a [`Subscription`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    Event(Event),
    /// The subscriber fell more than [`crate::EventsConfig::subscriber_buffer`] events behind
    /// and the `missed` oldest buffered events were dropped for it (and only for it); or, with
    /// `missed: 0`, the bus lost its connection and is back (NATS: once the subscription is in
    /// place again), so events published meanwhile may never arrive. Live events are
    /// at-most-once; a subscriber that needs every event must resynchronise from durable state
    /// when it sees this.
    Lagged {
        missed: u64,
    },
}

/// Per-subscriber bounded buffer ([`crate::lane`]): `send` never waits, and on overflow the
/// receiver learns how many events it lost instead of slowing the publisher down.
pub(crate) fn subscriber_channel(capacity: usize) -> (LaneSender<Event>, LaneReceiver<Event>) {
    lane(capacity)
}

/// A live subscription: a stream of [`Delivery`] items. Dropping it unsubscribes.
///
/// The stream ends when the bus shuts down (in-process: the bus is dropped; NATS: the
/// connection is closed for good).
pub struct Subscription {
    pattern: Pattern,
    rx: LaneReceiver<Event>,
    /// Bumped when events may have been lost outside the buffer (the bus reconnected).
    resync: Option<WatchStream<u64>>,
    /// Unsubscribes when dropped.
    _guard: Box<dyn Send + Sync>,
}

impl Subscription {
    pub(crate) fn new(
        pattern: Pattern,
        rx: LaneReceiver<Event>,
        guard: Box<dyn Send + Sync>,
    ) -> Self {
        Self {
            pattern,
            rx,
            resync: None,
            _guard: guard,
        }
    }

    /// Yield [`Delivery::Lagged`] (`missed: 0`) whenever `resync` changes.
    pub(crate) fn resync_on(mut self, resync: watch::Receiver<u64>) -> Self {
        self.resync = Some(WatchStream::from_changes(resync));
        self
    }

    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }
}

impl Stream for Subscription {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let this = self.get_mut();
        if let Some(resync) = &mut this.resync {
            match Pin::new(resync).poll_next(cx) {
                Poll::Ready(Some(_)) => return Poll::Ready(Some(Delivery::Lagged { missed: 0 })),
                Poll::Ready(None) => this.resync = None,
                Poll::Pending => {}
            }
        }
        Pin::new(&mut this.rx).poll_next(cx).map(|item| {
            item.map(|r| match r {
                Ok(event) => Delivery::Event(event),
                Err(missed) => Delivery::Lagged { missed },
            })
        })
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("pattern", &self.pattern)
            .finish_non_exhaustive()
    }
}

/// How one delivery of a job is settled. Each backend implements it for its own delivery
/// handle, so [`Job`] does not need to know the backends.
#[async_trait]
pub(crate) trait JobSettle: Send + Sync + 'static {
    /// See [`Job::ack`].
    async fn ack(self: Box<Self>) -> Result<(), EventError>;

    /// See [`Job::retry_after`].
    async fn retry_after(self: Box<Self>, delay: Duration) -> Result<(), EventError>;
}

/// A job taken from a durable queue. Settle it with [`Job::ack`] or [`Job::retry_after`];
/// a job that is dropped unsettled is redelivered once `ack_wait` has passed since it was
/// handed out.
pub struct Job {
    queue: Arc<str>,
    payload: Bytes,
    trace: TraceContext,
    delivery_count: u64,
    settle: Box<dyn JobSettle>,
}

impl Job {
    pub(crate) fn new(
        queue: Arc<str>,
        payload: Bytes,
        trace: TraceContext,
        delivery_count: u64,
        settle: Box<dyn JobSettle>,
    ) -> Self {
        Self {
            queue,
            payload,
            trace,
            delivery_count,
            settle,
        }
    }

    /// The context of the span that enqueued the job (empty when none was recorded).
    pub fn trace_context(&self) -> &TraceContext {
        &self.trace
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }

    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// 1 on the first delivery, higher on redeliveries. The in-process backend counts
    /// deliveries in memory, so the count restarts at 1 after a process restart.
    pub fn delivery_count(&self) -> u64 {
        self.delivery_count
    }

    /// The job is done: it will never be delivered again.
    ///
    /// An ack that arrives after `ack_wait` is still accepted (the job may meanwhile have been
    /// redelivered to another consumer, whose own ack then does nothing).
    pub async fn ack(self) -> Result<(), EventError> {
        self.settle.ack().await
    }

    /// Give the job back to be delivered again after `delay` (to any consumer).
    pub async fn retry_after(self, delay: Duration) -> Result<(), EventError> {
        self.settle.retry_after(delay).await
    }
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("queue", &&*self.queue)
            .field("payload_len", &self.payload.len())
            .field("delivery_count", &self.delivery_count)
            .finish_non_exhaustive()
    }
}

/// A consumer of one durable queue: a stream of jobs, each handed to one consumer at a time.
///
/// Errors are yielded as items; the stream goes on after a transient error (the backend is
/// retried) and ends only when the bus shuts down.
pub struct JobStream {
    queue: Arc<str>,
    inner: BoxStream<'static, Result<Job, EventError>>,
}

impl JobStream {
    pub(crate) fn new(queue: Arc<str>, inner: BoxStream<'static, Result<Job, EventError>>) -> Self {
        Self { queue, inner }
    }

    pub fn queue(&self) -> &str {
        &self.queue
    }
}

impl Stream for JobStream {
    type Item = Result<Job, EventError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for JobStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobStream")
            .field("queue", &&*self.queue)
            .finish_non_exhaustive()
    }
}
