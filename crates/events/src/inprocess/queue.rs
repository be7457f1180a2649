//! Durable job queue on an [`AppendLog`] partition.
//!
//! The log holds the jobs not acked yet (an ack deletes the entry). Which of them are handed
//! out right now lives in memory: a map from sequence to the deadline after which the job may
//! be handed out again. A consumer takes the lowest-sequence job that is not in flight.
//! Claims are serialised by one async mutex per queue, which is what makes a job go to one
//! consumer at a time.
//!
//! Entry format: one version byte, then for [`ENTRY_V2`] the enqueuing span's trace context
//! ([`TraceContext::encode_into`]), then the job payload. [`ENTRY_V1`] (no context) is written
//! when there is no context, so a build that knows only V1 still reads those.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use guardyn_storage::{AppendLog, NewEntry};
use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

use crate::error::EventError;
use crate::trace::TraceContext;
use crate::types::{Job, JobSettle, JobStream};

const ENTRY_V1: u8 = 1;
const ENTRY_V2: u8 = 2;
/// Entries read per log round trip while looking for a free job.
const PAGE: usize = 64;

pub(crate) struct Queue {
    name: Arc<str>,
    partition: Vec<u8>,
    log: Arc<dyn AppendLog>,
    ack_wait: Duration,
    ttl: Duration,
    state: Mutex<State>,
    /// Woken on enqueue and on retry, so idle consumers look again.
    changed: Notify,
}

#[derive(Default)]
struct State {
    /// Every live entry has `seq >= low`.
    low: u64,
    /// Jobs handed out at least once and not acked (their deadline may have passed).
    handed_out: HashMap<u64, HandedOut>,
    /// Entries with an unknown format: skipped until restart, never deleted silently.
    unreadable: HashSet<u64>,
    next_token: u64,
}

struct HandedOut {
    deadline: Instant,
    deliveries: u64,
    /// Identifies the latest delivery, so a stale holder cannot reschedule a newer one.
    token: u64,
}

enum Claimed {
    Job(Job),
    /// Nothing free; the earliest in-flight deadline, if any.
    Idle(Option<Instant>),
}

impl Queue {
    pub(crate) fn new(
        name: &str,
        log: Arc<dyn AppendLog>,
        ack_wait: Duration,
        ttl: Duration,
    ) -> Self {
        Self {
            name: name.into(),
            partition: format!("queue/{name}").into_bytes(),
            log,
            ack_wait,
            ttl,
            state: Mutex::default(),
            changed: Notify::new(),
        }
    }

    pub(crate) async fn enqueue(
        &self,
        payload: &Bytes,
        trace: &TraceContext,
    ) -> Result<(), EventError> {
        let mut encoded = Vec::with_capacity(payload.len() + 128);
        if trace.is_empty() {
            encoded.push(ENTRY_V1);
        } else {
            encoded.push(ENTRY_V2);
            trace.encode_into(&mut encoded);
        }
        encoded.extend_from_slice(payload);
        let entry = NewEntry {
            payload: encoded,
            ttl: self.ttl,
        };
        self.log.append(&self.partition, vec![entry]).await?;
        self.changed.notify_waiters();
        Ok(())
    }

    /// Stored entries (acked jobs are deleted from the log).
    pub(crate) async fn depth(&self) -> Result<u64, EventError> {
        Ok(self.log.stats(&self.partition).await?.len)
    }

    pub(crate) fn consume(self: Arc<Self>) -> JobStream {
        let name = self.name.clone();
        let jobs = futures::stream::unfold(self, |queue| async move {
            let next = queue.next_job().await;
            Some((next, queue))
        });
        JobStream::new(name, jobs.boxed())
    }

    async fn next_job(self: &Arc<Self>) -> Result<Job, EventError> {
        loop {
            // Register interest before looking, so an enqueue between the look and the wait
            // is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.claim().await? {
                Claimed::Job(job) => return Ok(job),
                Claimed::Idle(Some(deadline)) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                }
                Claimed::Idle(None) => changed.await,
            }
        }
    }

    /// Hands out the lowest-sequence job that is not in flight. Cancel-safe: the only state
    /// change happens after the last await.
    async fn claim(self: &Arc<Self>) -> Result<Claimed, EventError> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        let mut from = state.low;
        let mut first_page = true;
        loop {
            let page = self.log.read(&self.partition, from, PAGE).await?;
            if first_page {
                first_page = false;
                // Entries below the first live one are gone (acked or expired): forget them.
                let low = page.first().map_or(u64::MAX, |e| e.seq);
                state.handed_out.retain(|seq, _| *seq >= low);
                state.unreadable.retain(|seq| *seq >= low);
                if let Some(first) = page.first() {
                    state.low = first.seq;
                }
            }
            for entry in &page {
                if state.unreadable.contains(&entry.seq) {
                    continue;
                }
                if state
                    .handed_out
                    .get(&entry.seq)
                    .is_some_and(|h| h.deadline > now)
                {
                    continue;
                }
                let Some((trace, payload)) = decode_entry(&entry.payload) else {
                    tracing::error!(queue = %self.name, seq = entry.seq, "skipping job entry with unknown format");
                    state.unreadable.insert(entry.seq);
                    continue;
                };
                let token = state.next_token;
                state.next_token += 1;
                let handed = state.handed_out.entry(entry.seq).or_insert(HandedOut {
                    deadline: now,
                    deliveries: 0,
                    token,
                });
                handed.deadline = now + self.ack_wait;
                handed.deliveries += 1;
                handed.token = token;
                let claim = Claim {
                    queue: self.clone(),
                    seq: entry.seq,
                    token,
                };
                return Ok(Claimed::Job(Job::new(
                    self.name.clone(),
                    Bytes::copy_from_slice(payload),
                    trace,
                    handed.deliveries,
                    Box::new(claim),
                )));
            }
            match page.last() {
                Some(last) if page.len() == PAGE => from = last.seq + 1,
                _ => break,
            }
        }
        let next_deadline = state
            .handed_out
            .values()
            .map(|h| h.deadline)
            .filter(|d| *d > now)
            .min();
        Ok(Claimed::Idle(next_deadline))
    }
}

/// The trace context and payload of a stored entry; `None` for an unknown format.
fn decode_entry(entry: &[u8]) -> Option<(TraceContext, &[u8])> {
    match entry.split_first()? {
        (&ENTRY_V1, payload) => Some((TraceContext::default(), payload)),
        (&ENTRY_V2, rest) => TraceContext::decode_from(rest),
        _ => None,
    }
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &&*self.name)
            .finish_non_exhaustive()
    }
}

/// One delivery of one job.
struct Claim {
    queue: Arc<Queue>,
    seq: u64,
    token: u64,
}

#[async_trait]
impl JobSettle for Claim {
    async fn ack(self: Box<Self>) -> Result<(), EventError> {
        let queue = &self.queue;
        queue.log.delete(&queue.partition, &[self.seq]).await?;
        queue.state.lock().await.handed_out.remove(&self.seq);
        Ok(())
    }

    async fn retry_after(self: Box<Self>, delay: Duration) -> Result<(), EventError> {
        let queue = &self.queue;
        {
            let mut state = queue.state.lock().await;
            match state.handed_out.get_mut(&self.seq) {
                Some(handed) if handed.token == self.token => {
                    handed.deadline = Instant::now() + delay;
                }
                // Redelivered meanwhile (or acked by someone else): the newer delivery rules.
                _ => return Ok(()),
            }
        }
        // Idle consumers may be sleeping until a later deadline.
        queue.changed.notify_waiters();
        Ok(())
    }
}
