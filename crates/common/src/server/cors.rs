//! CORS for browser callers only. Browsers send `Origin` on every cross-origin request and on
//! every POST, preflights included; native gRPC clients never do. tower-http's `Cors` builds a
//! header map and adds `vary` and `access-control-expose-headers` to every response it sees,
//! so requests without `Origin` go straight to the inner service and answer without them.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::Either;
use http::header::{HeaderName, HeaderValue, ORIGIN};
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};

use super::INSTANCE_HEADER;
use crate::config::ServerConfig;

/// The CORS rules for gRPC-web from `server.cors.allowed_origins`.
pub(super) fn layer(config: &ServerConfig) -> BrowserCorsLayer {
    let origins: Vec<HeaderValue> = config
        .cors
        .allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let h = HeaderName::from_static;
    BrowserCorsLayer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([http::Method::POST, http::Method::OPTIONS])
            .allow_headers([
                h("content-type"),
                h("authorization"),
                h("x-grpc-web"),
                h("x-user-agent"),
                h("grpc-timeout"),
                h("x-request-id"),
            ])
            .expose_headers([
                h("grpc-status"),
                h("grpc-message"),
                h("grpc-status-details-bin"),
                h("x-request-id"),
                h(INSTANCE_HEADER),
            ])
            .max_age(Duration::from_secs(3600)),
    )
}

/// [`CorsLayer`] applied only to requests that carry `Origin`.
#[derive(Clone, Debug)]
pub(super) struct BrowserCorsLayer(CorsLayer);

impl<S> Layer<S> for BrowserCorsLayer {
    type Service = BrowserCors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BrowserCors(self.0.layer(inner))
    }
}

#[derive(Clone, Debug)]
pub(super) struct BrowserCors<S>(Cors<S>);

impl<S, B, RB> Service<http::Request<B>> for BrowserCors<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    RB: Default,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = Either<<Cors<S> as Service<http::Request<B>>>::Future, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // `Cors` only polls the inner service, which is the one a bypassed request meets.
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.headers().contains_key(ORIGIN) {
            Either::Left(self.0.call(req))
        } else {
            Either::Right(self.0.get_mut().call(req))
        }
    }
}
