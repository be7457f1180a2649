//! A test gateway in front of servers that each host some services, as an ingress in front of
//! a cluster would: every call of a gRPC service goes to that service's upstreams, the first
//! one that answers. An upstream that cannot be reached (connection refused or broken) or
//! answers UNAVAILABLE before any response is passed over for the next, as a Kubernetes
//! Service drops a dead endpoint; a response stream whose upstream dies ends with UNAVAILABLE,
//! as a gRPC-aware proxy reports it. The request is buffered for that (gRPC requests of the
//! public contract are single messages), so a call cut off mid-flight may reach a second
//! instance: clients see that as a retry, which the contract makes safe (client message ids).

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt as _;
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::{Channel, Endpoint};

pub trait Name: Send + Sync + 'static {
    const NAME: &'static str;
}

macro_rules! names {
    ($($marker:ident = $name:literal),* $(,)?) => {$(
        pub struct $marker;
        impl Name for $marker {
            const NAME: &'static str = $name;
        }
    )*};
}

names! {
    AuthSvc = "guardyn.auth.v1.AuthService",
    DeviceSvc = "guardyn.auth.v1.DeviceService",
    MfaSvc = "guardyn.auth.v1.MfaService",
    KeysSvc = "guardyn.auth.v1.KeyDirectoryService",
    MessagingSvc = "guardyn.messaging.v1.MessagingService",
    GroupSvc = "guardyn.messaging.v1.GroupService",
    PresenceSvc = "guardyn.presence.v1.PresenceService",
    MediaSvc = "guardyn.media.v1.MediaService",
    NotificationSvc = "guardyn.notification.v1.NotificationService",
    AdminUserSvc = "guardyn.admin.v1.AdminUserService",
    BootstrapSvc = "guardyn.admin.v1.BootstrapService",
}

/// Where each service's calls go, in order of preference; a service without upstreams is not
/// routed (UNIMPLEMENTED).
#[derive(Clone, Default)]
pub struct Upstreams {
    pub auth: Vec<Channel>,
    pub messaging: Vec<Channel>,
    pub presence: Vec<Channel>,
    pub media: Vec<Channel>,
    pub notification: Vec<Channel>,
    pub admin: Vec<Channel>,
}

/// Forwards every call of one gRPC service to its upstreams, untouched.
struct Forward<N> {
    upstreams: Arc<[Channel]>,
    _name: PhantomData<fn() -> N>,
}

impl<N> Clone for Forward<N> {
    fn clone(&self) -> Self {
        Self {
            upstreams: self.upstreams.clone(),
            _name: PhantomData,
        }
    }
}

impl<N: Name> NamedService for Forward<N> {
    const NAME: &'static str = N::NAME;
}

impl<N: Name> Service<http::Request<Body>> for Forward<N> {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let upstreams = self.upstreams.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(e) => return Ok(unavailable(&format!("gateway: reading the request: {e}"))),
            };
            let mut last_error = String::from("no upstream");
            for (i, upstream) in upstreams.iter().enumerate() {
                let more = i + 1 < upstreams.len();
                match try_upstream(upstream.clone(), &parts, body.clone()).await {
                    Ok(response) if more && is_unavailable(&response) => {
                        last_error = "upstream answered UNAVAILABLE".into();
                    }
                    Ok(response) => return Ok(response.map(|b| Body::new(EndsUnavailable(b)))),
                    Err(e) => last_error = e,
                }
            }
            Ok(unavailable(&format!("gateway: {last_error}")))
        })
    }
}

async fn try_upstream(
    mut upstream: Channel,
    parts: &http::request::Parts,
    body: Bytes,
) -> Result<http::Response<Body>, String> {
    let mut request = http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version)
        .body(Body::new(http_body_util::Full::new(body)))
        .map_err(|e| e.to_string())?;
    *request.headers_mut() = parts.headers.clone();
    std::future::poll_fn(|cx| upstream.poll_ready(cx))
        .await
        .map_err(|e| e.to_string())?;
    upstream.call(request).await.map_err(|e| e.to_string())
}

/// A trailers-only answer with grpc-status UNAVAILABLE.
fn is_unavailable(response: &http::Response<Body>) -> bool {
    response
        .headers()
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() == b"14")
}

fn unavailable(message: &str) -> http::Response<Body> {
    tonic::Status::unavailable(message).into_http()
}

/// A response body that ends with grpc-status UNAVAILABLE when the upstream's body fails
/// (its process died mid-stream) instead of resetting the client's stream.
struct EndsUnavailable(Body);

impl http_body::Body for EndsUnavailable {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.0).poll_frame(cx) {
            Poll::Ready(Some(Err(_))) => {
                self.0 = Body::empty();
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("14"));
                trailers.insert(
                    "grpc-message",
                    http::HeaderValue::from_static("gateway: the upstream failed mid-stream"),
                );
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

fn add<N: Name>(routes: &mut RoutesBuilder, upstreams: &[Channel]) {
    if !upstreams.is_empty() {
        routes.add_service(Forward::<N> {
            upstreams: upstreams.into(),
            _name: PhantomData,
        });
    }
}

/// A gateway on a free loopback port routing each service to its upstreams; returns a
/// channel to it.
pub async fn gateway(upstreams: Upstreams) -> Channel {
    Endpoint::from_shared(gateway_url(upstreams).await)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// [`gateway`], returning its URL (for the command line client).
pub async fn gateway_url(upstreams: Upstreams) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut routes = RoutesBuilder::default();
    add::<AuthSvc>(&mut routes, &upstreams.auth);
    add::<DeviceSvc>(&mut routes, &upstreams.auth);
    add::<MfaSvc>(&mut routes, &upstreams.auth);
    add::<KeysSvc>(&mut routes, &upstreams.auth);
    add::<MessagingSvc>(&mut routes, &upstreams.messaging);
    add::<GroupSvc>(&mut routes, &upstreams.messaging);
    add::<PresenceSvc>(&mut routes, &upstreams.presence);
    add::<MediaSvc>(&mut routes, &upstreams.media);
    add::<NotificationSvc>(&mut routes, &upstreams.notification);
    add::<AdminUserSvc>(&mut routes, &upstreams.admin);
    add::<BootstrapSvc>(&mut routes, &upstreams.admin);
    let router = tonic::transport::Server::builder().add_routes(routes.routes());
    tokio::spawn(router.serve_with_incoming(
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
    ));
    format!("http://{addr}")
}
