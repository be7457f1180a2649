//! The outbox: every group fan-out (commits, Welcomes, relayed proposals, application
//! messages) goes through a record that survives a crash.
//!
//! The record is written in the same KvStore transaction as the change that accepts the
//! message: the group's compare-and-set for a commit or a proposal, the completion of the
//! client message id's reservation for an application message. So "accepted" and "must be
//! delivered" become durable together. The handler then fans the record out and deletes it.
//! Records left behind by a crash (or a failed fan-out) are completed by the recovery task at
//! start-up and every [`SWEEP_EVERY`] afterwards, in key order (an epoch's proposals and
//! application messages before its commit; see [`record::Kind`]). A record whose fan-out fails
//! is skipped, so it never holds up the others, and retried after a growing wait
//! ([`backoff`]).
//!
//! Commits, proposals and application messages are fanned out by one group-log append that
//! members read by cursor ([`crate::groups::cursors`]); a Welcome by references in the new
//! members' queues, then their memberships. Records written before cursors list their
//! recipients and are still fanned out by reference.
//!
//! Delivery is at-least-once: a crash after the group-log append (or some queue appends) but
//! before the progress or the deletion is written appends it (or queues those recipients)
//! again. Clients ignore commits for epochs they already processed (openmls rejects them as
//! wrong-epoch) and messages they already decrypted. The progress key makes a resumed Welcome
//! fan-out skip the group-log append and every recipient batch already recorded.

pub(crate) mod backoff;
pub(crate) mod busy;
pub(crate) mod record;

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use guardyn_common::events::messaging::{Envelope, EnvelopeKind};
use guardyn_common::{AccountId, DeviceId, GroupId};
use guardyn_storage::record::{decode, encode};
use guardyn_storage::{Direction, KeyRange, NewEntry, Txn};

use self::record::Progress;
pub(crate) use self::record::{FanOut, Kind, application_tag};
use crate::core::Core;
use crate::error::MessagingError;
use crate::groups::state::GroupState;
use crate::quota::Policy;
use crate::store::{self, Audience, GroupMessage, QueueEntry};

/// How often the recovery task looks for left-over records (one empty range scan when none).
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Records younger than this (by the service clock) may still be in progress on another
/// instance; the sweep leaves them alone.
pub(crate) const GRACE_MS: u64 = 30_000;
/// Recipients queued between two progress writes.
const PROGRESS_BATCH: usize = 64;
/// Records read per sweep page.
const SWEEP_PAGE: usize = 64;

impl Core {
    /// Store `mls` once in the group log and return its sequence number; with an audience,
    /// members read it from there by cursor ([`crate::groups::cursors`]).
    async fn store_group_message(
        &self,
        group_id: &GroupId,
        mls: &[u8],
        audience: Option<Audience>,
    ) -> Result<u64, MessagingError> {
        let ttl = Duration::from_secs(self.retention_secs());
        let message = GroupMessage {
            content: mls.to_vec(),
            audience,
        };
        Ok(self
            .log
            .append(
                &store::group_log(group_id),
                vec![NewEntry {
                    payload: encode(&message),
                    ttl,
                }],
            )
            .await?
            .first()
            .copied()
            .unwrap_or_default())
    }

    /// Fan out a record its members read by cursor: one append to the group log, then wake
    /// the members' streams (one event for all) and the offline members' devices (from
    /// `group`, the record the send just wrote, or else read now).
    async fn append_for_cursors(
        &self,
        record: &FanOut,
        group: Option<&GroupState>,
    ) -> Result<(), MessagingError> {
        let envelope = record_envelope(record);
        let audience = Audience {
            envelope,
            skip: record.skip.clone(),
        };
        self.store_group_message(&record.group_id, &record.message, Some(audience))
            .await?;
        self.notify_group(&record.group_id).await;
        // The group's members as of now: for a commit, the ones it added are in `skip` (their
        // Welcome wakes them).
        if !self.cfg.wake_jobs {
            return Ok(());
        }
        let loaded;
        let group = match group {
            Some(g) => g,
            None => match self.load_group(&record.group_id).await {
                Ok(l) => {
                    loaded = l;
                    &loaded.state
                }
                Err(e) => {
                    tracing::warn!(error = %e, "no wake-ups for a group message");
                    return Ok(());
                }
            },
        };
        let to: Vec<(AccountId, DeviceId)> = group
            .members()
            .map(|m| (m.account, m.device))
            .filter(|&d| d != record.sender && !record.skip.contains(&d))
            .collect();
        self.wake_offline(&to, record.urgent, record.accepted_ms)
            .await;
        Ok(())
    }

    /// Queue a reference to group message `seq` (`len` bytes) for each recipient, wake their
    /// streams and enqueue wake-up jobs for those without one ([`crate::wake`]). Each queue is
    /// charged the full length; the message was accepted against the quotas already, so the
    /// charge is not refused here ([`crate::quota`]).
    async fn queue_refs(
        &self,
        seq: u64,
        len: u64,
        envelope: &Envelope,
        recipients: &[(AccountId, DeviceId)],
    ) -> Result<(), MessagingError> {
        let mut queued = Vec::with_capacity(recipients.len());
        let result = self
            .append_refs(seq, len, envelope, recipients, &mut queued)
            .await;
        let at = envelope.server_timestamp_ms;
        self.wake_offline(&queued, envelope.urgent, at).await;
        result
    }

    /// The appends of [`Core::queue_refs`]; `queued` gets each recipient once its entry is
    /// stored.
    async fn append_refs(
        &self,
        seq: u64,
        len: u64,
        envelope: &Envelope,
        recipients: &[(AccountId, DeviceId)],
        queued: &mut Vec<(AccountId, DeviceId)>,
    ) -> Result<(), MessagingError> {
        let ttl = Duration::from_secs(self.retention_secs());
        let sender = envelope.sender.map(|(a, _)| a);
        let entry = encode(&QueueEntry::GroupRef {
            seq,
            envelope: envelope.clone(),
            len,
        });
        for &queue in recipients {
            if let Some(sender) = sender {
                let at = envelope.server_timestamp_ms;
                self.charge_queue(queue, sender, len, at, Policy::Force)
                    .await?;
            }
            let appended = self
                .log
                .append(
                    &store::queue_partition(queue.0, queue.1),
                    vec![NewEntry {
                        payload: entry.clone(),
                        ttl,
                    }],
                )
                .await;
            if let Err(e) = appended {
                if let Some(sender) = sender {
                    self.uncharge_or_log(queue, &[(sender, len)]).await;
                }
                return Err(e.into());
            }
            self.notify_mail(queue.0, queue.1).await;
            queued.push(queue);
        }
        Ok(())
    }

    /// Deliver an outbox record written with the change that accepted it, then delete it;
    /// `group`: the group record as that change left it, when the caller has it. Returns
    /// `false` when this process is already delivering it.
    pub(crate) async fn complete_fan_out(
        &self,
        record: &FanOut,
        group: Option<&GroupState>,
    ) -> Result<bool, MessagingError> {
        let key = record.key();
        let Some(_guard) = self.outbox_busy.claim(&key) else {
            return Ok(false);
        };
        let progress_key = store::outbox_progress_key(&key);
        if record.kind != Kind::Welcome && record.recipients.is_empty() {
            // A crash before the deletion appends it again: members may get it twice (they
            // drop what they already processed), never not at all.
            self.append_for_cursors(record, group).await?;
        } else if !record.recipients.is_empty() {
            let mut progress = match self.kv.get(&progress_key).await? {
                Some(raw) => decode::<Progress>(&raw)?,
                None => {
                    let p = Progress {
                        group_seq: self
                            .store_group_message(&record.group_id, &record.message, None)
                            .await?,
                        done: 0,
                    };
                    self.kv.put(&progress_key, &encode(&p)).await?;
                    p
                }
            };
            let envelope = record_envelope(record);
            let rest = record.recipients.get(progress.done..).unwrap_or_default();
            let mut batches = rest.chunks(PROGRESS_BATCH).peekable();
            while let Some(batch) = batches.next() {
                let len = record.message.len() as u64;
                self.queue_refs(progress.group_seq, len, &envelope, batch)
                    .await?;
                progress.done += batch.len();
                // The last batch is followed by the deletion; no progress write needed.
                if batches.peek().is_some() {
                    self.kv.put(&progress_key, &encode(&progress)).await?;
                }
            }
            if record.kind == Kind::Welcome {
                // After the Welcomes are queued, so a new member's stream reads its Welcome
                // before the group's log.
                let epoch = record.epoch.saturating_add(1);
                self.join_members(&record.group_id, &record.recipients, record.log_from, epoch)
                    .await?;
            }
        }
        // Unconditional deletes always commit.
        let _ = self
            .kv
            .commit(Txn::new().delete(key).delete(progress_key))
            .await?;
        Ok(true)
    }

    /// Fan out records just accepted, in order, with the group record their acceptance wrote.
    /// The messages are accepted whatever happens here: a failed fan-out stays in the outbox
    /// and the recovery sweep completes it.
    pub(crate) async fn deliver_or_defer(&self, records: &[FanOut], group: &GroupState) {
        for r in records {
            if let Err(e) = self.complete_fan_out(r, Some(group)).await {
                tracing::warn!(error = %e, kind = ?r.kind, "fan-out failed; left to the outbox sweep");
                return;
            }
        }
    }

    /// Complete the proposal records of `epoch` still pending (a crash cut their fan-out
    /// short and the sweep has not reached them yet), so that members get them before the
    /// commit that ends the epoch and may reference them.
    pub(crate) async fn complete_pending_proposals(&self, group_id: &GroupId, epoch: u64) {
        let mut prefix = store::outbox_key(group_id, epoch, Kind::Proposal.byte());
        prefix.push(b'/');
        let pairs = match self
            .kv
            .scan(KeyRange::prefix(&prefix), Direction::Forward, SWEEP_PAGE)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "could not list pending proposals");
                return;
            }
        };
        for pair in pairs {
            let done = match decode::<FanOut>(&pair.value) {
                Ok(record) => self.complete_fan_out(&record, None).await.map(|_| ()),
                Err(e) => Err(e.into()),
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "pending proposal left to the outbox sweep");
            }
        }
    }

    /// Complete every outbox record older than [`GRACE_MS`]. A record that fails is skipped
    /// (the records after it still go), counted, and tried again after a growing wait
    /// ([`backoff`]); only a failure to list the records ends the pass early.
    pub(crate) async fn sweep_outbox(&self) -> Result<SweepReport, MessagingError> {
        let mut range = KeyRange::prefix(store::OUTBOX_PREFIX);
        let mut report = SweepReport::default();
        let mut seen = HashSet::new();
        loop {
            let page = self
                .kv
                .scan(range.clone(), Direction::Forward, SWEEP_PAGE)
                .await?;
            if let Some(last) = page.last() {
                range.start = Bound::Excluded(last.key.clone());
            }
            let now = self.clock.now_ms();
            for pair in &page {
                seen.insert(pair.key.clone());
                if !self.outbox_backoff.due(&pair.key, now) {
                    report.deferred += 1;
                    continue;
                }
                let record = match decode::<FanOut>(&pair.value) {
                    Ok(r) => r,
                    Err(e) => {
                        report.failed += 1;
                        let attempts = self.outbox_backoff.failed(&pair.key, now);
                        tracing::error!(error = %e, attempts, "undecodable outbox record left in place");
                        continue;
                    }
                };
                if now.saturating_sub(record.accepted_ms) < GRACE_MS {
                    continue;
                }
                match self.complete_fan_out(&record, None).await {
                    Ok(true) => {
                        report.completed += 1;
                        self.outbox_backoff.succeeded(&pair.key);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        report.failed += 1;
                        let attempts = self.outbox_backoff.failed(&pair.key, now);
                        // The record's Debug form carries kind, epoch and sizes, never content.
                        tracing::warn!(error = %e, ?record, attempts, "outbox record failed; retrying later");
                    }
                }
            }
            if page.len() < SWEEP_PAGE {
                self.outbox_backoff.keep_only(&seen);
                return Ok(report);
            }
        }
    }
}

/// What one outbox sweep did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SweepReport {
    pub completed: usize,
    /// Records that failed this time (left in place, retried after their backoff).
    pub failed: usize,
    /// Records skipped because their backoff has not run out.
    pub deferred: usize,
}

/// The envelope a record delivers, without its content.
fn record_envelope(record: &FanOut) -> Envelope {
    let (kind, epoch) = record.envelope_kind();
    Envelope {
        server_id: 0,
        server_timestamp_ms: record.accepted_ms,
        sender: Some(record.sender),
        kind: EnvelopeKind::Mls(kind),
        content: Vec::new(),
        urgent: record.urgent,
        group: Some(record.group_id.clone()),
        epoch,
    }
}

pub(crate) fn spawn_recovery(core: Arc<Core>) {
    tokio::spawn(async move {
        loop {
            match core.sweep_outbox().await {
                Ok(r) if r.completed == 0 && r.failed == 0 => {}
                Ok(r) => tracing::info!(
                    completed = r.completed,
                    failed = r.failed,
                    deferred = r.deferred,
                    "outbox sweep: left-over group fan-outs"
                ),
                Err(e) => tracing::warn!(error = %e, "outbox sweep failed; retrying later"),
            }
            tokio::select! {
                () = core.shutdown.cancelled() => return,
                () = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
    });
}
