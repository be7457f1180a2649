//! The mesh channel: every internal call gets its own client span, a child of the calling span,
//! whose W3C context travels in the request's `traceparent`/`tracestate`, so the serving
//! process's span (see [`crate::middleware::RequestIdLayer`]) continues the same trace.

use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::transport::Channel;
use tower::Service;
use tracing::Instrument as _;

/// A [`Channel`] to other services' instances that traces every call.
#[derive(Clone, Debug)]
pub struct MeshChannel {
    inner: Channel,
}

impl MeshChannel {
    pub fn new(inner: Channel) -> Self {
        Self { inner }
    }
}

impl Service<http::Request<Body>> for MeshChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
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
