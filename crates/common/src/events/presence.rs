//! Presence's subjects and payloads (`proto/guardyn/presence/v1/events.proto`): what one
//! instance tells the others about the devices connected to it, typing indicators and its
//! liveness beacon. Also the presence values those events carry ([`Status`], [`Visibility`]).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use guardyn_proto::guardyn::presence::v1 as pb;
use prost::Message;
use uuid::Uuid;

use crate::ids::AccountId;
use crate::wire;

/// A server instance (random per process start).
pub type InstanceId = Uuid;

/// The status an account chooses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Status {
    #[default]
    Online,
    Away,
    DoNotDisturb,
    Invisible,
}

/// Who may see last seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Visibility {
    #[default]
    Everyone,
    Nobody,
    AllowList(HashSet<AccountId>),
}

impl Visibility {
    pub fn allows(&self, viewer: AccountId) -> bool {
        match self {
            Self::Everyone => true,
            Self::Nobody => false,
            Self::AllowList(ids) => ids.contains(&viewer),
        }
    }
}

/// Events about `account`.
pub fn account_subject(account: AccountId) -> String {
    format!("presence.{account}")
}

/// Typing indicators addressed to `account`.
pub fn inbox_subject(account: AccountId) -> String {
    format!("presence.{account}.typing")
}

/// Every instance beacon.
pub const BEACONS: &str = "presence.instance.*";

pub fn beacon_subject(instance: InstanceId) -> String {
    format!("presence.instance.{}", instance.hyphenated())
}

/// A change of one account, as published by one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountEvent {
    pub instance: InstanceId,
    pub at_ms: u64,
    pub change: Change,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    DeviceOnline {
        device: u32,
        generation: u64,
    },
    DeviceOffline {
        device: u32,
        generation: u64,
    },
    Status {
        status: Status,
        custom_text: String,
    },
    Visibility {
        visibility: Visibility,
    },
    GroupTyping {
        group: Arc<[u8]>,
        typing: bool,
        expires_ms: u64,
    },
}

/// A typing indicator addressed to one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypingSignal {
    pub sender: AccountId,
    pub typing: bool,
    pub expires_ms: u64,
}

pub fn status_to_pb(s: Status) -> pb::PresenceStatus {
    match s {
        Status::Online => pb::PresenceStatus::Online,
        Status::Away => pb::PresenceStatus::Away,
        Status::DoNotDisturb => pb::PresenceStatus::DoNotDisturb,
        Status::Invisible => pb::PresenceStatus::Invisible,
    }
}

pub fn status_from_pb(s: pb::PresenceStatus) -> Option<Status> {
    match s {
        pb::PresenceStatus::Unspecified => None,
        pb::PresenceStatus::Online => Some(Status::Online),
        pb::PresenceStatus::Away => Some(Status::Away),
        pb::PresenceStatus::DoNotDisturb => Some(Status::DoNotDisturb),
        pb::PresenceStatus::Invisible => Some(Status::Invisible),
    }
}

impl AccountEvent {
    pub fn encode(&self) -> Bytes {
        use pb::presence_event::Change as C;
        let change = match &self.change {
            Change::DeviceOnline { device, generation } => C::DeviceOnline(pb::DeviceOnline {
                device_id: *device,
                generation: *generation,
            }),
            Change::DeviceOffline { device, generation } => C::DeviceOffline(pb::DeviceOffline {
                device_id: *device,
                generation: *generation,
            }),
            Change::Status {
                status,
                custom_text,
            } => C::StatusChanged(pb::StatusChanged {
                status: status_to_pb(*status) as i32,
                custom_text: custom_text.clone(),
            }),
            Change::Visibility { visibility } => {
                let (v, ids) = match visibility {
                    Visibility::Everyone => (pb::LastSeenVisibility::Everyone, Vec::new()),
                    Visibility::Nobody => (pb::LastSeenVisibility::Nobody, Vec::new()),
                    Visibility::AllowList(ids) => (
                        pb::LastSeenVisibility::AllowList,
                        ids.iter().map(|a| a.as_bytes().to_vec()).collect(),
                    ),
                };
                C::VisibilityChanged(pb::VisibilityChanged {
                    visibility: v as i32,
                    allowed_account_ids: ids,
                })
            }
            Change::GroupTyping {
                group,
                typing,
                expires_ms,
            } => C::GroupTyping(pb::GroupTyping {
                group_id: group.to_vec(),
                typing: *typing,
                expires_at: Some(wire::timestamp(*expires_ms)),
            }),
        };
        pb::PresenceEvent {
            instance_id: self.instance.as_bytes().to_vec(),
            at: Some(wire::timestamp(self.at_ms)),
            change: Some(change),
        }
        .encode_to_vec()
        .into()
    }

    /// `None` for payloads this version does not understand (newer peers): ignored.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        use pb::presence_event::Change as C;
        let ev = pb::PresenceEvent::decode(bytes).ok()?;
        let instance = Uuid::from_slice(&ev.instance_id).ok()?;
        let change = match ev.change? {
            C::DeviceOnline(d) => Change::DeviceOnline {
                device: d.device_id,
                generation: d.generation,
            },
            C::DeviceOffline(d) => Change::DeviceOffline {
                device: d.device_id,
                generation: d.generation,
            },
            C::StatusChanged(s) => Change::Status {
                status: status_from_pb(s.status())?,
                custom_text: s.custom_text,
            },
            C::VisibilityChanged(v) => {
                let visibility = match v.visibility() {
                    pb::LastSeenVisibility::Nobody => Visibility::Nobody,
                    pb::LastSeenVisibility::AllowList => Visibility::AllowList(
                        v.allowed_account_ids
                            .iter()
                            .map(|b| AccountId::from_bytes(b))
                            .collect::<Option<HashSet<_>>>()?,
                    ),
                    _ => Visibility::Everyone,
                };
                Change::Visibility { visibility }
            }
            C::GroupTyping(g) => Change::GroupTyping {
                group: g.group_id.into(),
                typing: g.typing,
                expires_ms: wire::millis(g.expires_at.as_ref()),
            },
        };
        Some(Self {
            instance,
            at_ms: wire::millis(ev.at.as_ref()),
            change,
        })
    }
}

impl TypingSignal {
    pub fn encode(&self) -> Bytes {
        pb::TypingSignal {
            sender_account_id: self.sender.as_bytes().to_vec(),
            typing: self.typing,
            expires_at: Some(wire::timestamp(self.expires_ms)),
        }
        .encode_to_vec()
        .into()
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let s = pb::TypingSignal::decode(bytes).ok()?;
        Some(Self {
            sender: AccountId::from_bytes(&s.sender_account_id)?,
            typing: s.typing,
            expires_ms: wire::millis(s.expires_at.as_ref()),
        })
    }
}

pub fn encode_beacon(instance: InstanceId, lease_ms: u64) -> Bytes {
    pb::InstanceBeacon {
        instance_id: instance.as_bytes().to_vec(),
        lease_ms,
    }
    .encode_to_vec()
    .into()
}

pub fn decode_beacon(bytes: &[u8]) -> Option<(InstanceId, u64)> {
    let b = pb::InstanceBeacon::decode(bytes).ok()?;
    Some((Uuid::from_slice(&b.instance_id).ok()?, b.lease_ms))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn events_round_trip() {
        let friend = AccountId::from_uuid(Uuid::from_u128(3));
        for change in [
            Change::DeviceOnline {
                device: 2,
                generation: 7,
            },
            Change::DeviceOffline {
                device: 2,
                generation: 7,
            },
            Change::Status {
                status: Status::Away,
                custom_text: "lunch".into(),
            },
            Change::Visibility {
                visibility: Visibility::AllowList([friend].into_iter().collect()),
            },
            Change::GroupTyping {
                group: Arc::from(&b"g1"[..]),
                typing: true,
                expires_ms: 5_000,
            },
        ] {
            let ev = AccountEvent {
                instance: Uuid::from_u128(1),
                at_ms: 1_234,
                change,
            };
            assert_eq!(AccountEvent::decode(&ev.encode()), Some(ev));
        }
        let sig = TypingSignal {
            sender: friend,
            typing: false,
            expires_ms: 9,
        };
        assert_eq!(TypingSignal::decode(&sig.encode()), Some(sig));
        assert!(account_subject(friend).starts_with("presence."));
    }
}
