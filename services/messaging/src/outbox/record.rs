//! The outbox record format: one pending fan-out, and how far it got.

use guardyn_proto::guardyn::messaging::v1::MlsMessageKind;
use sha2::{Digest as _, Sha256};

use crate::store::{self, CorruptRecord, Reader, put_bytes};

/// v1 (commits and Welcomes only) lacks the trailing urgent flag and tag.
const V1: u8 = 1;
const VERSION: u8 = 2;

/// What the outbox record delivers. The key's kind byte orders an epoch's records in a sweep:
/// application messages (`A`) and proposals (`P`) sort before the commit (`c`) that ends the
/// epoch, and its Welcome (`w`) last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

    fn from_byte(b: u8) -> Result<Self, CorruptRecord> {
        Ok(match b {
            b'A' => Self::Application,
            b'P' => Self::Proposal,
            b'c' => Self::Commit,
            b'w' => Self::Welcome,
            _ => return Err(CorruptRecord("outbox record kind")),
        })
    }
}

/// One pending fan-out. Format v2: `[2][kind u8][epoch u64][accepted_ms u64][sender device
/// u32][sender account bytes][group id bytes][MLS message bytes][recipient count u32]`, per
/// recipient `[device u32][account bytes]`, then `[urgent u8][tag bytes]` (bytes = u32 length
/// + content). v1 ends after the recipients (tag empty, urgent = Welcome).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct FanOut {
    pub kind: Kind,
    pub group_id: Vec<u8>,
    /// The epoch the message was sent in (for a commit, the group moved to `epoch + 1`).
    pub epoch: u64,
    pub accepted_ms: u64,
    pub sender: (String, u32),
    pub message: Vec<u8>,
    pub recipients: Vec<(String, u32)>,
    pub urgent: bool,
    /// Tells apart the records of one kind in one epoch (proposals, application messages);
    /// empty for commits and Welcomes, which are unique per epoch.
    pub tag: Vec<u8>,
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
            k.extend_from_slice(store::hex(&self.tag).as_bytes());
        }
        k
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
        out.push(u8::from(self.urgent));
        put_bytes(&mut out, &self.tag);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        let mut r = Reader(bytes);
        let version = r.u8()?;
        if version != V1 && version != VERSION {
            return Err(CorruptRecord("outbox record version"));
        }
        let kind = Kind::from_byte(r.u8()?)?;
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
        let (urgent, tag) = if version == V1 {
            (kind == Kind::Welcome, Vec::new())
        } else {
            (r.u8()? != 0, r.bytes()?.to_vec())
        };
        Ok(Self {
            kind,
            group_id,
            epoch,
            accepted_ms,
            sender: (account, device),
            message,
            recipients,
            urgent,
            tag,
        })
    }

    /// The delivered envelope's MLS kind and epoch.
    pub(crate) fn envelope_kind(&self) -> (MlsMessageKind, Option<u64>) {
        match self.kind {
            Kind::Application => (MlsMessageKind::Application, Some(self.epoch)),
            Kind::Proposal => (MlsMessageKind::Proposal, Some(self.epoch)),
            Kind::Commit => (MlsMessageKind::Commit, Some(self.epoch)),
            Kind::Welcome => (MlsMessageKind::Welcome, None),
        }
    }
}

fn utf8(b: &[u8]) -> Result<String, CorruptRecord> {
    String::from_utf8(b.to_vec()).map_err(|_| CorruptRecord("outbox account"))
}

/// How far a fan-out got: `[1][group log seq u64][recipients done u32]`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    pub group_seq: u64,
    pub done: usize,
}

const PROGRESS_VERSION: u8 = 1;

impl Progress {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![PROGRESS_VERSION];
        out.extend_from_slice(&self.group_seq.to_be_bytes());
        let done = u32::try_from(self.done).unwrap_or(u32::MAX);
        out.extend_from_slice(&done.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        let mut r = Reader(bytes);
        if r.u8()? != PROGRESS_VERSION {
            return Err(CorruptRecord("outbox progress version"));
        }
        Ok(Self {
            group_seq: r.u64()?,
            done: r.u32()? as usize,
        })
    }
}

/// Test support: outbox records exactly as the service writes them, so that a test can
/// reproduce "the process died after the transaction that accepted the message".
#[doc(hidden)]
pub mod testing {
    use super::{FanOut, Kind, application_tag};
    use crate::store;

    fn record(r: &FanOut) -> (Vec<u8>, Vec<u8>) {
        (r.key(), r.encode())
    }

    /// The record written together with an accepted commit.
    pub fn commit_record(
        group_id: &[u8],
        epoch: u64,
        sender: (&str, u32),
        commit: &[u8],
        recipients: &[(String, u32)],
        accepted_ms: u64,
    ) -> (Vec<u8>, Vec<u8>) {
        record(&FanOut {
            kind: Kind::Commit,
            group_id: group_id.to_vec(),
            epoch,
            accepted_ms,
            sender: (sender.0.to_owned(), sender.1),
            message: commit.to_vec(),
            recipients: recipients.to_vec(),
            urgent: false,
            tag: Vec::new(),
        })
    }

    /// The record written together with a relayed proposal (SendProposal, LeaveGroup).
    pub fn proposal_record(
        group_id: &[u8],
        epoch: u64,
        sender: (&str, u32),
        proposal: &[u8],
        recipients: &[(String, u32)],
        accepted_ms: u64,
    ) -> (Vec<u8>, Vec<u8>) {
        record(&FanOut {
            kind: Kind::Proposal,
            group_id: group_id.to_vec(),
            epoch,
            accepted_ms,
            sender: (sender.0.to_owned(), sender.1),
            message: proposal.to_vec(),
            recipients: recipients.to_vec(),
            urgent: false,
            tag: crate::groups::proposal_ref(proposal).unwrap_or_default(),
        })
    }

    /// The record written together with an accepted SendGroupMessage.
    #[allow(clippy::too_many_arguments)] // The request's fields, each a plain value.
    pub fn group_message_record(
        group_id: &[u8],
        epoch: u64,
        sender: (&str, u32),
        client_message_id: &str,
        message: &[u8],
        urgent: bool,
        recipients: &[(String, u32)],
        accepted_ms: u64,
    ) -> (Vec<u8>, Vec<u8>) {
        let idem_key =
            store::group_idempotency_key(sender.0, sender.1, group_id, client_message_id);
        record(&FanOut {
            kind: Kind::Application,
            group_id: group_id.to_vec(),
            epoch,
            accepted_ms,
            sender: (sender.0.to_owned(), sender.1),
            message: message.to_vec(),
            recipients: recipients.to_vec(),
            urgent,
            tag: application_tag(&idem_key, accepted_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn records_round_trip_redact_and_sort_an_epoch_before_its_commit() {
        let r = FanOut {
            kind: Kind::Application,
            group_id: vec![7; 16],
            epoch: 4,
            accepted_ms: 99,
            sender: ("acct".into(), 2),
            message: vec![1, 2, 3],
            recipients: vec![("b".into(), 1), ("c".into(), 9)],
            urgent: true,
            tag: vec![5; 16],
        };
        assert_eq!(FanOut::decode(&r.encode()).unwrap(), r);
        assert!(FanOut::decode(&[3]).is_err());
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
        let mut v1 = welcome.encode();
        v1.truncate(v1.len() - 5);
        v1[0] = V1;
        assert_eq!(FanOut::decode(&v1).unwrap(), welcome);
        let p = Progress {
            group_seq: 5,
            done: 64,
        };
        assert_eq!(Progress::decode(&p.encode()).unwrap(), p);
    }
}
