//! The mesh channel: every internal call gets its own client span, a child of the calling span,
//! whose W3C context travels in the request's `traceparent`/`tracestate`, so the serving
//! process's span (see [`crate::middleware::RequestIdLayer`]) continues the same trace.
//! With a client certificate, the channel follows it ([`FollowingIdentity`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::Channel;
use tower::Service;
use tracing::Instrument as _;

use super::identity::FollowingIdentity;
use crate::tls_reload::ClientIdentity;

/// A [`Channel`] to other services' instances that traces every call.
#[derive(Clone, Debug)]
pub struct MeshChannel {
    inner: Channel,
    /// Set when this process presents a client certificate: the identity `inner` was built
    /// for, and where a newer one (and its channel) comes from.
    follow: Option<(Arc<FollowingIdentity>, Arc<ClientIdentity>)>,
}

impl MeshChannel {
    pub fn new(inner: Channel) -> Self {
        Self {
            inner,
            follow: None,
        }
    }

    /// A channel that moves to the identity in force whenever its files change.
    pub(crate) fn following(
        follow: Arc<FollowingIdentity>,
        held: Arc<ClientIdentity>,
        inner: Channel,
    ) -> Self {
        Self {
            inner,
            follow: Some((follow, held)),
        }
    }
}

impl Service<http::Request<Body>> for MeshChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Switched before polling, so `call` uses the channel that was polled ready (tower's
        // contract); the old channel's calls in flight keep their connection.
        if let Some((follow, held)) = &mut self.follow
            && let Some((identity, channel)) = follow.newer_than(held)
        {
            *held = identity;
            self.inner = channel;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let span = tracing::info_span!(
            "mesh_call",
            method = %request.uri().path(),
            otel.name = %request.uri().path(),
            otel.kind = "client",
            rpc.system = "grpc",
            otel.status_code = tracing::field::Empty,
        );
        crate::telemetry::inject_span(&span, request.headers_mut());
        let call = self.inner.call(request);
        Box::pin(
            async move {
                let result = call.await;
                if result.is_err() {
                    tracing::Span::current().record("otel.status_code", "ERROR");
                }
                result
            }
            .instrument(span),
        )
    }
}
