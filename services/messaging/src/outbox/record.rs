//! The outbox record format: one pending fan-out, and how far it got.

use guardyn_common::events::messaging::MlsKind;
use guardyn_common::{AccountId, DeviceId, GroupId};
use guardyn_storage::record::{Record, postcard_body};
use guardyn_storage::{StorageError, StorageResult};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::store;

/// v1 (commits and Welcomes only) lacks the trailing urgent flag and tag; v1 and v2 were
/// hand-written (see [`legacy`]).
const V1: u8 = 1;
const V2: u8 = 2;

/// What the outbox record delivers. The key's kind byte orders an epoch's records in a sweep:
/// application messages (`A`) and proposals (`P`) sort before the commit (`c`) that ends the
/// epoch, and its Welcome (`w`) last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Application,
    Proposal,
    Commit,
    Welcome,
}

impl Kind {
    pub(crate) fn byte(self) -> u8 {
        match self {
            Self::Application => b'A',
            Self::Proposal => b'P',
            Self::Commit => b'c',
            Self::Welcome => b'w',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            b'A' => Self::Application,
            b'P' => Self::Proposal,
            b'c' => Self::Commit,
            b'w' => Self::Welcome,
            _ => return None,
        })
    }
}

/// One pending fan-out.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FanOut {
    pub kind: Kind,
    pub group_id: GroupId,
    /// The epoch the message was sent in (for a commit, the group moved to `epoch + 1`).
    pub epoch: u64,
    pub accepted_ms: u64,
    pub sender: (AccountId, DeviceId),
    #[serde(with = "serde_bytes")]
    pub message: Vec<u8>,
    /// Devices whose queues get a reference: a Welcome's new members. Empty for the other
    /// kinds, which members read from the group log by cursor; records written before cursors
    /// list every recipient here and are fanned out by reference.
    pub recipients: Vec<(AccountId, DeviceId)>,
    pub urgent: bool,
    /// Tells apart the records of one kind in one epoch (proposals, application messages);
    /// empty for commits and Welcomes, which are unique per epoch.
    #[serde(with = "serde_bytes")]
    pub tag: Vec<u8>,
    /// Members that do not read the message from the log besides the sender (see
    /// [`crate::store::Audience::skip`]).
    pub skip: Vec<(AccountId, DeviceId)>,
    /// Welcome: where the new members' cursors start (the group log's end before the commit).
    pub log_from: u64,
}

/// Version 3 of [`FanOut`], before cursors.
#[derive(Deserialize)]
struct FanOutV3 {
    kind: Kind,
    group_id: GroupId,
    epoch: u64,
    accepted_ms: u64,
    sender: (AccountId, DeviceId),
    #[serde(with = "serde_bytes")]
    message: Vec<u8>,
    recipients: Vec<(AccountId, DeviceId)>,
    urgent: bool,
    #[serde(with = "serde_bytes")]
    tag: Vec<u8>,
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

/// The tag of an application message's record: a digest of its idempotency key and accept
/// time, so two sends never share a record.
pub(crate) fn application_tag(idempotency_key: &[u8], accepted_ms: u64) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(idempotency_key);
    h.update(accepted_ms.to_be_bytes());
    h.finalize().get(..16).unwrap_or_default().to_vec()
}

impl FanOut {
    pub(crate) fn key(&self) -> Vec<u8> {
        let mut k = store::outbox_key(&self.group_id, self.epoch, self.kind.byte());
        if !self.tag.is_empty() {
            k.push(b'/');
            k.extend_from_slice(guardyn_common::ids::hex(&self.tag).as_bytes());
        }
        k
    }

    /// The delivered envelope's MLS kind and epoch.
    pub(crate) fn envelope_kind(&self) -> (MlsKind, Option<u64>) {
        match self.kind {
            Kind::Application => (MlsKind::Application, Some(self.epoch)),
            Kind::Proposal => (MlsKind::Proposal, Some(self.epoch)),
            Kind::Commit => (MlsKind::Commit, Some(self.epoch)),
            // The epoch the Welcome is for (its commit's new epoch): its joiner fetches that
            // epoch's ratchet tree (crate::groups::trees).
            Kind::Welcome => (MlsKind::Welcome, self.epoch.checked_add(1)),
        }
    }
}

impl Record for FanOut {
    const VERSION: u8 = 4;

    fn decode_version(version: u8, body: &[u8]) -> StorageResult<Self> {
        match version {
            Self::VERSION => postcard_body(body),
            3 => {
                let v3: FanOutV3 = postcard_body(body)?;
                Ok(Self {
                    kind: v3.kind,
                    group_id: v3.group_id,
                    epoch: v3.epoch,
                    accepted_ms: v3.accepted_ms,
                    sender: v3.sender,
                    message: v3.message,
                    recipients: v3.recipients,
                    urgent: v3.urgent,
                    tag: v3.tag,
                    skip: Vec::new(),
                    log_from: 0,
                })
            }
            V1 | V2 => legacy::fan_out(version, body)
                .ok_or_else(|| StorageError::Corrupt("outbox record".into())),
            v => Err(StorageError::Corrupt(format!("outbox record version {v}"))),
        }
    }
}

/// The hand-written v1/v2 format, still read so records left by an older process are
/// delivered: `[kind u8][epoch u64][accepted_ms u64][sender device u32][sender account
/// bytes][group id bytes][MLS message bytes][recipient count u32]`, per recipient `[device
/// u32][account bytes]`, then (v2) `[urgent u8][tag bytes]` (bytes = u32 length + content).
mod legacy {
    use super::*;

    struct Reader<'a>(&'a [u8]);

    impl Reader<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
            self.0 = tail;
            Some(head)
        }
        fn u8(&mut self) -> Option<u8> {
            self.take(1)?.first().copied()
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
        }
        fn bytes(&mut self) -> Option<&[u8]> {
            let n = self.u32()? as usize;
            self.take(n)
        }
        fn member(&mut self, device: u32) -> Option<(AccountId, DeviceId)> {
            let account = AccountId::parse(std::str::from_utf8(self.bytes()?).ok()?)?;
            Some((account, DeviceId::new(device)?))
        }
    }

    pub(super) fn fan_out(version: u8, body: &[u8]) -> Option<FanOut> {
        let mut r = Reader(body);
        let kind = Kind::from_byte(r.u8()?)?;
        let epoch = r.u64()?;
        let accepted_ms = r.u64()?;
        let device = r.u32()?;
        let sender = r.member(device)?;
        let group_id = GroupId::new(r.bytes()?)?;
        let message = r.bytes()?.to_vec();
        let n = r.u32()? as usize;
        let mut recipients = Vec::with_capacity(n.min(10_000));
        for _ in 0..n {
            let d = r.u32()?;
            recipients.push(r.member(d)?);
        }
        let (urgent, tag) = if version == V1 {
            (kind == Kind::Welcome, Vec::new())
        } else {
            (r.u8()? != 0, r.bytes()?.to_vec())
        };
        Some(FanOut {
            kind,
            group_id,
            epoch,
            accepted_ms,
            sender,
            message,
            recipients,
            urgent,
            tag,
            skip: Vec::new(),
            log_from: 0,
        })
    }

    /// Test support: the v1 encoding of a commit or Welcome record.
    #[cfg(test)]
    pub(super) fn encode_v1(r: &FanOut) -> Vec<u8> {
        fn put(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(&u32::try_from(b.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(b);
        }
        let mut out = vec![V1, r.kind.byte()];
        out.extend_from_slice(&r.epoch.to_be_bytes());
        out.extend_from_slice(&r.accepted_ms.to_be_bytes());
        out.extend_from_slice(&r.sender.1.get().to_be_bytes());
        put(&mut out, r.sender.0.to_string().as_bytes());
        put(&mut out, r.group_id.as_bytes());
        put(&mut out, &r.message);
        out.extend_from_slice(&u32::try_from(r.recipients.len()).unwrap_or(0).to_be_bytes());
        for (a, d) in &r.recipients {
            out.extend_from_slice(&d.get().to_be_bytes());
            put(&mut out, a.to_string().as_bytes());
        }
        out
    }
}

/// How far a fan-out got.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Progress {
    pub group_seq: u64,
    pub done: usize,
}

impl Record for Progress {
    // v1 was hand-written; a lost progress record only means a resumed fan-out queues again.
    const VERSION: u8 = 2;
}

/// Test support: outbox records exactly as the service writes them, so that a test can
/// reproduce "the process died after the transaction that accepted the message".
#[doc(hidden)]
pub mod testing {
    use guardyn_common::{AccountId, DeviceId, GroupId};
    use guardyn_storage::record::encode;

    use super::{FanOut, Kind, application_tag};
    use crate::store;

    fn record(r: &FanOut) -> (Vec<u8>, Vec<u8>) {
        (r.key(), encode(r))
    }

    /// `record` as a process before group-log cursors wrote it: listing its recipients, whose
    /// queues get a reference.
    pub fn before_cursors(
        record: &(Vec<u8>, Vec<u8>),
        recipients: &[(AccountId, DeviceId)],
    ) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut r = guardyn_storage::record::decode::<FanOut>(&record.1).ok()?;
        r.recipients = recipients.to_vec();
        Some((record.0.clone(), encode(&r)))
    }

    /// The record written together with an accepted commit (members read it by cursor).
    pub fn commit_record(
        group_id: &GroupId,
        epoch: u64,
        sender: (AccountId, DeviceId),
        commit: &[u8],
        accepted_ms: u64,
    ) -> (Vec<u8>, Vec<u8>) {
        record(&FanOut {
            kind: Kind::Commit,
            group_id: group_id.clone(),
            epoch,
            accepted_ms,
            sender,
            message: commit.to_vec(),
            recipients: Vec::new(),
            urgent: false,
            tag: Vec::new(),
            skip: Vec::new(),
            log_from: 0,
        })
    }

    /// The record written together with a relayed proposal (SendProposal, LeaveGroup).
    pub fn proposal_record(
        group_id: &GroupId,
        epoch: u64,
        sender: (AccountId, DeviceId),
        proposal: &[u8],
        accepted_ms: u64,
    ) -> (Vec<u8>, Vec<u8>) {
        record(&FanOut {
            kind: Kind::Proposal,
            group_id: group_id.clone(),
            epoch,
            accepted_ms,
            sender,
            message: proposal.to_vec(),
            recipients: Vec::new(),
            urgent: false,
            tag: crate::groups::mls::proposal_ref(proposal).unwrap_or_default(),
            skip: Vec::new(),
            log_from: 0,
        })
    }

    /// The record written together with an accepted SendGroupMessage.
    #[allow(clippy::too_many_arguments)] // The request's fields, each a plain value.
    pub fn group_message_record(
        group_id: &GroupId,
        epoch: u64,
        sender: (AccountId, DeviceId),
        client_message_id: &str,
        message: &[u8],
        urgent: bool,
        accepted_ms: u64,
    ) -> (Vec<u8>, Vec<u8>) {
        let idem_key =
            store::group_idempotency_key(sender.0, sender.1, group_id, client_message_id);
        record(&FanOut {
            kind: Kind::Application,
            group_id: group_id.clone(),
            epoch,
            accepted_ms,
            sender,
            message: message.to_vec(),
            recipients: Vec::new(),
            urgent,
            tag: application_tag(&idem_key, accepted_ms),
            skip: Vec::new(),
            log_from: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use guardyn_storage::record::{decode, encode};

    use super::*;

    fn m(n: u128, d: u32) -> (AccountId, DeviceId) {
        (
            AccountId::from_uuid(uuid::Uuid::from_u128(n)),
            DeviceId::new(d).unwrap(),
        )
    }

    #[test]
    fn records_round_trip_redact_and_sort_an_epoch_before_its_commit() {
        let r = FanOut {
            kind: Kind::Application,
            group_id: GroupId::new(&[7; 16]).unwrap(),
            epoch: 4,
            accepted_ms: 99,
            sender: m(1, 2),
            message: vec![1, 2, 3],
            recipients: vec![m(2, 1), m(3, 9)],
            urgent: true,
            tag: vec![5; 16],
            skip: Vec::new(),
            log_from: 0,
        };
        assert_eq!(decode::<FanOut>(&encode(&r)).unwrap(), r);
        assert!(decode::<FanOut>(&[3]).is_err());
        assert!(!format!("{r:?}").contains("[1, 2, 3]"));
        let commit = FanOut {
            kind: Kind::Commit,
            tag: Vec::new(),
            urgent: false,
            ..r.clone()
        };
        let proposal = FanOut {
            kind: Kind::Proposal,
            ..r.clone()
        };
        assert!(r.key() < commit.key() && proposal.key() < commit.key());
        // A v1 record (commits and Welcomes before v2) still decodes.
        let welcome = FanOut {
            kind: Kind::Welcome,
            urgent: true,
            ..commit
        };
        let v1 = legacy::encode_v1(&welcome);
        assert_eq!(decode::<FanOut>(&v1).unwrap(), welcome);
        let p = Progress {
            group_seq: 5,
            done: 64,
        };
        assert_eq!(decode::<Progress>(&encode(&p)).unwrap(), p);
    }
}
