//! The typed `[storage.scylla]` section and its validation.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::ConfigError;

/// Where the append log lives and how it talks to the cluster.
///
/// The password is never part of this struct: it is read at [`crate::open`] from
/// `password_file` or from the environment variable named by `password_env`, so printing or
/// logging the config cannot leak it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScyllaConfig {
    /// Contact points, `host:port` (9042 is the CQL port). The driver discovers the rest of the
    /// cluster from them. A comma-separated string is accepted too, for env overrides
    /// (`GUARDYN_..._NODES=a:9042,b:9042`).
    #[serde(deserialize_with = "nodes_list")]
    pub nodes: Vec<String>,
    /// Keyspace holding the log tables; created at open when absent.
    pub keyspace: String,
    /// Replication of the keyspace when this process creates it (an existing keyspace is left
    /// as the operator configured it).
    pub replication: Replication,
    /// Consistency of reads, deletes and the write phase of appends.
    pub consistency: ConsistencyLevel,
    /// Consistency of the Paxos phase of appends (the sequence compare-and-set).
    pub serial_consistency: SerialLevel,
    /// Read entries and counters at `serial_consistency` (a Paxos round per read):
    /// linearizable reads, for deployments that want that proven rather than relying on
    /// quorum reads reconciling replicas (see ARCHITECTURE.md).
    pub serial_reads: bool,
    /// Datacenter whose replicas are tried first (token-aware within it); none = any.
    pub local_datacenter: Option<String>,
    /// `tablets = {'enabled': ..}` on keyspace creation. Left out when unset (the cluster's
    /// default). ScyllaDB releases whose tablets do not support LWT need `false`.
    pub tablets: Option<bool>,
    pub connect_timeout_ms: u64,
    /// Client-side deadline of one request (all of the driver's attempts).
    pub request_timeout_ms: u64,
    /// Compare-and-set attempts of one append before it fails as unavailable (contention).
    pub max_append_attempts: u32,
    pub username: Option<String>,
    /// File whose content (trailing newline removed) is the password.
    pub password_file: Option<PathBuf>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        Self {
            nodes: vec!["127.0.0.1:9042".to_owned()],
            keyspace: "guardyn".to_owned(),
            replication: Replication::Simple { factor: 3 },
            consistency: ConsistencyLevel::LocalQuorum,
            serial_consistency: SerialLevel::LocalSerial,
            serial_reads: false,
            local_datacenter: None,
            tablets: None,
            connect_timeout_ms: 5_000,
            request_timeout_ms: 5_000,
            max_append_attempts: 32,
            username: None,
            password_file: None,
            password_env: None,
        }
    }
}

/// Keyspace replication, written into `CREATE KEYSPACE`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "class", rename_all = "snake_case", deny_unknown_fields)]
pub enum Replication {
    /// `SimpleStrategy`: one datacenter (tests, small clusters).
    Simple { factor: u32 },
    /// `NetworkTopologyStrategy`: replicas per datacenter name.
    NetworkTopology { datacenters: BTreeMap<String, u32> },
}

/// Only quorum-class levels: the log's guarantees (an acknowledged append is seen by the next
/// read, from any instance) need read and write quorums that overlap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsistencyLevel {
    Quorum,
    LocalQuorum,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SerialLevel {
    Serial,
    LocalSerial,
}

fn nodes_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Nodes {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match Nodes::deserialize(d)? {
        Nodes::List(v) => v,
        Nodes::Csv(s) => s
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

impl ScyllaConfig {
    /// Checks every field; errors name the offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &'static str, why: String| Err(ConfigError { key, reason: why });
        if self.nodes.is_empty() {
            return bad("nodes", "at least one contact point is needed".into());
        }
        if let Some(n) = self.nodes.iter().find(|n| n.trim().is_empty()) {
            return bad("nodes", format!("empty contact point {n:?}"));
        }
        if !is_identifier(&self.keyspace) {
            return bad(
                "keyspace",
                "must be 1 to 48 characters of [a-z0-9_], starting with a letter".into(),
            );
        }
        match &self.replication {
            Replication::Simple { factor } if *factor == 0 => {
                return bad("replication.factor", "must be at least 1".into());
            }
            Replication::NetworkTopology { datacenters } => {
                if datacenters.is_empty() {
                    return bad("replication.datacenters", "name at least one".into());
                }
                for (dc, n) in datacenters {
                    if *n == 0 || !is_dc_name(dc) {
                        return bad(
                            "replication.datacenters",
                            format!("{dc:?}: a name of [A-Za-z0-9_.-] with a factor >= 1"),
                        );
                    }
                }
            }
            Replication::Simple { .. } => {}
        }
        if self.connect_timeout_ms == 0 {
            return bad("connect_timeout_ms", "must be positive".into());
        }
        if self.request_timeout_ms == 0 {
            return bad("request_timeout_ms", "must be positive".into());
        }
        if self.max_append_attempts == 0 {
            return bad("max_append_attempts", "must be at least 1".into());
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            return bad(
                "password_file",
                "set password_file or password_env, not both".into(),
            );
        }
        let has_password = self.password_file.is_some() || self.password_env.is_some();
        if self.username.is_some() != has_password {
            return bad(
                "username",
                "username and a password source (password_file or password_env) go together".into(),
            );
        }
        Ok(())
    }

    /// The credentials to log in with, reading the password from its source.
    pub(crate) fn credentials(&self) -> Result<Option<Credentials>, ConfigError> {
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let password = if let Some(path) = &self.password_file {
            let raw = std::fs::read_to_string(path).map_err(|e| ConfigError {
                key: "password_file",
                reason: format!("cannot read {}: {e}", path.display()),
            })?;
            raw.trim_end_matches(['\r', '\n']).to_owned()
        } else if let Some(var) = &self.password_env {
            std::env::var(var).map_err(|_| ConfigError {
                key: "password_env",
                reason: format!("environment variable {var} is not set"),
            })?
        } else {
            return Err(ConfigError {
                key: "username",
                reason: "no password source".into(),
            });
        };
        Ok(Some(Credentials {
            user: user.clone(),
            password,
        }))
    }
}

/// A resolved login; the password never appears in `Debug`.
pub(crate) struct Credentials {
    pub(crate) user: String,
    pub(crate) password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// CQL identifiers are spliced into DDL and statement text (they cannot be bound), so only a
/// conservative unquoted form is accepted.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && s.len() <= 48
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_dc_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn parse(json: &str) -> Result<ScyllaConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse("{}").unwrap();
        assert_eq!(c, ScyllaConfig::default());
        c.validate().unwrap();
        assert_eq!(c.consistency, ConsistencyLevel::LocalQuorum);
    }

    #[test]
    fn consistency_below_quorum_is_refused() {
        assert!(parse(r#"{"consistency":"one"}"#).is_err());
        assert!(
            parse(r#"{"consistency":"each_quorum"}"#).is_err(),
            "writes only"
        );
        let c = parse(r#"{"consistency":"quorum","serial_consistency":"serial"}"#).unwrap();
        assert_eq!(c.serial_consistency, SerialLevel::Serial);
    }

    #[test]
    fn nodes_accept_a_list_or_a_comma_separated_string() {
        let a = parse(r#"{"nodes":["a:9042","b:9042"]}"#).unwrap();
        let b = parse(r#"{"nodes":"a:9042, b:9042,"}"#).unwrap();
        assert_eq!(a.nodes, vec!["a:9042", "b:9042"]);
        assert_eq!(a.nodes, b.nodes);
    }

    #[test]
    fn replication_forms() {
        let c = parse(r#"{"replication":{"class":"network_topology","datacenters":{"dc1":3}}}"#)
            .unwrap();
        c.validate().unwrap();
        assert!(parse(r#"{"replication":{"class":"simple","factor":3,"x":1}}"#).is_err());
        let zero = parse(r#"{"replication":{"class":"simple","factor":0}}"#).unwrap();
        assert_eq!(zero.validate().unwrap_err().key, "replication.factor");
        let bad_dc =
            parse(r#"{"replication":{"class":"network_topology","datacenters":{"d'c":1}}}"#)
                .unwrap();
        assert_eq!(
            bad_dc.validate().unwrap_err().key,
            "replication.datacenters"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(parse(r#"{"password":"hunter2"}"#).is_err());
    }

    #[test]
    fn keyspace_must_be_a_plain_identifier() {
        for bad in [
            "",
            "Guardyn",
            "1ks",
            "ks; DROP KEYSPACE x",
            "a\"b",
            &"k".repeat(49),
        ] {
            let c = ScyllaConfig {
                keyspace: bad.to_owned(),
                ..ScyllaConfig::default()
            };
            assert_eq!(c.validate().unwrap_err().key, "keyspace", "{bad:?}");
        }
    }

    #[test]
    fn username_needs_exactly_one_password_source() {
        let base = ScyllaConfig {
            username: Some("guardyn".into()),
            ..ScyllaConfig::default()
        };
        assert_eq!(base.validate().unwrap_err().key, "username");
        let both = ScyllaConfig {
            password_file: Some("/x".into()),
            password_env: Some("X".into()),
            ..base.clone()
        };
        assert_eq!(both.validate().unwrap_err().key, "password_file");
    }

    #[test]
    fn password_from_file_is_trimmed_and_never_printed() {
        let path = std::env::temp_dir().join(format!("scylla-pw-{}", std::process::id()));
        std::fs::write(&path, "s3cret-value\n").unwrap();
        let c = ScyllaConfig {
            username: Some("guardyn".into()),
            password_file: Some(path.clone()),
            ..ScyllaConfig::default()
        };
        c.validate().unwrap();
        let creds = c.credentials().unwrap().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(creds.password, "s3cret-value");
        assert!(!format!("{creds:?}").contains("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn missing_password_env_names_the_key() {
        let c = ScyllaConfig {
            username: Some("guardyn".into()),
            password_env: Some("GUARDYN_TEST_SCYLLA_NO_SUCH_PASSWORD_VAR".into()),
            ..ScyllaConfig::default()
        };
        assert_eq!(c.credentials().unwrap_err().key, "password_env");
    }
}
