//! Tower layers every Guardyn server runs: request ids with tracing spans, and per-RPC
//! deadlines with load shedding.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::error::{ApiError, Reason};

/// Header carrying the request/correlation id.
pub const REQUEST_ID: &str = "x-request-id";

/// The request id of the current call, for handlers that log or forward it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

fn valid_request_id(v: &http::HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_owned())
}

/// Takes the client's `x-request-id` (or generates one), opens the call's tracing span with it
/// (an OpenTelemetry server span, child of the caller's `traceparent` when there is one) and
/// echoes it in the response headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestIdService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestIdService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct RequestIdService<S> {
    inner: S,
}

impl<S, B, RB> Service<http::Request<B>> for RequestIdService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(valid_request_id)
            .unwrap_or_else(|| {
                // The thread's RNG, not `new_v4` (a getrandom syscall per request): the id
                // only has to be unique, not secret.
                uuid::Builder::from_random_bytes(rand::random())
                    .into_uuid()
                    .to_string()
            });
        let span = tracing::info_span!(
            "rpc",
            method = %req.uri().path(),
            request_id = %id,
            account = tracing::field::Empty,
            otel.name = %req.uri().path(),
            otel.kind = "server",
            rpc.system = "grpc",
        );
        // A caller's W3C trace context (another Guardyn process, or a client that traces)
        // makes this call part of its trace.
        if let Some(parent) = crate::telemetry::extract_parent(req.headers()) {
            // Fails only without an OpenTelemetry layer, when there is no trace to join.
            let _ = span.set_parent(parent);
        }
        let header = http::HeaderValue::from_str(&id).ok();
        if let Some(h) = &header {
            req.headers_mut().insert(REQUEST_ID, h.clone());
        }
        req.extensions_mut().insert(RequestId(id));
        let fut = span.in_scope(|| self.inner.call(req));
        Box::pin(
            async move {
                let mut response = fut.await?;
                if let Some(mut h) = header {
                    // Unique per response: entered in the connection's HPACK table it would
                    // only evict useful entries, and the encoder compares every response's id
                    // with each one already there (6 % of the server's CPU per heartbeat).
                    // Sensitive values are sent as literals and never indexed.
                    h.set_sensitive(true);
                    response.headers_mut().insert(REQUEST_ID, h);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

/// Caps the bytes of every request body. Guardyn has no client-streaming RPCs, so one request
/// is one message and this is the request size limit. Past it the body yields a `Status`
/// (INVALID_ARGUMENT, reason `PAYLOAD_TOO_LARGE`), which tonic hands to the client as is.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimitLayer {
    max_bytes: usize,
}

impl BodyLimitLayer {
    /// `max_message_bytes` plus the 5-byte gRPC frame header.
    pub fn new(max_message_bytes: usize) -> Self {
        Self {
            max_bytes: max_message_bytes.saturating_add(5),
        }
    }
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BodyLimitService {
            inner,
            max_bytes: self.max_bytes,
        }
    }
}

#[derive(Clone, Debug)]
pub struct BodyLimitService<S> {
    inner: S,
    max_bytes: usize,
}

impl<S, B> Service<http::Request<B>> for BodyLimitService<S>
where
    S: Service<http::Request<LimitedBody<B>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let max = self.max_bytes;
        self.inner.call(req.map(|inner| LimitedBody {
            inner,
            remaining: max,
            limit: max,
        }))
    }
}

pin_project_lite::pin_project! {
    /// A request body that fails once more than its limit has been read.
    #[derive(Debug)]
    pub struct LimitedBody<B> {
        #[pin]
        inner: B,
        remaining: usize,
        limit: usize,
    }
}

impl<B> http_body::Body for LimitedBody<B>
where
    B: http_body::Body<Data = bytes::Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, bytes::Bytes::len);
                if len > *this.remaining {
                    let limit = this.limit.saturating_sub(5);
                    let status: tonic::Status = ApiError::new(
                        Reason::PayloadTooLarge,
                        format!("request message exceeds {limit} bytes"),
                    )
                    .with_metadata("limit", limit.to_string())
                    .into();
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
                *this.remaining -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Settings for [`LimitLayer`].
#[derive(Clone, Debug)]
pub struct Limits {
    /// Calls in flight across the process before new ones are shed.
    pub max_concurrent: usize,
    /// Deadline when the client sets none or a longer one.
    pub default_timeout: Duration,
    /// Per-method deadlines (`/package.Service/Method`), overriding the default.
    pub method_timeouts: HashMap<String, Duration>,
    /// Methods that stream responses: no deadline on their handler beyond the client's own.
    pub streaming_methods: Vec<String>,
    /// Methods clients call in bursts (every member of a large group acknowledging one
    /// message): they have `max_concurrent` calls in flight of their own, so a burst of them
    /// sheds only more of themselves, never the other calls (the send that started it).
    pub bulk_methods: Vec<String>,
}

/// Per-RPC deadlines and load shedding: when `max_concurrent` handlers are already running, a new
/// call is refused at once with `RESOURCE_EXHAUSTED` (reason `OVERLOADED`) instead of queueing
/// without bound.
///
/// A handler counts until it produced its response headers: unary calls for their whole
/// duration, streaming calls until the stream is set up (streams have their own per-service
/// limits).
#[derive(Clone, Debug)]
pub struct LimitLayer {
    permits: Arc<Semaphore>,
    bulk: Arc<Semaphore>,
    limits: Arc<Limits>,
}

impl LimitLayer {
    pub fn new(limits: Limits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_concurrent)),
            bulk: Arc::new(Semaphore::new(limits.max_concurrent)),
            limits: Arc::new(limits),
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = LimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LimitService {
            inner,
            permits: self.permits.clone(),
            bulk: self.bulk.clone(),
            limits: self.limits.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LimitService<S> {
    inner: S,
    permits: Arc<Semaphore>,
    bulk: Arc<Semaphore>,
    limits: Arc<Limits>,
}

/// The answer to a call refused for load: RESOURCE_EXHAUSTED, OVERLOADED, retry in a second.
fn shed<RB: Default + Send + 'static, E: Send + 'static>()
-> Pin<Box<dyn Future<Output = Result<http::Response<RB>, E>> + Send>> {
    let status: tonic::Status =
        ApiError::new(Reason::Overloaded, "server is overloaded, retry later")
            .with_retry_after(Duration::from_secs(1))
            .into();
    Box::pin(std::future::ready(Ok(status.into_http())))
}

/// Parse a gRPC `grpc-timeout` header (`<digits><unit>`).
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl<S, B, RB> Service<http::Request<B>> for LimitService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let pool = if self.limits.bulk_methods.iter().any(|m| m == path) {
            &self.bulk
        } else {
            &self.permits
        };
        let Ok(permit) = pool.clone().try_acquire_owned() else {
            return shed();
        };
        let streaming = self.limits.streaming_methods.iter().any(|m| m == path);
        let server_deadline = self
            .limits
            .method_timeouts
            .get(path)
            .copied()
            .unwrap_or(self.limits.default_timeout);
        let deadline = match (grpc_timeout(req.headers()), streaming) {
            (Some(client), true) => Some(client),
            (None, true) => None,
            (Some(client), false) => Some(client.min(server_deadline)),
            (None, false) => Some(server_deadline),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let _permit = permit;
            match deadline {
                None => fut.await,
                Some(d) => match tokio::time::timeout(d, fut).await {
                    Ok(r) => r,
                    Err(_) => {
                        let status: tonic::Status =
                            ApiError::new(Reason::DeadlineExceeded, "deadline exceeded").into();
                        Ok(status.into_http())
                    }
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::convert::Infallible;

    #[test]
    fn grpc_timeout_units_parse() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_millis(250)));
        h.insert("grpc-timeout", "3S".parse().unwrap());
        assert_eq!(grpc_timeout(&h), Some(Duration::from_secs(3)));
        h.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&h), None);
    }

    fn limits(max: usize, timeout_ms: u64) -> LimitLayer {
        LimitLayer::new(Limits {
            max_concurrent: max,
            default_timeout: Duration::from_millis(timeout_ms),
            method_timeouts: HashMap::new(),
            streaming_methods: vec!["/s.S/Stream".into()],
            bulk_methods: vec!["/s.S/Bulk".into()],
        })
    }

    fn grpc_code(resp: &http::Response<String>) -> Option<String> {
        resp.headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// A service whose calls answer "done" once `true` is sent on the returned sender.
    fn gated() -> (
        tokio::sync::watch::Sender<bool>,
        impl Service<
            http::Request<()>,
            Response = http::Response<String>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
    ) {
        let (release, wait) = tokio::sync::watch::channel(false);
        let slow = tower::service_fn(move |_req: http::Request<()>| {
            let mut wait = wait.clone();
            async move {
                let _ = wait.wait_for(|go| *go).await;
                Ok::<_, Infallible>(http::Response::new(String::from("done")))
            }
        });
        (release, slow)
    }

    #[tokio::test]
    async fn excess_calls_are_shed_with_resource_exhausted() {
        use tower::ServiceExt as _;
        let (release, slow) = gated();
        let svc = limits(1, 60_000).layer(slow);
        let first = tokio::spawn(
            svc.clone()
                .oneshot(http::Request::post("/s.S/Unary").body(()).unwrap()),
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let shed = svc
            .clone()
            .oneshot(http::Request::post("/s.S/Unary").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(grpc_code(&shed).as_deref(), Some("8"), "RESOURCE_EXHAUSTED");
        release.send(true).unwrap();
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.body(), "done");
        // The permit is back: the next call runs.
        let again = svc
            .oneshot(http::Request::post("/s.S/Unary").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(again.body(), "done");
    }

    #[tokio::test]
    async fn a_burst_of_bulk_calls_sheds_only_bulk_calls() {
        use tower::ServiceExt as _;
        let (release, slow) = gated();
        // Two bulk calls and two others.
        let svc = limits(2, 60_000).layer(slow);
        let call = |path: &'static str| {
            let svc = svc.clone();
            tokio::spawn(async move {
                svc.oneshot(http::Request::post(path).body(()).unwrap())
                    .await
                    .unwrap()
            })
        };
        let held = [call("/s.S/Bulk"), call("/s.S/Bulk")];
        tokio::time::sleep(Duration::from_millis(50)).await;
        let third = svc
            .clone()
            .oneshot(http::Request::post("/s.S/Bulk").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            grpc_code(&third).as_deref(),
            Some("8"),
            "the third bulk call is shed"
        );
        // The bulk calls took nothing from the others.
        let others = [call("/s.S/Unary"), call("/s.S/Unary")];
        tokio::time::sleep(Duration::from_millis(50)).await;
        let fifth = svc
            .clone()
            .oneshot(http::Request::post("/s.S/Unary").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            grpc_code(&fifth).as_deref(),
            Some("8"),
            "the third other call is shed"
        );
        release.send(true).unwrap();
        for c in held.into_iter().chain(others) {
            assert_eq!(c.await.unwrap().body(), "done");
        }
        let again = svc
            .oneshot(http::Request::post("/s.S/Bulk").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(again.body(), "done", "bulk permits come back");
    }

    #[tokio::test]
    async fn unary_calls_past_their_deadline_get_deadline_exceeded() {
        use tower::ServiceExt as _;
        let never = tower::service_fn(|_req: http::Request<()>| async {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(http::Response::new(String::new()))
        });
        let svc = limits(8, 50).layer(never);
        let resp = svc
            .clone()
            .oneshot(http::Request::post("/s.S/Unary").body(()).unwrap())
            .await
            .unwrap();
        assert_eq!(grpc_code(&resp).as_deref(), Some("4"), "DEADLINE_EXCEEDED");
        // A shorter client deadline wins over the server default.
        let svc = limits(8, 60_000).layer(tower::service_fn(|_req: http::Request<()>| async {
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(http::Response::new(String::new()))
        }));
        let resp = svc
            .oneshot(
                http::Request::post("/s.S/Unary")
                    .header("grpc-timeout", "20m")
                    .body(())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(grpc_code(&resp).as_deref(), Some("4"));
    }

    #[test]
    fn request_ids_are_restricted_to_safe_characters() {
        assert!(valid_request_id(&"abc-123_x.y:z".parse().unwrap()).is_some());
        assert!(valid_request_id(&"has space".parse().unwrap()).is_none());
        assert!(valid_request_id(&"a".repeat(129).parse().unwrap()).is_none());
    }
}
