//! Fan-out of group messages, and the outbox that makes an accepted commit's fan-out survive a
//! crash.
//!
//! An accepted commit (and its Welcome) is written as an outbox record in the same KvStore
//! transaction as the group's compare-and-set, so "epoch advanced" and "must be delivered"
//! become durable together. The handler then fans the record out and deletes it. Records left
//! behind by a crash (or a failed fan-out) are completed by the recovery task at start-up and
//! every [`SWEEP_EVERY`] afterwards.
//!
//! Delivery is at-least-once: a crash after some queue appends but before the progress or the
//! deletion is written queues those recipients again. Clients ignore commits for epochs they
//! already processed (openmls rejects them as wrong-epoch). The progress key makes a resumed
//! fan-out skip the group-log append and every recipient batch already recorded.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use guardyn_proto::guardyn::messaging::v1::{DeliveredEnvelope, EnvelopeType, MlsMessageKind};
use guardyn_storage::{Direction, KeyRange, NewEntry, Txn};

use crate::Core;
use crate::error::MessagingError;
use crate::store::{self, CorruptRecord, QueueEntry, Reader, put_bytes};

const VERSION: u8 = 1;
/// How often the recovery task looks for left-over records (one empty range scan when none).
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// Records younger than this (by the service clock) may still be in progress on another
/// instance; the sweep leaves them alone.
pub(crate) const GRACE_MS: u64 = 30_000;
/// Recipients queued between two progress writes.
const PROGRESS_BATCH: usize = 64;
/// Records read per sweep page.
const SWEEP_PAGE: usize = 64;

/// What the outbox record delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Commit,
    Welcome,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Self::Commit => b'c',
            Self::Welcome => b'w',
        }
    }
}

/// One pending fan-out. Format v1: `[1][kind u8][epoch u64][accepted_ms u64][sender device
/// u32][sender account bytes][group id bytes][MLS message bytes][recipient count u32]` then per
/// recipient `[device u32][account bytes]` (bytes = u32 length + content).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct FanOut {
    pub kind: Kind,
    pub group_id: Vec<u8>,
    /// The epoch the commit was sent in (the group moved to `epoch + 1`).
    pub epoch: u64,
    pub accepted_ms: u64,
    pub sender: (String, u32),
    pub message: Vec<u8>,
    pub recipients: Vec<(String, u32)>,
}

impl std::fmt::Debug for FanOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FanOut")
            .field("kind", &self.kind)
            .field("epoch", &self.epoch)
            .field("message_len", &self.message.len())
            .field("recipients", &self.recipients.len())
            .finish_non_exhaustive()
    }
}

impl FanOut {
    pub(crate) fn key(&self) -> Vec<u8> {
        store::outbox_key(&self.group_id, self.epoch, self.kind.byte())
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION, self.kind.byte()];
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.accepted_ms.to_be_bytes());
        out.extend_from_slice(&self.sender.1.to_be_bytes());
        put_bytes(&mut out, self.sender.0.as_bytes());
        put_bytes(&mut out, &self.group_id);
        put_bytes(&mut out, &self.message);
        // At most `max_group_members` recipients (validated config).
        let n = u32::try_from(self.recipients.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&n.to_be_bytes());
        for (account, device) in &self.recipients {
            out.extend_from_slice(&device.to_be_bytes());
            put_bytes(&mut out, account.as_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION {
            return Err(CorruptRecord("outbox record version"));
        }
        let kind = match r.u8()? {
            b'c' => Kind::Commit,
            b'w' => Kind::Welcome,
            _ => return Err(CorruptRecord("outbox record kind")),
        };
        let epoch = r.u64()?;
        let accepted_ms = r.u64()?;
        let device = r.u32()?;
        let account = utf8(r.bytes()?)?;
        let group_id = r.bytes()?.to_vec();
        let message = r.bytes()?.to_vec();
        let n = r.u32()? as usize;
        let mut recipients = Vec::with_capacity(n.min(10_000));
        for _ in 0..n {
            let d = r.u32()?;
            recipients.push((utf8(r.bytes()?)?, d));
        }
        Ok(Self {
            kind,
            group_id,
            epoch,
            accepted_ms,
            sender: (account, device),
            message,
            recipients,
        })
    }

    fn envelope(&self) -> (MlsMessageKind, Option<u64>, bool) {
        match self.kind {
            Kind::Commit => (MlsMessageKind::Commit, Some(self.epoch), false),
            Kind::Welcome => (MlsMessageKind::Welcome, None, true),
        }
    }
}

fn utf8(b: &[u8]) -> Result<String, CorruptRecord> {
    String::from_utf8(b.to_vec()).map_err(|_| CorruptRecord("outbox account"))
}

/// How far a fan-out got: `[1][group log seq u64][recipients done u32]`.
#[derive(Debug, PartialEq, Eq)]
struct Progress {
    group_seq: u64,
    done: usize,
}

impl Progress {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(&self.group_seq.to_be_bytes());
        let done = u32::try_from(self.done).unwrap_or(u32::MAX);
        out.extend_from_slice(&done.to_be_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION {
            return Err(CorruptRecord("outbox progress version"));
        }
        Ok(Self {
            group_seq: r.u64()?,
            done: r.u32()? as usize,
        })
    }
}

/// Outbox keys this process is fanning out right now (the sweep skips them).
#[derive(Debug, Default)]
pub(crate) struct Busy(Mutex<HashSet<Vec<u8>>>);

struct BusyGuard<'a> {
    busy: &'a Busy,
    key: Vec<u8>,
}

impl Busy {
    fn claim(&self, key: &[u8]) -> Option<BusyGuard<'_>> {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.insert(key.to_vec()).then(|| BusyGuard {
            busy: self,
            key: key.to_vec(),
        })
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.busy
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

impl Core {
    /// Store `mls` once in the group log and return its sequence number.
    async fn store_group_message(
        &self,
        group_id: &[u8],
        mls: &[u8],
    ) -> Result<u64, MessagingError> {
        let ttl = Duration::from_secs(self.cfg.retention_secs);
        Ok(self
            .log
            .append(
                &store::group_log(group_id),
                vec![NewEntry {
                    payload: store::encode_group_message(mls),
                    ttl,
                }],
            )
            .await?
            .first()
            .copied()
            .unwrap_or_default())
    }

    /// Queue a reference to group message `seq` for each recipient and wake their streams.
    async fn queue_refs(
        &self,
        seq: u64,
        envelope: &DeliveredEnvelope,
        recipients: &[(String, u32)],
    ) -> Result<(), MessagingError> {
        let ttl = Duration::from_secs(self.cfg.retention_secs);
        let entry = QueueEntry::GroupRef {
            seq,
            envelope: envelope.clone(),
        }
        .encode();
        for (account, device) in recipients {
            self.log
                .append(
                    &store::queue_partition(account, *device),
                    vec![NewEntry {
                        payload: entry.clone(),
                        ttl,
                    }],
                )
                .await?;
            self.notify_mail(account, *device).await;
        }
        Ok(())
    }

    /// Store `mls` once in the group log and queue a reference for each recipient (proposals
    /// and application messages; commits go through the outbox).
    #[allow(clippy::too_many_arguments)] // The envelope's fields, each a plain value.
    pub(crate) async fn fan_out(
        &self,
        group_id: &[u8],
        mls: &[u8],
        kind: MlsMessageKind,
        epoch: Option<u64>,
        sender: (&str, u32),
        urgent: bool,
        recipients: &[(String, u32)],
        now: u64,
    ) -> Result<(), MessagingError> {
        if recipients.is_empty() {
            return Ok(());
        }
        let seq = self.store_group_message(group_id, mls).await?;
        let envelope = group_envelope(group_id, kind, epoch, sender, urgent, now);
        self.queue_refs(seq, &envelope, recipients).await
    }

    /// Deliver an outbox record written with the group's compare-and-set, then delete it.
    /// Returns `false` when this process is already delivering it.
    pub(crate) async fn complete_fan_out(&self, record: &FanOut) -> Result<bool, MessagingError> {
        let key = record.key();
        let Some(_guard) = self.outbox_busy.claim(&key) else {
            return Ok(false);
        };
        let progress_key = store::outbox_progress_key(&key);
        if !record.recipients.is_empty() {
            let mut progress = match self.kv.get(&progress_key).await? {
                Some(raw) => Progress::decode(&raw)?,
                None => {
                    let p = Progress {
                        group_seq: self
                            .store_group_message(&record.group_id, &record.message)
                            .await?,
                        done: 0,
                    };
                    self.kv.put(&progress_key, &p.encode()).await?;
                    p
                }
            };
            let (kind, epoch, urgent) = record.envelope();
            let envelope = group_envelope(
                &record.group_id,
                kind,
                epoch,
                (&record.sender.0, record.sender.1),
                urgent,
                record.accepted_ms,
            );
            let rest = record.recipients.get(progress.done..).unwrap_or_default();
            let mut batches = rest.chunks(PROGRESS_BATCH).peekable();
            while let Some(batch) = batches.next() {
                self.queue_refs(progress.group_seq, &envelope, batch)
                    .await?;
                progress.done += batch.len();
                // The last batch is followed by the deletion; no progress write needed.
                if batches.peek().is_some() {
                    self.kv.put(&progress_key, &progress.encode()).await?;
                }
            }
        }
        // Unconditional deletes always commit.
        let _ = self
            .kv
            .commit(Txn::new().delete(key).delete(progress_key))
            .await?;
        Ok(true)
    }

    /// Complete every outbox record older than [`GRACE_MS`]; returns how many were done.
    pub(crate) async fn sweep_outbox(&self) -> Result<usize, MessagingError> {
        let mut range = KeyRange::prefix(store::OUTBOX_PREFIX);
        let mut completed = 0;
        loop {
            let page = self
                .kv
                .scan(range.clone(), Direction::Forward, SWEEP_PAGE)
                .await?;
            let Some(last) = page.last() else {
                return Ok(completed);
            };
            range.start = Bound::Excluded(last.key.clone());
            let now = self.clock.now_ms();
            for pair in &page {
                let record = match FanOut::decode(&pair.value) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "undecodable outbox record left in place");
                        continue;
                    }
                };
                if now.saturating_sub(record.accepted_ms) < GRACE_MS {
                    continue;
                }
                if self.complete_fan_out(&record).await? {
                    completed += 1;
                }
            }
            if page.len() < SWEEP_PAGE {
                return Ok(completed);
            }
        }
    }
}

fn group_envelope(
    group_id: &[u8],
    kind: MlsMessageKind,
    epoch: Option<u64>,
    sender: (&str, u32),
    urgent: bool,
    now: u64,
) -> DeliveredEnvelope {
    DeliveredEnvelope {
        server_id: 0,
        server_timestamp: Some(store::timestamp(now)),
        sender_account_id: Some(sender.0.to_owned()),
        sender_device_id: Some(sender.1),
        r#type: EnvelopeType::Mls as i32,
        content: Vec::new(),
        urgent,
        group_id: Some(group_id.to_vec()),
        mls_kind: kind as i32,
        epoch,
    }
}

/// Run the recovery sweep now and every [`SWEEP_EVERY`] until shutdown.
pub(crate) fn spawn_recovery(core: Arc<Core>) {
    tokio::spawn(async move {
        loop {
            match core.sweep_outbox().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(records = n, "completed left-over commit fan-outs"),
                Err(e) => tracing::warn!(error = %e, "outbox sweep failed; retrying later"),
            }
            tokio::select! {
                () = core.shutdown.cancelled() => return,
                () = tokio::time::sleep(SWEEP_EVERY) => {}
            }
        }
    });
}

/// Test support: the outbox record the service writes together with an accepted commit, so
/// that a test can reproduce "the process died after the compare-and-set".
#[doc(hidden)]
pub fn commit_record(
    group_id: &[u8],
    epoch: u64,
    sender: (&str, u32),
    commit: &[u8],
    recipients: &[(String, u32)],
    accepted_ms: u64,
) -> (Vec<u8>, Vec<u8>) {
    let r = FanOut {
        kind: Kind::Commit,
        group_id: group_id.to_vec(),
        epoch,
        accepted_ms,
        sender: (sender.0.to_owned(), sender.1),
        message: commit.to_vec(),
        recipients: recipients.to_vec(),
    };
    (r.key(), r.encode())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn records_round_trip_and_redact() {
        let r = FanOut {
            kind: Kind::Welcome,
            group_id: vec![7; 16],
            epoch: 4,
            accepted_ms: 99,
            sender: ("acct".into(), 2),
            message: vec![1, 2, 3],
            recipients: vec![("b".into(), 1), ("c".into(), 9)],
        };
        assert_eq!(FanOut::decode(&r.encode()).unwrap(), r);
        assert!(FanOut::decode(&[2]).is_err());
        assert!(!format!("{r:?}").contains("[1, 2, 3]"));
        let p = Progress {
            group_seq: 5,
            done: 64,
        };
        assert_eq!(Progress::decode(&p.encode()).unwrap(), p);
        let busy = Busy::default();
        let g = busy.claim(b"k").unwrap();
        assert!(busy.claim(b"k").is_none());
        drop(g);
        assert!(busy.claim(b"k").is_some());
    }
}
