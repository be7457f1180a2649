//! Which instance answered, and which streams are open: every response (success or error, on
//! the public and the mesh listener) carries `x-guardyn-instance: <server.instance_id>`, so an
//! operator behind a load balancer knows which process to look at; server-streaming calls are
//! counted in the process's [`ProcessStats`] until their response body ends or is dropped.
//! The layer also sets the response's `date` (see [`super::date`]).

use std::collections::HashSet;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame};
use tower::{Layer, Service};

use crate::stats::{ProcessStats, StreamGuard};

/// The response header naming the instance that answered.
pub const INSTANCE_HEADER: &str = "x-guardyn-instance";

/// Tower layer adding [`INSTANCE_HEADER`] and counting open streams.
#[derive(Clone, Debug)]
pub struct InstanceLayer {
    value: Option<HeaderValue>,
    stats: ProcessStats,
    streaming: Arc<HashSet<String>>,
}

impl InstanceLayer {
    /// `streaming`: paths (`/pkg.Service/Method`) of the server-streaming methods. An instance
    /// id that is not a valid header value (configuration allows any string) sends no header.
    pub fn new(instance_id: &str, stats: ProcessStats, streaming: Vec<String>) -> Self {
        Self {
            value: HeaderValue::from_str(instance_id).ok(),
            stats,
            streaming: Arc::new(streaming.into_iter().collect()),
        }
    }
}

impl<S> Layer<S> for InstanceLayer {
    type Service = InstanceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InstanceService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct InstanceService<S> {
    inner: S,
    layer: InstanceLayer,
}

impl<S, B, RB> Service<http::Request<B>> for InstanceService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
{
    type Response = http::Response<CountedBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = self
            .layer
            .streaming
            .contains(req.uri().path())
            .then(|| self.layer.stats.stream());
        let value = self.layer.value.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut response = fut.await?;
            let headers = response.headers_mut();
            if let Some(value) = value {
                headers.insert(INSTANCE_HEADER, value);
            }
            if let Some(date) = super::date::header_value() {
                headers.insert(http::header::DATE, date);
            }
            Ok(response.map(|inner| CountedBody {
                inner,
                _guard: guard,
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its stream counted until it is dropped.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        _guard: Option<StreamGuard>,
    }
}

// CORS answers preflights itself with a default (empty) body.
impl<B: Default> Default for CountedBody<B> {
    fn default() -> Self {
        Self {
            inner: B::default(),
            _guard: None,
        }
    }
}

impl<B> fmt::Debug for CountedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountedBody").finish_non_exhaustive()
    }
}

impl<B: Body<Data = Bytes>> Body for CountedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
