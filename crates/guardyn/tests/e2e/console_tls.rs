//! The web admin console over HTTPS: with `admin.console_tls_cert_path`/`console_tls_key_path`
//! a real `guardyn serve` hands out the console's files over TLS with that certificate (a
//! client trusting the CA gets index.html and its policy header; one trusting another CA, or
//! speaking plain HTTP, gets nothing), and a half-configured pair is refused naming the key.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::certs::{ca_with_server, certs_cli};

const INDEX: &str = "<!doctype html><title>console over https</title>";

/// `GET /` over TLS to `port`, trusting only the root certificate `root`: the raw response.
async fn https_get(port: u16, root: &Path) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(root).unwrap();
    for cert in pem_certs(&pem) {
        roots.add(cert.into()).unwrap();
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    // A peer that closes without close_notify still delivered what it sent.
    let _ = tls.read_to_end(&mut out).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The DER certificates of a PEM bundle (x509-parser is already a dependency).
fn pem_certs(pem: &[u8]) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .map(|p| p.unwrap().contents)
        .collect()
}

fn config_text(port: u16, console_port: u16, work: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "[server]\nport = {port}\n[metrics]\nenabled = false\n\
         [storage]\ndata_dir = {data:?}\n\
         [admin]\nconsole_dir = {dist:?}\nconsole_listen = \"127.0.0.1:{console_port}\"\n\
         console_tls_cert_path = {cert:?}\nconsole_tls_key_path = {key:?}\n",
        data = work.join("data").to_str().unwrap(),
        dist = work.join("dist").to_str().unwrap(),
        cert = cert.to_str().unwrap(),
        key = key.to_str().unwrap(),
    )
}

#[tokio::test]
async fn the_console_is_served_over_https_with_its_own_certificate() {
    guardyn_common::server::install_crypto_provider();
    let work = tempfile::tempdir().unwrap();
    let (ca, other_ca) = (work.path().join("ca"), work.path().join("other-ca"));
    ca_with_server(&ca);
    certs_cli(&["init"], &other_ca);
    std::fs::create_dir_all(work.path().join("dist")).unwrap();
    std::fs::write(work.path().join("dist/index.html"), INDEX).unwrap();
    let (port, console_port) = (super::free_port(), super::free_port());

    // Half a pair is a configuration error naming the missing key, not a plain-HTTP console.
    let broken = work.path().join("broken.toml");
    std::fs::write(
        &broken,
        config_text(
            port,
            console_port,
            work.path(),
            &ca.join("server.pem"),
            &work.path().join("no-such.key"),
        ),
    )
    .unwrap();
    let out = super::guardyn()
        .arg("--config")
        .arg(&broken)
        .arg("config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("admin.console_tls_key_path"), "{said}");

    let file = work.path().join("guardyn.toml");
    std::fs::write(
        &file,
        config_text(
            port,
            console_port,
            work.path(),
            &ca.join("server.pem"),
            &ca.join("server.key"),
        ),
    )
    .unwrap();
    let stderr = work.path().join("stderr");
    let _child = tokio::process::Command::new(env!("CARGO_BIN_EXE_guardyn"))
        .env_clear()
        .arg("--config")
        .arg(&file)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let root = guardyn::certs::root_path(&ca);
    let deadline = Instant::now() + Duration::from_secs(90);
    let page = loop {
        match https_get(console_port, &root).await {
            Ok(page) if !page.is_empty() => break page,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the console never answered over HTTPS:\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.ends_with(INDEX), "{page}");
    let lower = page.to_ascii_lowercase();
    assert!(lower.contains("content-security-policy: "), "{page}");
    assert!(lower.contains("content-type: text/html"), "{page}");

    // A client that trusts another CA refuses the certificate.
    let foreign = https_get(console_port, &guardyn::certs::root_path(&other_ca)).await;
    assert!(foreign.is_err(), "accepted by a foreign CA: {foreign:?}");

    // Plain HTTP on the console port gets no page.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", console_port))
        .await
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer)).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains(INDEX),
        "the console answered plain HTTP"
    );
}
