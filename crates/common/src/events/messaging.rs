//! Messaging's subjects and payloads (`proto/guardyn/messaging/v1/events.proto`), and the
//! domain form of a delivered envelope, which an online-only mail event carries.

use std::fmt;

use guardyn_proto::guardyn::messaging::v1 as pb;
use serde::{Deserialize, Serialize};

use super::{DecodeError, Payload, bad};
use crate::ids::{AccountId, DeviceId, GroupId};
use crate::wire;

/// `messaging.mail.<account>.<device>`: the device's mail changed ([`MailEvent`]).
pub fn mail_subject(account: AccountId, device: DeviceId) -> String {
    format!("messaging.mail.{account}.{device}")
}

/// `messaging.listen.<account>.<device>`: a stream claim ([`ListenClaim`]).
pub fn listen_subject(account: AccountId, device: DeviceId) -> String {
    format!("messaging.listen.{account}.{device}")
}

/// Every stream claim.
pub const LISTEN_ALL: &str = "messaging.listen.>";

/// The device a [`listen_subject`] names.
pub fn parse_listen_subject(subject: &str) -> Option<(AccountId, DeviceId)> {
    parse_device_subject(subject.strip_prefix("messaging.listen.")?)
}

/// `messaging.unlisten.<account>.<device>`: the end of a claimed stream ([`ListenRelease`]).
pub fn unlisten_subject(account: AccountId, device: DeviceId) -> String {
    format!("messaging.unlisten.{account}.{device}")
}

/// Every stream release.
pub const UNLISTEN_ALL: &str = "messaging.unlisten.>";

/// The device an [`unlisten_subject`] names.
pub fn parse_unlisten_subject(subject: &str) -> Option<(AccountId, DeviceId)> {
    parse_device_subject(subject.strip_prefix("messaging.unlisten.")?)
}

/// `messaging.streams.<instance>`: an instance's re-announcement of its streams
/// ([`StreamAnnounce`]).
pub fn streams_subject(instance: [u8; 16]) -> String {
    format!("messaging.streams.{}", crate::ids::hex(&instance))
}

/// Every instance's stream announcements.
pub const STREAMS_ALL: &str = "messaging.streams.*";

/// `messaging.group.<group hex>`: the group's log grew ([`GroupMail`]).
pub fn group_subject(group: &GroupId) -> String {
    format!("messaging.group.{}", group.hex())
}

/// Every group's log events.
pub const GROUP_ALL: &str = "messaging.group.*";

fn parse_device_subject(rest: &str) -> Option<(AccountId, DeviceId)> {
    let (account, device) = rest.split_once('.')?;
    Some((
        AccountId::parse(account)?,
        DeviceId::new(device.parse().ok()?)?,
    ))
}

/// What kind of ciphertext an envelope holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvelopeKind {
    Ciphertext,
    PrekeyMessage,
    SenderKey,
    Plaintext,
    SealedSender,
    Mls(MlsKind),
}

/// What an MLS message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MlsKind {
    Application,
    Proposal,
    Commit,
    Welcome,
}

/// An envelope as a device receives it. `Debug` never shows the ciphertext.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Position in the receiving device's queue; 0 for online-only envelopes.
    pub server_id: u64,
    pub server_timestamp_ms: u64,
    /// The sender; `None` for sealed sender.
    pub sender: Option<(AccountId, DeviceId)>,
    pub kind: EnvelopeKind,
    #[serde(with = "serde_bytes")]
    pub content: Vec<u8>,
    pub urgent: bool,
    /// For MLS envelopes: the group.
    pub group: Option<GroupId>,
    /// For MLS envelopes except Welcomes: the epoch the message belongs to.
    pub epoch: Option<u64>,
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("server_id", &self.server_id)
            .field("sender", &self.sender)
            .field("kind", &self.kind)
            .field("content_len", &self.content.len())
            .field("group", &self.group)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl EnvelopeKind {
    /// The wire type and MLS kind.
    pub fn to_wire(self) -> (pb::EnvelopeType, pb::MlsMessageKind) {
        use pb::EnvelopeType as T;
        match self {
            Self::Ciphertext => (T::Ciphertext, pb::MlsMessageKind::Unspecified),
            Self::PrekeyMessage => (T::PrekeyMessage, pb::MlsMessageKind::Unspecified),
            Self::SenderKey => (T::SenderKey, pb::MlsMessageKind::Unspecified),
            Self::Plaintext => (T::Plaintext, pb::MlsMessageKind::Unspecified),
            Self::SealedSender => (T::SealedSender, pb::MlsMessageKind::Unspecified),
            Self::Mls(k) => (
                T::Mls,
                match k {
                    MlsKind::Application => pb::MlsMessageKind::Application,
                    MlsKind::Proposal => pb::MlsMessageKind::Proposal,
                    MlsKind::Commit => pb::MlsMessageKind::Commit,
                    MlsKind::Welcome => pb::MlsMessageKind::Welcome,
                },
            ),
        }
    }

    /// From the wire type (and MLS kind); `None` for unspecified or unknown values.
    pub fn from_wire(ty: i32, mls_kind: i32) -> Option<Self> {
        use pb::EnvelopeType as T;
        Some(match T::try_from(ty).ok()? {
            T::Unspecified => return None,
            T::Ciphertext => Self::Ciphertext,
            T::PrekeyMessage => Self::PrekeyMessage,
            T::SenderKey => Self::SenderKey,
            T::Plaintext => Self::Plaintext,
            T::SealedSender => Self::SealedSender,
            T::Mls => Self::Mls(match pb::MlsMessageKind::try_from(mls_kind).ok()? {
                pb::MlsMessageKind::Unspecified => return None,
                pb::MlsMessageKind::Application => MlsKind::Application,
                pb::MlsMessageKind::Proposal => MlsKind::Proposal,
                pb::MlsMessageKind::Commit => MlsKind::Commit,
                pb::MlsMessageKind::Welcome => MlsKind::Welcome,
            }),
        })
    }
}

impl From<Envelope> for pb::DeliveredEnvelope {
    fn from(e: Envelope) -> Self {
        let (ty, mls_kind) = e.kind.to_wire();
        Self {
            server_id: e.server_id,
            server_timestamp: Some(wire::timestamp(e.server_timestamp_ms)),
            sender_account_id: e.sender.map(|(a, _)| a.to_string()),
            sender_device_id: e.sender.map(|(_, d)| d.get()),
            r#type: ty as i32,
            content: e.content,
            urgent: e.urgent,
            group_id: e.group.map(|g| g.as_bytes().to_vec()),
            mls_kind: mls_kind as i32,
            epoch: e.epoch,
            group_log: false,
        }
    }
}

impl TryFrom<pb::DeliveredEnvelope> for Envelope {
    type Error = DecodeError;
    fn try_from(e: pb::DeliveredEnvelope) -> Result<Self, DecodeError> {
        const WHAT: &str = "envelope";
        let sender = match (e.sender_account_id, e.sender_device_id) {
            (Some(a), Some(d)) => Some((
                AccountId::parse(&a).ok_or(bad(WHAT, "sender_account_id"))?,
                DeviceId::new(d).ok_or(bad(WHAT, "sender_device_id"))?,
            )),
            (None, None) => None,
            _ => return Err(bad(WHAT, "sender")),
        };
        let group = match e.group_id {
            Some(g) => Some(GroupId::new(&g).ok_or(bad(WHAT, "group_id"))?),
            None => None,
        };
        Ok(Self {
            server_id: e.server_id,
            server_timestamp_ms: wire::millis(e.server_timestamp.as_ref()),
            sender,
            kind: EnvelopeKind::from_wire(e.r#type, e.mls_kind).ok_or(bad(WHAT, "type"))?,
            content: e.content,
            urgent: e.urgent,
            group,
            epoch: e.epoch,
        })
    }
}

/// A [`mail_subject`] event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MailEvent {
    /// Something changed in the stored queue (new mail or acknowledgements): re-read it.
    Stored,
    /// The device's group memberships changed (it joined or left a group): re-read them too.
    MembershipsChanged,
    /// An online-only envelope, never stored.
    OnlineOnly(Envelope),
}

impl Payload for MailEvent {
    type Wire = pb::MailEvent;
    const WHAT: &'static str = "messaging.mail";
    fn to_wire(&self) -> Self::Wire {
        use pb::mail_event::Kind;
        pb::MailEvent {
            kind: Some(match self {
                Self::Stored => Kind::QueueChanged(pb::QueueChanged::default()),
                Self::MembershipsChanged => Kind::QueueChanged(pb::QueueChanged {
                    memberships_changed: true,
                }),
                Self::OnlineOnly(e) => Kind::OnlineOnly(e.clone().into()),
            }),
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        use pb::mail_event::Kind;
        match w.kind {
            Some(Kind::QueueChanged(q)) if q.memberships_changed => Ok(Self::MembershipsChanged),
            Some(Kind::QueueChanged(_)) => Ok(Self::Stored),
            Some(Kind::OnlineOnly(e)) => Ok(Self::OnlineOnly(e.try_into()?)),
            None => Err(bad(Self::WHAT, "kind")),
        }
    }
}

/// A [`listen_subject`] event: instance `instance` opened stream `stream` for the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenClaim {
    pub instance: [u8; 16],
    pub stream: u64,
}

impl Payload for ListenClaim {
    type Wire = pb::ListenClaim;
    const WHAT: &'static str = "messaging.listen";
    fn to_wire(&self) -> Self::Wire {
        pb::ListenClaim {
            instance_id: self.instance.to_vec(),
            stream_id: self.stream,
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        Ok(Self {
            instance: w
                .instance_id
                .try_into()
                .map_err(|_| bad(Self::WHAT, "instance_id"))?,
            stream: w.stream_id,
        })
    }
}

/// An [`unlisten_subject`] event: instance `instance` closed stream `stream` of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenRelease {
    pub instance: [u8; 16],
    pub stream: u64,
}

impl Payload for ListenRelease {
    type Wire = pb::ListenRelease;
    const WHAT: &'static str = "messaging.unlisten";
    fn to_wire(&self) -> Self::Wire {
        pb::ListenRelease {
            instance_id: self.instance.to_vec(),
            stream_id: self.stream,
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        Ok(Self {
            instance: w
                .instance_id
                .try_into()
                .map_err(|_| bad(Self::WHAT, "instance_id"))?,
            stream: w.stream_id,
        })
    }
}

/// A [`group_subject`] event: `instance` appended to the group's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMail {
    pub instance: [u8; 16],
    pub group: GroupId,
}

impl Payload for GroupMail {
    type Wire = pb::GroupMail;
    const WHAT: &'static str = "messaging.group";
    fn to_wire(&self) -> Self::Wire {
        pb::GroupMail {
            instance_id: self.instance.to_vec(),
            group_id: self.group.as_bytes().to_vec(),
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        Ok(Self {
            instance: w
                .instance_id
                .try_into()
                .map_err(|_| bad(Self::WHAT, "instance_id"))?,
            group: GroupId::new(&w.group_id).ok_or(bad(Self::WHAT, "group_id"))?,
        })
    }
}

/// A [`streams_subject`] event: streams `instance` holds, each open for `lease_ms` from now
/// unless released.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamAnnounce {
    pub instance: [u8; 16],
    pub lease_ms: u64,
    /// (account, device, stream id on the instance).
    pub streams: Vec<(AccountId, DeviceId, u64)>,
}

impl Payload for StreamAnnounce {
    type Wire = pb::StreamAnnounce;
    const WHAT: &'static str = "messaging.streams";
    fn to_wire(&self) -> Self::Wire {
        pb::StreamAnnounce {
            instance_id: self.instance.to_vec(),
            lease_ms: self.lease_ms,
            streams: self
                .streams
                .iter()
                .map(|(a, d, s)| pb::OpenStream {
                    account_id: a.to_string(),
                    device_id: d.get(),
                    stream_id: *s,
                })
                .collect(),
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        let streams = w
            .streams
            .into_iter()
            .map(|s| {
                Ok((
                    AccountId::parse(&s.account_id).ok_or(bad(Self::WHAT, "account_id"))?,
                    DeviceId::new(s.device_id).ok_or(bad(Self::WHAT, "device_id"))?,
                    s.stream_id,
                ))
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Self {
            instance: w
                .instance_id
                .try_into()
                .map_err(|_| bad(Self::WHAT, "instance_id"))?,
            lease_ms: w.lease_ms,
            streams,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mail_events_and_claims_round_trip() {
        let a = AccountId::random();
        let d = DeviceId::new(2).unwrap();
        for kind in [
            EnvelopeKind::Ciphertext,
            EnvelopeKind::Mls(MlsKind::Commit),
            EnvelopeKind::SealedSender,
        ] {
            let env = Envelope {
                server_id: 0,
                server_timestamp_ms: 1_234,
                sender: Some((a, d)),
                kind,
                content: vec![1, 2, 3],
                urgent: true,
                group: GroupId::new(&[7; 16]),
                epoch: Some(4),
            };
            let m = MailEvent::OnlineOnly(env);
            assert_eq!(MailEvent::decode(&m.encode()).unwrap(), m);
        }
        assert_eq!(
            MailEvent::decode(&MailEvent::Stored.encode()).unwrap(),
            MailEvent::Stored
        );
        assert!(MailEvent::decode(&[]).is_err());
        let c = ListenClaim {
            instance: [9; 16],
            stream: 3,
        };
        assert_eq!(ListenClaim::decode(&c.encode()).unwrap(), c);
        assert_eq!(parse_listen_subject(&listen_subject(a, d)), Some((a, d)));
        assert_eq!(
            parse_unlisten_subject(&unlisten_subject(a, d)),
            Some((a, d))
        );
        assert_eq!(parse_listen_subject(&unlisten_subject(a, d)), None);
        let r = ListenRelease {
            instance: [8; 16],
            stream: 5,
        };
        assert_eq!(ListenRelease::decode(&r.encode()).unwrap(), r);
        let s = StreamAnnounce {
            instance: [7; 16],
            lease_ms: 30_000,
            streams: vec![(a, d, 9)],
        };
        assert_eq!(StreamAnnounce::decode(&s.encode()).unwrap(), s);
        let mut wire = s.to_wire();
        wire.streams[0].device_id = 0;
        assert!(StreamAnnounce::from_wire(wire).is_err());
        assert!(streams_subject([7; 16]).starts_with("messaging.streams."));
        assert!(mail_subject(a, d).starts_with("messaging.mail."));
    }
}
