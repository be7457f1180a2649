//! The gRPC edge: request validation into domain types, authorization (the caller acts only on
//! its own account), and conversion of results to prost messages.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use guardyn_common::ratelimit::KeyedLimiter;
use guardyn_common::{ApiError, Reason, caller};
use guardyn_proto::guardyn::presence::v1 as pb;
use guardyn_proto::guardyn::presence::v1::presence_service_server::PresenceService;
use tonic::{Request, Response, Status};

use crate::engine::{Engine, Subscription};
use crate::events::{status_from_pb, timestamp};
use crate::local::TypingTarget;
use crate::model::{AccountId, Seen, State, Visibility};
use crate::views::Item;

/// Most accounts per GetPresence.
pub const MAX_GET_PRESENCE: usize = 100;
/// Largest allow list.
pub const MAX_ALLOW_LIST: usize = 1000;
/// Largest group id accepted for typing.
pub const MAX_GROUP_ID: usize = 256;
/// Silence after which a Subscribe stream gets a Keepalive (gRPC-web proxies drop idle
/// streams). Transport behaviour, so real time.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// The tonic service.
#[derive(Debug, Clone)]
pub struct PresenceApi {
    engine: Arc<Engine>,
    typing_limiter: Arc<KeyedLimiter<(AccountId, u32)>>,
}

impl PresenceApi {
    pub fn new(engine: Arc<Engine>) -> Self {
        let typing_limiter = Arc::new(KeyedLimiter::new(
            "typing_per_device",
            engine.config.typing_rate,
        ));
        Self {
            engine,
            typing_limiter,
        }
    }
}

fn me<T>(request: &Request<T>) -> Result<(AccountId, u32), ApiError> {
    let ctx = caller(request)?;
    let account = AccountId::parse(&ctx.account_id)
        .ok_or_else(|| ApiError::unauthenticated("token account id is not a UUID"))?;
    Ok((account, ctx.device_id))
}

fn parse_ids(field: &str, ids: &[String], max: usize) -> Result<Vec<AccountId>, ApiError> {
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
                let why = "must be a lowercase hyphenated UUID";
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

fn seen_to_pb(seen: Seen) -> pb::Presence {
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

fn item_to_pb(item: Item) -> pb::SubscribeResponse {
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

type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

/// The stream of one Subscribe: items in order, a keepalive after silence; ends OK when
/// replaced, UNAVAILABLE when too slow or when the server shuts down.
fn stream(sub: Subscription, shutdown: tokio_util::sync::CancellationToken) -> SubscribeStream {
    let state = Some((sub, shutdown));
    Box::pin(futures::stream::unfold(state, |state| async move {
        let (mut sub, shutdown) = state?;
        let unavailable = |msg: &str| Status::from(ApiError::new(Reason::Unavailable, msg));
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => Err(Some(unavailable("server shutting down"))),
            _ = sub.replaced.cancelled() => Err(None),
            _ = sub.broken.cancelled() => Err(Some(unavailable("subscriber too slow or source lost; resubscribe"))),
            item = tokio::time::timeout(KEEPALIVE, sub.rx.recv()) => match item {
                Ok(Some(item)) => Ok(item_to_pb(item)),
                Ok(None) => Err(None),
                Err(_) => Ok(pb::SubscribeResponse {
                    event: Some(pb::subscribe_response::Event::Keepalive(pb::Keepalive {})),
                }),
            },
        };
        match next {
            Ok(msg) => Some((Ok(msg), Some((sub, shutdown)))),
            Err(Some(status)) => Some((Err(status), None)),
            Err(None) => None,
        }
    }))
}

#[tonic::async_trait]
impl PresenceService for PresenceApi {
    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let (account, device) = me(&request)?;
        self.engine.heartbeat(account, device).await?;
        let interval = self.engine.config.heartbeat_interval();
        Ok(Response::new(pb::HeartbeatResponse {
            interval: Some(prost_types::Duration {
                seconds: i64::try_from(interval.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            server_time: Some(timestamp(self.engine.clock.now_ms())),
        }))
    }

    async fn set_status(
        &self,
        request: Request<pb::SetStatusRequest>,
    ) -> Result<Response<pb::SetStatusResponse>, Status> {
        let (account, _) = me(&request)?;
        let req = request.into_inner();
        let status = status_from_pb(req.status())
            .ok_or_else(|| ApiError::invalid_field("status", "must not be UNSPECIFIED"))?;
        let max = self.engine.config.max_custom_text_chars;
        if req.custom_text.chars().count() > max {
            return Err(ApiError::invalid_field(
                "custom_text",
                format!("at most {max} characters"),
            )
            .into());
        }
        if req.custom_text.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                "custom_text",
                "must not contain control characters",
            )
            .into());
        }
        self.engine
            .set_status(account, status, req.custom_text)
            .await?;
        Ok(Response::new(pb::SetStatusResponse {}))
    }

    async fn set_visibility(
        &self,
        request: Request<pb::SetVisibilityRequest>,
    ) -> Result<Response<pb::SetVisibilityResponse>, Status> {
        let (account, _) = me(&request)?;
        let req = request.into_inner();
        let (visibility, list) = match req.visibility() {
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
        };
        self.engine
            .set_visibility(account, visibility, list)
            .await?;
        Ok(Response::new(pb::SetVisibilityResponse {}))
    }

    async fn get_visibility(
        &self,
        request: Request<pb::GetVisibilityRequest>,
    ) -> Result<Response<pb::GetVisibilityResponse>, Status> {
        let (account, _) = me(&request)?;
        let settings = self.engine.settings(account).await?;
        Ok(Response::new(pb::GetVisibilityResponse {
            visibility: match settings.visibility {
                Visibility::Everyone => pb::LastSeenVisibility::Everyone,
                Visibility::Nobody => pb::LastSeenVisibility::Nobody,
                Visibility::AllowList(_) => pb::LastSeenVisibility::AllowList,
            } as i32,
            allowed_account_ids: settings.allow_list.iter().map(|a| a.to_string()).collect(),
        }))
    }

    async fn set_typing(
        &self,
        request: Request<pb::SetTypingRequest>,
    ) -> Result<Response<pb::SetTypingResponse>, Status> {
        let (account, device) = me(&request)?;
        let req = request.into_inner();
        use pb::set_typing_request::Target;
        let target = match req.target {
            None => return Err(ApiError::invalid_field("target", "required").into()),
            Some(Target::PeerAccountId(peer)) => {
                let peer = AccountId::parse(&peer).ok_or_else(|| {
                    ApiError::invalid_field(
                        "peer_account_id",
                        "must be a lowercase hyphenated UUID",
                    )
                })?;
                if peer == account {
                    return Err(ApiError::invalid_field(
                        "peer_account_id",
                        "must not be the caller",
                    )
                    .into());
                }
                TypingTarget::Peer(peer)
            }
            Some(Target::GroupId(group)) => {
                if group.is_empty() || group.len() > MAX_GROUP_ID {
                    return Err(ApiError::invalid_field(
                        "group_id",
                        format!("must be 1 to {MAX_GROUP_ID} bytes"),
                    )
                    .into());
                }
                TypingTarget::Group(group.into())
            }
        };
        self.typing_limiter.check(&(account, device))?;
        self.engine.set_typing(account, target, req.typing).await;
        Ok(Response::new(pb::SetTypingResponse {}))
    }

    async fn get_presence(
        &self,
        request: Request<pb::GetPresenceRequest>,
    ) -> Result<Response<pb::GetPresenceResponse>, Status> {
        let (viewer, _) = me(&request)?;
        let ids = parse_ids(
            "account_ids",
            &request.get_ref().account_ids,
            MAX_GET_PRESENCE,
        )?;
        let seen = self.engine.presence(viewer, &ids).await?;
        Ok(Response::new(pb::GetPresenceResponse {
            presences: seen.into_iter().map(seen_to_pb).collect(),
        }))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (viewer, device) = me(&request)?;
        let mut ids = parse_ids(
            "account_ids",
            &request.get_ref().account_ids,
            self.engine.config.max_subscribe_accounts,
        )?;
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(*id));
        let sub = self.engine.subscribe(viewer, device, &ids);
        Ok(Response::new(stream(sub, self.engine.shutdown.clone())))
    }
}
