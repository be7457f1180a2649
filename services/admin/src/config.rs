//! `[admin]` configuration.

use guardyn_common::config::{ConfigError, Validate};
use serde::{Deserialize, Serialize};

/// Settings of the admin service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// `[admin.client_config]`: signing the client configuration.
    pub client_config: ClientConfigSettings,
    /// `[admin.monitoring]`: alert thresholds applied to the instances' beacons.
    pub monitoring: crate::monitoring::AlertThresholds,
    /// `[admin.audit]`: the audit retention sweeper.
    pub audit: crate::audit_settings::AuditSettings,
    /// `[admin.security_events]`: report rate and the retention sweeper.
    pub security_events: crate::security_events::SecurityEventSettings,
}

impl Validate for AdminConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.client_config
            .validate(&format!("{prefix}.client_config"))?;
        self.monitoring.validate(&format!("{prefix}.monitoring"))?;
        self.audit.validate(&format!("{prefix}.audit"))?;
        self.security_events
            .validate(&format!("{prefix}.security_events"))?;
        Ok(())
    }
}

/// `[admin.client_config]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfigSettings {
    /// The Ed25519 key signing client configuration documents: a PKCS#8 PEM file
    /// (`openssl genpkey -algorithm ed25519`) or a raw 32-byte seed. Empty: a seed generated on
    /// first start as `<storage.data_dir>/client-config-signing.key` (mode 0600), which suits one
    /// node only; every instance of a cluster must load the same key (a mounted secret), since
    /// clients pin its public key.
    pub signing_key_path: std::path::PathBuf,
    /// How long a served document stays valid (seconds, 60..=31536000). Every response is
    /// signed afresh, so this bounds how long a captured old document can be replayed.
    pub validity_secs: u64,
}

impl Default for ClientConfigSettings {
    fn default() -> Self {
        Self {
            signing_key_path: std::path::PathBuf::new(),
            validity_secs: 7 * 24 * 3600,
        }
    }
}

impl Validate for ClientConfigSettings {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !(60..=31_536_000).contains(&self.validity_secs) {
            return Err(ConfigError::new(
                format!("{prefix}.validity_secs"),
                "must be 60..=31536000 seconds",
            ));
        }
        Ok(())
    }
}
