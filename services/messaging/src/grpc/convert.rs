//! Wire ↔ domain: each request is validated once here, with `INVALID_ARGUMENT` naming the
//! field, and becomes a plain Rust value the core trusts.

use std::collections::HashSet;

use guardyn_common::events::messaging::{Envelope, EnvelopeKind};
use guardyn_common::wire::timestamp;
use guardyn_common::{AccountId, ApiError, DeviceId, GroupId};
use guardyn_proto::guardyn::common::v1::DeviceAddress;
use guardyn_proto::guardyn::messaging::v1 as pb;
use pb::listen_response::Item as WireItem;
use pb::server_notice::Notice as WireNotice;

use crate::config::MessagingConfig;
use crate::error::MessagingError;
use crate::groups::Commit;
use crate::groups::relay::GroupMessage;
use crate::groups::state::{GroupState, Member};
use crate::listen::Item;
use crate::messaging::{
    Ack, MAX_ACK_GROUPS, MAX_ACK_IDS, OutgoingEnvelope, SendMessage, SendOutcome,
    check_client_message_id,
};
use crate::streams::Notice;

pub(super) fn send_message(
    r: pb::SendMessageRequest,
    caller: AccountId,
    cfg: &MessagingConfig,
    max_envelope_bytes: usize,
) -> Result<SendMessage, ApiError> {
    let destination = AccountId::parse_field("destination_account_id", &r.destination_account_id)?;
    check_client_message_id(&r.client_message_id)?;
    if (destination == caller) != r.sync {
        return Err(ApiError::invalid_field(
            "sync",
            "must be set exactly when sending to the own account",
        ));
    }
    if r.envelopes.is_empty() && !r.sync {
        return Err(ApiError::invalid_field(
            "envelopes",
            "at least one envelope is required",
        ));
    }
    if r.envelopes.len() > cfg.max_devices_per_send {
        return Err(MessagingError::too_large(
            "envelopes",
            format!("at most {} envelopes", cfg.max_devices_per_send),
        )
        .into());
    }
    let mut seen = HashSet::new();
    let mut envelopes = Vec::with_capacity(r.envelopes.len());
    for (i, e) in r.envelopes.into_iter().enumerate() {
        let field = format!("envelopes[{i}]");
        let device = DeviceId::parse_field(
            &format!("{field}.destination_device_id"),
            e.destination_device_id,
        )?;
        if !seen.insert(device) {
            return Err(ApiError::invalid_field(
                format!("{field}.destination_device_id"),
                "duplicate destination device",
            ));
        }
        let kind = match EnvelopeKind::from_wire(e.r#type, 0) {
            Some(
                k @ (EnvelopeKind::Ciphertext
                | EnvelopeKind::PrekeyMessage
                | EnvelopeKind::SenderKey
                | EnvelopeKind::Plaintext),
            ) => k,
            _ => {
                return Err(ApiError::invalid_field(
                    format!("{field}.type"),
                    "must be CIPHERTEXT, PREKEY_MESSAGE, SENDER_KEY or PLAINTEXT",
                ));
            }
        };
        if e.content.is_empty() {
            return Err(ApiError::invalid_field(
                format!("{field}.content"),
                "must not be empty",
            ));
        }
        if e.content.len() > max_envelope_bytes {
            return Err(MessagingError::too_large(
                &format!("{field}.content"),
                format!("at most {max_envelope_bytes} bytes"),
            )
            .into());
        }
        envelopes.push(OutgoingEnvelope {
            device,
            registration_id: e.destination_registration_id,
            kind,
            content: e.content,
        });
    }
    Ok(SendMessage {
        destination,
        client_message_id: r.client_message_id,
        envelopes,
        urgent: r.urgent,
        online_only: r.online_only,
        sync: r.sync,
    })
}

pub(super) fn send_outcome(o: SendOutcome) -> pb::SendMessageResponse {
    pb::SendMessageResponse {
        server_timestamp: Some(timestamp(o.server_timestamp_ms)),
        queued: o
            .queued
            .into_iter()
            .map(|(d, server_id)| pb::QueuedEnvelope {
                destination_device_id: d.get(),
                server_id,
            })
            .collect(),
        duplicate: o.duplicate,
    }
}

pub(super) fn ack(r: pb::AckRequest) -> Result<Ack, ApiError> {
    let ids = r.server_ids.len()
        + r.group_acks
            .iter()
            .map(|g| g.server_ids.len())
            .sum::<usize>();
    if ids > MAX_ACK_IDS {
        let field = if r.group_acks.is_empty() {
            "server_ids"
        } else {
            "group_acks"
        };
        let why = format!("at most {MAX_ACK_IDS} ids in all");
        return Err(MessagingError::too_large(field, why).into());
    }
    if r.group_acks.len() > MAX_ACK_GROUPS {
        let why = format!("at most {MAX_ACK_GROUPS} groups");
        return Err(MessagingError::too_large("group_acks", why).into());
    }
    let groups = r
        .group_acks
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            let field = format!("group_acks[{i}].group_id");
            let id = GroupId::parse_field(&field, &g.group_id)?;
            Ok((id, g.server_ids))
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Ack {
        up_to: r.up_to_server_id,
        ids: r.server_ids,
        groups,
    })
}

pub(super) fn listen_item(item: Item) -> pb::ListenResponse {
    let item = match item {
        Item::Envelope(e) => WireItem::Envelope(envelope(e)),
        Item::GroupLog(e) => WireItem::Envelope(pb::DeliveredEnvelope {
            group_log: true,
            ..envelope(e)
        }),
        Item::QueueEmpty => WireItem::QueueEmpty(pb::QueueEmpty {}),
        Item::Keepalive => WireItem::Keepalive(pb::Keepalive {}),
        Item::Notice { at_ms, notice } => WireItem::Notice(pb::ServerNotice {
            occurred_at: Some(timestamp(at_ms)),
            notice: Some(match notice {
                Notice::StreamReplaced => WireNotice::StreamReplaced(pb::StreamReplaced {}),
                Notice::SessionRevoked { session_id } => {
                    WireNotice::SessionRevoked(pb::SessionRevoked { session_id })
                }
                Notice::DeviceRemoved { device } => WireNotice::DeviceRemoved(pb::DeviceRemoved {
                    device_id: device.get(),
                }),
                Notice::DeviceLinked { device, name } => {
                    WireNotice::DeviceLinked(pb::DeviceLinked {
                        device_id: device.get(),
                        name,
                    })
                }
                Notice::PreKeysLow {
                    one_time_prekeys,
                    one_time_kem_prekeys,
                    has_last_resort_kem_prekey,
                    key_packages,
                } => WireNotice::PrekeysLow(pb::PreKeysLow {
                    one_time_prekeys,
                    one_time_kem_prekeys,
                    has_last_resort_kem_prekey,
                    key_packages,
                }),
                Notice::ClientConfigChanged { version } => {
                    WireNotice::ClientConfigChanged(pb::ClientConfigChanged { version })
                }
                Notice::SystemNotice(n) => WireNotice::SystemNotice(n.to_wire()),
            }),
        }),
    };
    pb::ListenResponse { item: Some(item) }
}

fn envelope(e: Envelope) -> pb::DeliveredEnvelope {
    e.into()
}

pub(super) fn group_id(bytes: &[u8]) -> Result<GroupId, ApiError> {
    GroupId::parse_field("group_id", bytes)
}

pub(super) fn group(group: &GroupId, g: &GroupState) -> pb::Group {
    pb::Group {
        group_id: group.as_bytes().to_vec(),
        epoch: g.epoch,
        members: g.members().map(address).collect(),
        created_at: Some(timestamp(g.created_ms)),
        updated_at: Some(timestamp(g.updated_ms)),
    }
}

fn address(m: &Member) -> DeviceAddress {
    DeviceAddress {
        account_id: m.account.to_string(),
        device_id: m.device.get(),
    }
}

pub(super) fn commit(r: pb::SendCommitRequest) -> Result<Commit, ApiError> {
    let group = group_id(&r.group_id)?;
    let welcome_recipients = r
        .welcome_recipients
        .iter()
        .enumerate()
        .map(|(i, a)| {
            Ok((
                AccountId::parse_field(
                    &format!("welcome_recipients[{i}].account_id"),
                    &a.account_id,
                )?,
                DeviceId::parse_field(&format!("welcome_recipients[{i}].device_id"), a.device_id)?,
            ))
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Commit {
        group,
        epoch: r.epoch,
        commit: r.commit,
        group_info: r.group_info,
        welcome: r.welcome,
        welcome_recipients,
    })
}

pub(super) fn group_message(r: pb::SendGroupMessageRequest) -> Result<GroupMessage, ApiError> {
    let group = group_id(&r.group_id)?;
    check_client_message_id(&r.client_message_id)?;
    Ok(GroupMessage {
        group,
        epoch: r.epoch,
        client_message_id: r.client_message_id,
        message: r.message,
        urgent: r.urgent,
    })
}
