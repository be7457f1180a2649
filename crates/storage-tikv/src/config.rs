//! The typed configuration of the TiKV engine.

use std::path::PathBuf;
use std::time::Duration;

use guardyn_storage::StorageError;
use serde::{Deserialize, Serialize};

/// Longest accepted key prefix (without its final `/`).
pub const MAX_PREFIX_LEN: usize = 64;

/// Where the TiKV cluster is and how this process talks to it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TikvConfig {
    /// PD (placement driver) addresses, `host:port`; the client discovers the TiKV stores
    /// through them.
    pub pd_endpoints: Vec<String>,
    /// Prepended to every key, so several deployments can share one cluster. One segment of
    /// `[A-Za-z0-9._-]` ending in `/`: two valid prefixes are never prefixes of each other, so
    /// deployments cannot see each other's keys.
    pub key_prefix: String,
    /// Deadline of each gRPC request to PD or TiKV.
    pub request_timeout_ms: u64,
    /// Deadline of one whole store operation (every retry included); past it the operation
    /// fails as unavailable.
    pub op_timeout_ms: u64,
    /// Attempts of one `commit` whose TiKV transaction hits a write conflict while its
    /// conditions still hold, before it fails as unavailable.
    pub max_txn_attempts: u32,
    /// Largest gRPC response accepted (a scan of big values needs more than tonic's 4 MiB).
    pub max_response_bytes: usize,
    /// Mutual TLS to PD and TiKV; plaintext when absent.
    pub tls: Option<TikvTlsConfig>,
}

/// PEM files for mutual TLS (rustls inside tikv-client: no OpenSSL). TiKV requires all three.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TikvTlsConfig {
    pub ca_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

impl Default for TikvConfig {
    fn default() -> Self {
        Self {
            pd_endpoints: vec!["127.0.0.1:2379".to_owned()],
            key_prefix: "guardyn/".to_owned(),
            request_timeout_ms: 2_000,
            op_timeout_ms: 10_000,
            max_txn_attempts: 8,
            max_response_bytes: 64 * 1024 * 1024,
            tls: None,
        }
    }
}

impl TikvConfig {
    /// Check every field; the error names the offending key.
    pub fn validate(&self) -> Result<(), StorageError> {
        let invalid =
            |key: &str, why: &str| Err(StorageError::InvalidRequest(format!("{key}: {why}")));
        if self.pd_endpoints.is_empty() {
            return invalid("pd_endpoints", "at least one PD address is required");
        }
        if self.pd_endpoints.iter().any(|e| e.trim().is_empty()) {
            return invalid("pd_endpoints", "empty address");
        }
        if !valid_prefix(&self.key_prefix) {
            return invalid(
                "key_prefix",
                "must be 1..=64 characters of [A-Za-z0-9._-] followed by one '/'",
            );
        }
        if self.request_timeout_ms == 0 {
            return invalid("request_timeout_ms", "must be positive");
        }
        if self.op_timeout_ms < self.request_timeout_ms {
            return invalid("op_timeout_ms", "must be at least request_timeout_ms");
        }
        if self.max_txn_attempts == 0 {
            return invalid("max_txn_attempts", "must be positive");
        }
        if self.max_response_bytes < 4 * 1024 * 1024 {
            return invalid("max_response_bytes", "must be at least 4 MiB");
        }
        Ok(())
    }

    pub(crate) fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub(crate) fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.op_timeout_ms)
    }
}

fn valid_prefix(prefix: &str) -> bool {
    let Some(name) = prefix.strip_suffix('/') else {
        return false;
    };
    (1..=MAX_PREFIX_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn field_of(c: &TikvConfig) -> String {
        match c.validate() {
            Err(StorageError::InvalidRequest(m)) => m.split(':').next().unwrap().to_owned(),
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_toml_overrides_apply() {
        TikvConfig::default().validate().unwrap();
        let c: TikvConfig = toml::from_str(
            "pd_endpoints = ['pd1:2379', 'pd2:2379']\nkey_prefix = 'prod-eu/'\n\
             [tls]\nca_path = '/ca.pem'\ncert_path = '/c.pem'\nkey_path = '/k.pem'\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.pd_endpoints.len(), 2);
        assert_eq!(c.key_prefix, "prod-eu/");
        assert_eq!(c.max_txn_attempts, 8, "unset keys keep their defaults");
        assert_eq!(c.tls.unwrap().key_path, PathBuf::from("/k.pem"));
    }

    #[test]
    fn unknown_keys_and_partial_tls_are_rejected() {
        assert!(toml::from_str::<TikvConfig>("pd_endpoint = ['x']").is_err());
        assert!(toml::from_str::<TikvConfig>("[tls]\nca_path = '/ca.pem'").is_err());
    }

    #[test]
    fn invalid_fields_are_named() {
        let base = TikvConfig::default;
        let cases: Vec<(TikvConfig, &str)> = vec![
            (
                TikvConfig {
                    pd_endpoints: vec![],
                    ..base()
                },
                "pd_endpoints",
            ),
            (
                TikvConfig {
                    pd_endpoints: vec![" ".into()],
                    ..base()
                },
                "pd_endpoints",
            ),
            (
                TikvConfig {
                    key_prefix: String::new(),
                    ..base()
                },
                "key_prefix",
            ),
            (
                TikvConfig {
                    key_prefix: "/".into(),
                    ..base()
                },
                "key_prefix",
            ),
            (
                TikvConfig {
                    key_prefix: "guardyn".into(),
                    ..base()
                },
                "key_prefix",
            ),
            (
                TikvConfig {
                    key_prefix: "a/b/".into(),
                    ..base()
                },
                "key_prefix",
            ),
            (
                TikvConfig {
                    key_prefix: "ü/".into(),
                    ..base()
                },
                "key_prefix",
            ),
            (
                TikvConfig {
                    key_prefix: format!("{}/", "a".repeat(65)),
                    ..base()
                },
                "key_prefix",
            ),
            (
                TikvConfig {
                    request_timeout_ms: 0,
                    ..base()
                },
                "request_timeout_ms",
            ),
            (
                TikvConfig {
                    op_timeout_ms: 1,
                    ..base()
                },
                "op_timeout_ms",
            ),
            (
                TikvConfig {
                    max_txn_attempts: 0,
                    ..base()
                },
                "max_txn_attempts",
            ),
            (
                TikvConfig {
                    max_response_bytes: 1024,
                    ..base()
                },
                "max_response_bytes",
            ),
        ];
        for (c, field) in cases {
            assert_eq!(field_of(&c), field, "{c:?}");
        }
        let longest = TikvConfig {
            key_prefix: format!("{}/", "a".repeat(64)),
            ..base()
        };
        longest.validate().unwrap();
    }
}
