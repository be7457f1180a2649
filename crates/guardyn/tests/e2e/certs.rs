//! The mesh CA (`guardyn certs`) against real listeners: the mesh refuses peers whose
//! certificate is foreign, expired or revoked (on both ends of a call, the CRL reloaded without
//! restart), and rotating a running server's certificate under traffic fails no call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use guardyn::config::Config;
use guardyn_common::mesh::directory::RemoteDeviceDirectory;
use guardyn_common::mesh::{self, DeviceDirectory as _, MeshConfig, MeshTlsConfig};
use guardyn_testkit::{Options, TestServer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Generous: a debug build on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(90);

fn leaf_der(chain: &Path) -> Vec<u8> {
    let text = std::fs::read(chain).unwrap();
    let first = x509_parser::pem::Pem::iter_from_buffer(&text)
        .next()
        .unwrap()
        .unwrap();
    first.contents
}

/// A certificate signed by `dir`'s intermediate that expired yesterday, as `<name>.pem/.key`.
fn issue_expired(dir: &Path, name: &str) {
    let inter_pem = std::fs::read_to_string(dir.join("intermediate.pem")).unwrap();
    let inter_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("intermediate.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&inter_pem, inter_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now - time::Duration::days(1);
    params.use_authority_key_identifier_extension = true;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(
        dir.join(format!("{name}.pem")),
        format!("{}{inter_pem}", cert.pem()),
    )
    .unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn peer_tls(dir: &Path, name: &str) -> MeshTlsConfig {
    MeshTlsConfig {
        ca_path: guardyn::certs::root_path(dir),
        cert_path: dir.join(format!("{name}.pem")),
        key_path: dir.join(format!("{name}.key")),
        domain: "localhost".into(),
        crl_path: guardyn::certs::crl_path(dir),
        reload_secs: 1,
    }
}

/// One device-directory call over a fresh channel presenting `tls`.
async fn call(mesh_addr: std::net::SocketAddr, tls: MeshTlsConfig) -> Result<(), String> {
    let config = MeshConfig {
        max_attempts: 1,
        tls,
        ..MeshConfig::default()
    };
    let addresses = vec![format!("https://127.0.0.1:{}", mesh_addr.port())];
    let channel = mesh::channel(&addresses, &config)
        .await
        .map_err(|e| e.to_string())?;
    RemoteDeviceDirectory::new(channel, &config)
        .devices("00000000-0000-4000-8000-000000000000")
        .await
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn the_mesh_refuses_foreign_expired_and_revoked_certificates_and_follows_the_crl() {
    guardyn_common::server::install_crypto_provider();
    let ca = tempfile::tempdir().unwrap();
    let dir = ca.path();
    guardyn::certs::init(dir).unwrap();
    let sans = ["localhost".to_owned(), "127.0.0.1".to_owned()];
    guardyn::certs::issue(dir, "server", &sans, 30).unwrap();
    for name in ["good", "later-revoked", "revoked-peer"] {
        guardyn::certs::issue(dir, name, &[], 30).unwrap();
    }
    issue_expired(dir, "expired");
    guardyn::certs::revoke(dir, "revoked-peer").unwrap();
    let other = tempfile::tempdir().unwrap();
    guardyn::certs::init(other.path()).unwrap();
    guardyn::certs::issue(other.path(), "foreign", &[], 30).unwrap();

    let server_tls = peer_tls(dir, "server");
    let server = TestServer::start_with(Options {
        services: vec!["auth".into()],
        configure: Some(Box::new(move |c| {
            c.mesh.listen = "127.0.0.1:0".into();
            c.mesh.tls = server_tls;
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    let addr = server.mesh_addr.unwrap();

    call(addr, peer_tls(dir, "good")).await.unwrap();
    call(addr, peer_tls(dir, "later-revoked")).await.unwrap();
    let foreign = MeshTlsConfig {
        cert_path: other.path().join("foreign.pem"),
        key_path: other.path().join("foreign.key"),
        ..peer_tls(dir, "good")
    };
    for (what, tls) in [
        ("another CA's", foreign),
        ("an expired", peer_tls(dir, "expired")),
        ("a revoked", peer_tls(dir, "revoked-peer")),
    ] {
        assert!(
            call(addr, tls).await.is_err(),
            "a peer with {what} certificate was served"
        );
    }

    // A revocation published while the server runs takes effect at its next file check.
    guardyn::certs::revoke(dir, "later-revoked").unwrap();
    let deadline = Instant::now() + WAIT;
    while call(addr, peer_tls(dir, "later-revoked")).await.is_ok() {
        assert!(Instant::now() < deadline, "the new CRL was never loaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    call(addr, peer_tls(dir, "good")).await.unwrap();

    // The client side checks the server's chain against the CRL too.
    guardyn::certs::revoke(dir, "server").unwrap();
    let refused = call(addr, peer_tls(dir, "good")).await;
    assert!(refused.is_err(), "a client accepted a revoked server");
    server.stop().await.unwrap();
}

/// A TLS connection to `port` that records the server's leaf certificate.
async fn presented_leaf(port: u16, root: &Path) -> Option<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(leaf_der(root).into()).ok()?;
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .ok()?;
    Some(tls.get_ref().1.peer_certificates()?.first()?.to_vec())
}

pub(crate) fn certs_cli(args: &[&str], dir: &Path) {
    let out = super::guardyn()
        .arg("certs")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "guardyn certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`guardyn certs init`) with a server certificate for localhost in `dir`.
pub(crate) fn ca_with_server(dir: &Path) {
    certs_cli(&["init"], dir);
    certs_cli(
        &[
            "issue",
            "server",
            "--san",
            "localhost",
            "--san",
            "127.0.0.1",
        ],
        dir,
    );
}

#[tokio::test]
async fn rotating_a_running_servers_certificate_fails_no_call() {
    guardyn_common::server::install_crypto_provider();
    let work = tempfile::tempdir().unwrap();
    let dir: PathBuf = work.path().join("ca");
    ca_with_server(&dir);
    let root = guardyn::certs::root_path(&dir);
    let port = super::free_port();
    let mut c = Config::default();
    c.server.port = port;
    c.metrics.enabled = false;
    c.storage.data_dir = work.path().join("data");
    c.server.tls.enabled = true;
    c.server.tls.cert_path = dir.join("server.pem");
    c.server.tls.key_path = dir.join("server.key");
    c.server.tls.reload_secs = 1;
    let file = work.path().join("guardyn.toml");
    std::fs::write(&file, toml::to_string(&c).unwrap()).unwrap();
    let stderr = work.path().join("stderr");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_guardyn"))
        .env_clear()
        .arg("--config")
        .arg(&file)
        .args(["serve", "--service", "auth"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let endpoint = Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(std::fs::read(&root).unwrap()))
                .domain_name("localhost"),
        )
        .unwrap();
    let check = |channel: tonic::transport::Channel| async move {
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .map(|r| r.into_inner().status)
    };
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(channel) = endpoint.connect().await
            && check(channel).await.ok() == Some(1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never SERVING:\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old_leaf = leaf_der(&dir.join("server.pem"));
    assert_eq!(presented_leaf(port, &root).await, Some(old_leaf.clone()));

    // Traffic: calls on one long-lived connection, and calls each on a new connection (a new
    // handshake), until told to stop. Every failure is counted.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let long_lived = endpoint.connect().await.unwrap();
    let mut loops = Vec::new();
    for fresh in [false, true] {
        let (stop, ok, failed, endpoint, long_lived) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            endpoint.clone(),
            long_lived.clone(),
        );
        loops.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let channel = if fresh {
                    endpoint.connect().await.map_err(|e| e.to_string())
                } else {
                    Ok(long_lived.clone())
                };
                let result = match channel {
                    Ok(channel) => check(channel).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.push(e);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            errors
        }));
    }

    tokio::time::sleep(Duration::from_millis(500)).await;
    certs_cli(&["rotate", "server", "--force"], &dir);
    let new_leaf = leaf_der(&dir.join("server.pem"));
    assert_ne!(new_leaf, old_leaf);
    let deadline = Instant::now() + WAIT;
    while presented_leaf(port, &root).await.as_ref() != Some(&new_leaf) {
        assert!(
            Instant::now() < deadline,
            "the server never presented the rotated certificate:\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Keep the traffic going a little past the switch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for l in loops {
        errors.extend(l.await.unwrap());
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "calls failed during the rotation: {errors:?}");
    assert!(ok > 10, "too little traffic to mean anything: {ok} calls");
    // The long-lived connection still works: it kept the certificate it was opened with.
    assert_eq!(check(long_lived).await.unwrap(), 1);
    child.kill().await.unwrap();
}

/// The auth process for the client-rotation test: its mesh listener on a fixed port, so a
/// restarted one is reached by the same long-lived client channel.
async fn mesh_server(dir: &Path, port: u16) -> TestServer {
    let tls = peer_tls(dir, "server");
    TestServer::start_with(Options {
        services: vec!["auth".into()],
        configure: Some(Box::new(move |c| {
            c.mesh.listen = format!("127.0.0.1:{port}");
            c.mesh.tls = tls;
        })),
        ..Options::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mesh_client_presents_its_rotated_certificate_so_revoking_the_old_one_fails_no_call() {
    guardyn_common::server::install_crypto_provider();
    let work = tempfile::tempdir().unwrap();
    let dir: PathBuf = work.path().join("ca");
    ca_with_server(&dir);
    certs_cli(&["issue", "client"], &dir);
    let port = super::free_port();
    let server = mesh_server(&dir, port).await;

    // One long-lived client, as a messaging or admin process holds it.
    let config = MeshConfig {
        max_attempts: 1,
        tls: peer_tls(&dir, "client"),
        ..MeshConfig::default()
    };
    let channel = mesh::channel(&[format!("https://127.0.0.1:{port}")], &config)
        .await
        .unwrap();
    let client = RemoteDeviceDirectory::new(channel, &config);
    let account = "00000000-0000-4000-8000-000000000000";
    client.devices(account).await.unwrap();

    // Calls without pause, every failure counted, across the rotation and the revocation.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic = {
        let (stop, ok, failed, client) = (stop.clone(), ok.clone(), failed.clone(), client.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client.devices(account).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        errors.push(format!("{e:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            errors
        })
    };

    // Keep the old pair to show the server refuses it once revoked.
    for ext in ["pem", "key"] {
        std::fs::copy(
            dir.join(format!("client.{ext}")),
            dir.join(format!("old.{ext}")),
        )
        .unwrap();
    }
    let old_serial = guardyn::certs::existing(&dir, "client").unwrap().serial;
    tokio::time::sleep(Duration::from_millis(300)).await;
    certs_cli(&["rotate", "client", "--force"], &dir);
    // The client checks its files every second: give it a few checks before the old
    // certificate becomes useless.
    tokio::time::sleep(Duration::from_secs(3)).await;
    certs_cli(&["revoke", &old_serial], &dir);
    let deadline = Instant::now() + WAIT;
    while call(server.mesh_addr.unwrap(), peer_tls(&dir, "old"))
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "the server never loaded the CRL");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let errors = traffic.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(
        failed, 0,
        "calls failed across rotation and revocation: {errors:?}"
    );
    assert!(ok > 10, "too little traffic to mean anything: {ok} calls");

    // A restarted server sees only new handshakes: the same client channel (no restart of the
    // client) must now present the rotated certificate, since the old one is revoked.
    server.stop().await.unwrap();
    let server = mesh_server(&dir, port).await;
    let deadline = Instant::now() + WAIT;
    loop {
        match client.devices(account).await {
            Ok(_) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the client never presented its rotated certificate: {e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await.unwrap();
}
