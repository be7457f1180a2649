//! 1:1 delivery: envelopes into device queues (or straight to online streams), and
//! acknowledgements. Plain Rust types; the gRPC edge (`crate::grpc`) converts.

use std::time::Duration;

use guardyn_common::events::Payload as _;
use guardyn_common::events::messaging::{
    Envelope, EnvelopeKind, GroupMail, MailEvent, group_subject, mail_subject,
};
use guardyn_common::{AccountId, DeviceId, GroupId};
use guardyn_storage::record::encode;
use guardyn_storage::{JointOutcome, JointStore, JointTxn, NewEntry, Txn};

use crate::core::Core;
use crate::devices;
use crate::error::MessagingError;
use crate::idempotency::{Claim, Free, reservation};
use crate::quota::Policy;
use crate::store::{self, IdempotencyRecord, QueueEntry};

/// Most ids one Ack may list (queue and group-log ids together).
pub(crate) const MAX_ACK_IDS: usize = 1000;
/// Most groups one Ack may name.
pub(crate) const MAX_ACK_GROUPS: usize = 64;

/// One envelope of a send, for one destination device.
#[derive(Debug)]
pub(crate) struct OutgoingEnvelope {
    pub device: DeviceId,
    pub registration_id: u32,
    pub kind: EnvelopeKind,
    pub content: Vec<u8>,
}

/// A validated SendMessage.
#[derive(Debug)]
pub(crate) struct SendMessage {
    pub destination: AccountId,
    pub client_message_id: String,
    pub envelopes: Vec<OutgoingEnvelope>,
    pub urgent: bool,
    pub online_only: bool,
    pub sync: bool,
}

/// What a send stored (or, for a replay, had stored).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SendOutcome {
    pub server_timestamp_ms: u64,
    /// (destination device, server id; 0 for online-only envelopes).
    pub queued: Vec<(DeviceId, u64)>,
    pub duplicate: bool,
}

/// An acknowledgement: everything up to `up_to` (0 = none) plus single ids of the queue, and
/// ids of group logs.
#[derive(Debug)]
pub(crate) struct Ack {
    pub up_to: u64,
    pub ids: Vec<u64>,
    pub groups: Vec<(GroupId, Vec<u64>)>,
}

pub(crate) fn check_client_message_id(id: &str) -> Result<(), MessagingError> {
    if id.is_empty() || id.chars().count() > 64 {
        return Err(MessagingError::invalid(
            "client_message_id",
            "must be 1..64 characters",
        ));
    }
    Ok(())
}

impl Core {
    pub(crate) async fn send_message(
        &self,
        account: AccountId,
        device: DeviceId,
        send: SendMessage,
    ) -> Result<SendOutcome, MessagingError> {
        self.limits.send(account)?;
        let now = self.clock.now_ms();
        if send.online_only {
            return self.send_online_only(account, device, send, now).await;
        }
        let idem_key = store::idempotency_key(account, device, &send.client_message_id);
        if let Some(joint) = self.joint.clone() {
            return self
                .send_joint(joint.as_ref(), account, device, idem_key, send, now)
                .await;
        }
        let reservation = match self
            .reserve_and_charge(account, device, &idem_key, &send, now)
            .await?
        {
            Claim::Replay(r) => return Ok(replay(&r)),
            Claim::Reserved(bytes) => bytes,
        };
        match self.deliver(account, device, send, now).await {
            Ok(queued) => {
                let record = self.completed(now, queued);
                let txn = Txn::new()
                    .require_equals(idem_key.clone(), reservation)
                    .put(idem_key, encode(&record));
                if !self.kv.commit(txn).await?.is_committed() {
                    // Our lease expired and another send took the id over; our result stands.
                    tracing::debug!("idempotency reservation was taken over");
                }
                let mut response = replay(&record);
                response.duplicate = false;
                Ok(response)
            }
            // Nothing was stored (or, after a storage failure, possibly part of it).
            Err(e) => {
                self.release(idem_key, reservation).await?;
                Err(e)
            }
        }
    }

    /// A send as one joint transaction ([`crate::core::Core::joint`]): the client message id's
    /// completed record (conditioned on the record read, so of concurrent duplicates one
    /// commits and the others replay it), the queue charges (updates applied at commit, so
    /// concurrent sends to one queue do not conflict) and the appends. There is no
    /// reservation to complete or recover: after a crash all of it or none of it is stored.
    async fn send_joint(
        &self,
        joint: &dyn JointStore,
        account: AccountId,
        device: DeviceId,
        idem_key: Vec<u8>,
        send: SendMessage,
        now: u64,
    ) -> Result<SendOutcome, MessagingError> {
        // Ids are new but for retries: assume no record and let the commit's condition say
        // otherwise (a duplicate then conflicts and is read below), which saves a read per send.
        let mut state = Free::Open {
            current: None,
            at_ms: now,
        };
        if let Err(e) = self.check_devices(device, &send).await {
            // A retry of a finished send replays its result, whatever the devices are now.
            if let Free::Replay(r) = self.claim_state(&idem_key).await? {
                return Ok(replay(&r));
            }
            return Err(e);
        }
        let destination = send.destination;
        let charges: Vec<(DeviceId, u64)> = send
            .envelopes
            .iter()
            .map(|e| (e.device, e.content.len() as u64))
            .collect();
        let entries: Vec<(Vec<u8>, Vec<u8>)> = send
            .envelopes
            .into_iter()
            .map(|e| {
                let env = envelope(account, device, now, send.urgent, e.kind, e.content);
                (
                    store::queue_partition(destination, e.device),
                    encode(&QueueEntry::Inline(env)),
                )
            })
            .collect();
        let devices: Vec<DeviceId> = charges.iter().map(|&(d, _)| d).collect();
        let ttl = Duration::from_secs(self.retention_secs());
        loop {
            let current = match state {
                Free::Replay(r) => return Ok(replay(&r)),
                Free::Open { current, .. } => current,
            };
            let txn = Txn::new().require_unchanged(idem_key.clone(), current.as_deref());
            let updates = charges
                .iter()
                .map(|&(dest, bytes)| self.charge_update((destination, dest), account, bytes, now))
                .collect();
            let appends = entries
                .iter()
                .map(|(partition, payload)| {
                    let entry = NewEntry {
                        payload: payload.clone(),
                        ttl,
                    };
                    (partition.clone(), vec![entry])
                })
                .collect();
            let completed = self.completed(now, Vec::new());
            let recorded = devices.clone();
            let record = move |seqs: &[Vec<u64>]| {
                encode(&IdempotencyRecord {
                    queued: server_ids(&recorded, seqs),
                    ..completed
                })
            };
            let txn = JointTxn {
                txn,
                updates,
                appends,
                record: Some((idem_key.clone(), Box::new(record))),
            };
            match joint.commit_joint(txn).await? {
                JointOutcome::Committed(seqs) => {
                    let queued = server_ids(&devices, &seqs);
                    self.announce_queued(destination, &queued, send.urgent, now)
                        .await;
                    return Ok(SendOutcome {
                        server_timestamp_ms: now,
                        queued,
                        duplicate: false,
                    });
                }
                // A concurrent duplicate won: read again.
                JointOutcome::Conflict { .. } => state = self.claim_state(&idem_key).await?,
                // The queue is full (plan_charge says which limit), or its usage record is
                // absent (plan_charge rebuilds it): then try again.
                JointOutcome::Refused { update } => {
                    if let Some(&(dest, bytes)) = charges.get(update) {
                        self.plan_charge((destination, dest), account, bytes, now, Policy::Full)
                            .await?;
                    }
                    state = self.claim_state(&idem_key).await?;
                }
            }
        }
    }

    async fn send_online_only(
        &self,
        account: AccountId,
        device: DeviceId,
        send: SendMessage,
        now: u64,
    ) -> Result<SendOutcome, MessagingError> {
        self.check_devices(device, &send).await?;
        let mut queued = Vec::new();
        for e in send.envelopes {
            if self.registry.is_connected(send.destination, e.device) {
                queued.push((e.device, 0));
            }
            let env = envelope(account, device, now, send.urgent, e.kind, e.content);
            let event = MailEvent::OnlineOnly(env).encode();
            self.bus
                .publish(&mail_subject(send.destination, e.device), event)
                .await?;
        }
        Ok(SendOutcome {
            server_timestamp_ms: now,
            queued,
            duplicate: false,
        })
    }

    async fn check_devices(
        &self,
        device: DeviceId,
        send: &SendMessage,
    ) -> Result<(), MessagingError> {
        let current = self
            .directory
            .devices(&send.destination.to_string())
            .await?
            .ok_or(MessagingError::AccountNotFound)?;
        let addressed: Vec<(DeviceId, u32)> = send
            .envelopes
            .iter()
            .map(|e| (e.device, e.registration_id))
            .collect();
        if let Some(m) = devices::mismatch(&addressed, &current, send.sync.then_some(device)) {
            return Err(MessagingError::DeviceMismatch(m));
        }
        Ok(())
    }

    /// Reserves the message id and charges every destination queue ([`crate::quota`]) in one
    /// transaction, so a send costs one commit before its appends rather than one per step,
    /// and either every queue has room or nothing is counted. The destination devices are
    /// checked first, unless the id turns out to be a finished send to replay.
    async fn reserve_and_charge(
        &self,
        account: AccountId,
        device: DeviceId,
        idem_key: &[u8],
        send: &SendMessage,
        now: u64,
    ) -> Result<Claim, MessagingError> {
        let mut devices_checked = false;
        loop {
            let (current, reservation) = match self.claim_state(idem_key).await? {
                Free::Replay(r) => return Ok(Claim::Replay(r)),
                Free::Open { current, at_ms } => (current, reservation(at_ms)),
            };
            if !devices_checked {
                self.check_devices(device, send).await?;
                devices_checked = true;
            }
            let mut txn = Txn::new()
                .require_unchanged(idem_key.to_vec(), current.as_deref())
                .put(idem_key.to_vec(), reservation.clone());
            for e in &send.envelopes {
                let queue = (send.destination, e.device);
                let bytes = e.content.len() as u64;
                txn = self
                    .plan_charge(queue, account, bytes, now, Policy::Full)
                    .await?
                    .into_txn(txn);
            }
            // Lost to a concurrent send with the same id or to a concurrent charge: read again.
            if self.kv.commit(txn).await?.is_committed() {
                return Ok(Claim::Reserved(reservation));
            }
        }
    }

    /// Append the envelopes, whose queues [`Self::reserve_and_charge`] charged; returns
    /// (destination device, server id) per envelope.
    async fn deliver(
        &self,
        account: AccountId,
        device: DeviceId,
        send: SendMessage,
        now: u64,
    ) -> Result<Vec<(DeviceId, u64)>, MessagingError> {
        let charges: Vec<(DeviceId, u64)> = send
            .envelopes
            .iter()
            .map(|e| (e.device, e.content.len() as u64))
            .collect();
        let ttl = Duration::from_secs(self.retention_secs());
        let mut queued = Vec::with_capacity(send.envelopes.len());
        for (i, e) in send.envelopes.into_iter().enumerate() {
            let dest = e.device;
            let partition = store::queue_partition(send.destination, dest);
            let env = envelope(account, device, now, send.urgent, e.kind, e.content);
            let entry = encode(&QueueEntry::Inline(env));
            let seqs = match self
                .log
                .append(
                    &partition,
                    vec![NewEntry {
                        payload: entry,
                        ttl,
                    }],
                )
                .await
            {
                Ok(s) => s,
                Err(err) => {
                    self.uncharge_unsent(send.destination, account, charges.get(i..))
                        .await;
                    return Err(err.into());
                }
            };
            let server_id = seqs.first().copied().unwrap_or_default();
            queued.push((dest, server_id));
        }
        self.announce_queued(send.destination, &queued, send.urgent, now)
            .await;
        Ok(queued)
    }

    /// Wake the streams of the devices whose queues a send appended to, and push to those
    /// offline.
    async fn announce_queued(
        &self,
        destination: AccountId,
        queued: &[(DeviceId, u64)],
        urgent: bool,
        now: u64,
    ) {
        for (dest, _) in queued {
            self.notify_mail(destination, *dest).await;
        }
        let woken: Vec<_> = queued.iter().map(|&(d, _)| (destination, d)).collect();
        self.wake_offline(&woken, urgent, now).await;
    }

    /// Give back the charges of envelopes that were not appended.
    async fn uncharge_unsent(
        &self,
        destination: AccountId,
        sender: AccountId,
        charges: Option<&[(DeviceId, u64)]>,
    ) {
        for &(dest, bytes) in charges.unwrap_or_default() {
            self.uncharge_or_log((destination, dest), &[(sender, bytes)])
                .await;
        }
    }

    /// Tell the device's stream (on any instance) that its queue changed.
    pub(crate) async fn notify_mail(&self, account: AccountId, device: DeviceId) {
        self.registry.wake(account, device);
        if let Err(e) = self
            .bus
            .publish(&mail_subject(account, device), MailEvent::Stored.encode())
            .await
        {
            // The envelope is stored; the device gets it on its next Listen or wake-up.
            tracing::warn!(error = %e, "could not publish a mail event");
        }
    }

    /// Tell the device's stream (on any instance) that its group memberships changed.
    pub(crate) async fn notify_memberships(&self, account: AccountId, device: DeviceId) {
        self.registry.memberships_changed(account, device);
        let event = MailEvent::MembershipsChanged.encode();
        if let Err(e) = self
            .bus
            .publish(&mail_subject(account, device), event)
            .await
        {
            // Its next stream reads them anyway.
            tracing::warn!(error = %e, "could not publish a membership change");
        }
    }

    /// Tell the streams of the group's members (on every instance) that its log grew: one
    /// event whatever the member count.
    pub(crate) async fn notify_group(&self, group: &GroupId) {
        self.registry.wake_group(group);
        let event = GroupMail {
            instance: self.registry.instance,
            group: group.clone(),
        };
        if let Err(e) = self
            .bus
            .publish(&group_subject(group), event.encode())
            .await
        {
            // The message is stored; members get it on their next pass or wake-up.
            tracing::warn!(error = %e, "could not publish a group mail event");
        }
    }

    pub(crate) async fn ack(
        &self,
        account: AccountId,
        device: DeviceId,
        r: Ack,
    ) -> Result<u32, MessagingError> {
        let partition = store::queue_partition(account, device);
        let mut acked = 0u32;
        // What the deleted entries were charged, to give back to the queue's usage.
        let mut removed = Vec::new();
        if r.up_to > 0 {
            // Growing chunks: an acknowledgement usually covers a few entries at the head, and
            // the backlog behind them (thousands for a device catching up) is not copied for it.
            let mut from = 1;
            let mut chunk = ACK_READ_FIRST;
            'count: loop {
                let batch = self.log.read(&partition, from, chunk).await?;
                let full = batch.len() == chunk;
                for e in &batch {
                    if e.seq > r.up_to {
                        break 'count;
                    }
                    acked += 1;
                    from = e.seq + 1;
                    removed.extend(charge_of(&e.payload));
                }
                if !full {
                    break;
                }
                chunk = (chunk * 2).min(ACK_READ_MAX);
            }
            self.log.delete_through(&partition, r.up_to).await?;
        }
        let mut ids: Vec<u64> = r.ids.into_iter().filter(|id| *id > r.up_to).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut present = Vec::with_capacity(ids.len());
        for run in ack_runs(&ids) {
            let first = run[0];
            let span = run[run.len() - 1] - first + 1;
            let entries = self
                .log
                .read(
                    &partition,
                    first,
                    usize::try_from(span).unwrap_or(usize::MAX),
                )
                .await?;
            for e in entries {
                if run.binary_search(&e.seq).is_ok() {
                    present.push(e.seq);
                    removed.extend(charge_of(&e.payload));
                }
            }
        }
        if !present.is_empty() {
            self.log.delete(&partition, &present).await?;
            acked += u32::try_from(present.len()).unwrap_or(u32::MAX);
        }
        // The entries are gone whatever happens here; a failure only over-counts the queue.
        self.uncharge_or_log((account, device), &removed).await;
        for (group, ids) in r.groups {
            acked += self.ack_group(account, device, &group, &ids).await?;
        }
        // A stream with room does not need to hear of it: one pass per acknowledgement was a
        // third of the passes of a busy group.
        if acked > 0 && !self.registry.acked(account, device) {
            self.notify_mail(account, device).await;
        }
        Ok(acked)
    }
}

/// Sorted, distinct ids split into runs that are each read from the log in one call: a run
/// spans at most twice its ids plus [`ACK_RUN_SLACK`], so the entries read beside the
/// acknowledged ones (still queued, up to `max_envelope_bytes` each) stay bounded by the ids
/// themselves. The usual acknowledgement, the ids a stream just delivered, is one run.
fn ack_runs(ids: &[u64]) -> Vec<&[u64]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=ids.len() {
        let extends = ids.get(i).is_some_and(|&id| {
            let span = id - ids[start] + 1;
            span <= 2 * (i - start + 1) as u64 + ACK_RUN_SLACK
        });
        if !extends {
            runs.push(&ids[start..i]);
            start = i;
        }
    }
    runs
}

const ACK_RUN_SLACK: u64 = 8;
/// First and largest read of the entries a cumulative acknowledgement covers.
const ACK_READ_FIRST: usize = 32;
const ACK_READ_MAX: usize = 1024;

/// (sender, bytes) a stored queue entry was charged.
fn charge_of(payload: &[u8]) -> Option<(AccountId, u64)> {
    match guardyn_storage::record::decode::<QueueEntry>(payload) {
        Ok(entry) => entry.charge().map(|(sender, bytes, _)| (sender, bytes)),
        Err(e) => {
            tracing::warn!(error = %e, "acknowledged an unreadable queue entry");
            None
        }
    }
}

fn envelope(
    account: AccountId,
    device: DeviceId,
    now: u64,
    urgent: bool,
    kind: EnvelopeKind,
    content: Vec<u8>,
) -> Envelope {
    Envelope {
        server_id: 0,
        server_timestamp_ms: now,
        sender: Some((account, device)),
        kind,
        content,
        urgent,
        group: None,
        epoch: None,
    }
}

/// (device, server id) per envelope, from the sequences of its one-entry append.
fn server_ids(devices: &[DeviceId], seqs: &[Vec<u64>]) -> Vec<(DeviceId, u64)> {
    devices
        .iter()
        .zip(seqs)
        .map(|(&d, s)| (d, s.first().copied().unwrap_or_default()))
        .collect()
}

fn replay(rec: &IdempotencyRecord) -> SendOutcome {
    SendOutcome {
        server_timestamp_ms: rec.server_timestamp_ms,
        queued: rec.queued.clone(),
        duplicate: true,
    }
}

#[cfg(test)]
mod tests {
    use super::ack_runs;

    #[test]
    fn acknowledged_ids_are_read_in_runs_bounded_by_their_count() {
        let none: Vec<&[u64]> = Vec::new();
        assert_eq!(ack_runs(&[]), none);
        assert_eq!(ack_runs(&[7]), vec![&[7][..]]);
        // A stream's delivered batch, gaps included, is one read.
        assert_eq!(ack_runs(&[1, 2, 3, 5, 8]), vec![&[1, 2, 3, 5, 8][..]]);
        // Two ids 30 apart would read 28 entries nobody acknowledged.
        assert_eq!(ack_runs(&[1, 30]), vec![&[1][..], &[30][..]]);
        assert_eq!(
            ack_runs(&[1, 2, 1_000, 1_001, 1_002]),
            vec![&[1, 2][..], &[1_000, 1_001, 1_002][..]]
        );
    }
}
