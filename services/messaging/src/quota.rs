//! Per-device queue quotas and the fairness policy.
//!
//! Every device queue has a [`QueueUsage`] record beside it in the KvStore: per sending
//! account, the entries it has queued and not yet acknowledged (count, ciphertext bytes, newest
//! accept time). Limits (`messaging.*`): the queue's totals (`max_queue_len`,
//! `max_queue_bytes`) and each sender's share (`max_sender_queue_len`,
//! `max_sender_queue_bytes`).
//!
//! Fairness policy: **per-sender share**. A sending account may hold at most its share of a
//! device's queue; beyond it its sends to that device fail with `QUOTA_EXCEEDED` (`limit` =
//! `sender_queue_len` / `sender_queue_bytes`) while other accounts still get through, until the
//! device acknowledges or the entries expire. Only several accounts together can fill the whole
//! queue (then `queue_len` / `queue_bytes`); the per-account send rate limit slows that down.
//! Nothing already queued is ever dropped to make room.
//!
//! Group commits, proposals and application messages are stored once in the group log and read
//! by each member from its cursor ([`crate::groups::cursors`]): they are in no device queue and
//! charge none (the sender's per-account send rate limit and the retention time bound a
//! group's log). A Welcome is queued by reference for each new member and checked against, then
//! charged to, those queues like a 1:1 message; the charge is taken when the fan-out queues the
//! reference, unconditionally: two Welcomes accepted at once may overshoot a queue by one each.
//!
//! Accounting: a charge is checked against the record as it is at commit, so concurrent 1:1
//! senders never overshoot: on a joint store, an update the storage writer applies in the
//! send's one transaction ([`Core::charge_update`]); otherwise a compare-and-set on the usage
//! record before the append. An acknowledgement takes the deleted entries off
//! again (on a joint store also as an update, so it never conflicts with those sends), and expiry drops a sender's share once its newest entry is past `retention_secs` (by
//! the service clock, as Listen decides expiry). The record is persisted, so restarts keep it;
//! an absent record (a queue written before quotas existed) is rebuilt from the log. The errors
//! all err towards counting too much: a crash between a charge and its append (stepwise), or an
//! acknowledgement racing a rebuild, leaves a phantom entry until the share expires; a sender
//! that keeps a device's queue non-empty for longer than the retention time keeps its expired
//! entries counted until they are acknowledged. The one under-count: two acknowledgements of
//! the same entry at the same moment both give it back, which only lets the acknowledging
//! device's own queue hold one more message per duplicate.

use guardyn_common::{AccountId, DeviceId};
use guardyn_storage::record::{decode, encode};
use guardyn_storage::{JointTxn, Txn, Update};

use crate::core::Core;
use crate::error::{MessagingError, QueueLimit};
use crate::store::{self, QueueEntry, QueueUsage};

/// Entries read per page when rebuilding a usage record (inline entries are up to
/// `max_envelope_bytes` each).
const REBUILD_PAGE: usize = 32;

/// A planned charge: the usage record as read and as it becomes.
pub(crate) struct Charge {
    key: Vec<u8>,
    raw: Vec<u8>,
    updated: Vec<u8>,
}

impl Charge {
    /// Adds the compare-and-set to `txn`: it commits only if nobody changed the record since.
    pub(crate) fn into_txn(self, txn: Txn) -> Txn {
        txn.require_equals(self.key.clone(), self.raw)
            .put(self.key, self.updated)
    }
}

/// Which limits a charge or check applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Policy {
    /// The queue's totals and the sender's share.
    Full,
    /// None: the message was already accepted (a group fan-out).
    Force,
}

impl Core {
    /// Count one entry of `bytes` from `sender`, accepted at `at_ms`, in the queue of
    /// `queue`, if `policy` allows it.
    pub(crate) async fn charge_queue(
        &self,
        queue: (AccountId, DeviceId),
        sender: AccountId,
        bytes: u64,
        at_ms: u64,
        policy: Policy,
    ) -> Result<(), MessagingError> {
        loop {
            let charge = self
                .plan_charge(queue, sender, bytes, at_ms, policy)
                .await?;
            if self
                .kv
                .commit(charge.into_txn(Txn::new()))
                .await?
                .is_committed()
            {
                return Ok(());
            }
        }
    }

    /// The compare-and-set that counts one entry in `queue` (see [`Self::charge_queue`]), for
    /// the caller to commit, alone or with other writes.
    pub(crate) async fn plan_charge(
        &self,
        queue: (AccountId, DeviceId),
        sender: AccountId,
        bytes: u64,
        at_ms: u64,
        policy: Policy,
    ) -> Result<Charge, MessagingError> {
        let (raw, mut usage) = self.load_usage(queue).await?;
        if let Some(limit) = self.rules().exceeds(&usage, sender, bytes, policy) {
            return Err(MessagingError::QueueFull {
                account: queue.0,
                device: queue.1,
                limit,
            });
        }
        add_share(&mut usage, sender, bytes, at_ms);
        Ok(Charge {
            key: store::usage_key(queue.0, queue.1),
            raw,
            updated: encode(&usage),
        })
    }

    /// Take entries that left the queue (acknowledged, or charged but never appended) off its
    /// usage: (sender, bytes) each.
    pub(crate) async fn uncharge_queue(
        &self,
        queue: (AccountId, DeviceId),
        removed: &[(AccountId, u64)],
    ) -> Result<(), MessagingError> {
        if removed.is_empty() {
            return Ok(());
        }
        let key = store::usage_key(queue.0, queue.1);
        if let Some(joint) = &self.joint {
            // Applied by the storage writer to the record as it is then: an acknowledgement
            // racing the sends that charge the same queue neither conflicts nor reads first.
            let rules = self.rules();
            let removed = removed.to_vec();
            let update: Update = Box::new(move |raw| {
                // Absent: the queue was purged, or predates quotas (rebuilt when next charged).
                let mut usage = match decode::<QueueUsage>(raw?) {
                    Ok(u) => u,
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable queue usage left as it is");
                        return None;
                    }
                };
                take_off(&mut usage, &removed);
                rules.drop_expired(&mut usage);
                Some(encode(&usage))
            });
            let txn = JointTxn {
                txn: Txn::new(),
                updates: vec![(key, update)],
                appends: Vec::new(),
                record: None,
            };
            // Committed, or refused because there was no record to take anything off (with no
            // conditions it cannot conflict): either way the entries are off the count.
            let _outcome = joint.commit_joint(txn).await?;
            return Ok(());
        }
        loop {
            // Absent: the queue was purged, or predates quotas and is rebuilt when next charged.
            let Some(raw) = self.kv.get(&key).await? else {
                return Ok(());
            };
            let mut usage = decode::<QueueUsage>(&raw)?;
            take_off(&mut usage, removed);
            self.rules().drop_expired(&mut usage);
            let txn = Txn::new()
                .require_equals(key.clone(), raw)
                .put(key.clone(), encode(&usage));
            if self.kv.commit(txn).await?.is_committed() {
                return Ok(());
            }
        }
    }

    /// [`Self::uncharge_queue`] on a path that already failed or succeeded otherwise: a failure
    /// only leaves the queue counted too full (until the entries expire), so it is logged.
    pub(crate) async fn uncharge_or_log(
        &self,
        queue: (AccountId, DeviceId),
        removed: &[(AccountId, u64)],
    ) {
        if let Err(e) = self.uncharge_queue(queue, removed).await {
            tracing::warn!(error = %e, entries = removed.len(), "could not update a queue's usage");
        }
    }

    /// Refuse when one of `recipients`' queues has no room for a message of `bytes` from
    /// `sender` under `policy` (the acceptance check of a group message).
    pub(crate) async fn check_queues(
        &self,
        sender: AccountId,
        recipients: &[(AccountId, DeviceId)],
        bytes: usize,
        policy: Policy,
    ) -> Result<(), MessagingError> {
        for &queue in recipients {
            let (_, usage) = self.load_usage(queue).await?;
            if let Some(limit) = self.rules().exceeds(&usage, sender, bytes as u64, policy) {
                return Err(MessagingError::QueueFull {
                    account: queue.0,
                    device: queue.1,
                    limit,
                });
            }
        }
        Ok(())
    }

    /// The stored usage bytes (the compare-and-set witness) and the usage without expired
    /// shares. An absent record is rebuilt from the log and stored first.
    async fn load_usage(
        &self,
        queue: (AccountId, DeviceId),
    ) -> Result<(Vec<u8>, QueueUsage), MessagingError> {
        let key = store::usage_key(queue.0, queue.1);
        loop {
            if let Some(raw) = self.kv.get(&key).await? {
                let mut usage = decode::<QueueUsage>(&raw)?;
                self.rules().drop_expired(&mut usage);
                return Ok((raw, usage));
            }
            let rebuilt = encode(&self.rebuild_usage(queue).await?);
            let txn = Txn::new()
                .require_absent(key.clone())
                .put(key.clone(), rebuilt);
            // Lost to a concurrent rebuild or charge: read theirs.
            let _ = self.kv.commit(txn).await?;
        }
    }

    /// The usage of a queue as its log holds it.
    async fn rebuild_usage(
        &self,
        queue: (AccountId, DeviceId),
    ) -> Result<QueueUsage, MessagingError> {
        let partition = store::queue_partition(queue.0, queue.1);
        let mut usage = QueueUsage::default();
        let expired_before = self
            .clock
            .now_ms()
            .saturating_sub(self.retention_secs().saturating_mul(1000));
        let mut from = 1;
        loop {
            let page = self.log.read(&partition, from, REBUILD_PAGE).await?;
            for e in &page {
                from = e.seq + 1;
                match decode::<QueueEntry>(&e.payload) {
                    Ok(entry) => {
                        if let Some((sender, bytes, at_ms)) =
                            entry.charge().filter(|c| c.2 > expired_before)
                        {
                            let s = usage.senders.entry(sender).or_default();
                            s.count += 1;
                            s.bytes = s.bytes.saturating_add(bytes);
                            s.newest_ms = s.newest_ms.max(at_ms);
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "unreadable queue entry not counted"),
                }
            }
            if page.len() < REBUILD_PAGE {
                return Ok(usage);
            }
        }
    }

    /// The limits in force and the service clock's reading.
    fn rules(&self) -> Rules {
        Rules {
            now_ms: self.clock.now_ms(),
            retention_ms: self.retention_secs().saturating_mul(1000),
            queue_len: self.cfg.max_queue_len,
            queue_bytes: self.cfg.max_queue_bytes,
            sender_queue_len: self.cfg.max_sender_queue_len,
            sender_queue_bytes: self.cfg.max_sender_queue_bytes,
        }
    }

    /// The charge of [`Self::plan_charge`] (policy [`Policy::Full`]) as an update the storage
    /// writer applies to the usage record as it is at commit ([`guardyn_storage::Update`]), so
    /// that concurrent sends to one queue all commit instead of conflicting on a
    /// compare-and-set. It refuses when the record is absent or a limit is exceeded; the caller
    /// then learns which, or rebuilds the record, through [`Self::plan_charge`].
    pub(crate) fn charge_update(
        &self,
        queue: (AccountId, DeviceId),
        sender: AccountId,
        bytes: u64,
        at_ms: u64,
    ) -> (Vec<u8>, Update) {
        let rules = self.rules();
        let update = move |raw: Option<&[u8]>| {
            let mut usage = decode::<QueueUsage>(raw?).ok()?;
            rules.drop_expired(&mut usage);
            if rules.exceeds(&usage, sender, bytes, Policy::Full).is_some() {
                return None;
            }
            add_share(&mut usage, sender, bytes, at_ms);
            Some(encode(&usage))
        };
        (store::usage_key(queue.0, queue.1), Box::new(update))
    }
}

/// Take one entry of (sender, bytes) off `usage` per item of `removed`.
fn take_off(usage: &mut QueueUsage, removed: &[(AccountId, u64)]) {
    for (sender, bytes) in removed {
        if let Some(s) = usage.senders.get_mut(sender) {
            s.count = s.count.saturating_sub(1);
            s.bytes = s.bytes.saturating_sub(*bytes);
            if s.count == 0 {
                usage.senders.remove(sender);
            }
        }
    }
}

/// Count one entry of `bytes` from `sender`, accepted at `at_ms`.
fn add_share(usage: &mut QueueUsage, sender: AccountId, bytes: u64, at_ms: u64) {
    let share = usage.senders.entry(sender).or_default();
    share.count += 1;
    share.bytes = share.bytes.saturating_add(bytes);
    share.newest_ms = share.newest_ms.max(at_ms);
}

/// The limits a charge is decided by and the service clock's reading, detached from [`Core`]
/// so that the storage writer can apply a charge ([`Core::charge_update`]).
#[derive(Clone, Copy, Debug)]
struct Rules {
    now_ms: u64,
    retention_ms: u64,
    queue_len: u64,
    queue_bytes: u64,
    sender_queue_len: u64,
    sender_queue_bytes: u64,
}

impl Rules {
    /// Drop the shares whose newest entry expired (all of theirs did).
    fn drop_expired(&self, usage: &mut QueueUsage) {
        usage
            .senders
            .retain(|_, s| s.newest_ms.saturating_add(self.retention_ms) > self.now_ms);
    }

    fn exceeds(
        &self,
        usage: &QueueUsage,
        sender: AccountId,
        bytes: u64,
        policy: Policy,
    ) -> Option<QueueLimit> {
        if policy == Policy::Force {
            return None;
        }
        let share = usage.senders.get(&sender).copied().unwrap_or_default();
        if share.count >= self.sender_queue_len {
            return Some(QueueLimit::SenderQueueLen);
        }
        if share.bytes.saturating_add(bytes) > self.sender_queue_bytes {
            return Some(QueueLimit::SenderQueueBytes);
        }
        if policy == Policy::Full {
            let (count, total) = usage.senders.values().fold((0u64, 0u64), |(c, b), s| {
                (c.saturating_add(s.count), b.saturating_add(s.bytes))
            });
            if count >= self.queue_len {
                return Some(QueueLimit::QueueLen);
            }
            if total.saturating_add(bytes) > self.queue_bytes {
                return Some(QueueLimit::QueueBytes);
            }
        }
        None
    }
}
