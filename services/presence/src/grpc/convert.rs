//! Prost types to domain types and back (the edge): request fields into validated domain
//! values, results into messages.

use guardyn_common::events::presence::status_from_pb;
use guardyn_common::wire::timestamp;
use guardyn_common::{ApiError, Reason, caller};
use guardyn_proto::guardyn::presence::v1 as pb;
use tonic::Request;

use crate::local::TypingTarget;
use crate::model::{AccountId, DeviceId, Seen, State, Status, Visibility};
use crate::views::Item;

/// Most accounts per GetPresence.
pub(super) const MAX_GET_PRESENCE: usize = 100;
/// Largest allow list.
const MAX_ALLOW_LIST: usize = 1000;
/// Largest group id accepted for typing.
const MAX_GROUP_ID: usize = 256;

/// The caller's account and device.
pub(super) fn me<T>(request: &Request<T>) -> Result<(AccountId, DeviceId), ApiError> {
    let ctx = caller(request)?;
    Ok((ctx.account_id, ctx.device_id))
}

pub(super) fn parse_ids(
    field: &str,
    ids: &[String],
    max: usize,
) -> Result<Vec<AccountId>, ApiError> {
    if ids.len() > max {
        return Err(ApiError::new(
            Reason::PayloadTooLarge,
            format!("{field}: at most {max} ids"),
        )
        .with_violation(field, format!("at most {max} ids"))
        .with_metadata("limit", max.to_string())
        .with_metadata("field", field));
    }
    let mut out = Vec::with_capacity(ids.len());
    let mut bad: Option<ApiError> = None;
    for (i, s) in ids.iter().enumerate() {
        match AccountId::parse(s) {
            Some(id) => out.push(id),
            None => {
                let path = format!("{field}[{i}]");
                let why = "must be an account id (UUID)";
                bad = Some(match bad {
                    None => ApiError::invalid_field(path, why),
                    Some(e) => e.with_violation(path, why),
                });
            }
        }
    }
    match bad {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

pub(super) fn status(req: &pb::SetStatusRequest) -> Result<Status, ApiError> {
    status_from_pb(req.status())
        .ok_or_else(|| ApiError::invalid_field("status", "must not be UNSPECIFIED"))
}

/// The chosen visibility, and the allow list to store (given only with ALLOW_LIST; sorted,
/// without duplicates).
pub(super) fn visibility(
    req: &pb::SetVisibilityRequest,
) -> Result<(Visibility, Option<Vec<AccountId>>), ApiError> {
    Ok(match req.visibility() {
        pb::LastSeenVisibility::Unspecified | pb::LastSeenVisibility::Everyone => {
            (Visibility::Everyone, None)
        }
        pb::LastSeenVisibility::Nobody => (Visibility::Nobody, None),
        pb::LastSeenVisibility::AllowList => {
            let mut ids = parse_ids(
                "allowed_account_ids",
                &req.allowed_account_ids,
                MAX_ALLOW_LIST,
            )?;
            ids.sort_unstable();
            ids.dedup();
            (Visibility::AllowList(Default::default()), Some(ids))
        }
    })
}

pub(super) fn visibility_to_pb(v: &Visibility) -> pb::LastSeenVisibility {
    match v {
        Visibility::Everyone => pb::LastSeenVisibility::Everyone,
        Visibility::Nobody => pb::LastSeenVisibility::Nobody,
        Visibility::AllowList(_) => pb::LastSeenVisibility::AllowList,
    }
}

/// Where `caller`'s typing indicator goes.
pub(super) fn typing_target(
    caller: AccountId,
    target: Option<pb::set_typing_request::Target>,
) -> Result<TypingTarget, ApiError> {
    use pb::set_typing_request::Target;
    match target {
        None => Err(ApiError::invalid_field("target", "required")),
        Some(Target::PeerAccountId(peer)) => {
            let peer = AccountId::parse_field("peer_account_id", &peer)?;
            if peer == caller {
                return Err(ApiError::invalid_field(
                    "peer_account_id",
                    "must not be the caller",
                ));
            }
            Ok(TypingTarget::Peer(peer))
        }
        Some(Target::GroupId(group)) => {
            if group.is_empty() || group.len() > MAX_GROUP_ID {
                return Err(ApiError::invalid_field(
                    "group_id",
                    format!("must be 1 to {MAX_GROUP_ID} bytes"),
                ));
            }
            Ok(TypingTarget::Group(group.into()))
        }
    }
}

pub(super) fn seen_to_pb(seen: Seen) -> pb::Presence {
    pb::Presence {
        account_id: seen.account.to_string(),
        state: match seen.state {
            State::Offline => pb::PresenceState::Offline,
            State::Online => pb::PresenceState::Online,
            State::Away => pb::PresenceState::Away,
            State::DoNotDisturb => pb::PresenceState::DoNotDisturb,
        } as i32,
        custom_text: seen.custom_text,
        last_seen: seen.last_seen_ms.map(timestamp),
    }
}

pub(super) fn item_to_pb(item: Item) -> pb::SubscribeResponse {
    use pb::subscribe_response::Event;
    let event = match item {
        Item::Presence(seen) => Event::Presence(seen_to_pb(seen)),
        Item::Ready => Event::Ready(pb::SubscriptionReady {}),
        Item::Typing {
            sender,
            group,
            typing,
            expires_ms,
        } => Event::Typing(pb::TypingEvent {
            sender_account_id: sender.to_string(),
            group_id: group.map(|g| g.to_vec()),
            typing,
            expires_at: Some(timestamp(expires_ms)),
        }),
    };
    pb::SubscribeResponse { event: Some(event) }
}

pub(super) fn keepalive() -> pb::SubscribeResponse {
    pb::SubscribeResponse {
        event: Some(pb::subscribe_response::Event::Keepalive(pb::Keepalive {})),
    }
}

/// A custom status text: at most `max` characters, no control characters.
pub(super) fn custom_text(text: String, max: usize) -> Result<String, ApiError> {
    if text.chars().count() > max {
        return Err(ApiError::invalid_field(
            "custom_text",
            format!("at most {max} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "custom_text",
            "must not contain control characters",
        ));
    }
    Ok(text)
}
