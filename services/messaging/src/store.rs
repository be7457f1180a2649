//! Key layout and the versioned binary formats of everything messaging persists or publishes.
//!
//! Layout (all integers fixed-width big-endian):
//! - AppendLog partition `msg/v1/q/<account>/<device u32>`: one device's queue. Entry payload
//!   `[1][0][DeliveredEnvelope]` (inline) or `[1][1][group seq u64][DeliveredEnvelope]` (a
//!   reference to a stored group message; the envelope's content is empty).
//! - AppendLog partition `msg/v1/g/<hex group id>`: a group's stored MLS messages, each stored
//!   once, `[1][MLSMessage]`.
//! - KV `msg/v1/group/<hex group id>`: the group record ([`crate::groups::state`]).
//! - KV `msg/v1/group/<hex group id>/p/<epoch u64>/<hex proposal ref>`: a relayed proposal's
//!   membership effect, used to resolve commits that reference it.
//! - KV `msg/v1/idem/<account>/<device u32>/<client message id>`: idempotency record
//!   (SendGroupMessage's id is `g/<hex group id>/<client message id>`).
//! - KV `msg/v1/ob/<hex group id>/<epoch u64>/<kind u8>[/<hex tag>]`: a pending group fan-out
//!   (kind `A` application message, `P` proposal, `c` commit, `w` Welcome; the tag tells apart
//!   an epoch's proposals and application messages) ([`crate::outbox`]);
//!   `msg/v1/obp/<same suffix>` its progress.
//!
//! Bus subjects: `messaging.mail.<account>.<device>` (`[1][0]` = stored mail, `[1][1][DeliveredEnvelope]`
//! = online-only envelope), `messaging.listen.<account>.<device>` (`[1][instance uuid][stream id u64]`).

use bytes::Bytes;
use guardyn_proto::guardyn::messaging::v1::DeliveredEnvelope;
use prost::Message as _;

const VERSION: u8 = 1;

/// A stored or published record could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("corrupt messaging record: {0}")]
pub struct CorruptRecord(pub &'static str);

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub(crate) fn queue_partition(account: &str, device: u32) -> Vec<u8> {
    let mut k = format!("msg/v1/q/{account}/").into_bytes();
    k.extend_from_slice(&device.to_be_bytes());
    k
}

pub(crate) fn group_log(group_id: &[u8]) -> Vec<u8> {
    format!("msg/v1/g/{}", hex(group_id)).into_bytes()
}

pub(crate) fn group_key(group_id: &[u8]) -> Vec<u8> {
    format!("msg/v1/group/{}", hex(group_id)).into_bytes()
}

pub(crate) fn proposal_key(group_id: &[u8], epoch: u64, proposal_ref: &[u8]) -> Vec<u8> {
    let mut k = proposal_prefix(group_id, epoch);
    k.extend_from_slice(hex(proposal_ref).as_bytes());
    k
}

pub(crate) fn proposal_prefix(group_id: &[u8], epoch: u64) -> Vec<u8> {
    let mut k = format!("msg/v1/group/{}/p/", hex(group_id)).into_bytes();
    k.extend_from_slice(&epoch.to_be_bytes());
    k.push(b'/');
    k
}

pub(crate) fn idempotency_prefix(account: &str) -> Vec<u8> {
    format!("msg/v1/idem/{account}/").into_bytes()
}

pub(crate) fn idempotency_key(account: &str, device: u32, client_message_id: &str) -> Vec<u8> {
    let mut k = idempotency_prefix(account);
    k.extend_from_slice(&device.to_be_bytes());
    k.push(b'/');
    k.extend_from_slice(client_message_id.as_bytes());
    k
}

/// The idempotency key of a SendGroupMessage (client message ids are per group).
pub(crate) fn group_idempotency_key(
    account: &str,
    device: u32,
    group_id: &[u8],
    client_message_id: &str,
) -> Vec<u8> {
    let id = format!("g/{}/{client_message_id}", hex(group_id));
    idempotency_key(account, device, &id)
}

pub(crate) const OUTBOX_PREFIX: &[u8] = b"msg/v1/ob/";
const OUTBOX_PROGRESS_PREFIX: &[u8] = b"msg/v1/obp/";

pub(crate) fn outbox_key(group_id: &[u8], epoch: u64, kind: u8) -> Vec<u8> {
    let mut k = OUTBOX_PREFIX.to_vec();
    k.extend_from_slice(hex(group_id).as_bytes());
    k.push(b'/');
    k.extend_from_slice(&epoch.to_be_bytes());
    k.push(b'/');
    k.push(kind);
    k
}

/// The progress key of the outbox record at `outbox_key`.
pub(crate) fn outbox_progress_key(outbox_key: &[u8]) -> Vec<u8> {
    let suffix = outbox_key.get(OUTBOX_PREFIX.len()..).unwrap_or_default();
    [OUTBOX_PROGRESS_PREFIX, suffix].concat()
}

pub(crate) fn mail_subject(account: &str, device: u32) -> String {
    format!("messaging.mail.{account}.{device}")
}

pub(crate) fn listen_subject(account: &str, device: u32) -> String {
    format!("messaging.listen.{account}.{device}")
}

/// One queue entry.
#[derive(Debug, PartialEq)]
pub(crate) enum QueueEntry {
    Inline(DeliveredEnvelope),
    /// The content lives in the group log at `seq`.
    GroupRef {
        seq: u64,
        envelope: DeliveredEnvelope,
    },
}

impl QueueEntry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Self::Inline(e) => {
                let mut out = vec![VERSION, 0];
                out.extend_from_slice(&e.encode_to_vec());
                out
            }
            Self::GroupRef { seq, envelope } => {
                let mut out = vec![VERSION, 1];
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&envelope.encode_to_vec());
                out
            }
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        match bytes {
            [VERSION, 0, rest @ ..] => DeliveredEnvelope::decode(rest)
                .map(Self::Inline)
                .map_err(|_| CorruptRecord("queue entry")),
            [VERSION, 1, rest @ ..] if rest.len() >= 8 => {
                let (seq, env) = rest.split_at(8);
                let seq = u64::from_be_bytes(seq.try_into().map_err(|_| CorruptRecord("seq"))?);
                let envelope =
                    DeliveredEnvelope::decode(env).map_err(|_| CorruptRecord("queue entry"))?;
                Ok(Self::GroupRef { seq, envelope })
            }
            _ => Err(CorruptRecord("queue entry version")),
        }
    }
}

pub(crate) fn encode_group_message(mls: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(mls.len() + 1);
    out.push(VERSION);
    out.extend_from_slice(mls);
    out
}

pub(crate) fn decode_group_message(bytes: &[u8]) -> Result<&[u8], CorruptRecord> {
    match bytes {
        [VERSION, rest @ ..] => Ok(rest),
        _ => Err(CorruptRecord("group message version")),
    }
}

/// A `messaging.mail.*` event.
#[derive(Debug, PartialEq)]
pub(crate) enum MailEvent {
    /// Something changed in the stored queue (new mail or acknowledgements): re-read it.
    Stored,
    /// An online-only envelope, never stored.
    OnlineOnly(DeliveredEnvelope),
}

impl MailEvent {
    pub(crate) fn encode(&self) -> Bytes {
        match self {
            Self::Stored => Bytes::from_static(&[VERSION, 0]),
            Self::OnlineOnly(e) => {
                let mut out = vec![VERSION, 1];
                out.extend_from_slice(&e.encode_to_vec());
                Bytes::from(out)
            }
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        match bytes {
            [VERSION, 0] => Ok(Self::Stored),
            [VERSION, 1, rest @ ..] => DeliveredEnvelope::decode(rest)
                .map(Self::OnlineOnly)
                .map_err(|_| CorruptRecord("mail event")),
            _ => Err(CorruptRecord("mail event version")),
        }
    }
}

/// A `messaging.listen.*` claim: instance `instance` opened stream `stream` for the device.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ListenClaim {
    pub instance: [u8; 16],
    pub stream: u64,
}

impl ListenClaim {
    pub(crate) fn encode(&self) -> Bytes {
        let mut out = vec![VERSION];
        out.extend_from_slice(&self.instance);
        out.extend_from_slice(&self.stream.to_be_bytes());
        Bytes::from(out)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        if bytes.len() != 25 || bytes[0] != VERSION {
            return Err(CorruptRecord("listen claim"));
        }
        let mut instance = [0; 16];
        instance.copy_from_slice(&bytes[1..17]);
        let mut stream = [0; 8];
        stream.copy_from_slice(&bytes[17..25]);
        Ok(Self {
            instance,
            stream: u64::from_be_bytes(stream),
        })
    }
}

/// What an accepted SendMessage / SendGroupMessage answered, kept for idempotent replays, or
/// (`pending`) a reservation of the client message id by a send still in progress.
///
/// Format v2: `[2][pending u8][expires_at_ms u64][server_timestamp_ms u64]` then per queued
/// envelope `[device u32][server id u64]`. For a reservation `expires_at_ms` is the end of its
/// lease. v1 (`[1]` without the pending byte) is a completed record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct IdempotencyRecord {
    pub pending: bool,
    pub expires_at_ms: u64,
    pub server_timestamp_ms: u64,
    /// (destination device, server id).
    pub queued: Vec<(u32, u64)>,
}

const IDEMPOTENCY_VERSION: u8 = 2;

impl IdempotencyRecord {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![IDEMPOTENCY_VERSION, u8::from(self.pending)];
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out.extend_from_slice(&self.server_timestamp_ms.to_be_bytes());
        for (d, s) in &self.queued {
            out.extend_from_slice(&d.to_be_bytes());
            out.extend_from_slice(&s.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        let bad = CorruptRecord("idempotency record");
        let (pending, rest) = match bytes {
            [VERSION, rest @ ..] => (false, rest),
            [IDEMPOTENCY_VERSION, p @ (0 | 1), rest @ ..] => (*p == 1, rest),
            _ => return Err(bad),
        };
        if rest.len() < 16 || (rest.len() - 16) % 12 != 0 {
            return Err(bad);
        }
        let mut r = Reader(rest);
        let expires_at_ms = r.u64()?;
        let server_timestamp_ms = r.u64()?;
        let mut queued = Vec::new();
        while !r.0.is_empty() {
            queued.push((r.u32()?, r.u64()?));
        }
        Ok(Self {
            pending,
            expires_at_ms,
            server_timestamp_ms,
            queued,
        })
    }
}

/// A cursor over a byte slice for the hand-written formats.
pub(crate) struct Reader<'a>(pub &'a [u8]);

impl Reader<'_> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&[u8], CorruptRecord> {
        if self.0.len() < n {
            return Err(CorruptRecord("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, CorruptRecord> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u32(&mut self) -> Result<u32, CorruptRecord> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, CorruptRecord> {
        let mut a = [0; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    pub(crate) fn bytes(&mut self) -> Result<&[u8], CorruptRecord> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths are bounded by the storage value limit (2 MiB), far below u32::MAX.
    out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

pub(crate) fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

pub(crate) fn timestamp_ms(ts: Option<&prost_types::Timestamp>) -> u64 {
    ts.map(|t| {
        u64::try_from(t.seconds).unwrap_or(0) * 1000
            + u64::try_from(t.nanos / 1_000_000).unwrap_or(0)
    })
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn records_round_trip_and_reject_unknown_versions() {
        let env = DeliveredEnvelope {
            content: vec![1, 2, 3],
            ..Default::default()
        };
        let e = QueueEntry::GroupRef {
            seq: 7,
            envelope: env.clone(),
        };
        assert_eq!(QueueEntry::decode(&e.encode()).unwrap(), e);
        let e = QueueEntry::Inline(env.clone());
        assert_eq!(QueueEntry::decode(&e.encode()).unwrap(), e);
        assert!(QueueEntry::decode(&[2, 0]).is_err());
        let m = MailEvent::OnlineOnly(env);
        assert_eq!(MailEvent::decode(&m.encode()).unwrap(), m);
        let c = ListenClaim {
            instance: [9; 16],
            stream: 3,
        };
        assert_eq!(ListenClaim::decode(&c.encode()).unwrap(), c);
        let r = IdempotencyRecord {
            pending: false,
            expires_at_ms: 5,
            server_timestamp_ms: 4,
            queued: vec![(1, 2), (3, 4)],
        };
        assert_eq!(IdempotencyRecord::decode(&r.encode()).unwrap(), r);
        let p = IdempotencyRecord {
            pending: true,
            queued: vec![],
            ..r
        };
        assert_eq!(IdempotencyRecord::decode(&p.encode()).unwrap(), p);
        // v1 records (before reservations) read as completed.
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&p.encode()[2..]);
        assert!(!IdempotencyRecord::decode(&v1).unwrap().pending);
        assert!(IdempotencyRecord::decode(&[2, 7]).is_err());
        let k = outbox_key(b"gg", 3, b'c');
        assert_eq!(
            outbox_progress_key(&k),
            [b"msg/v1/obp/6767/".as_slice(), &3u64.to_be_bytes(), b"/c"].concat()
        );
        assert_eq!(timestamp_ms(Some(&timestamp(1_234_567))), 1_234_567);
    }
}
