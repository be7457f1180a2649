//! The root configuration: every section the `guardyn` process reads, with the built-in
//! defaults. `guardyn.example.toml` at the repository root mirrors these defaults (a test keeps
//! the two in sync).

use std::path::PathBuf;
use std::time::Duration;

use guardyn_common::auth::TokenConfig;
use guardyn_common::config::{
    ConfigError, MetricsConfig, ObservabilityConfig, ServerConfig, Validate, key,
};
use guardyn_common::mesh::MeshConfig;
use guardyn_storage_postgres::PostgresConfig;
use guardyn_storage_scylla::ScyllaConfig;
use guardyn_storage_tikv::TikvConfig;
use serde::{Deserialize, Serialize};

/// Everything `guardyn serve` reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub metrics: MetricsConfig,
    pub observability: ObservabilityConfig,
    pub tokens: TokenConfig,
    pub mesh: MeshConfig,
    pub storage: StorageConfig,
    pub events: EventsSection,
    pub auth: guardyn_auth::AuthConfig,
    pub presence: guardyn_presence::PresenceConfig,
    pub messaging: guardyn_messaging::MessagingConfig,
    pub media: guardyn_media::MediaConfig,
    pub notification: guardyn_notification::NotificationConfig,
    pub admin: guardyn_admin::AdminConfig,
    pub monitoring: crate::beacon::MonitoringConfig,
}

impl Validate for Config {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.server.validate(&key(prefix, "server"))?;
        self.metrics.validate(&key(prefix, "metrics"))?;
        self.observability.validate(&key(prefix, "observability"))?;
        self.tokens.validate(&key(prefix, "tokens"))?;
        self.mesh.validate(&key(prefix, "mesh"))?;
        self.storage.validate(&key(prefix, "storage"))?;
        self.auth.validate(&key(prefix, "auth"))?;
        self.presence.validate(&key(prefix, "presence"))?;
        self.events.validate(&key(prefix, "events"))?;
        self.messaging.validate(&key(prefix, "messaging"))?;
        self.media.validate(&key(prefix, "media"))?;
        self.notification.validate(&key(prefix, "notification"))?;
        self.admin.validate(&key(prefix, "admin"))?;
        self.monitoring.validate(&key(prefix, "monitoring"))?;
        // The bus carries revocations between processes: the same rule as mesh calls.
        if self.events.backend == EventsBackend::Nats && !self.mesh.allow_plaintext {
            for url in self.events.nats_url.split(',').map(str::trim) {
                if !url.starts_with("tls://") && !guardyn_common::mesh::is_loopback_uri(url) {
                    return Err(ConfigError::new(
                        key(prefix, "mesh.allow_plaintext"),
                        format!(
                            "events.nats_url {url} is plaintext to another host: use a tls:// \
                             URL, or set mesh.allow_plaintext = true on a network you trust"
                        ),
                    ));
                }
            }
        }
        // One UploadChunk request carries a whole chunk.
        if self.server.max_request_bytes < self.media.chunk_size as usize + 1024 {
            return Err(ConfigError::new(
                key(prefix, "server.max_request_bytes"),
                "must be at least media.chunk_size + 1024 (one upload chunk per request)",
            ));
        }
        Ok(())
    }
}

/// Storage engines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageEngine {
    /// Single node, zero set-up: one data directory.
    #[default]
    Embedded,
    /// One PostgreSQL database (`storage.postgres`) for the KV store and the append log,
    /// shared by every instance of every service.
    Postgres,
    /// TiKV (`storage.tikv`) for the KV store, ScyllaDB (`storage.scylla`) for the append log.
    #[serde(rename = "tikv+scylla")]
    TikvScylla,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub engine: StorageEngine,
    /// Directory of the embedded engine; created when missing.
    pub data_dir: PathBuf,
    /// The embedded engine's page cache in MiB: the largest part of an idle server's memory
    /// once the database outgrows it (1..=65536).
    pub cache_mib: u32,
    /// Where immutable objects (media chunks, avatars) live.
    pub blob: BlobConfig,
    /// The `postgres` engine's database; required when `engine = "postgres"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresConfig>,
    /// The TiKV cluster of `engine = "tikv+scylla"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tikv: Option<TikvConfig>,
    /// The ScyllaDB cluster of `engine = "tikv+scylla"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scylla: Option<ScyllaConfig>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            engine: StorageEngine::Embedded,
            data_dir: PathBuf::from("./data"),
            cache_mib: 256,
            blob: BlobConfig::default(),
            postgres: None,
            tikv: None,
            scylla: None,
        }
    }
}

impl Validate for StorageConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new(
                key(prefix, "data_dir"),
                "must not be empty",
            ));
        }
        if !(1..=65_536).contains(&self.cache_mib) {
            return Err(ConfigError::new(
                key(prefix, "cache_mib"),
                "must be between 1 and 65536",
            ));
        }
        match (&self.engine, &self.postgres) {
            (StorageEngine::Postgres, None) => {
                return Err(ConfigError::new(
                    key(prefix, "postgres"),
                    "required when storage.engine = \"postgres\"",
                ));
            }
            (_, Some(pg)) => pg
                .validate()
                .map_err(|p| ConfigError::new(key(&key(prefix, "postgres"), p.field), p.message))?,
            (StorageEngine::Embedded | StorageEngine::TikvScylla, None) => {}
        }
        if self.engine == StorageEngine::TikvScylla {
            let (Some(tikv), Some(scylla)) = (&self.tikv, &self.scylla) else {
                let missing = if self.tikv.is_none() {
                    "tikv"
                } else {
                    "scylla"
                };
                return Err(ConfigError::new(
                    key(prefix, missing),
                    "required when storage.engine = \"tikv+scylla\"",
                ));
            };
            tikv.validate()
                .map_err(|e| ConfigError::new(key(prefix, "tikv"), e.to_string()))?;
            scylla
                .validate()
                .map_err(|e| ConfigError::new(key(&key(prefix, "scylla"), e.key), e.reason))?;
        }
        self.blob.validate(&key(prefix, "blob"))
    }
}

impl StorageConfig {
    /// The directory of the `fs` blob engine: `storage.blob.dir`, or `<data_dir>/blobs`.
    pub fn blob_dir(&self) -> PathBuf {
        if self.blob.dir.as_os_str().is_empty() {
            self.data_dir.join("blobs")
        } else {
            self.blob.dir.clone()
        }
    }
}

/// Blob storage engines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobEngine {
    /// A local directory (single node).
    #[default]
    Fs,
    /// An S3-compatible object store (AWS S3, MinIO, Ceph RGW, ...).
    S3,
}

/// `storage.blob`: the blob store. The secret key is redacted in `Debug` and when the
/// configuration is printed (`guardyn config`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobConfig {
    pub engine: BlobEngine,
    /// `fs`: directory of the objects; empty = `<storage.data_dir>/blobs`.
    pub dir: PathBuf,
    /// `s3`: endpoint URL, e.g. `https://s3.eu-west-1.amazonaws.com` or `http://minio:9000`;
    /// empty = AWS for `region`.
    pub endpoint: String,
    /// `s3`: bucket name (must exist).
    pub bucket: String,
    /// `s3`: region.
    pub region: String,
    /// `s3`: static credentials; empty = the AWS environment/instance credentials.
    pub access_key_id: String,
    #[serde(serialize_with = "serialize_redacted")]
    pub secret_access_key: String,
    /// `s3`: allow a plain `http://` endpoint (tests, a local MinIO).
    pub allow_http: bool,
}

/// What a secret looks like when printed.
pub const REDACTED: &str = "<redacted>";

fn serialize_redacted<S: serde::Serializer>(value: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if value.is_empty() { "" } else { REDACTED })
}

impl std::fmt::Debug for BlobConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret = if self.secret_access_key.is_empty() {
            ""
        } else {
            REDACTED
        };
        f.debug_struct("BlobConfig")
            .field("engine", &self.engine)
            .field("dir", &self.dir)
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &secret)
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

impl Validate for BlobConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.engine == BlobEngine::S3 {
            if self.bucket.is_empty() {
                return Err(ConfigError::new(
                    key(prefix, "bucket"),
                    "required when storage.blob.engine is s3",
                ));
            }
            if self.access_key_id.is_empty() != self.secret_access_key.is_empty() {
                return Err(ConfigError::new(
                    key(prefix, "secret_access_key"),
                    "access_key_id and secret_access_key are set together or not at all",
                ));
            }
            if self.secret_access_key == REDACTED {
                return Err(ConfigError::new(
                    key(prefix, "secret_access_key"),
                    "is the redacted placeholder printed by `guardyn config`, not a key",
                ));
            }
            if self.endpoint.starts_with("http://") && !self.allow_http {
                return Err(ConfigError::new(
                    key(prefix, "endpoint"),
                    "is plain http: set storage.blob.allow_http = true to allow it",
                ));
            }
        }
        Ok(())
    }
}

/// Event bus implementations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventsBackend {
    /// Single node: events stay in the process, jobs go to the embedded store.
    #[default]
    InProcess,
    /// Several instances: NATS core for events, JetStream for jobs.
    Nats,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsSection {
    pub backend: EventsBackend,
    /// NATS server URL(s), comma separated.
    pub nats_url: String,
    /// JetStream replication of the jobs stream.
    pub nats_replicas: usize,
    /// Seconds before an unacknowledged job is redelivered.
    pub ack_wait_secs: u64,
    /// Events buffered per live subscriber before the oldest are dropped.
    pub subscriber_buffer: usize,
}

impl Default for EventsSection {
    fn default() -> Self {
        let d = guardyn_events::EventsConfig::default();
        Self {
            backend: EventsBackend::InProcess,
            nats_url: guardyn_events::NatsConfig::default().url,
            nats_replicas: 1,
            ack_wait_secs: d.ack_wait.as_secs(),
            subscriber_buffer: d.subscriber_buffer,
        }
    }
}

impl Validate for EventsSection {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.backend == EventsBackend::Nats && self.nats_url.is_empty() {
            return Err(ConfigError::new(
                key(prefix, "nats_url"),
                "required when events.backend is nats",
            ));
        }
        if !(1..=5).contains(&self.nats_replicas) {
            return Err(ConfigError::new(
                key(prefix, "nats_replicas"),
                "must be between 1 and 5",
            ));
        }
        if self.ack_wait_secs == 0 {
            return Err(ConfigError::new(
                key(prefix, "ack_wait_secs"),
                "must be at least 1",
            ));
        }
        if self.subscriber_buffer == 0 {
            return Err(ConfigError::new(
                key(prefix, "subscriber_buffer"),
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

impl EventsSection {
    pub fn to_events_config(&self) -> guardyn_events::EventsConfig {
        let backend = match self.backend {
            EventsBackend::InProcess => guardyn_events::Backend::InProcess,
            EventsBackend::Nats => guardyn_events::Backend::Nats(guardyn_events::NatsConfig {
                url: self.nats_url.clone(),
                replicas: self.nats_replicas,
                ..guardyn_events::NatsConfig::default()
            }),
        };
        guardyn_events::EventsConfig {
            backend,
            ack_wait: Duration::from_secs(self.ack_wait_secs),
            subscriber_buffer: self.subscriber_buffer,
            ..guardyn_events::EventsConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// The S3 secret never shows in logs or in `guardyn config`.
    #[test]
    fn blob_secret_is_redacted() {
        let mut config = Config::default();
        config.storage.blob.engine = BlobEngine::S3;
        config.storage.blob.bucket = "b".into();
        config.storage.blob.access_key_id = "AKID".into();
        config.storage.blob.secret_access_key = "very-secret".into();
        config.validate("").unwrap();
        assert!(!format!("{config:?}").contains("very-secret"));
        let printed = toml::to_string(&config).unwrap();
        assert!(!printed.contains("very-secret"));
        assert!(printed.contains(REDACTED));
        config.storage.blob.bucket.clear();
        assert_eq!(config.validate("").unwrap_err().key, "storage.blob.bucket");
    }

    /// Plaintext NATS to another host needs the same explicit flag as plaintext mesh calls.
    #[test]
    fn plaintext_nats_to_another_host_needs_the_flag() {
        let mut config = Config::default();
        config.events.backend = EventsBackend::Nats;
        config.validate("").unwrap();
        config.events.nats_url = "nats://127.0.0.1:4222,nats://10.0.0.2:4222".into();
        let err = config.validate("").unwrap_err();
        assert_eq!(err.key, "mesh.allow_plaintext");
        assert!(err.reason.contains("10.0.0.2"), "{}", err.reason);
        config.events.nats_url = "tls://10.0.0.2:4222".into();
        config.validate("").unwrap();
        config.events.nats_url = "nats://10.0.0.2:4222".into();
        config.mesh.allow_plaintext = true;
        config.validate("").unwrap();
    }

    #[test]
    fn tikv_scylla_needs_both_clusters_and_reads_them_from_toml() {
        let parse = |text: &str| -> StorageConfig { toml::from_str(text).unwrap() };
        let only_tikv = parse(
            r#"engine = "tikv+scylla"
            [tikv]
            pd_endpoints = ["pd-0:2379", "pd-1:2379"]"#,
        );
        assert_eq!(only_tikv.engine, StorageEngine::TikvScylla);
        let err = only_tikv.validate("storage").unwrap_err();
        assert_eq!(err.key, "storage.scylla");
        let both = parse(
            r#"engine = "tikv+scylla"
            [tikv]
            pd_endpoints = ["pd-0:2379"]
            [scylla]
            nodes = "scylla-0:9042,scylla-1:9042"
            keyspace = "guardyn""#,
        );
        both.validate("storage").unwrap();
        assert_eq!(both.scylla.as_ref().unwrap().nodes.len(), 2);
        let mut bad = both.clone();
        bad.scylla.as_mut().unwrap().keyspace = "Not-A-Keyspace".into();
        let err = bad.validate("storage").unwrap_err();
        assert_eq!(err.key, "storage.scylla.keyspace");
        let mut bad = both;
        bad.tikv.as_mut().unwrap().pd_endpoints.clear();
        let err = bad.validate("storage").unwrap_err();
        assert_eq!(err.key, "storage.tikv");
        assert!(err.reason.contains("pd_endpoints"), "{}", err.reason);
    }

    /// The example file documents every key with its default value.
    #[test]
    fn example_config_matches_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guardyn.example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let example: toml::Value = toml::from_str(&text).unwrap();
        let defaults = toml::Value::try_from(Config::default()).unwrap();
        assert_eq!(
            example,
            defaults,
            "guardyn.example.toml is out of sync with Config::default(); defaults as TOML:\n{}",
            toml::to_string(&Config::default()).unwrap()
        );
        let parsed: Config = toml::from_str(&text).unwrap();
        assert_eq!(parsed, Config::default());
        parsed.validate("").unwrap();
    }
}
