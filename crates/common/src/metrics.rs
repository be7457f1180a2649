//! Per-RPC Prometheus metrics and the scrape endpoint on its own port.
//!
//! Every metric carries the process's `instance` label (a constant label of the registry, so a
//! scrape of several processes never mixes them up); per-RPC metrics add the gRPC `service` of
//! the method, and a hosted service registers its own metrics under `service="<name>"`
//! ([`Metrics::with_service_registry`]).
//!
//! [`MetricsLayer`] counts every call by method and final gRPC code and records its latency.
//! The code is read from the response headers (trailers-only errors) or from the trailers at the
//! end of the body; a body dropped before its trailers (client went away) counts as
//! `CANCELLED`. Streaming calls are measured until the stream ends.
//!
//! A method's series are looked up once, on its first call, and kept with it; later calls cost
//! a map lookup and atomic adds. Only the methods of Guardyn's, health's and reflection's
//! descriptors get their own series: any other path counts as `method="unknown"`, so a client
//! calling made-up paths cannot grow the registry.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tower::{Layer, Service};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    service: String,
    method: String,
    code: String,
}

impl MethodLabels {
    /// `/pkg.Service/Method` → service `pkg.Service`.
    fn of(path: &str) -> Self {
        let service = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        Self {
            service: service.to_owned(),
            method: path.to_owned(),
        }
    }

    fn unknown() -> Self {
        Self {
            service: "unknown".to_owned(),
            method: "unknown".to_owned(),
        }
    }
}

/// The number of gRPC status codes (0..=16).
const CODES: usize = 17;

/// One method's series, shared by all its calls.
struct MethodSeries {
    labels: MethodLabels,
    started: Counter,
    latency: Histogram,
    /// `grpc_server_handled` by code, created when the code first occurs.
    handled: [OnceLock<Counter>; CODES],
    handled_family: Family<CodeLabels, Counter>,
    in_flight: Gauge,
}

/// Series slots of every known method, and the one all other paths share.
struct MethodTable {
    known: HashMap<&'static str, OnceLock<Arc<MethodSeries>>, foldhash::fast::RandomState>,
    unknown: OnceLock<Arc<MethodSeries>>,
}

impl MethodTable {
    fn new() -> Self {
        Self {
            known: crate::methods::all()
                .iter()
                .map(|m| (m.path.as_str(), OnceLock::new()))
                .collect(),
            unknown: OnceLock::new(),
        }
    }
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// The process's metrics registry and the RPC metric families.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    started: Family<MethodLabels, Counter>,
    handled: Family<CodeLabels, Counter>,
    latency: HistogramFamily,
    in_flight: Gauge,
    methods: Arc<MethodTable>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// The registry of the process named `instance` (the `instance` label of every metric).
    pub fn new(instance: &str) -> Self {
        let mut registry = Registry::with_prefix_and_labels(
            "guardyn",
            std::iter::once((Cow::Borrowed("instance"), Cow::Owned(instance.to_owned()))),
        );
        let started = Family::<MethodLabels, Counter>::default();
        let handled = Family::<CodeLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let in_flight = Gauge::default();
        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, by gRPC code",
            handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from request to end of response (streams: end of stream)",
            latency.clone(),
        );
        registry.register(
            "grpc_server_in_flight",
            "RPCs currently being handled",
            in_flight.clone(),
        );
        Self {
            registry: Arc::new(Mutex::new(registry)),
            started,
            handled,
            latency,
            in_flight,
            methods: Arc::new(MethodTable::new()),
        }
    }

    /// Let a component register its own process-wide metrics.
    pub fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut registry)
    }

    /// Let a hosted service register its metrics, labelled `service="<service>"`.
    pub fn with_service_registry<R>(
        &self,
        service: &'static str,
        f: impl FnOnce(&mut Registry) -> R,
    ) -> R {
        self.with_registry(|r| {
            f(r.sub_registry_with_label((Cow::Borrowed("service"), Cow::Borrowed(service))))
        })
    }

    /// Expose the process's storage write counts (see [`guardyn_storage::WriteCounts`]) as
    /// `guardyn_storage_*_total` counters, read from the atomics at each scrape.
    pub fn register_storage_writes(&self, counts: Arc<guardyn_storage::WriteCounts>) {
        self.with_registry(|r| r.register_collector(Box::new(StorageWrites(counts))));
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// How many calls of `methods` (`/pkg.Service/Method` paths) ended OK so far: the
    /// `grpc_server_handled` counter itself, read without creating a series, so a figure
    /// reported elsewhere (the monitoring beacon) always agrees with the scrape.
    pub fn handled_ok(&self, methods: &[&str]) -> u64 {
        methods
            .iter()
            .map(|method| {
                let labels = CodeLabels {
                    service: MethodLabels::of(method).service,
                    method: (*method).to_owned(),
                    code: code_name(tonic::Code::Ok).to_owned(),
                };
                self.handled.get(&labels).map_or(0, |c| c.get())
            })
            .sum()
    }

    fn start(&self, method: &str) -> CallRecord {
        let series = self.series(method);
        series.started.inc();
        series.in_flight.inc();
        CallRecord {
            series,
            started: Instant::now(),
            code: None,
            done: false,
        }
    }

    fn series(&self, method: &str) -> Arc<MethodSeries> {
        let known = self.methods.known.get(method);
        known
            .unwrap_or(&self.methods.unknown)
            .get_or_init(|| {
                let labels = if known.is_some() {
                    MethodLabels::of(method)
                } else {
                    MethodLabels::unknown()
                };
                Arc::new(MethodSeries {
                    started: self.started.get_or_create(&labels).clone(),
                    latency: self.latency.get_or_create(&labels).clone(),
                    handled: Default::default(),
                    handled_family: self.handled.clone(),
                    in_flight: self.in_flight.clone(),
                    labels,
                })
            })
            .clone()
    }
}

/// The storage write counters, encoded from one snapshot of the atomics per scrape.
#[derive(Debug)]
struct StorageWrites(Arc<guardyn_storage::WriteCounts>);

impl Collector for StorageWrites {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let s = self.0.snapshot();
        for (name, help, value) in [
            (
                "storage_kv_commits",
                "KV transactions committed",
                s.kv_commits,
            ),
            (
                "storage_kv_keys_written",
                "KV keys put by committed transactions",
                s.kv_keys_written,
            ),
            (
                "storage_kv_keys_deleted",
                "KV keys deleted by committed transactions",
                s.kv_keys_deleted,
            ),
            (
                "storage_log_appends",
                "Append-log append calls",
                s.log_appends,
            ),
            (
                "storage_log_entries_appended",
                "Append-log entries appended",
                s.log_entries_appended,
            ),
            (
                "storage_log_entries_deleted",
                "Append-log entries deleted (delete_through counts 1)",
                s.log_entries_deleted,
            ),
            (
                "storage_written_bytes",
                "KV key+value bytes put plus log payload bytes appended",
                s.bytes_written,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// Records one call exactly once, when the response ends or is dropped.
struct CallRecord {
    series: Arc<MethodSeries>,
    started: Instant,
    code: Option<tonic::Code>,
    done: bool,
}

impl CallRecord {
    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let code = self.code.unwrap_or(tonic::Code::Cancelled);
        let s = &self.series;
        let handled = usize::try_from(i32::from(code))
            .ok()
            .and_then(|i| s.handled.get(i))
            .map(|slot| {
                slot.get_or_init(|| {
                    s.handled_family
                        .get_or_create(&CodeLabels {
                            service: s.labels.service.clone(),
                            method: s.labels.method.clone(),
                            code: code_name(code).to_owned(),
                        })
                        .clone()
                })
            });
        if let Some(counter) = handled {
            counter.inc();
        }
        s.latency.observe(self.started.elapsed().as_secs_f64());
        s.in_flight.dec();
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        self.finish();
    }
}

pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
}

/// Tower layer recording per-RPC metrics.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Metrics,
}

impl MetricsLayer {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B, RB> Service<http::Request<B>> for MetricsService<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Body<Data = Bytes> + Send + 'static,
{
    type Response = http::Response<MeteredBody<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let mut record = self.metrics.start(req.uri().path());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let response = fut.await?;
            if let Some(code) = grpc_status(response.headers()) {
                record.code = Some(code);
            } else if response.status() != http::StatusCode::OK {
                record.code = Some(tonic::Code::Unknown);
            }
            Ok(response.map(|body| MeteredBody {
                inner: body,
                record: Some(record),
            }))
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that reports the call's outcome when it ends.
    pub struct MeteredBody<B> {
        #[pin]
        inner: B,
        record: Option<CallRecord>,
    }
}

impl<B> fmt::Debug for MeteredBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeteredBody").finish_non_exhaustive()
    }
}

impl<B: Body<Data = Bytes>> Body for MeteredBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(ref item) = polled {
            match item {
                Some(Ok(frame)) => {
                    if let (Some(trailers), Some(rec)) =
                        (frame.trailers_ref(), this.record.as_mut())
                        && let Some(code) = grpc_status(trailers)
                    {
                        rec.code = Some(code);
                    }
                }
                Some(Err(_)) => {
                    if let Some(rec) = this.record.as_mut() {
                        rec.code.get_or_insert(tonic::Code::Internal);
                    }
                }
                None => {
                    if let Some(mut rec) = this.record.take() {
                        rec.code.get_or_insert(tonic::Code::Ok);
                        rec.finish();
                    }
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serve `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve_metrics(
    listener: TcpListener,
    metrics: Metrics,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;

    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let metrics = metrics.clone();
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    if req.uri().path() == "/metrics" {
                        http::Response::builder()
                            .header(
                                http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(http_body_util::Full::new(Bytes::from(metrics.render())))
                    } else {
                        http::Response::builder()
                            .status(http::StatusCode::NOT_FOUND)
                            .body(http_body_util::Full::new(Bytes::from_static(
                                b"not found\n",
                            )))
                    }
                }
            });
        tokio::spawn(async move {
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "metrics connection failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_carries_the_instance_and_service_metrics_their_service() {
        let metrics = Metrics::new("node-a-42");
        let jobs = Counter::<u64>::default();
        metrics.with_service_registry("messaging", |r| {
            r.register("jobs", "Jobs", jobs.clone());
        });
        jobs.inc();
        let mut call = metrics.start("/guardyn.presence.v1.PresenceService/Heartbeat");
        call.code = Some(tonic::Code::Ok);
        drop(call);

        let text = metrics.render();
        for line in [
            r#"guardyn_jobs_total{instance="node-a-42",service="messaging"} 1"#,
            r#"guardyn_grpc_server_started_total{instance="node-a-42",service="guardyn.presence.v1.PresenceService",method="/guardyn.presence.v1.PresenceService/Heartbeat"} 1"#,
            r#"guardyn_grpc_server_handled_total{instance="node-a-42",service="guardyn.presence.v1.PresenceService",method="/guardyn.presence.v1.PresenceService/Heartbeat",code="OK"} 1"#,
            r#"guardyn_grpc_server_in_flight{instance="node-a-42"} 0"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn storage_write_counts_render_as_instance_labelled_counters() {
        let metrics = Metrics::new("node-a");
        metrics.register_storage_writes(Arc::default());
        let text = metrics.render();
        for name in [
            "kv_commits",
            "kv_keys_written",
            "kv_keys_deleted",
            "log_appends",
            "log_entries_appended",
            "log_entries_deleted",
            "written_bytes",
        ] {
            let line = format!(r#"guardyn_storage_{name}_total{{instance="node-a"}} 0"#);
            assert!(text.contains(&line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn handled_ok_reads_the_ok_count_of_the_named_methods_only() {
        let metrics = Metrics::new("node-a");
        let send = "/guardyn.messaging.v1.MessagingService/SendMessage";
        let group = "/guardyn.messaging.v1.GroupService/SendGroupMessage";
        for (method, code) in [
            (send, tonic::Code::Ok),
            (send, tonic::Code::Ok),
            (send, tonic::Code::InvalidArgument),
            (group, tonic::Code::Ok),
            (
                "/guardyn.messaging.v1.MessagingService/Ack",
                tonic::Code::Ok,
            ),
        ] {
            let mut call = metrics.start(method);
            call.code = Some(code);
        }
        assert_eq!(metrics.handled_ok(&[send]), 2);
        assert_eq!(metrics.handled_ok(&[send, group]), 3);
        // Reading creates no series.
        assert_eq!(metrics.handled_ok(&["/x.Y/Z"]), 0);
        assert!(!metrics.render().contains("/x.Y/Z"));
    }

    #[test]
    fn made_up_paths_share_one_series() {
        let metrics = Metrics::new("node-a");
        for i in 0..50 {
            let mut call = metrics.start(&format!("/x.Y/Z{i}"));
            call.code = Some(tonic::Code::Unimplemented);
        }
        let mut call = metrics.start("/grpc.health.v1.Health/Check");
        call.code = Some(tonic::Code::Ok);
        drop(call);
        let out = metrics.render();
        assert!(!out.contains("/x.Y/Z"), "{out}");
        assert!(
            out.contains(r#"service="unknown",method="unknown",code="UNIMPLEMENTED"} 50"#),
            "{out}"
        );
        assert!(
            out.contains(r#"method="/grpc.health.v1.Health/Check",code="OK"} 1"#),
            "{out}"
        );
        assert!(
            out.contains("guardyn_grpc_server_in_flight{instance=\"node-a\"} 0"),
            "{out}"
        );
    }
}
