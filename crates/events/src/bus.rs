//! The [`EventBus`] trait both backends implement, and checks they share.

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::EventError;
use crate::types::{JobStream, Subscription};

/// The event bus contract; see the crate docs.
#[async_trait]
pub trait EventBus: Send + Sync + Debug + 'static {
    /// At-most-once fan-out to every current subscriber whose pattern matches `subject`.
    /// Never waits for subscribers.
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), EventError>;

    /// Subscribe to a pattern (`*` matches one token, a final `>` one or more). Events
    /// published after this returns are delivered; dropping the subscription unsubscribes.
    async fn subscribe(&self, pattern: &str) -> Result<Subscription, EventError>;

    /// Add a job to a durable queue. `Ok` means the job is stored durably.
    async fn enqueue(&self, queue: &str, payload: Bytes) -> Result<(), EventError>;

    /// Start consuming a durable queue. Every consumer of a queue (in every process sharing
    /// the backend) competes for its jobs; each job goes to one consumer at a time.
    async fn consume(&self, queue: &str) -> Result<JobStream, EventError>;

    /// Jobs of `queue` stored and not yet acknowledged (waiting or being handled), across
    /// every process sharing the backend: the backlog operators watch.
    async fn queue_depth(&self, queue: &str) -> Result<u64, EventError>;
}

pub(crate) fn check_payload(payload: &Bytes, max: usize) -> Result<(), EventError> {
    if payload.len() > max {
        return Err(EventError::PayloadTooLarge {
            len: payload.len(),
            max,
        });
    }
    Ok(())
}
