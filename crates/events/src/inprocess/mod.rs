//! Single-node implementation: live fan-out inside the process, jobs in an [`AppendLog`].

mod queue;
mod registry;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};

use async_trait::async_trait;
use bytes::Bytes;
use guardyn_storage::AppendLog;

use crate::bus::{EventBus, check_payload};
use crate::config::EventsConfig;
use crate::error::EventError;
use crate::subject::{Pattern, validate_queue_name, validate_subject};
use crate::trace::TraceContext;
use crate::types::{Event, JobStream, Subscription, subscriber_channel};
use queue::Queue;
use registry::Trie;

/// The single-node event bus.
///
/// Job queues are stored in the append log under partition `queue/<name>`; which jobs are in
/// flight is tracked in memory, so exactly one `InProcessBus` (one process) may use a given
/// log's queue partitions at a time. After a restart every job that was not acked is delivered
/// again.
pub struct InProcessBus {
    registry: Arc<Registry>,
    log: Arc<dyn AppendLog>,
    config: EventsConfig,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
}

#[derive(Default)]
struct Registry {
    trie: RwLock<Trie>,
    next_id: AtomicU64,
}

/// Removes a subscriber from the table when its [`Subscription`] is dropped.
struct Unsubscribe {
    registry: Weak<Registry>,
    pattern: Pattern,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            // A panic while holding the lock cannot leave the trie half-updated in a way that
            // matters here (worst case a stale sender, which `publish` skips), so a poisoned lock
            // is used as is.
            let mut trie = registry
                .trie
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            trie.remove(&self.pattern, self.id);
        }
    }
}

impl InProcessBus {
    pub fn new(log: Arc<dyn AppendLog>, config: EventsConfig) -> Self {
        Self {
            registry: Arc::default(),
            log,
            config,
            queues: Mutex::default(),
        }
    }

    /// Number of live subscriptions (for metrics and tests).
    pub fn subscription_count(&self) -> usize {
        self.registry
            .trie
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn queue(&self, name: &str) -> Arc<Queue> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        queues
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Queue::new(
                    name,
                    self.log.clone(),
                    self.config.ack_wait,
                    self.config.job_max_age,
                ))
            })
            .clone()
    }
}

impl fmt::Debug for InProcessBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InProcessBus")
            .field("subscriptions", &self.subscription_count())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventBus for InProcessBus {
    async fn publish(&self, subject: &str, payload: Bytes) -> Result<(), EventError> {
        validate_subject(subject)?;
        check_payload(&payload, self.config.max_payload)?;
        let event = Event::new(subject.into(), payload, TraceContext::current());
        let trie = self
            .registry
            .trie
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        trie.for_each_match(subject, &mut |_, tx| {
            // Fails only when the subscription was just dropped and is about to be removed.
            let _ = tx.send(event.clone());
        });
        Ok(())
    }

    async fn subscribe(&self, pattern: &str) -> Result<Subscription, EventError> {
        let pattern = Pattern::parse(pattern)?;
        let (tx, rx) = subscriber_channel(self.config.subscriber_buffer);
        let id = self.registry.next_id.fetch_add(1, Ordering::Relaxed);
        self.registry
            .trie
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(&pattern, id, tx);
        let guard = Unsubscribe {
            registry: Arc::downgrade(&self.registry),
            pattern: pattern.clone(),
            id,
        };
        Ok(Subscription::new(pattern, rx, Box::new(guard)))
    }

    async fn enqueue(&self, queue: &str, payload: Bytes) -> Result<(), EventError> {
        validate_queue_name(queue)?;
        check_payload(&payload, self.config.max_payload)?;
        self.queue(queue)
            .enqueue(&payload, &TraceContext::current())
            .await
    }

    async fn consume(&self, queue: &str) -> Result<JobStream, EventError> {
        validate_queue_name(queue)?;
        Ok(self.queue(queue).consume())
    }

    async fn queue_depth(&self, queue: &str) -> Result<u64, EventError> {
        validate_queue_name(queue)?;
        self.queue(queue).depth().await
    }
}
