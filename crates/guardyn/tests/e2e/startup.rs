//! A process among others, as an orchestrator runs it: `guardyn serve --service NAME` started
//! before its dependencies answers health NOT_SERVING, waits for them and becomes SERVING when
//! they appear; one that never appears stops it after `server.startup_timeout_secs`, naming the
//! key; a signal while waiting exits cleanly. Its `/metrics` carry its instance and the
//! services of the calls.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use guardyn::config::{Config, EventsBackend};
use guardyn_testkit::NatsServer;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::gateway::{Upstreams, gateway};
use crate::mesh::{fast_auth, next_body, register};

/// Generous: a debug build on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(90);

/// One `guardyn serve` child with its own configuration file; killed when dropped.
struct Proc {
    name: &'static str,
    port: u16,
    child: tokio::process::Child,
    stderr: PathBuf,
}

impl Proc {
    fn spawn(dir: &Path, name: &'static str, service: &str, config: &Config) -> Self {
        let (mut cmd, stderr) = crate::serve_command(dir, name, service, config);
        let child = cmd.spawn().unwrap();
        Self {
            name,
            port: config.server.port,
            child,
            stderr,
        }
    }

    fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://127.0.0.1:{}", self.port))
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The health status of `service` ("" = overall), once the process answers at all.
    async fn health(&mut self, service: &str) -> i32 {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited ({status}):\n{}", self.name, self.stderr());
            }
            let answer = HealthClient::new(self.channel())
                .check(HealthCheckRequest {
                    service: service.to_owned(),
                })
                .await;
            if let Ok(r) = answer {
                return r.into_inner().status;
            }
            assert!(
                Instant::now() < deadline,
                "{} never answered health:\n{}",
                self.name,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_serving(&mut self) {
        let deadline = Instant::now() + WAIT;
        while self.health("").await != ServingStatus::Serving as i32 {
            assert!(
                Instant::now() < deadline,
                "{} did not become SERVING:\n{}",
                self.name,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until stderr contains `text`.
    async fn wait_logged(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "{} never logged {text:?}:\n{}",
                self.name,
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn exit_code(&mut self) -> Option<i32> {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not exit:\n{}", self.name, self.stderr()))
            .unwrap()
            .code()
    }

    fn sigterm(&self) {
        let pid = self.child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }
}

fn base_config(dir: &Path, name: &str, port: u16) -> Config {
    let mut c = Config::default();
    c.server.port = port;
    c.server.shutdown_grace_ms = 2_000;
    c.metrics.enabled = false;
    c.storage.data_dir = dir.join(name).join("data");
    c
}

fn nats(c: &mut Config, port: u16) {
    c.events.backend = EventsBackend::Nats;
    c.events.nats_url = format!("nats://127.0.0.1:{port}");
}

fn nats_installed() -> bool {
    if NatsServer::binary().is_some() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "nats-server is required in CI: .ci/run installs it"
    );
    eprintln!("skipping: nats-server is not installed");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_started_before_nats_and_auth_waits_then_serves() {
    if !nats_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let [nats_port, auth_port, auth_mesh, messaging_port] = [0; 4].map(|_| crate::free_port());

    let mut c = base_config(dir.path(), "messaging", messaging_port);
    nats(&mut c, nats_port);
    c.mesh.auth_addresses = vec![format!("http://127.0.0.1:{auth_port}")];
    c.mesh.directory_addresses = vec![format!("http://127.0.0.1:{auth_mesh}")];
    let mut messaging = Proc::spawn(dir.path(), "messaging", "messaging", &c);

    // Alive (it answers) but not ready, overall and for the service it will host; it says
    // what it waits for, by key.
    messaging.wait_logged("events.nats_url").await;
    assert_eq!(messaging.health("").await, ServingStatus::NotServing as i32);
    assert_eq!(
        messaging
            .health("guardyn.messaging.v1.MessagingService")
            .await,
        ServingStatus::NotServing as i32
    );

    // The bus appears: it moves on to the next dependency, auth, and still does not serve.
    let _bus = NatsServer::start_on(nats_port).unwrap();
    messaging.wait_logged("mesh.auth_addresses").await;
    assert_eq!(messaging.health("").await, ServingStatus::NotServing as i32);

    let mut c = base_config(dir.path(), "auth", auth_port);
    nats(&mut c, nats_port);
    fast_auth(&mut c);
    c.mesh.listen = format!("127.0.0.1:{auth_mesh}");
    let mut auth = Proc::spawn(dir.path(), "auth", "auth", &c);
    auth.wait_serving().await;
    messaging.wait_serving().await;
    assert_eq!(
        messaging
            .health("guardyn.messaging.v1.MessagingService")
            .await,
        ServingStatus::Serving as i32
    );

    // And it works: a message sent through it arrives.
    let channel = gateway(Upstreams {
        auth: vec![auth.channel()],
        messaging: vec![messaging.channel()],
        ..Upstreams::default()
    })
    .await;
    let alice = register(&channel, "latealice").await;
    let bob = register(&channel, "latebob").await;
    let mut inbox = bob.listen().await.unwrap();
    alice
        .send(bob.account_id(), b"worth the wait")
        .await
        .unwrap();
    assert_eq!(next_body(&mut inbox).await, b"worth the wait");
    drop(inbox);

    messaging.sigterm();
    assert_eq!(messaging.exit_code().await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_that_never_appears_stops_start_up_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = base_config(dir.path(), "presence", crate::free_port());
    nats(&mut c, crate::free_port());
    c.server.startup_timeout_secs = 2;
    let mut presence = Proc::spawn(dir.path(), "presence", "presence", &c);

    // Storage comes first: a PostgreSQL server that is not there.
    let mut c = base_config(dir.path(), "media", crate::free_port());
    c.storage.engine = guardyn::config::StorageEngine::Postgres;
    c.storage.postgres = Some(guardyn_storage_postgres::PostgresConfig {
        url: format!(
            "postgres://guardyn@127.0.0.1:{}/guardyn",
            crate::free_port()
        ),
        connect_timeout_ms: 500,
        ..Default::default()
    });
    c.server.startup_timeout_secs = 2;
    let mut media = Proc::spawn(dir.path(), "media", "media", &c);

    for (p, key) in [
        (&mut presence, "events.nats_url"),
        (&mut media, "storage.postgres"),
    ] {
        assert_eq!(p.exit_code().await, Some(1), "{}", p.stderr());
        let stderr = p.stderr();
        let last = stderr.trim().lines().last().unwrap_or_default();
        assert!(last.contains(key), "{stderr}");
        assert!(last.contains("server.startup_timeout_secs"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_waiting_for_dependencies_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = base_config(dir.path(), "presence", crate::free_port());
    nats(&mut c, crate::free_port());
    let mut presence = Proc::spawn(dir.path(), "presence", "presence", &c);
    assert_eq!(presence.health("").await, ServingStatus::NotServing as i32);
    presence.sigterm();
    assert_eq!(presence.exit_code().await, Some(0), "{}", presence.stderr());
}

/// A process hosting only presence: every metric carries its instance, the per-RPC ones the
/// gRPC service of the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_a_presence_process_carry_instance_and_service_labels() {
    use guardyn_proto::guardyn::presence::v1::GetVisibilityRequest;
    use guardyn_proto::guardyn::presence::v1::presence_service_client::PresenceServiceClient;
    let dir = tempfile::tempdir().unwrap();
    let mut c = base_config(dir.path(), "presence", crate::free_port());
    let metrics_port = crate::free_port();
    c.metrics.enabled = true;
    c.metrics.port = metrics_port;
    c.server.instance_id = "presence-7".into();
    let mut presence = Proc::spawn(dir.path(), "presence", "presence", &c);
    presence.wait_serving().await;
    let refused = PresenceServiceClient::new(presence.channel())
        .get_visibility(GetVisibilityRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let body = tokio::task::spawn_blocking(move || {
        crate::http1(
            ([127, 0, 0, 1], metrics_port).into(),
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    let (_, exposition) = body.split_once("\r\n\r\n").unwrap();
    let samples: Vec<&str> = exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(!samples.is_empty(), "{body}");
    for line in &samples {
        assert!(line.contains(r#"instance="presence-7""#), "{line}");
    }
    let call = r#"guardyn_grpc_server_handled_total{instance="presence-7",service="guardyn.presence.v1.PresenceService",method="/guardyn.presence.v1.PresenceService/GetVisibility",code="UNAUTHENTICATED"} 1"#;
    assert!(samples.contains(&call), "{body}");
    assert!(
        samples.iter().any(|l| l.starts_with(
            r#"guardyn_grpc_server_handled_total{instance="presence-7",service="grpc.health.v1.Health","#
        )),
        "{body}"
    );
}
