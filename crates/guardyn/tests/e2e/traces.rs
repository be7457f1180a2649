//! One request, one trace across processes: `guardyn serve --service auth` and
//! `guardyn serve --service messaging` (real child processes on one PostgreSQL database and
//! one NATS server) export their spans over OTLP/gRPC to a receiver in this test. A
//! SendMessage that carries a client's `traceparent` must show up as one trace: messaging's
//! server span continues the client's span, its device-directory call is a client span whose
//! context crosses the mesh, auth's server span is that client span's child, and the Listen
//! stream woken by the mail event (over NATS) works in the same trace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guardyn::config::{Config, EventsBackend, StorageEngine};
use guardyn_proto::guardyn::internal::v1 as internal;
use guardyn_proto::guardyn::internal::v1::device_directory_service_client::DeviceDirectoryServiceClient;
use guardyn_proto::guardyn::messaging::v1 as messaging;
use guardyn_proto::guardyn::messaging::v1::messaging_service_client::MessagingServiceClient;
use guardyn_storage_postgres::{PostgresConfig, throwaway};
use guardyn_testkit::NatsServer;
use guardyn_testkit::rpc::authed;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::gateway::{Upstreams, gateway};
use crate::mesh::{access_token, fast_auth, register};

/// Start-up of a debug build, and span export, on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(90);
/// The client's own span, as a tracing SDK in the client would send it.
const CLIENT_TRACE: &str = "5b8efff798038103d269b633813fc60c";
const CLIENT_SPAN: &str = "eee19b7ec3c1b174";
const SEND: &str = "/guardyn.messaging.v1.MessagingService/SendMessage";
const LIST_DEVICES: &str = "/guardyn.internal.v1.DeviceDirectoryService/ListDevices";

// ---- the OTLP receiver ------------------------------------------------------------------------

/// One exported span with its process's resource attributes.
#[derive(Clone, Debug)]
struct Recorded {
    service: String,
    instance: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Recorded>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut out = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let attrs: HashMap<String, String> = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some((kv.key.clone(), s.clone())),
                    _ => None,
                })
                .collect();
            let attr = |k: &str| attrs.get(k).cloned().unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                out.push(Recorded {
                    service: attr("service.name"),
                    instance: attr("service.instance.id"),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Receiver {
    /// Serves on a free loopback port; returns its `http://` endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self.clone()))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        format!("http://{addr}")
    }

    fn in_trace(&self, trace_id: &str) -> Vec<Recorded> {
        let spans = self.spans.lock().unwrap();
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    }
}

// ---- the two processes ------------------------------------------------------------------------

struct Proc {
    name: &'static str,
    port: u16,
    child: tokio::process::Child,
    stderr: PathBuf,
}

impl Proc {
    fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port))
            .unwrap()
            .connect_lazy()
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn wait_serving(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}):\n{}", self.name, self.tail());
            }
            let mut health = HealthClient::new(self.channel());
            let serving = health
                .check(HealthCheckRequest::default())
                .await
                .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32);
            if serving {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not report SERVING:\n{}",
                self.name,
                self.tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Setup<'a> {
    dir: &'a Path,
    pg: &'a PostgresConfig,
    nats_url: &'a str,
    otlp: &'a str,
}

impl Setup<'_> {
    fn spawn(&self, name: &'static str, port: u16, configure: impl FnOnce(&mut Config)) -> Proc {
        let mut c = Config::default();
        c.server.port = port;
        c.server.shutdown_grace_ms = 1_000;
        c.server.instance_id = format!("trace-{name}");
        c.metrics.enabled = false;
        c.storage.engine = StorageEngine::Postgres;
        c.storage.postgres = Some(PostgresConfig {
            pool_size: 2,
            ..self.pg.clone()
        });
        c.storage.data_dir = self.dir.join(name);
        c.events.backend = EventsBackend::Nats;
        c.events.nats_url = self.nats_url.to_owned();
        c.observability.otlp_endpoint = self.otlp.to_owned();
        fast_auth(&mut c);
        configure(&mut c);
        let (mut cmd, stderr) = crate::serve_command(self.dir, name, name, &c);
        for (k, _) in std::env::vars() {
            if k.starts_with("OTEL_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd
            // Export finished spans within a fraction of a second instead of every 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .spawn()
            .unwrap();
        Proc {
            name,
            port,
            child,
            stderr,
        }
    }
}

fn one<'a>(spans: &'a [Recorded], what: &str, pick: impl Fn(&Recorded) -> bool) -> &'a Recorded {
    let found: Vec<&Recorded> = spans.iter().filter(|s| pick(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "{what}: {found:#?}\nin the trace: {spans:#?}"
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_send_message_is_one_trace_across_messaging_and_auth() {
    let Some(pg_server) = throwaway::shared_or_skip() else {
        return;
    };
    let Some(nats) = NatsServer::start_or_skip() else {
        return;
    };
    let pg = pg_server.fresh_database().await;
    let receiver = Receiver::default();
    let otlp = receiver.start().await;
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        dir: dir.path(),
        pg: &pg,
        nats_url: &nats.url,
        otlp: &otlp,
    };
    let (auth_port, mesh_port) = (crate::free_port(), crate::free_port());
    let mut auth = setup.spawn("auth", auth_port, |c| {
        c.mesh.listen = format!("127.0.0.1:{mesh_port}");
    });
    auth.wait_serving().await;
    let mut msg = setup.spawn("messaging", crate::free_port(), |c| {
        c.mesh.auth_addresses = vec![format!("http://127.0.0.1:{auth_port}")];
        c.mesh.directory_addresses = vec![format!("http://127.0.0.1:{mesh_port}")];
    });
    msg.wait_serving().await;

    let channel = gateway(Upstreams {
        auth: vec![auth.channel()],
        messaging: vec![msg.channel()],
        ..Upstreams::default()
    })
    .await;
    let alice = register(&channel, "tralice").await;
    let bob = register(&channel, "trbob").await;
    let (alice_token, bob_token) = (
        access_token(&channel, "tralice").await,
        access_token(&channel, "trbob").await,
    );
    let bob_device = DeviceDirectoryServiceClient::new(
        Endpoint::from_shared(format!("http://127.0.0.1:{mesh_port}"))
            .unwrap()
            .connect_lazy(),
    )
    .list_devices(internal::ListDevicesRequest {
        account_id: bob.account_id().to_owned(),
    })
    .await
    .unwrap()
    .into_inner()
    .devices
    .into_iter()
    .next()
    .expect("bob's device");

    // Bob's stream is open (its backlog, none, is drained) before the send.
    let mut messaging = MessagingServiceClient::new(msg.channel());
    let mut stream = messaging
        .listen(authed(messaging::ListenRequest {}, &bob_token))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(
        matches!(
            first.item,
            Some(messaging::listen_response::Item::QueueEmpty(_))
        ),
        "{first:?}"
    );

    let mut request = authed(
        messaging::SendMessageRequest {
            destination_account_id: bob.account_id().to_owned(),
            client_message_id: "traced-1".into(),
            envelopes: vec![messaging::Envelope {
                destination_device_id: bob_device.device_id,
                destination_registration_id: bob_device.registration_id,
                r#type: messaging::EnvelopeType::Ciphertext as i32,
                content: b"opaque ciphertext".to_vec(),
            }],
            urgent: false,
            online_only: false,
            sync: false,
        },
        &alice_token,
    );
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
            .parse()
            .unwrap(),
    );
    messaging.send_message(request).await.unwrap();
    let delivered = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("no delivery")
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            delivered.item,
            Some(messaging::listen_response::Item::Envelope(_))
        ),
        "{delivered:?}"
    );
    drop(alice);

    // Every span of the chain is exported (batches every 100 ms, in either order).
    let deadline = Instant::now() + WAIT;
    let spans = loop {
        let spans = receiver.in_trace(CLIENT_TRACE);
        let has = |service: &str, name: &str, kind: SpanKind| {
            spans
                .iter()
                .any(|s| s.service == service && s.name == name && s.kind == kind as i32)
        };
        if has("guardyn-messaging", SEND, SpanKind::Server)
            && has("guardyn-messaging", LIST_DEVICES, SpanKind::Client)
            && has("guardyn-auth", LIST_DEVICES, SpanKind::Server)
            && has("guardyn-messaging", "mail_event", SpanKind::Consumer)
        {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the trace is incomplete: {spans:#?}\n---- auth ----\n{}\n---- messaging ----\n{}",
            auth.tail(),
            msg.tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Messaging's server span continues the client's span.
    let send = one(&spans, "messaging's SendMessage span", |s| {
        s.name == SEND && s.kind == SpanKind::Server as i32
    });
    assert_eq!(send.service, "guardyn-messaging");
    assert_eq!(send.instance, "trace-messaging");
    assert_eq!(send.parent_span_id, CLIENT_SPAN);
    // Its directory call is a client span under it...
    let call = one(&spans, "messaging's directory call", |s| {
        s.name == LIST_DEVICES && s.kind == SpanKind::Client as i32
    });
    assert_eq!(call.service, "guardyn-messaging");
    assert_eq!(call.parent_span_id, send.span_id);
    // ...whose context crossed the mesh: auth's server span is its child.
    let served = one(&spans, "auth's directory span", |s| {
        s.name == LIST_DEVICES && s.kind == SpanKind::Server as i32
    });
    assert_eq!(served.service, "guardyn-auth");
    assert_eq!(served.instance, "trace-auth");
    assert_eq!(served.parent_span_id, call.span_id);
    // The mail event travelled over NATS with the send's context.
    let woken = one(&spans, "the Listen stream's mail event", |s| {
        s.name == "mail_event"
    });
    assert_eq!(woken.parent_span_id, send.span_id);
}
