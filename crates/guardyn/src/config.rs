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
        self.messaging.validate(&key(prefix, "messaging"))
    }
}

/// Storage engines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageEngine {
    /// Single node, zero set-up: one data directory.
    #[default]
    Embedded,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub engine: StorageEngine,
    /// Directory of the embedded engine; created when missing.
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            engine: StorageEngine::Embedded,
            data_dir: PathBuf::from("./data"),
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
