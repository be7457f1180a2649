//! The gRPC edge: authorization (the caller acts only on its own account), requests into
//! domain calls on [`Core`] and results back (conversions in [`convert`]).

mod convert;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use guardyn_common::auth::{StreamAuth, TokenVerifier};
use guardyn_common::ratelimit::KeyedLimiter;
use guardyn_common::wire::timestamp;
use guardyn_common::{ApiError, Reason, caller};
use guardyn_proto::guardyn::presence::v1 as pb;
use guardyn_proto::guardyn::presence::v1::presence_service_server::PresenceService;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::core::{Core, Subscription};
use crate::model::{AccountId, DeviceId};

/// Silence after which a Subscribe stream gets a Keepalive (gRPC-web proxies drop idle
/// streams). Transport behaviour, so real time.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// The tonic service.
#[derive(Debug, Clone)]
pub struct PresenceApi {
    core: Arc<Core>,
    typing_limiter: Arc<KeyedLimiter<(AccountId, DeviceId)>>,
    /// Every Subscribe takes its guard from it (token expiry, session revocation).
    verifier: TokenVerifier,
}

impl PresenceApi {
    pub fn new(core: Arc<Core>, verifier: TokenVerifier) -> Self {
        let typing_limiter = Arc::new(KeyedLimiter::new(
            "typing_per_device",
            core.config.typing_rate,
        ));
        Self {
            core,
            typing_limiter,
            verifier,
        }
    }
}

type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

/// The stream of one Subscribe: items in order, a keepalive after silence; ends OK when
/// replaced, UNAVAILABLE when too slow or when the server shuts down, UNAUTHENTICATED
/// (TOKEN_EXPIRED / SESSION_REVOKED) when the caller's token expires or its session is revoked.
fn stream(sub: Subscription, auth: StreamAuth, shutdown: CancellationToken) -> SubscribeStream {
    let state = Some((sub, auth, shutdown));
    Box::pin(futures::stream::unfold(state, |state| async move {
        let (mut sub, auth, shutdown) = state?;
        let unavailable = |msg: &str| Status::from(ApiError::new(Reason::Unavailable, msg));
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => Err(Some(unavailable("server shutting down"))),
            e = auth.ended() => Err(Some(Status::from(e))),
            _ = sub.replaced.cancelled() => Err(None),
            _ = sub.broken.cancelled() => Err(Some(unavailable("subscriber too slow or source lost; resubscribe"))),
            item = tokio::time::timeout(KEEPALIVE, sub.rx.recv()) => match item {
                Ok(Some(item)) => Ok(convert::item_to_pb(item)),
                Ok(None) => Err(None),
                Err(_) => Ok(convert::keepalive()),
            },
        };
        match next {
            Ok(msg) => Some((Ok(msg), Some((sub, auth, shutdown)))),
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
        let (account, device) = convert::me(&request)?;
        self.core.heartbeat(account, device).await?;
        let interval = self.core.heartbeat_secs();
        Ok(Response::new(pb::HeartbeatResponse {
            interval: Some(prost_types::Duration {
                seconds: i64::try_from(interval).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            server_time: Some(timestamp(self.core.clock.now_ms())),
        }))
    }

    async fn set_status(
        &self,
        request: Request<pb::SetStatusRequest>,
    ) -> Result<Response<pb::SetStatusResponse>, Status> {
        let (account, _) = convert::me(&request)?;
        let req = request.into_inner();
        let status = convert::status(&req)?;
        let text = convert::custom_text(req.custom_text, self.core.config.max_custom_text_chars)?;
        self.core.set_status(account, status, text).await?;
        Ok(Response::new(pb::SetStatusResponse {}))
    }

    async fn set_visibility(
        &self,
        request: Request<pb::SetVisibilityRequest>,
    ) -> Result<Response<pb::SetVisibilityResponse>, Status> {
        let (account, _) = convert::me(&request)?;
        let (visibility, list) = convert::visibility(request.get_ref())?;
        self.core.set_visibility(account, visibility, list).await?;
        Ok(Response::new(pb::SetVisibilityResponse {}))
    }

    async fn get_visibility(
        &self,
        request: Request<pb::GetVisibilityRequest>,
    ) -> Result<Response<pb::GetVisibilityResponse>, Status> {
        let (account, _) = convert::me(&request)?;
        let settings = self.core.settings(account).await?;
        Ok(Response::new(pb::GetVisibilityResponse {
            visibility: convert::visibility_to_pb(&settings.visibility) as i32,
            allowed_account_ids: settings.allow_list.iter().map(|a| a.to_string()).collect(),
        }))
    }

    async fn set_typing(
        &self,
        request: Request<pb::SetTypingRequest>,
    ) -> Result<Response<pb::SetTypingResponse>, Status> {
        let (account, device) = convert::me(&request)?;
        let req = request.into_inner();
        let target = convert::typing_target(account, req.target)?;
        self.typing_limiter.check(&(account, device))?;
        self.core.set_typing(account, target, req.typing).await;
        Ok(Response::new(pb::SetTypingResponse {}))
    }

    async fn get_presence(
        &self,
        request: Request<pb::GetPresenceRequest>,
    ) -> Result<Response<pb::GetPresenceResponse>, Status> {
        let (viewer, _) = convert::me(&request)?;
        let ids = convert::parse_ids(
            "account_ids",
            &request.get_ref().account_ids,
            convert::MAX_GET_PRESENCE,
        )?;
        let seen = self.core.presence(viewer, &ids).await?;
        Ok(Response::new(pb::GetPresenceResponse {
            presences: seen.into_iter().map(convert::seen_to_pb).collect(),
        }))
    }

    type SubscribeStream = SubscribeStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let (viewer, device) = convert::me(&request)?;
        // Before the stream registers: a revocation arriving from here on ends it.
        let auth = self.verifier.guard_stream(caller(&request)?);
        let mut ids = convert::parse_ids(
            "account_ids",
            &request.get_ref().account_ids,
            self.core.config.max_subscribe_accounts,
        )?;
        let mut seen = std::collections::HashSet::new();
        ids.retain(|id| seen.insert(*id));
        let sub = self.core.subscribe(viewer, device, &ids);
        Ok(Response::new(stream(sub, auth, self.core.shutdown.clone())))
    }
}
