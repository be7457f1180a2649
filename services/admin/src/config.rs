//! `[admin]` configuration.

use guardyn_common::config::{ConfigError, Validate};
use serde::{Deserialize, Serialize};

/// Settings of the admin service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The built web admin console (`web/admin/dist`) that `guardyn serve` hosts on
    /// `console_listen` when the process hosts the admin service. Empty: no console is served.
    pub console_dir: std::path::PathBuf,
    /// Where the console's static files are served: HTTPS with `console_tls_cert_path` and
    /// `console_tls_key_path`, else plain HTTP (then bind it to loopback behind a
    /// TLS-terminating proxy, or host `web/admin/dist` elsewhere).
    pub console_listen: std::net::SocketAddr,
    /// PEM certificate chain the console is served with over HTTPS (with
    /// `console_tls_key_path`; both or neither). Re-read when it changes, like `server.tls`.
    pub console_tls_cert_path: std::path::PathBuf,
    /// PEM private key of `console_tls_cert_path`.
    pub console_tls_key_path: std::path::PathBuf,
    /// The gRPC-web URL the console calls (the public listener as browsers reach it). Empty:
    /// the console's host name with `server.port`. Its origin is the page's only
    /// `connect-src`; the console's own origin must be in `server.cors.allowed_origins`.
    pub console_api_url: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            client_config: ClientConfigSettings::default(),
            monitoring: crate::monitoring::AlertThresholds::default(),
            audit: crate::audit_settings::AuditSettings::default(),
            security_events: crate::security_events::SecurityEventSettings::default(),
            console_dir: std::path::PathBuf::new(),
            console_listen: std::net::SocketAddr::from(([127, 0, 0, 1], 50080)),
            console_tls_cert_path: std::path::PathBuf::new(),
            console_tls_key_path: std::path::PathBuf::new(),
            console_api_url: String::new(),
        }
    }
}

impl Validate for AdminConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.client_config
            .validate(&format!("{prefix}.client_config"))?;
        self.monitoring.validate(&format!("{prefix}.monitoring"))?;
        self.audit.validate(&format!("{prefix}.audit"))?;
        self.security_events
            .validate(&format!("{prefix}.security_events"))?;
        let url = &self.console_api_url;
        let scheme = url.is_empty() || url.starts_with("http://") || url.starts_with("https://");
        // The URL's origin goes into the console's Content-Security-Policy header: nothing in
        // it may end a directive or the header.
        let plain = !url
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ';' | ',' | '\'' | '"'));
        if !(scheme && plain) {
            return Err(ConfigError::new(
                format!("{prefix}.console_api_url"),
                "must be an http:// or https:// URL",
            ));
        }
        self.validate_console_tls(prefix)
    }
}

impl AdminConfig {
    /// Whether the console is served over HTTPS.
    pub fn console_tls(&self) -> bool {
        !self.console_tls_cert_path.as_os_str().is_empty()
    }

    /// Certificate and key come together, as readable files: a typo must not silently serve
    /// the console (and the admin's password) over plain HTTP.
    fn validate_console_tls(&self, prefix: &str) -> Result<(), ConfigError> {
        let pair = [
            ("console_tls_cert_path", &self.console_tls_cert_path),
            ("console_tls_key_path", &self.console_tls_key_path),
        ];
        let set = pair
            .iter()
            .filter(|(_, p)| !p.as_os_str().is_empty())
            .count();
        if set == 0 {
            return Ok(());
        }
        for (field, path) in pair {
            if path.as_os_str().is_empty() {
                return Err(ConfigError::new(
                    format!("{prefix}.{field}"),
                    "required when the other of console_tls_cert_path/console_tls_key_path is set",
                ));
            }
            if !path.is_file() {
                return Err(ConfigError::new(
                    format!("{prefix}.{field}"),
                    format!("{} is not a readable file", path.display()),
                ));
            }
        }
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

#[cfg(test)]
mod console_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_console_api_url_that_is_not_a_plain_http_url_is_refused_naming_the_key() {
        for good in ["", "https://chat.example:443", "http://127.0.0.1:50051/"] {
            let c = AdminConfig {
                console_api_url: good.into(),
                ..AdminConfig::default()
            };
            c.validate("admin").unwrap();
        }
        for bad in [
            "chat.example",
            "javascript:alert(1)",
            "https://a.example; script-src *",
            "https://a.example 'unsafe-inline'",
        ] {
            let c = AdminConfig {
                console_api_url: bad.into(),
                ..AdminConfig::default()
            };
            let err = c.validate("admin").unwrap_err();
            assert_eq!(err.key, "admin.console_api_url", "{bad}");
        }
    }

    #[test]
    fn console_tls_needs_both_files_and_they_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("c.key"));
        std::fs::write(&cert, "x").unwrap();
        std::fs::write(&key, "x").unwrap();
        let with = |c: &std::path::Path, k: &std::path::Path| AdminConfig {
            console_tls_cert_path: c.to_owned(),
            console_tls_key_path: k.to_owned(),
            ..AdminConfig::default()
        };
        let none = std::path::Path::new("");
        with(none, none).validate("admin").unwrap();
        assert!(with(&cert, &key).console_tls());
        with(&cert, &key).validate("admin").unwrap();
        let err = with(&cert, none).validate("admin").unwrap_err();
        assert_eq!(err.key, "admin.console_tls_key_path");
        let err = with(none, &key).validate("admin").unwrap_err();
        assert_eq!(err.key, "admin.console_tls_cert_path");
        let err = with(&cert, &dir.path().join("missing.key"))
            .validate("admin")
            .unwrap_err();
        assert_eq!(err.key, "admin.console_tls_key_path");
        assert!(err.to_string().contains("missing.key"), "{err}");
    }
}
