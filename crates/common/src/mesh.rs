//! Calls between services.
//!
//! Each internal dependency is a Rust trait (the seam). When the services share a process the
//! trait is implemented by the serving service itself, with no network hop; when they run in
//! separate processes it is implemented over the generated tonic client, on a [`Channel`]
//! balanced over the configured addresses, with a per-call timeout, mutual TLS when
//! configured, and retries only for idempotent calls ([`retry_idempotent`]).
//!
//! The first seam is [`KeySource`]: every service verifies access tokens with the auth
//! service's published keys. [`DeviceDirectory`] (auth's device list, for messaging) goes
//! over the internal contract `guardyn.internal.v1` ([`directory::RemoteDeviceDirectory`]),
//! served only on the mesh listener (`mesh.listen`).

pub mod account_admin;
pub mod credentials;
pub mod directory;
mod identity;
mod trace;

pub use trace::MeshChannel;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint, Identity};

use crate::auth::{TokenVerifier, VerificationKey};
use crate::config::{ConfigError, Validate, key};
use crate::tls_reload::{self, ClientIdentity, FollowingServerVerifier, Reloading};
use identity::FollowingIdentity;

/// Where the other services are, for processes that do not host them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshConfig {
    /// Addresses of auth service instances (`http://auth-0.auth:50051`); empty when auth runs
    /// in this process.
    pub auth_addresses: Vec<String>,
    /// Mesh listeners of the processes hosting auth (`http://auth-0.auth:50061`), for the
    /// device directory of a messaging process without auth; empty when auth runs in this
    /// process.
    pub directory_addresses: Vec<String>,
    /// Mesh listeners of the processes hosting auth, for the account administration of an
    /// admin process without auth (`guardyn serve --service admin`) and the verification of
    /// API credentials presented to it; empty when auth runs in this process.
    pub account_admin_addresses: Vec<String>,
    /// Address (`ip:port`) of this process's mesh listener, which serves the internal services
    /// (`guardyn.internal.v1`) and never the public ones; empty = none. With `tls.ca_path` it
    /// requires client certificates from that CA and presents `tls.cert_path`.
    pub listen: String,
    pub connect_timeout_ms: u64,
    /// Deadline of one internal call attempt.
    pub call_timeout_ms: u64,
    /// Attempts for idempotent calls (1 = no retry).
    pub max_attempts: u32,
    /// How often verification keys are refreshed from auth (at most 300: auth publishes a new
    /// signing key 600 s before it signs).
    pub key_refresh_secs: u64,
    /// Allow plaintext calls (no `tls.ca_path`) to non-loopback addresses (and a plaintext NATS
    /// bus to another host, checked with the root configuration). Off: such a configuration is
    /// refused at start-up, so token keys, revocations and internal calls never cross a network
    /// unprotected by accident.
    pub allow_plaintext: bool,
    pub tls: MeshTlsConfig,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            auth_addresses: Vec::new(),
            directory_addresses: Vec::new(),
            account_admin_addresses: Vec::new(),
            listen: String::new(),
            connect_timeout_ms: 2_000,
            call_timeout_ms: 5_000,
            max_attempts: 3,
            key_refresh_secs: 60,
            allow_plaintext: false,
            tls: MeshTlsConfig::default(),
        }
    }
}

/// Client-side TLS for internal calls; with a certificate and key it is mutual. The mesh
/// listener, the clients' certificate and their verification of servers follow the files on
/// disk (checked every `reload_secs`), so `guardyn certs rotate` and `revoke` need no restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshTlsConfig {
    /// PEM CA that signed the other services' certificates; empty = plaintext.
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Name expected in the servers' certificates.
    pub domain: String,
    /// PEM CRL signed by the CA's intermediate (`guardyn certs revoke`): peers whose
    /// certificate it lists are refused, on both ends of a call. Empty = none.
    pub crl_path: PathBuf,
    pub reload_secs: u64,
}

impl Default for MeshTlsConfig {
    fn default() -> Self {
        Self {
            ca_path: PathBuf::new(),
            cert_path: PathBuf::new(),
            key_path: PathBuf::new(),
            domain: String::new(),
            crl_path: PathBuf::new(),
            reload_secs: 10,
        }
    }
}

impl MeshTlsConfig {
    /// The CRL path, when configured.
    pub fn crl(&self) -> Option<PathBuf> {
        (!self.crl_path.as_os_str().is_empty()).then(|| self.crl_path.clone())
    }

    pub fn reload_every(&self) -> Duration {
        Duration::from_secs(self.reload_secs.max(1))
    }
}

impl Validate for MeshConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        for (field, addresses) in [
            ("auth_addresses", &self.auth_addresses),
            ("directory_addresses", &self.directory_addresses),
            ("account_admin_addresses", &self.account_admin_addresses),
        ] {
            for a in addresses {
                if Endpoint::from_shared(a.clone()).is_err() {
                    return Err(ConfigError::new(
                        key(prefix, field),
                        format!("{a:?} is not a URI like http://auth:50051"),
                    ));
                }
            }
        }
        if !self.listen.is_empty() {
            let addr = self.listen_addr().ok_or_else(|| {
                ConfigError::new(
                    key(prefix, "listen"),
                    format!("{:?} is not an ip:port address", self.listen),
                )
            })?;
            let tls = &self.tls;
            if tls.ca_path.as_os_str().is_empty() {
                if !addr.ip().is_loopback() && !self.allow_plaintext {
                    return Err(ConfigError::new(
                        key(prefix, "allow_plaintext"),
                        format!(
                            "mesh.listen {addr} would serve internal calls in plaintext beyond \
                             this host: configure mesh.tls, or set mesh.allow_plaintext = true on \
                             a network you trust"
                        ),
                    ));
                }
            } else if tls.cert_path.as_os_str().is_empty() || tls.key_path.as_os_str().is_empty() {
                return Err(ConfigError::new(
                    key(&key(prefix, "tls"), "cert_path"),
                    "mesh.listen with mesh.tls needs this process's certificate and key",
                ));
            }
        }
        if self.max_attempts == 0 || self.max_attempts > 10 {
            return Err(ConfigError::new(
                key(prefix, "max_attempts"),
                "must be between 1 and 10",
            ));
        }
        if self.call_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(ConfigError::new(
                key(prefix, "call_timeout_ms"),
                "timeouts must be at least 1 ms",
            ));
        }
        if self.key_refresh_secs == 0 || self.key_refresh_secs > 300 {
            return Err(ConfigError::new(
                key(prefix, "key_refresh_secs"),
                "must be between 1 and 300",
            ));
        }
        check_plaintext(&self.auth_addresses, self)
            .and_then(|()| check_plaintext(&self.directory_addresses, self))
            .and_then(|()| check_plaintext(&self.account_admin_addresses, self))
            .map_err(|e| ConfigError::new(key(prefix, "allow_plaintext"), e.to_string()))?;
        let tls = &self.tls;
        if !tls.ca_path.as_os_str().is_empty() {
            for (field, p) in [
                ("ca_path", &tls.ca_path),
                ("cert_path", &tls.cert_path),
                ("key_path", &tls.key_path),
                ("crl_path", &tls.crl_path),
            ] {
                if !p.as_os_str().is_empty() && !p.is_file() {
                    return Err(ConfigError::new(
                        key(&key(prefix, "tls"), field),
                        format!("{} is not a readable file", p.display()),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl MeshConfig {
    /// [`MeshConfig::listen`] parsed; `None` when empty or malformed.
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

/// Failure of an internal call.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    #[error("invalid upstream address {0:?}")]
    Address(String),
    #[error("no upstream addresses configured")]
    NoUpstream,
    #[error("mesh TLS: {0}")]
    Tls(String),
    #[error(
        "{0} is not a loopback address and not https:// with mesh.tls.ca_path set: internal \
         calls would be plaintext; use https:// with mesh.tls, or set mesh.allow_plaintext = \
         true on a network you trust"
    )]
    Plaintext(String),
    #[error("upstream call failed: {0}")]
    Call(#[from] tonic::Status),
}

impl MeshError {
    /// Whether the same call may succeed later (the upstream was unreachable or overloaded),
    /// as opposed to a configuration or contract error.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Call(s) if matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted
        ))
    }
}

/// A lazily connecting channel balanced over `addresses`, tracing every call
/// ([`MeshChannel`]). With `mesh.tls.cert_path` the client certificate follows its files: the
/// channel is rebuilt for a rotated certificate, calls in flight keep their connection.
pub async fn channel(addresses: &[String], config: &MeshConfig) -> Result<MeshChannel, MeshError> {
    if addresses.is_empty() {
        return Err(MeshError::NoUpstream);
    }
    check_plaintext(addresses, config)?;
    let tls = client_tls(&config.tls)?;
    let identity = tls.as_ref().and_then(|t| t.identity.clone());
    let addresses = addresses.to_vec();
    let (connect, call) = (
        Duration::from_millis(config.connect_timeout_ms),
        Duration::from_millis(config.call_timeout_ms),
    );
    let build = move |presented: Option<&ClientIdentity>| -> Result<Channel, MeshError> {
        let mut endpoints = Vec::with_capacity(addresses.len());
        for a in &addresses {
            let mut e = Endpoint::from_shared(a.clone())
                .map_err(|_| MeshError::Address(a.clone()))?
                .connect_timeout(connect)
                .timeout(call)
                .tcp_nodelay(true);
            if let Some(tls) = &tls {
                let mut client = tls.client.clone();
                if let Some(p) = presented {
                    client = client.identity(Identity::from_pem(&p.cert_pem, &p.key_pem));
                }
                e = e
                    .tls_config_with_verifier(client, tls.verifier.clone())
                    .map_err(|err| MeshError::Tls(err.to_string()))?;
            }
            endpoints.push(e);
        }
        Ok(Channel::balance_list(endpoints.into_iter()))
    };
    match identity {
        None => Ok(MeshChannel::new(build(None)?)),
        Some(identity) => {
            // Built now, so a bad address or identity fails at start-up.
            let held = identity.current();
            let channel = build(Some(&held))?;
            let rebuild: identity::Rebuild =
                Box::new(move |p| build(Some(p)).map_err(|e| e.to_string()));
            let follow = FollowingIdentity::new(identity, held.clone(), channel.clone(), rebuild);
            Ok(MeshChannel::following(follow, held, channel))
        }
    }
}

/// Whether the peers behind `channel` report SERVING on `grpc.health.v1` (overall status):
/// start-up waits for it before relying on a seam they provide.
pub async fn check_serving(channel: MeshChannel) -> Result<(), MeshError> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await?
        .into_inner()
        .status;
    if status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(MeshError::Call(tonic::Status::unavailable(
            "the peer is not serving yet",
        )))
    }
}

/// Refuse plaintext to a peer that is not on this host unless `mesh.allow_plaintext`. The
/// scheme decides, not the TLS settings: tonic speaks plaintext to an `http://` address even
/// when `mesh.tls` is configured, so `http://` with a CA would be plaintext in disguise.
fn check_plaintext(addresses: &[String], config: &MeshConfig) -> Result<(), MeshError> {
    if config.allow_plaintext {
        return Ok(());
    }
    let tls = !config.tls.ca_path.as_os_str().is_empty();
    for a in addresses {
        let encrypted = tls
            && a.parse::<http::Uri>()
                .ok()
                .is_some_and(|u| u.scheme_str() == Some("https"));
        if !encrypted && !is_loopback_uri(a) {
            return Err(MeshError::Plaintext(a.clone()));
        }
    }
    Ok(())
}

/// Whether `uri` (`scheme://host:port`) names this host: `localhost` or a loopback address.
/// Internal transports use it to refuse plaintext to other hosts.
pub fn is_loopback_uri(uri: &str) -> bool {
    uri.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_owned))
        .is_some_and(|host| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
}

/// What a mesh client's TLS is made of: the settings without a client certificate, the
/// verifier of servers' chains (CA + CRL) and this process's certificate, each following
/// its files.
struct ClientTls {
    client: ClientTlsConfig,
    verifier: Arc<FollowingServerVerifier>,
    identity: Option<Arc<Reloading<ClientIdentity>>>,
}

fn client_tls(tls: &MeshTlsConfig) -> Result<Option<ClientTls>, MeshError> {
    if tls.ca_path.as_os_str().is_empty() {
        return Ok(None);
    }
    let verifier = FollowingServerVerifier::new(tls.ca_path.clone(), tls.crl(), tls.reload_every())
        .map_err(|e| MeshError::Tls(e.to_string()))?;
    let mut client = ClientTlsConfig::new();
    if !tls.domain.is_empty() {
        client = client.domain_name(tls.domain.clone());
    }
    let identity = if tls.cert_path.as_os_str().is_empty() {
        None
    } else {
        Some(
            tls_reload::client_identity(
                tls.cert_path.clone(),
                tls.key_path.clone(),
                tls.reload_every(),
            )
            .map_err(|e| MeshError::Tls(e.to_string()))?,
        )
    };
    Ok(Some(ClientTls {
        client,
        verifier,
        identity,
    }))
}

/// Run an idempotent call up to `attempts` times, retrying only when the failure says the
/// request may not have been processed (`UNAVAILABLE`), with exponential backoff.
/// Non-idempotent calls must not use this.
pub async fn retry_idempotent<T, F, Fut>(attempts: u32, mut call: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut backoff = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match call().await {
            Err(status) if status.code() == tonic::Code::Unavailable && attempt < attempts => {
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The auth service's token verification keys. Implemented in-process by the auth service and
/// remotely by [`RemoteKeySource`].
#[async_trait]
pub trait KeySource: Send + Sync + fmt::Debug + 'static {
    async fn verification_keys(&self) -> Result<Vec<VerificationKey>, MeshError>;
}

/// [`KeySource`] over gRPC to auth instances.
#[derive(Clone, Debug)]
pub struct RemoteKeySource {
    client: guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient<MeshChannel>,
    attempts: u32,
}

impl RemoteKeySource {
    pub fn new(channel: MeshChannel, config: &MeshConfig) -> Self {
        Self {
            client: guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient::new(
                channel,
            ),
            attempts: config.max_attempts,
        }
    }
}

#[async_trait]
impl KeySource for RemoteKeySource {
    async fn verification_keys(&self) -> Result<Vec<VerificationKey>, MeshError> {
        use guardyn_proto::guardyn::auth::v1::GetVerificationKeysRequest;
        let response = retry_idempotent(self.attempts, || {
            let mut client = self.client.clone();
            async move {
                client
                    .get_verification_keys(GetVerificationKeysRequest {})
                    .await
            }
        })
        .await?;
        let mut keys = Vec::new();
        for k in response.into_inner().keys {
            let Ok(public_key) = <[u8; 32]>::try_from(k.public_key.as_slice()) else {
                tracing::warn!(kid = %k.kid, "auth published a malformed verification key");
                continue;
            };
            keys.push(VerificationKey {
                kid: k.kid,
                public_key,
            });
        }
        Ok(keys)
    }
}

/// One current device of an account, as the device directory reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    /// Device id, 1..=127.
    pub device_id: u32,
    /// The device's libsignal registration id; changes when the device re-registers.
    pub registration_id: u32,
}

/// The accounts' current devices, owned by the auth service. Messaging checks every envelope
/// set against it. Implemented in-process by auth (or remotely over the mesh).
#[async_trait]
pub trait DeviceDirectory: Send + Sync + fmt::Debug + 'static {
    /// The account's current devices (id, registration id); `Ok(None)` when the account does
    /// not exist.
    async fn devices(&self, account_id: &str) -> Result<Option<Vec<DeviceEntry>>, MeshError>;

    /// Whether `signature_key` is the MLS signature key pinned for the device by its first
    /// accepted KeyPackage upload (`false` when none is pinned or the device does not exist).
    /// The delivery service accepts a group leaf for `<account_id>.<device_id>` only with it.
    async fn mls_key_pinned(
        &self,
        account_id: &str,
        device_id: u32,
        signature_key: &[u8],
    ) -> Result<bool, MeshError>;

    /// Whether ClaimKeyPackages recently handed out the device's KeyPackage with this
    /// KeyPackageRef (RFC 9420 §5.2): group Adds are accepted only for those.
    async fn key_package_claimed(
        &self,
        account_id: &str,
        device_id: u32,
        key_package_ref: &[u8],
    ) -> Result<bool, MeshError>;
}

/// Keep `verifier` supplied with the keys `source` publishes: once now, then every `every`
/// and whenever the verifier asks (an emergency key revocation), until `shutdown`. Each fetch
/// replaces the published set, so keys auth retired or dropped stop verifying. Failures are
/// logged and retried at the next tick; the current set stays meanwhile.
pub fn spawn_key_refresh(
    source: Arc<dyn KeySource>,
    verifier: TokenVerifier,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
                () = verifier.refresh_wanted() => {}
            }
            match source.verification_keys().await {
                Ok(keys) => verifier.replace_keys(keys),
                Err(e) => tracing::warn!(error = %e, "could not refresh token verification keys"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn retries_only_unavailable_and_only_up_to_the_limit() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry_idempotent(3, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(tonic::Status::unavailable("down")) }
        })
        .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = retry_idempotent(3, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(tonic::Status::invalid_argument("bad")) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn plaintext_to_other_hosts_needs_the_flag() {
        let remote = MeshConfig {
            auth_addresses: vec!["http://auth-0.auth:50051".into()],
            ..MeshConfig::default()
        };
        let err = remote.validate("mesh").unwrap_err();
        assert_eq!(err.key, "mesh.allow_plaintext");
        assert!(
            err.to_string().contains("mesh.allow_plaintext = true"),
            "{err}"
        );
        let allowed = MeshConfig {
            allow_plaintext: true,
            ..remote.clone()
        };
        allowed.validate("mesh").unwrap();
        // With a CA configured, an http:// address would still be plaintext.
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, b"-").unwrap();
        let with_ca = MeshConfig {
            tls: MeshTlsConfig {
                ca_path: ca,
                ..MeshTlsConfig::default()
            },
            ..remote.clone()
        };
        assert_eq!(
            with_ca.validate("mesh").unwrap_err().key,
            "mesh.allow_plaintext"
        );
        MeshConfig {
            auth_addresses: vec!["https://auth-0.auth:50051".into()],
            ..with_ca
        }
        .validate("mesh")
        .unwrap();
        for local in [
            "http://127.0.0.1:50051",
            "http://localhost:1",
            "http://[::1]:2",
        ] {
            let cfg = MeshConfig {
                auth_addresses: vec![local.into()],
                ..MeshConfig::default()
            };
            cfg.validate("mesh").unwrap();
        }
    }

    #[test]
    fn the_mesh_listener_beyond_loopback_needs_tls_or_the_flag() {
        let mut cfg = MeshConfig {
            listen: "127.0.0.1:0".into(),
            ..MeshConfig::default()
        };
        cfg.validate("mesh").unwrap();
        cfg.listen = "0.0.0.0:50061".into();
        assert_eq!(
            cfg.validate("mesh").unwrap_err().key,
            "mesh.allow_plaintext"
        );
        cfg.allow_plaintext = true;
        cfg.validate("mesh").unwrap();
        cfg.listen = "auth:1".into();
        assert_eq!(cfg.validate("mesh").unwrap_err().key, "mesh.listen");
        let cfg = MeshConfig {
            directory_addresses: vec!["http://10.0.0.9:50061".into()],
            ..MeshConfig::default()
        };
        assert_eq!(
            cfg.validate("mesh").unwrap_err().key,
            "mesh.allow_plaintext"
        );
    }

    #[test]
    fn bad_addresses_name_the_key() {
        let cfg = MeshConfig {
            auth_addresses: vec!["not a uri".into()],
            ..MeshConfig::default()
        };
        assert_eq!(cfg.validate("mesh").unwrap_err().key, "mesh.auth_addresses");
    }
}
