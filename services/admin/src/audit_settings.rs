//! `[admin.audit]` settings.

/// `[admin.audit]`. How long entries are kept is policy (`retention.audit_secs`), not config.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Seconds between two passes of the retention sweeper (1..=86400).
    pub sweep_interval_secs: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            sweep_interval_secs: 3600,
        }
    }
}

impl guardyn_common::config::Validate for AuditSettings {
    fn validate(&self, prefix: &str) -> Result<(), guardyn_common::config::ConfigError> {
        if !(1..=86_400).contains(&self.sweep_interval_secs) {
            return Err(guardyn_common::config::ConfigError::new(
                format!("{prefix}.sweep_interval_secs"),
                "must be 1..=86400 seconds",
            ));
        }
        Ok(())
    }
}
