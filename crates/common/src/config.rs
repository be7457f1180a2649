//! Layered configuration: built-in defaults, then an optional TOML file, then `GUARDYN_`
//! environment variables (`__` separates nesting levels: `GUARDYN_SERVER__PORT=6000` sets
//! `server.port`).
//!
//! Every section is a plain struct with `Default` (the built-in defaults) and a `validate()` that
//! names the offending key, so a bad value stops the process with one line.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use thiserror::Error;

/// Prefix of every environment variable Guardyn reads.
pub const ENV_PREFIX: &str = "GUARDYN_";

/// A configuration problem, always naming the key.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    /// Dotted key path, e.g. `server.port`.
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Implemented by every configuration section.
pub trait Validate {
    /// Check values that types alone cannot; `prefix` is the section's dotted path.
    fn validate(&self, prefix: &str) -> Result<(), ConfigError>;
}

/// Load `T` from defaults, the optional TOML file and the environment, then validate it.
pub fn load<T>(file: Option<&Path>) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    load_from(file, env())
}

/// `GUARDYN_*` variables, except `GUARDYN_TEST_*`: those are reserved for test harnesses
/// (endpoints of throw-away clusters and servers) and are never configuration.
fn env() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|k| !k.as_str().to_ascii_lowercase().starts_with("test_"))
        .split("__")
}

/// [`load`] with an explicit environment provider, so tests need not touch the process env.
pub fn load_from<T>(file: Option<&Path>, env: Env) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned + Validate,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::new(
                "--config",
                format!("file {} does not exist", path.display()),
            ));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let config: T = figment.merge(env).extract().map_err(from_figment)?;
    config.validate("")?;
    Ok(config)
}

fn from_figment(err: figment::Error) -> ConfigError {
    // Figment reports every problem; the first one is the one the operator must fix first.
    let Some(first) = err.into_iter().next() else {
        return ConfigError::new("<config>", "unknown error");
    };
    let key = if first.path.is_empty() {
        "<config>".to_owned()
    } else {
        first.path.join(".")
    };
    let origin = first
        .metadata
        .as_ref()
        .map(|m| format!(" (from {})", m.name))
        .unwrap_or_default();
    ConfigError::new(key, format!("{}{origin}", first.kind))
}

/// Join a section prefix and a field name into a dotted key.
pub fn key(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

/// The gRPC listener and everything about serving requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Loopback by default: exposing the server is a deliberate choice.
    pub host: IpAddr,
    /// TCP port; 0 picks a free one (tests).
    pub port: u16,
    /// Largest accepted request message, in bytes (after decompression).
    pub max_request_bytes: usize,
    /// Requests in flight (unary and streaming) across the process before new ones are shed
    /// with `RESOURCE_EXHAUSTED`; acknowledgements have as many again of their own.
    pub max_concurrent_requests: usize,
    /// HTTP/2 streams one connection may have open at once (Listen streams included); the
    /// client is told in its SETTINGS and refused beyond. Bounds what one connection can hold
    /// of the process (a proxy multiplexing many clients needs a high value).
    pub max_streams_per_connection: u32,
    /// Deadline for unary calls when the client sets none (a client `grpc-timeout` that is
    /// shorter wins). Streaming calls are not limited by it.
    pub request_timeout_ms: u64,
    /// On SIGTERM/SIGINT, in-flight calls and streams get this long to finish.
    pub shutdown_grace_ms: u64,
    /// How long `guardyn serve` waits for its dependencies (storage, the NATS bus, mesh peers)
    /// while answering health with NOT_SERVING; after it the process exits non-zero naming
    /// what never appeared.
    pub startup_timeout_secs: u64,
    /// This process's name in the `instance` label of every metric. Empty: `<hostname>-<pid>`
    /// (in Kubernetes set `GUARDYN_SERVER__INSTANCE_ID` to the pod name).
    pub instance_id: String,
    pub tls: TlsConfig,
    pub cors: CorsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 50051,
            max_request_bytes: 4 * 1024 * 1024,
            max_concurrent_requests: 4096,
            max_streams_per_connection: 10_000,
            request_timeout_ms: 30_000,
            shutdown_grace_ms: 10_000,
            startup_timeout_secs: 300,
            instance_id: String::new(),
            tls: TlsConfig::default(),
            cors: CorsConfig::default(),
        }
    }
}

impl ServerConfig {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub fn startup_timeout(&self) -> Duration {
        Duration::from_secs(self.startup_timeout_secs)
    }

    /// [`ServerConfig::instance_id`], or `<hostname>-<pid>` when it is empty: unique per host
    /// outside containers, and the pod name (the container's hostname) in Kubernetes.
    pub fn effective_instance_id(&self) -> String {
        if !self.instance_id.is_empty() {
            return self.instance_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "guardyn".to_owned());
        format!("{host}-{}", std::process::id())
    }
}

impl Validate for ServerConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !(1024..=64 * 1024 * 1024).contains(&self.max_request_bytes) {
            return Err(ConfigError::new(
                key(prefix, "max_request_bytes"),
                "must be between 1024 and 67108864",
            ));
        }
        if self.max_concurrent_requests == 0 {
            return Err(ConfigError::new(
                key(prefix, "max_concurrent_requests"),
                "must be at least 1",
            ));
        }
        if self.max_streams_per_connection == 0 {
            return Err(ConfigError::new(
                key(prefix, "max_streams_per_connection"),
                "must be at least 1",
            ));
        }
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::new(
                key(prefix, "request_timeout_ms"),
                "must be at least 1",
            ));
        }
        if self.shutdown_grace_ms > 10 * 60 * 1000 {
            return Err(ConfigError::new(
                key(prefix, "shutdown_grace_ms"),
                "must be at most 600000 (10 minutes)",
            ));
        }
        if self.startup_timeout_secs == 0 {
            return Err(ConfigError::new(
                key(prefix, "startup_timeout_secs"),
                "must be at least 1",
            ));
        }
        // A label value: printable, and short enough for every metrics backend.
        if self.instance_id.len() > 128 || self.instance_id.chars().any(char::is_control) {
            return Err(ConfigError::new(
                key(prefix, "instance_id"),
                "must be at most 128 printable characters",
            ));
        }
        self.tls.validate(&key(prefix, "tls"))?;
        self.cors.validate(&key(prefix, "cors"))
    }
}

/// TLS for the gRPC listener (rustls). Mutual TLS when `client_ca_path` is set. The files are
/// re-read when they change (`guardyn_common::tls_reload`), checked every `reload_secs`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub enabled: bool,
    /// PEM certificate chain.
    pub cert_path: PathBuf,
    /// PEM private key.
    pub key_path: PathBuf,
    /// PEM CA bundle; when set, clients must present a certificate it signed.
    pub client_ca_path: PathBuf,
    /// PEM CRL of the client CA (`guardyn certs revoke`); empty = no revocation list.
    pub crl_path: PathBuf,
    /// How often the files are checked for changes.
    pub reload_secs: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            cert_path: PathBuf::new(),
            key_path: PathBuf::new(),
            client_ca_path: PathBuf::new(),
            crl_path: PathBuf::new(),
            reload_secs: 10,
        }
    }
}

impl TlsConfig {
    pub fn mutual(&self) -> bool {
        self.enabled && !self.client_ca_path.as_os_str().is_empty()
    }
}

impl Validate for TlsConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        for (field, path) in [("cert_path", &self.cert_path), ("key_path", &self.key_path)] {
            if path.as_os_str().is_empty() {
                return Err(ConfigError::new(
                    key(prefix, field),
                    "required when tls.enabled is true",
                ));
            }
            if !path.is_file() {
                return Err(ConfigError::new(
                    key(prefix, field),
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
        if self.reload_secs == 0 {
            return Err(ConfigError::new(
                key(prefix, "reload_secs"),
                "must be at least 1",
            ));
        }
        if !self.crl_path.as_os_str().is_empty() && !self.crl_path.is_file() {
            return Err(ConfigError::new(
                key(prefix, "crl_path"),
                format!("{} is not a readable file", self.crl_path.display()),
            ));
        }
        if self.mutual() && !self.client_ca_path.is_file() {
            return Err(ConfigError::new(
                key(prefix, "client_ca_path"),
                format!("{} is not a readable file", self.client_ca_path.display()),
            ));
        }
        Ok(())
    }
}

/// Cross-origin access for browsers using gRPC-web. None by default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`) allowed to call the API from a browser.
    pub allowed_origins: Vec<String>,
}

impl Validate for CorsConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        for origin in &self.allowed_origins {
            let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && http::HeaderValue::from_str(origin).is_ok();
            if !ok {
                return Err(ConfigError::new(
                    key(prefix, "allowed_origins"),
                    format!("{origin:?} is not an origin like https://app.example.com"),
                ));
            }
        }
        Ok(())
    }
}

/// The Prometheus scrape endpoint, on its own port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub host: IpAddr,
    pub port: u16,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 9464,
        }
    }
}

impl MetricsConfig {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }
}

impl Validate for MetricsConfig {
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Logs and traces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilityConfig {
    /// `tracing` env-filter directives, e.g. `info,guardyn_storage=debug`. `RUST_LOG` wins when
    /// set.
    pub log_level: String,
    pub log_format: LogFormat,
    /// OTLP/gRPC collector endpoint (`http://tempo:4317`); empty disables trace export.
    pub otlp_endpoint: String,
    /// `service.name` reported to the collector.
    pub service_name: String,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            log_level: "info".to_owned(),
            log_format: LogFormat::Human,
            otlp_endpoint: String::new(),
            service_name: "guardyn".to_owned(),
        }
    }
}

impl Validate for ObservabilityConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(ConfigError::new(key(prefix, "log_level"), e.to_string()));
        }
        if !self.otlp_endpoint.is_empty() && self.otlp_endpoint.parse::<http::Uri>().is_err() {
            return Err(ConfigError::new(
                key(prefix, "otlp_endpoint"),
                "must be a URI like http://collector:4317",
            ));
        }
        if self.service_name.is_empty() {
            return Err(ConfigError::new(
                key(prefix, "service_name"),
                "must not be empty",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    // figment's Jail returns its large error type; fine in tests.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

    use super::*;

    #[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Root {
        server: ServerConfig,
        observability: ObservabilityConfig,
    }

    impl Validate for Root {
        fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
            self.server.validate(&key(prefix, "server"))?;
            self.observability.validate(&key(prefix, "observability"))
        }
    }

    /// An environment provider that matches nothing, so tests ignore the developer's env.
    fn no_env() -> Env {
        Env::prefixed("GUARDYN_TEST_UNUSED_PREFIX_").split("__")
    }

    #[test]
    fn defaults_are_valid() {
        let root: Root = load_from(None, no_env()).unwrap();
        assert_eq!(root, Root::default());
        assert_eq!(root.server.addr().to_string(), "127.0.0.1:50051");
    }

    #[test]
    fn file_then_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("g.toml", "[server]\nport = 6000\nshutdown_grace_ms = 5\n")?;
            jail.set_env("GUARDYN_SERVER__PORT", "7000");
            // Test-harness variables share the prefix but are not configuration.
            jail.set_env("GUARDYN_TEST_S3_ENDPOINT", "http://127.0.0.1:1");
            let root: Root = load(Some(Path::new("g.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(root.server.port, 7000);
            assert_eq!(root.server.shutdown_grace_ms, 5);
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_its_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GUARDYN_SERVER__PORT", "not-a-port");
            let err = load::<Root>(None).unwrap_err();
            assert_eq!(err.key, "server.port");
            jail.set_env("GUARDYN_SERVER__PORT", "6000");
            jail.set_env("GUARDYN_SERVER__MAX_CONCURRENT_REQUESTS", "0");
            let err = load::<Root>(None).unwrap_err();
            assert_eq!(err.key, "server.max_concurrent_requests");
            assert!(
                err.to_string()
                    .starts_with("invalid configuration: server.")
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_bad_origins_are_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("g.toml", "[server]\nprot = 1\n")?;
            let err = load::<Root>(Some(Path::new("g.toml"))).unwrap_err();
            assert!(err.reason.contains("prot"), "{err}");
            jail.create_file(
                "h.toml",
                "[server.cors]\nallowed_origins = [\"https://ok.example\", \"*\"]\n",
            )?;
            let err = load::<Root>(Some(Path::new("h.toml"))).unwrap_err();
            assert_eq!(err.key, "server.cors.allowed_origins");
            Ok(())
        });
        let err = load_from::<Root>(Some(Path::new("/nonexistent.toml")), no_env()).unwrap_err();
        assert_eq!(err.key, "--config");
    }
}
