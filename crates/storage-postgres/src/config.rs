//! The `storage.postgres` section.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where the PostgreSQL database is and how many connections to keep.
///
/// The password is never part of the example configuration: it comes from `password_file`
/// (a file holding only the password) or from `password`, which is meant to be set through the
/// environment (`GUARDYN_STORAGE__POSTGRES__PASSWORD`). `Debug` never prints it, nor a password
/// written into `url`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// libpq-style URL without the password: `postgres://guardyn@db.internal:5432/guardyn`.
    /// TLS is not supported yet: use a loopback or otherwise private network.
    #[serde(serialize_with = "serialize_url")]
    pub url: String,
    /// Password, usually from the environment; takes precedence over `password_file`.
    /// Printed (`guardyn config`) as [`REDACTED`].
    #[serde(
        serialize_with = "serialize_password",
        skip_serializing_if = "Option::is_none"
    )]
    pub password: Option<String>,
    /// File whose content (trailing newline trimmed) is the password.
    pub password_file: Option<PathBuf>,
    /// Connections in the pool: the most statements this process runs at once.
    pub pool_size: usize,
    /// Bound on opening one connection and on waiting for a free one.
    pub connect_timeout_ms: u64,
    /// How often this process purges log entries whose TTL has passed.
    pub purge_interval_ms: u64,
    /// Entries purged per statement (repeated while full batches come back).
    pub purge_batch: u32,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://guardyn@127.0.0.1:5432/guardyn".to_owned(),
            password: None,
            password_file: None,
            pool_size: 16,
            connect_timeout_ms: 5_000,
            purge_interval_ms: 60_000,
            purge_batch: 1_000,
        }
    }
}

/// What a secret looks like when the configuration is printed.
pub const REDACTED: &str = "<redacted>";

fn serialize_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}

fn serialize_password<S: serde::Serializer>(p: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(_) => s.serialize_some(REDACTED),
        None => s.serialize_none(),
    }
}

/// A configuration value that cannot work: `field` is the key under `storage.postgres`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigProblem {
    pub field: &'static str,
    pub message: String,
}

impl PostgresConfig {
    /// Check every value without connecting.
    pub fn validate(&self) -> Result<(), ConfigProblem> {
        let problem = |field, message: &str| ConfigProblem {
            field,
            message: message.to_owned(),
        };
        let parsed = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| problem("url", &format!("not a PostgreSQL URL: {e}")))?;
        if parsed.get_hosts().is_empty() {
            return Err(problem("url", "names no host"));
        }
        if parsed.get_user().is_none() {
            return Err(problem("url", "names no user"));
        }
        if self.url.contains(REDACTED) || self.password.as_deref() == Some(REDACTED) {
            let field = if self.url.contains(REDACTED) {
                "url"
            } else {
                "password"
            };
            return Err(problem(
                field,
                "holds the redacted placeholder printed by `guardyn config`, not a secret",
            ));
        }
        if !(1..=1024).contains(&self.pool_size) {
            return Err(problem("pool_size", "must be 1..=1024"));
        }
        if !(100..=600_000).contains(&self.connect_timeout_ms) {
            return Err(problem("connect_timeout_ms", "must be 100..=600000"));
        }
        if !(100..=86_400_000).contains(&self.purge_interval_ms) {
            return Err(problem("purge_interval_ms", "must be 100..=86400000"));
        }
        if !(1..=100_000).contains(&self.purge_batch) {
            return Err(problem("purge_batch", "must be 1..=100000"));
        }
        Ok(())
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_file", &self.password_file)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("purge_interval_ms", &self.purge_interval_ms)
            .field("purge_batch", &self.purge_batch)
            .finish()
    }
}

/// The URL with any password in its user-info part or query replaced.
pub(crate) fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "<redacted>");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query = query
            .split('&')
            .map(|kv| {
                if kv.to_ascii_lowercase().starts_with("password=") {
                    "password=<redacted>".to_owned()
                } else {
                    kv.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("&");
        out = format!("{head}{query}");
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_a_password() {
        let config = PostgresConfig {
            url: "postgres://u:hunter2@h:5432/db?sslmode=disable&password=hunter3".to_owned(),
            password: Some("hunter4".to_owned()),
            ..PostgresConfig::default()
        };
        let shown = format!("{config:?}");
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("postgres://u:<redacted>@h:5432/db"),
            "{shown}"
        );
        let printed = serde_json::to_string(&config).unwrap();
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        let reparsed: PostgresConfig = serde_json::from_str(&printed).unwrap();
        assert_eq!(reparsed.validate().unwrap_err().field, "url");
    }

    #[test]
    fn validation_names_the_field() {
        assert_eq!(PostgresConfig::default().validate(), Ok(()));
        let bad = |c: PostgresConfig| c.validate().map_err(|p| p.field);
        let no_user = PostgresConfig {
            url: "postgres://127.0.0.1/db".to_owned(),
            ..PostgresConfig::default()
        };
        assert_eq!(bad(no_user), Err("url"));
        let not_url = PostgresConfig {
            url: "mysql:://x".to_owned(),
            ..PostgresConfig::default()
        };
        assert_eq!(bad(not_url), Err("url"));
        let pool = PostgresConfig {
            pool_size: 0,
            ..PostgresConfig::default()
        };
        assert_eq!(bad(pool), Err("pool_size"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<PostgresConfig>(r#"{"urll": "x"}"#);
        assert!(err.is_err());
        let ok: PostgresConfig = serde_json::from_str(r#"{"pool_size": 3}"#).unwrap();
        assert_eq!(ok.pool_size, 3);
        assert_eq!(ok.connect_timeout_ms, 5_000);
    }
}
