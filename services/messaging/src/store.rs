//! Key layout and the versioned records of everything messaging persists. Every value is a
//! [`Record`] (`[version] ++ postcard`, the one encoding of all services).
//!
//! Layout (all integers fixed-width big-endian; accounts in canonical UUID form, group ids in
//! lowercase hex):
//! - AppendLog partition `msg/v1/q/<account>/<device u32>`: one device's queue of
//!   [`QueueEntry`] (an envelope inline, or a reference to a stored group message).
//! - KV `msg/v1/qu/<account>/<device u32>`: that queue's quota accounting ([`QueueUsage`]).
//! - AppendLog partition `msg/v1/g/<group>`: a group's MLS messages, each stored once
//!   ([`GroupMessage`]) and read by every member device from its own cursor.
//! - KV `msg/v1/gm/<account>/<device u32>/<group>`: that device's cursor in the group log
//!   ([`Membership`]).
//! - KV `msg/v1/group/<group>`: the group record ([`crate::groups::state::GroupState`]): epoch,
//!   member leaves, and where its bulky state is.
//! - KV `msg/v1/gs/<group>/<generation u64>/<chunk u32>`: that bulky state (the latest
//!   GroupInfo and the verified public MLS state with its queued proposals), when it is too
//!   large for the record ([`crate::groups::bulk`]).
//! - KV `msg/v1/gt/<group>/<epoch u64>/<chunk u32>`: the ratchet tree of an epoch that added
//!   members, for joiners from its Welcome ([`crate::groups::trees`]).
//! - KV `msg/v1/idem/<account>/<device u32>/<client message id>`: [`IdempotencyRecord`]
//!   (SendGroupMessage's id is `g/<group>/<client message id>`).
//! - KV `msg/v1/ob/<group>/<epoch u64>/<kind u8>[/<hex tag>]`: a pending group fan-out
//!   ([`crate::outbox`]); `msg/v1/obp/<same suffix>` its progress.

use guardyn_common::events::messaging::Envelope;
use guardyn_common::{ACCOUNT_ID_LEN, AccountId, DeviceId, GroupId};
use guardyn_storage::record::{Record, postcard_body};
use guardyn_storage::{StorageError, StorageResult};
use serde::{Deserialize, Serialize};

/// `<prefix><account>/`, with room for the device, ids and names the callers append: these
/// keys are built several times per message.
fn account_key(prefix: &str, account: AccountId) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + ACCOUNT_ID_LEN + 96);
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(account.encode(&mut [0; ACCOUNT_ID_LEN]).as_bytes());
    k.push(b'/');
    k
}

pub(crate) fn queue_partition(account: AccountId, device: DeviceId) -> Vec<u8> {
    let mut k = account_key("msg/v1/q/", account);
    k.extend_from_slice(&device.get().to_be_bytes());
    k
}

/// The quota accounting of a device queue ([`QueueUsage`]).
pub(crate) fn usage_key(account: AccountId, device: DeviceId) -> Vec<u8> {
    let mut k = account_key("msg/v1/qu/", account);
    k.extend_from_slice(&device.get().to_be_bytes());
    k
}

pub(crate) fn group_log(group: &GroupId) -> Vec<u8> {
    format!("msg/v1/g/{}", group.hex()).into_bytes()
}

pub(crate) fn group_key(group: &GroupId) -> Vec<u8> {
    format!("msg/v1/group/{}", group.hex()).into_bytes()
}

/// Prefix of one generation of a group's bulky state ([`crate::groups::bulk`]).
pub(crate) fn group_bulk_prefix(group: &GroupId, generation: u64) -> Vec<u8> {
    let mut k = format!("msg/v1/gs/{}/", group.hex()).into_bytes();
    k.extend_from_slice(&generation.to_be_bytes());
    k
}

/// Prefix of the ratchet tree kept for a Welcome into `epoch` ([`crate::groups::trees`]).
pub(crate) fn welcome_tree_prefix(group: &GroupId, epoch: u64) -> Vec<u8> {
    let mut k = format!("msg/v1/gt/{}/", group.hex()).into_bytes();
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

/// One chunk under a [`group_bulk_prefix`] or [`welcome_tree_prefix`].
pub(crate) fn chunk_key(mut prefix: Vec<u8>, chunk: u32) -> Vec<u8> {
    prefix.extend_from_slice(&chunk.to_be_bytes());
    prefix
}

/// Prefix of every idempotency record (the sweeper walks it).
pub(crate) const IDEMPOTENCY_ROOT: &[u8] = b"msg/v1/idem/";

pub(crate) fn idempotency_prefix(account: AccountId) -> Vec<u8> {
    account_key("msg/v1/idem/", account)
}

pub(crate) fn idempotency_key(
    account: AccountId,
    device: DeviceId,
    client_message_id: &str,
) -> Vec<u8> {
    let mut k = idempotency_prefix(account);
    k.extend_from_slice(&device.get().to_be_bytes());
    k.push(b'/');
    k.extend_from_slice(client_message_id.as_bytes());
    k
}

/// The idempotency key of a SendGroupMessage (client message ids are per group).
pub(crate) fn group_idempotency_key(
    account: AccountId,
    device: DeviceId,
    group: &GroupId,
    client_message_id: &str,
) -> Vec<u8> {
    let id = format!("g/{}/{client_message_id}", group.hex());
    idempotency_key(account, device, &id)
}

pub(crate) const OUTBOX_PREFIX: &[u8] = b"msg/v1/ob/";
const OUTBOX_PROGRESS_PREFIX: &[u8] = b"msg/v1/obp/";

pub(crate) fn outbox_key(group: &GroupId, epoch: u64, kind: u8) -> Vec<u8> {
    let mut k = OUTBOX_PREFIX.to_vec();
    k.extend_from_slice(group.hex().as_bytes());
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

/// One queue entry.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum QueueEntry {
    Inline(Envelope),
    /// The content lives in the group log at `seq` (the envelope's content is empty); `len` is
    /// its length, what the entry is charged against the queue's byte quota.
    GroupRef {
        seq: u64,
        envelope: Envelope,
        len: u64,
    },
}

/// v2 of [`QueueEntry`]: a group reference without the referenced length.
#[derive(Deserialize)]
enum QueueEntryV2 {
    Inline(Envelope),
    GroupRef { seq: u64, envelope: Envelope },
}

impl Record for QueueEntry {
    // v1 held the wire envelope; no deployment has data in it.
    const VERSION: u8 = 3;

    /// v2 group references did not record the referenced length: they are charged 0 bytes
    /// (they predate quotas, and expire with the retention time like every entry).
    fn decode_version(version: u8, body: &[u8]) -> StorageResult<Self> {
        match version {
            3 => postcard_body(body),
            2 => Ok(match postcard_body::<QueueEntryV2>(body)? {
                QueueEntryV2::Inline(e) => Self::Inline(e),
                QueueEntryV2::GroupRef { seq, envelope } => Self::GroupRef {
                    seq,
                    envelope,
                    len: 0,
                },
            }),
            v => Err(StorageError::Corrupt(format!("queue entry version {v}"))),
        }
    }
}

impl QueueEntry {
    /// What the entry counts against its queue's quotas: (sending account, ciphertext bytes,
    /// accept time). `None` for an entry without a sender (none is stored today).
    pub(crate) fn charge(&self) -> Option<(AccountId, u64, u64)> {
        let (env, bytes) = match self {
            Self::Inline(e) => (e, e.content.len() as u64),
            Self::GroupRef { envelope, len, .. } => (envelope, *len),
        };
        Some((env.sender?.0, bytes, env.server_timestamp_ms))
    }
}

/// What one device's queue holds, per sending account (KV `msg/v1/qu/<account>/<device
/// u32>`): the queue's quota accounting, persisted beside it ([`crate::quota`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct QueueUsage {
    pub senders: std::collections::BTreeMap<AccountId, Share>,
}

/// One sender's part of a device queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Share {
    pub count: u64,
    pub bytes: u64,
    /// Accept time of its newest entry: when that expired, every entry of the share did.
    pub newest_ms: u64,
}

impl Record for QueueUsage {
    const VERSION: u8 = 1;
}

/// A group message stored once in the group log. Members read one with `audience` by cursor
/// ([`Membership`]); one without (a Welcome, or a message stored before cursors) reaches
/// devices only through their queues' [`QueueEntry::GroupRef`]s.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct GroupMessage {
    #[serde(with = "serde_bytes")]
    pub content: Vec<u8>,
    pub audience: Option<Audience>,
}

/// Who reads a group-log message by cursor: every member whose [`Membership`] covers its epoch,
/// except the sender and `skip`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Audience {
    /// The delivered envelope, content left empty (it is [`GroupMessage::content`]).
    pub envelope: Envelope,
    /// Members that left the group when an application message was sent (they only get the
    /// group's handshake messages until a commit removes them).
    pub skip: Vec<(AccountId, DeviceId)>,
}

impl Record for GroupMessage {
    // v1 was the raw message behind the version byte; no deployment has data in it.
    const VERSION: u8 = 3;

    /// v2 held the message only: it was delivered by references.
    fn decode_version(version: u8, body: &[u8]) -> StorageResult<Self> {
        match version {
            3 => postcard_body(body),
            2 => Ok(Self {
                content: postcard_body(body)?,
                audience: None,
            }),
            v => Err(StorageError::Corrupt(format!("group message version {v}"))),
        }
    }
}

/// Prefix of a device's group memberships.
pub(crate) fn membership_prefix(account: AccountId, device: DeviceId) -> Vec<u8> {
    let mut k = account_key("msg/v1/gm/", account);
    k.extend_from_slice(&device.get().to_be_bytes());
    k.push(b'/');
    k
}

pub(crate) fn membership_key(account: AccountId, device: DeviceId, group: &GroupId) -> Vec<u8> {
    let mut k = membership_prefix(account, device);
    k.extend_from_slice(group.hex().as_bytes());
    k
}

/// One device's place in one group's log: which entries are for it and which it acknowledged.
/// Written when the device joins (after its Welcome is queued, so the Welcome comes first),
/// when a commit removes it, and by its acknowledgements; never per group message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Membership {
    pub group: GroupId,
    /// Entries before this sequence are not for the device (a lower bound of its first one).
    pub from_seq: u64,
    /// Entries of earlier epochs are not for it: it joined in this one.
    pub join_epoch: u64,
    /// A commit of this epoch removed it: entries of later epochs are not for it.
    pub last_epoch: Option<u64>,
    /// Every entry below this sequence is acknowledged or not for the device.
    pub acked_below: u64,
    /// Acknowledged entries at or above `acked_below`, ascending.
    pub acked: Vec<u64>,
}

impl Record for Membership {
    const VERSION: u8 = 1;
}

impl Membership {
    pub(crate) fn new(group: GroupId, from_seq: u64, join_epoch: u64) -> Self {
        Self {
            group,
            from_seq,
            join_epoch,
            last_epoch: None,
            acked_below: from_seq,
            acked: Vec::new(),
        }
    }

    /// Whether the log entry is for device `me`.
    pub(crate) fn wants(&self, seq: u64, a: &Audience, me: (AccountId, DeviceId)) -> bool {
        let epoch = a.envelope.epoch.unwrap_or_default();
        seq >= self.from_seq
            && epoch >= self.join_epoch
            && self.last_epoch.is_none_or(|last| epoch <= last)
            && a.envelope.sender != Some(me)
            && !a.skip.contains(&me)
    }

    pub(crate) fn is_acked(&self, seq: u64) -> bool {
        seq < self.acked_below || self.acked.binary_search(&seq).is_ok()
    }

    /// The first sequence that may still need delivering.
    pub(crate) fn start(&self) -> u64 {
        self.from_seq.max(self.acked_below).max(1)
    }
}

/// What an accepted SendMessage / SendGroupMessage answered, kept for idempotent replays, or
/// (`pending`) a reservation of the client message id by a send still in progress. For a
/// reservation `expires_at_ms` is the end of its lease.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdempotencyRecord {
    pub pending: bool,
    pub expires_at_ms: u64,
    pub server_timestamp_ms: u64,
    /// (destination device, server id).
    pub queued: Vec<(DeviceId, u64)>,
}

impl Record for IdempotencyRecord {
    const VERSION: u8 = 3;

    /// v1 and v2 were hand-written: `[2][pending u8]` (v2 only), `[expires_at_ms
    /// u64][server_timestamp_ms u64]`, then per queued envelope `[device u32][server id u64]`.
    /// A v1 record (before reservations) is a completed one.
    fn decode_version(version: u8, body: &[u8]) -> StorageResult<Self> {
        let bad = || StorageError::Corrupt("idempotency record".into());
        let (pending, rest) = match (version, body) {
            (3, _) => return postcard_body(body),
            (1, rest) => (false, rest),
            (2, [p @ (0 | 1), rest @ ..]) => (*p == 1, rest),
            _ => return Err(bad()),
        };
        if rest.len() < 16 || (rest.len() - 16) % 12 != 0 {
            return Err(bad());
        }
        let u64_at = |i: usize| -> StorageResult<u64> {
            let b: [u8; 8] = rest
                .get(i..i + 8)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(bad)?;
            Ok(u64::from_be_bytes(b))
        };
        let mut queued = Vec::new();
        let mut i = 16;
        while i < rest.len() {
            let d: [u8; 4] = rest
                .get(i..i + 4)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(bad)?;
            let device = DeviceId::new(u32::from_be_bytes(d)).ok_or_else(bad)?;
            queued.push((device, u64_at(i + 4)?));
            i += 12;
        }
        Ok(Self {
            pending,
            expires_at_ms: u64_at(0)?,
            server_timestamp_ms: u64_at(8)?,
            queued,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use guardyn_common::events::messaging::EnvelopeKind;
    use guardyn_storage::record::{decode, encode};

    use super::*;

    #[test]
    fn byte_fields_keep_the_layout_of_records_written_as_sequences() {
        // Records written before byte fields were (de)serialized as one slice held them as a
        // sequence of u8; postcard lays out both as a varint length and the raw bytes.
        #[derive(Serialize, Deserialize)]
        struct Before {
            content: Vec<u8>,
            audience: Option<Audience>,
        }
        impl Record for Before {
            const VERSION: u8 = GroupMessage::VERSION;
        }
        let content: Vec<u8> = (0..=255).chain(0..=255).collect();
        let before = encode(&Before {
            content: content.clone(),
            audience: None,
        });
        let now = GroupMessage {
            content,
            audience: None,
        };
        assert_eq!(encode(&now), before);
        assert_eq!(decode::<GroupMessage>(&before).unwrap(), now);
    }

    #[test]
    fn records_round_trip_and_reject_unknown_versions() {
        let env = Envelope {
            server_id: 0,
            server_timestamp_ms: 5,
            sender: None,
            kind: EnvelopeKind::Ciphertext,
            content: vec![1, 2, 3],
            urgent: false,
            group: None,
            epoch: None,
        };
        let e = QueueEntry::GroupRef {
            seq: 7,
            envelope: env.clone(),
            len: 9,
        };
        assert_eq!(decode::<QueueEntry>(&encode(&e)).unwrap(), e);
        // A v2 group reference (before quotas) reads as charged 0 bytes.
        #[derive(Serialize, Deserialize)]
        enum V2 {
            #[allow(dead_code)] // Keeps GroupRef's variant index.
            Inline(Envelope),
            GroupRef {
                seq: u64,
                envelope: Envelope,
            },
        }
        impl Record for V2 {
            const VERSION: u8 = 2;
        }
        let v2 = encode(&V2::GroupRef {
            seq: 7,
            envelope: env.clone(),
        });
        match decode::<QueueEntry>(&v2).unwrap() {
            QueueEntry::GroupRef { seq: 7, len: 0, .. } => {}
            other => panic!("{other:?}"),
        }
        let mut u = QueueUsage::default();
        u.senders.insert(
            AccountId::from_uuid(uuid::Uuid::from_u128(1)),
            Share {
                count: 2,
                bytes: 30,
                newest_ms: 4,
            },
        );
        assert_eq!(decode::<QueueUsage>(&encode(&u)).unwrap(), u);
        let e = QueueEntry::Inline(env);
        assert_eq!(decode::<QueueEntry>(&encode(&e)).unwrap(), e);
        assert!(decode::<QueueEntry>(&[9, 0]).is_err());
        let d = |n| DeviceId::new(n).unwrap();
        let r = IdempotencyRecord {
            pending: false,
            expires_at_ms: 5,
            server_timestamp_ms: 4,
            queued: vec![(d(1), 2), (d(3), 4)],
        };
        assert_eq!(decode::<IdempotencyRecord>(&encode(&r)).unwrap(), r);
        let p = IdempotencyRecord {
            pending: true,
            queued: vec![],
            ..r
        };
        assert_eq!(decode::<IdempotencyRecord>(&encode(&p)).unwrap(), p);
        // v2 (hand-written, with the pending byte) and v1 (before reservations: completed).
        let mut v2 = vec![2u8, 1];
        v2.extend_from_slice(&5u64.to_be_bytes());
        v2.extend_from_slice(&4u64.to_be_bytes());
        v2.extend_from_slice(&1u32.to_be_bytes());
        v2.extend_from_slice(&2u64.to_be_bytes());
        let old = decode::<IdempotencyRecord>(&v2).unwrap();
        assert!(old.pending);
        assert_eq!(old.queued, vec![(d(1), 2)]);
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&v2[2..]);
        assert!(!decode::<IdempotencyRecord>(&v1).unwrap().pending);
        assert!(decode::<IdempotencyRecord>(&[2, 7]).is_err());
        let g = GroupId::new(b"gggggggggggggggg").unwrap();
        let k = outbox_key(&g, 3, b'c');
        assert_eq!(
            outbox_progress_key(&k),
            [
                format!("msg/v1/obp/{}/", "67".repeat(16)).as_bytes(),
                &3u64.to_be_bytes(),
                b"/c"
            ]
            .concat()
        );
    }
}
