//! End-to-end tests of the `guardyn` server: in-process through the testkit, and as a child
//! process for signals and configuration errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guardyn_testkit::{Options, TestServer};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[path = "e2e/admin_audit.rs"]
mod admin_audit;
#[path = "e2e/admin_cli.rs"]
mod admin_cli;
#[path = "e2e/admin_config.rs"]
mod admin_config;
#[path = "e2e/admin_credentials.rs"]
mod admin_credentials;
#[path = "e2e/admin_monitoring.rs"]
mod admin_monitoring;
#[path = "e2e/admin_notices.rs"]
mod admin_notices;
#[path = "e2e/admin_policy.rs"]
mod admin_policy;
#[path = "e2e/admin_users.rs"]
mod admin_users;
#[path = "e2e/certs.rs"]
mod certs;
#[path = "e2e/cluster.rs"]
mod cluster;
#[path = "e2e/console.rs"]
mod console;
#[path = "e2e/console_tls.rs"]
mod console_tls;
#[path = "e2e/gateway.rs"]
mod gateway;
#[path = "e2e/mesh.rs"]
mod mesh;
#[path = "e2e/postgres.rs"]
mod postgres;
#[path = "e2e/startup.rs"]
mod startup;
#[path = "e2e/traces.rs"]
mod traces;

fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{name} is required in CI: .ci/run installs it"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}

#[tokio::test]
async fn health_reports_serving_then_not_serving_on_shutdown() {
    let server = TestServer::start().await.unwrap();
    let mut health = HealthClient::new(server.channel());
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    let started = Instant::now();
    let stopping = tokio::spawn(server.stop());
    let next = watch.message().await.unwrap().unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    drop(watch);
    stopping.await.unwrap().unwrap();
    // The testkit's grace is 2 s: an open stream may hold shutdown at most that long.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn grpcurl_lists_services_over_reflection_v1alpha() {
    if !tool("grpcurl") {
        return;
    }
    let server = TestServer::start().await.unwrap();
    let addr = server.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("grpcurl")
            .args(["-plaintext", &addr, "list"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for service in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            listed.contains(service),
            "{service} missing from:\n{listed}"
        );
    }
    // Only hosted services are advertised: the contract's other services are not listed
    // until they are served.
    for line in listed.lines() {
        assert!(
            !line.starts_with("guardyn.") || server.hosts(line),
            "{line} is advertised but not served"
        );
    }

    let addr = server.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("grpcurl")
            .args(["-plaintext", &addr, "grpc.health.v1.Health/Check"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("SERVING"), "{body}");

    // Error details decode through reflection: a call without a token shows its reason.
    let addr = server.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("grpcurl")
            .args([
                "-plaintext",
                "-d",
                r#"{"payload":"aGk="}"#,
                &addr,
                "guardyn.messaging.v1.MessagingService/Echo",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(text.contains("Unauthenticated"), "{text}");
    assert!(text.contains(r#""reason":"UNAUTHENTICATED""#), "{text}");
}

/// A raw HTTP/1.1 exchange, as a browser's gRPC-web client would do it.
fn http1(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn grpc_web_over_http1_with_cors_only_for_configured_origins() {
    let server = TestServer::start_with(Options::configure(|c| {
        c.server.cors.allowed_origins = vec!["https://app.example".into()];
    }))
    .await
    .unwrap();
    let addr = server.addr;

    // An empty HealthCheckRequest in one gRPC-web frame: flag 0, length 0.
    let request = b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\n\
        Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n\
        Origin: https://app.example\r\nX-Request-Id: web-req-1\r\n\
        Content-Length: 5\r\nConnection: close\r\n\r\n\0\0\0\0\0";
    let response = tokio::task::spawn_blocking(move || http1(addr, request))
        .await
        .unwrap();
    let lower = response.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{response}");
    assert!(
        lower.contains("content-type: application/grpc-web"),
        "{response}"
    );
    assert!(lower.contains("grpc-status:0"), "{response}");
    assert!(lower.contains("access-control-allow-origin: https://app.example"));
    assert!(lower.contains("x-request-id: web-req-1"), "{response}");

    // Without `Origin` (not a browser) the call is answered without CORS headers.
    let request = b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\n\
        Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n\
        Content-Length: 5\r\nConnection: close\r\n\r\n\0\0\0\0\0";
    let response = tokio::task::spawn_blocking(move || http1(addr, request))
        .await
        .unwrap();
    let lower = response.to_ascii_lowercase();
    assert!(lower.contains("grpc-status:0"), "{response}");
    assert!(!lower.contains("access-control-"), "{response}");
    assert!(!lower.contains("vary:"), "{response}");

    for (origin, allowed) in [
        ("https://app.example", true),
        ("https://evil.example", false),
    ] {
        let preflight = format!(
            "OPTIONS /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: content-type,x-grpc-web,authorization\r\n\
             Connection: close\r\n\r\n"
        );
        let response = tokio::task::spawn_blocking(move || http1(addr, preflight.as_bytes()))
            .await
            .unwrap()
            .to_ascii_lowercase();
        assert_eq!(
            response.contains(&format!("access-control-allow-origin: {origin}")),
            allowed,
            "{response}"
        );
    }
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let server = TestServer::start().await.unwrap();
    let mut health = HealthClient::new(server.channel());
    let mut req = tonic::Request::new(HealthCheckRequest::default());
    req.metadata_mut()
        .insert("x-request-id", "abc-123".parse().unwrap());
    let resp = health.check(req).await.unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap(), "abc-123");

    let resp = health.check(HealthCheckRequest::default()).await.unwrap();
    let generated = resp
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
}

#[tokio::test]
async fn metrics_count_rpcs_by_method_and_code() {
    let server = TestServer::start_with(Options {
        metrics: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let mut health = HealthClient::new(server.channel());
    health.check(HealthCheckRequest::default()).await.unwrap();
    let err = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let addr = server.metrics_addr.unwrap();
    let body = tokio::task::spawn_blocking(move || {
        http1(
            addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert!(
        body.contains(
            r#"guardyn_grpc_server_handled_total{instance="testkit",service="grpc.health.v1.Health",method="/grpc.health.v1.Health/Check",code="OK"} 1"#
        ),
        "{body}"
    );
    assert!(
        body.contains(
            r#"guardyn_grpc_server_handled_total{instance="testkit",service="grpc.health.v1.Health",method="/grpc.health.v1.Health/Check",code="NOT_FOUND"} 1"#
        ),
        "{body}"
    );
    assert!(body.contains("guardyn_grpc_server_handling_seconds_bucket"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn guardyn() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_guardyn"));
    // The child must not inherit a developer's GUARDYN_* settings.
    for (k, _) in std::env::vars() {
        if k.starts_with("GUARDYN_") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `guardyn --config DIR/NAME.toml serve --service SERVICE` with `config` written to that file,
/// no inherited `GUARDYN_*` settings, stderr to `DIR/NAME.stderr` (returned with it) and killed
/// when dropped; the caller may add to it before spawning it.
fn serve_command(
    dir: &std::path::Path,
    name: &str,
    service: &str,
    config: &guardyn::config::Config,
) -> (tokio::process::Command, std::path::PathBuf) {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, toml::to_string(config).unwrap()).unwrap();
    let stderr = dir.join(format!("{name}.stderr"));
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_guardyn"));
    for (k, _) in std::env::vars() {
        if k.starts_with("GUARDYN_") {
            cmd.env_remove(k);
        }
    }
    cmd.arg("--config")
        .arg(&file)
        .args(["serve", "--service", service])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .kill_on_drop(true);
    (cmd, stderr)
}

#[test]
fn an_invalid_value_exits_non_zero_with_one_line_naming_the_key() {
    let out = guardyn()
        .arg("serve")
        .env("GUARDYN_SERVER__PORT", "seventy")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("server.port"), "{stderr}");
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = guardyn()
        .arg("serve")
        .env("GUARDYN_SERVER__PORT", port.to_string())
        .env("GUARDYN_METRICS__ENABLED", "false")
        .env("GUARDYN_SERVER__SHUTDOWN_GRACE_MS", "3000")
        .env("GUARDYN_STORAGE__DATA_DIR", dir.path().join("data"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = async {
                let channel =
                    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
                        .connect()
                        .await?;
                let r = HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await?;
                anyhow::Ok(r.into_inner().status == ServingStatus::Serving as i32)
            }
            .await
            .unwrap_or(false);
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "server did not become healthy");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let started = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        dir.path().join("data").exists(),
        "embedded data dir created"
    );
}

#[tokio::test]
async fn oversized_requests_are_refused_with_payload_too_large() {
    let server = TestServer::start_with(Options::configure(|c| c.server.max_request_bytes = 1024))
        .await
        .unwrap();
    let mut health = HealthClient::new(server.channel());
    let err = health
        .check(HealthCheckRequest {
            service: "x".repeat(2000),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert_eq!(
        guardyn_common::error::reason_of(&err).as_deref(),
        Some("PAYLOAD_TOO_LARGE")
    );
    // Within the limit the same call is served.
    let err = health
        .check(HealthCheckRequest {
            service: "x".repeat(900),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

/// A CA, a server certificate for `localhost` and a client certificate, as PEM files; more
/// certificates from the same CA with [`Pki::issue`].
struct Pki {
    dir: tempfile::TempDir,
    ca: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap().pem();
        std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
        let pki = Self {
            dir,
            ca,
            issuer: Issuer::new(ca_params, ca_key),
        };
        pki.issue("server", &["localhost"]);
        pki.issue("client", &["device-1"]);
        pki
    }

    /// A certificate for `sans` signed by the CA, as `<name>.pem` and `<name>.key`.
    fn issue(&self, name: &str, sans: &[&str]) {
        let key = rcgen::KeyPair::generate().unwrap();
        let sans = sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let cert = rcgen::CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    guardyn_common::server::install_crypto_provider();
    let pki = Pki::new();
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let server = TestServer::start_with(Options::configure(move |c| {
        c.server.tls.enabled = true;
        c.server.tls.cert_path = cert;
        c.server.tls.key_path = key;
        c.server.tls.client_ca_path = ca;
    }))
    .await
    .unwrap();
    let url = format!("https://localhost:{}", server.addr.port());

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    let with_cert = Endpoint::from_shared(url.clone())
        .unwrap()
        .tls_config(tls.clone().identity(Identity::from_pem(
            pki.read("client.pem"),
            pki.read("client.key"),
        )))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = HealthClient::new(with_cert)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    // Without a client certificate the handshake (or the first call) fails.
    let refused = async {
        let channel = Endpoint::from_shared(url.clone())?
            .tls_config(tls.clone())?
            .connect()
            .await?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await?;
        anyhow::Ok(())
    }
    .await;
    assert!(refused.is_err(), "a client without certificate was served");

    // Plaintext clients are not served either.
    let plaintext = async {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{}", server.addr.port()))?
            .connect()
            .await?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await?;
        anyhow::Ok(())
    }
    .await;
    assert!(plaintext.is_err());
}

/// `guardyn verify` prints the same safety number on both sides of a conversation, for
/// peers named by `@username`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_prints_the_same_safety_number_on_both_sides() {
    let server = TestServer::start().await.unwrap();
    let url = format!("http://{}", server.addr);
    let dir = tempfile::tempdir().unwrap();
    let run = |state: &str, args: Vec<String>| {
        let mut cmd = guardyn();
        cmd.args(&args)
            .arg("--server")
            .arg(&url)
            .arg("--state")
            .arg(dir.path().join(state))
            .env("GDN_PASSWORD", "correct horse battery staple")
            .env("GDN_STATE_PASSPHRASE", "a state passphrase");
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            let stdout = String::from_utf8(out.stdout).unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        }
    };
    let alice = format!("alice{}", std::process::id());
    let bob = format!("bob{}", std::process::id());
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    run("a", args(&["register", "--username", &alice])).await;
    run("b", args(&["register", "--username", &bob])).await;
    run("a", args(&["send", &format!("@{bob}"), "hello"])).await;
    let from_alice = run("a", args(&["verify", &format!("@{bob}")])).await;
    let from_bob = run("b", args(&["verify", &format!("@{alice}")])).await;
    let number = |out: &str| out.lines().last().unwrap().to_owned();
    assert_eq!(number(&from_alice), number(&from_bob));
    assert_eq!(number(&from_alice).split(' ').count(), 12, "{from_alice}");
}
