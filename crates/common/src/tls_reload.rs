//! TLS material that follows the files on disk. Certificates are rotated and revoked by
//! replacing files (`guardyn certs`), so servers and mesh clients check the files' stamps every
//! `reload_secs` and rebuild their rustls configuration when one changed: new handshakes use
//! the new certificate, key, CA and CRL; established connections keep theirs, so a rotation
//! drops no call. A file that does not load (half-written pair, bad PEM) keeps the previous
//! configuration in force and is logged; the next check tries again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

/// Why TLS material did not load; names the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsLoadError {
    pub path: String,
    pub reason: String,
}

fn load_error(path: &Path, reason: impl std::fmt::Display) -> TlsLoadError {
    TlsLoadError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The files of one server identity. `client_ca` set = mutual TLS; `crl` applies to the peer
/// certificates this side verifies.
#[derive(Clone, Debug)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub crl: Option<PathBuf>,
    /// ALPN protocols offered (`h2`, plus `http/1.1` where gRPC-web is served).
    pub alpn: Vec<Vec<u8>>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsLoadError> {
    std::fs::read(path).map_err(|e| load_error(path, e))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsLoadError> {
    let bytes = read(path)?;
    let out = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load_error(path, e))?;
    if out.is_empty() {
        return Err(load_error(path, "no PEM certificate"));
    }
    Ok(out)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsLoadError> {
    let bytes = read(path)?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| load_error(path, e))?
        .ok_or_else(|| load_error(path, "no PEM private key"))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsLoadError> {
    let mut store = RootCertStore::empty();
    for cert in certs(path)? {
        store.add(cert).map_err(|e| load_error(path, e))?;
    }
    Ok(Arc::new(store))
}

fn crls(path: Option<&Path>) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsLoadError> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let bytes = read(path)?;
    let out = rustls_pemfile::crls(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| load_error(path, e))?;
    if out.is_empty() {
        return Err(load_error(path, "no PEM X509 CRL"));
    }
    Ok(out)
}

impl ServerTlsFiles {
    fn paths(&self) -> Vec<PathBuf> {
        let mut out = vec![self.cert.clone(), self.key.clone()];
        out.extend(self.client_ca.clone());
        out.extend(self.crl.clone());
        out
    }

    /// Build the rustls configuration from the files as they are now.
    pub fn build(&self) -> Result<Arc<ServerConfig>, TlsLoadError> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| load_error(&self.cert, e))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                // Only the peer's own certificate is looked up in the CRL (the intermediate
                // signs it; the root's list of intermediates is not published), and a leaf the
                // CRL's issuer did not sign fails closed.
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone())
                        .with_crls(crls(self.crl.as_deref())?)
                        .only_check_end_entity_revocation()
                        .build()
                        .map_err(|e| load_error(ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs(&self.cert)?, key(&self.key)?)
            .map_err(|e| load_error(&self.key, format!("does not match the certificate: {e}")))?;
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }
}

/// Modification stamp of a file: rename-over (what `guardyn certs` does) changes the inode,
/// an in-place edit the time or size.
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len(), m.ino())))
        })
        .collect()
}

/// What a [`Reloading`] value is built from.
#[derive(Debug)]
pub enum Spec {
    Server(ServerTlsFiles),
    /// Verifying servers (mesh clients): the CA that signed them and the CRL.
    Verifier {
        ca: PathBuf,
        crl: Option<PathBuf>,
    },
    /// The certificate and key a mesh client presents.
    ClientIdentity {
        cert: PathBuf,
        key: PathBuf,
    },
}

impl Spec {
    fn paths(&self) -> Vec<PathBuf> {
        match self {
            Spec::Server(files) => files.paths(),
            Spec::Verifier { ca, crl } => std::iter::once(ca.clone()).chain(crl.clone()).collect(),
            Spec::ClientIdentity { cert, key } => vec![cert.clone(), key.clone()],
        }
    }
}

/// A value built from files, rebuilt when they change.
#[derive(Debug)]
pub struct Reloading<T> {
    label: &'static str,
    spec: Spec,
    paths: Vec<PathBuf>,
    build: fn(&Spec) -> Result<Arc<T>, TlsLoadError>,
    current: RwLock<Arc<T>>,
    seen: Mutex<Vec<Stamp>>,
}

impl<T> Reloading<T> {
    fn new(
        label: &'static str,
        spec: Spec,
        build: fn(&Spec) -> Result<Arc<T>, TlsLoadError>,
    ) -> Result<Arc<Self>, TlsLoadError> {
        let paths = spec.paths();
        // Stamped before building: a change racing the build is picked up by the next check.
        let seen = stamps(&paths);
        let first = build(&spec)?;
        Ok(Arc::new(Self {
            label,
            spec,
            paths,
            build,
            current: RwLock::new(first),
            seen: Mutex::new(seen),
        }))
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Rebuild if a file changed since the last successful load; true when it was replaced.
    /// A failed build keeps the old value and is retried on the next call.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamps(&self.paths);
        if *self.seen.lock().unwrap_or_else(|p| p.into_inner()) == now {
            return false;
        }
        match (self.build)(&self.spec) {
            Ok(fresh) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = now;
                tracing::info!(tls = self.label, "TLS material reloaded from disk");
                true
            }
            Err(e) => {
                tracing::warn!(
                    tls = self.label,
                    error = %e,
                    "TLS material changed but does not load: keeping the previous configuration"
                );
                false
            }
        }
    }

    /// Check the files every `every` until the last handle to `self` is dropped.
    pub fn watch(self: &Arc<Self>, every: Duration)
    where
        T: Send + Sync + 'static,
    {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                // Reading and parsing a few small files: keep it off the async workers.
                let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
            }
        });
    }
}

/// A server configuration following `files`, checked every `every`.
pub fn server_config(
    label: &'static str,
    files: ServerTlsFiles,
    every: Duration,
) -> Result<Arc<Reloading<ServerConfig>>, TlsLoadError> {
    let this = Reloading::new(label, Spec::Server(files), |spec| match spec {
        Spec::Server(files) => files.build(),
        Spec::Verifier { ca, .. } | Spec::ClientIdentity { cert: ca, .. } => {
            Err(load_error(ca, "not a server identity"))
        }
    })?;
    this.watch(every);
    Ok(this)
}

/// The certificate chain and key a mesh client presents, as PEM (what tonic's `Identity`
/// takes), checked to parse and to match each other before they replace the previous pair.
#[derive(Clone)]
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ClientIdentity")
            .field("cert_pem_bytes", &self.cert_pem.len())
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    fn load(cert: &Path, key_path: &Path) -> Result<Arc<Self>, TlsLoadError> {
        // Parsed and matched here, so a half-rotated pair (new key, old certificate) keeps the
        // previous identity in force instead of breaking every new connection.
        rustls::sign::CertifiedKey::from_der(certs(cert)?, key(key_path)?, &provider())
            .map_err(|e| load_error(key_path, format!("does not match the certificate: {e}")))?;
        Ok(Arc::new(Self {
            cert_pem: read(cert)?,
            key_pem: read(key_path)?,
        }))
    }
}

/// A mesh client's own certificate and key following their files, checked every `every`:
/// after `guardyn certs rotate` new connections present the new certificate.
pub fn client_identity(
    cert: PathBuf,
    key: PathBuf,
    every: Duration,
) -> Result<Arc<Reloading<ClientIdentity>>, TlsLoadError> {
    let this = Reloading::new(
        "mesh client identity",
        Spec::ClientIdentity { cert, key },
        |spec| match spec {
            Spec::ClientIdentity { cert, key } => ClientIdentity::load(cert, key),
            Spec::Server(ServerTlsFiles { cert, .. }) | Spec::Verifier { ca: cert, .. } => {
                Err(load_error(cert, "not a client identity"))
            }
        },
    )?;
    this.watch(every);
    Ok(this)
}

/// Accept TCP connections on `listener` and complete TLS handshakes with the configuration in
/// force at each accept, yielding only connections whose handshake succeeded (a peer with a
/// revoked, expired or foreign certificate is logged and dropped here). Handshakes run
/// concurrently, so a slow peer holds up no other. The loop ends when the stream is dropped.
pub fn incoming(
    config: Arc<Reloading<ServerConfig>>,
    listener: TcpListener,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            // Closed first: once the server is done, accept nothing it would drop.
            let accepted = tokio::select! {
                biased;
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Small frames on long-lived HTTP/2 connections, and keepalive to find dead peers of
            // idle streams (as `server::serve` sets for plaintext).
            let _ = tcp.set_nodelay(true);
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(
                &socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)),
            );
            let acceptor = tokio_rustls::TlsAcceptor::from(config.current());
            let tx = tx.clone();
            let label = config.label;
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(tls = label, %peer, error = %e, "TLS handshake refused")
                    }
                    Err(_) => tracing::info!(tls = label, %peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Verifies servers' certificate chains against a CA and CRL that follow their files: the mesh
/// client's side of revocation and rotation.
#[derive(Debug)]
pub struct FollowingServerVerifier(Arc<Reloading<rustls::client::WebPkiServerVerifier>>);

impl FollowingServerVerifier {
    pub fn new(
        ca: PathBuf,
        crl: Option<PathBuf>,
        every: Duration,
    ) -> Result<Arc<Self>, TlsLoadError> {
        let inner = Reloading::new(
            "mesh client",
            Spec::Verifier { ca, crl },
            |spec| match spec {
                Spec::Verifier { ca, crl } => {
                    rustls::client::WebPkiServerVerifier::builder_with_provider(
                        roots(ca)?,
                        provider(),
                    )
                    .with_crls(crls(crl.as_deref())?)
                    .only_check_end_entity_revocation()
                    .build()
                    .map_err(|e| load_error(ca, e))
                }
                Spec::Server(ServerTlsFiles { cert, .. }) | Spec::ClientIdentity { cert, .. } => {
                    Err(load_error(cert, "not a verifier"))
                }
            },
        )?;
        inner.watch(every);
        Ok(Arc::new(Self(inner)))
    }
}

impl ServerCertVerifier for FollowingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.current().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.current().supported_verify_schemes()
    }
}

/// Install ring as rustls's process-wide crypto provider (idempotent). Every binary and test
/// harness that touches TLS calls it first; tonic's server builds its rustls config from it.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn write_pair(dir: &Path, name: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        // Renames, as `guardyn certs` does, so the stamp changes even within one mtime tick.
        let tmp = dir.join("tmp");
        std::fs::write(&tmp, key.serialize_pem()).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{name}.key"))).unwrap();
        std::fs::write(&tmp, cert.pem()).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{name}.pem"))).unwrap();
    }

    fn files(dir: &Path) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            client_ca: None,
            crl: None,
            alpn: vec![b"h2".to_vec()],
        }
    }

    fn server(files: ServerTlsFiles) -> Arc<Reloading<ServerConfig>> {
        Reloading::new("test", Spec::Server(files), |spec| match spec {
            Spec::Server(files) => files.build(),
            _ => Err(load_error(Path::new("-"), "not a server identity")),
        })
        .unwrap()
    }

    #[test]
    fn a_bad_new_file_keeps_the_old_configuration_and_a_good_one_replaces_it() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "server");
        let reloading = server(files(dir.path()));
        let first = reloading.current();
        assert!(!reloading.reload_if_changed(), "nothing changed");
        assert!(Arc::ptr_eq(&first, &reloading.current()));

        // A key that does not match the certificate (a rotation half written).
        write_pair(dir.path(), "other");
        std::fs::rename(dir.path().join("other.key"), dir.path().join("server.key")).unwrap();
        assert!(!reloading.reload_if_changed());
        assert!(
            Arc::ptr_eq(&first, &reloading.current()),
            "kept the old one"
        );
        // Not PEM at all.
        std::fs::write(dir.path().join("server.pem"), b"garbage").unwrap();
        assert!(!reloading.reload_if_changed());
        assert!(Arc::ptr_eq(&first, &reloading.current()));

        write_pair(dir.path(), "server");
        assert!(reloading.reload_if_changed(), "a good pair loads");
        assert!(!Arc::ptr_eq(&first, &reloading.current()));
    }

    #[tokio::test]
    async fn a_client_identity_takes_a_matching_pair_and_keeps_its_own_over_a_half_written_one() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "client");
        let identity = client_identity(
            dir.path().join("client.pem"),
            dir.path().join("client.key"),
            Duration::from_secs(3600),
        )
        .unwrap();
        let first = identity.current();
        assert!(!format!("{first:?}").contains("PRIVATE"), "{first:?}");

        // A rotation caught between its two renames: new key, old certificate.
        write_pair(dir.path(), "other");
        std::fs::rename(dir.path().join("other.key"), dir.path().join("client.key")).unwrap();
        assert!(!identity.reload_if_changed());
        assert!(
            Arc::ptr_eq(&first, &identity.current()),
            "kept the old pair"
        );

        write_pair(dir.path(), "client");
        assert!(identity.reload_if_changed(), "a matching pair loads");
        assert_ne!(first.cert_pem, identity.current().cert_pem);
    }

    #[test]
    fn missing_files_fail_at_start_naming_the_file() {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let err = files(dir.path()).build().unwrap_err();
        assert!(err.path.ends_with("server.pem"), "{err}");
        write_pair(dir.path(), "server");
        let with_crl = ServerTlsFiles {
            client_ca: Some(dir.path().join("server.pem")),
            crl: Some(dir.path().join("missing-crl.pem")),
            ..files(dir.path())
        };
        let err = with_crl.build().unwrap_err();
        assert!(err.path.ends_with("missing-crl.pem"), "{err}");
    }
}
