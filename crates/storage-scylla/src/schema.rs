//! The schema and every statement's text, built once from the keyspace name.
//!
//! One table holds a log: partition key `p` (the partition name, a blob), clustering key `seq`
//! ascending, so `read` is one partition slice in clustering order and `delete_through` one
//! range tombstone. `next_seq` is a static column (one value per partition), which lets the
//! sequence compare-and-set and the entries go into one single-partition conditional batch
//! (see `seq`). Every data statement is prepared, names the partition key (token-aware routing
//! sends it to a replica) and never needs `ALLOW FILTERING`.
//!
//! The schema is versioned in `<keyspace>.schema_version` (`component = 'append_log'`): a
//! binary refuses a keyspace written by a newer schema, and a future version migrates from the
//! ones it knows before writing its number.

use std::fmt::Write as _;

use crate::config::{Replication, ScyllaConfig};

/// The schema version this binary creates and understands.
pub(crate) const SCHEMA_VERSION: i32 = 1;
pub(crate) const COMPONENT: &str = "append_log";

/// Largest `IN` list of one delete (ScyllaDB's default
/// `max_clustering_key_restrictions_per_query` is 100).
pub(crate) const DELETE_CHUNK: usize = 100;

/// The data statements, in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Statements {
    /// `(next_seq_new, p, next_seq_expected)`; the conditional statement of an append batch.
    pub bump: String,
    /// `(p, seq, appended_at, expires_at, payload, ttl)`.
    pub insert: String,
    /// `(p, from, limit)` → `(seq, appended_at, expires_at, payload)`.
    pub read: String,
    /// `(p)` → `(next_seq)`.
    pub next_seq: String,
    /// `(p, from)` → `(count)`: live rows of one partition.
    pub count: String,
    /// `(p, [seq])`.
    pub delete_seqs: String,
    /// `(p, through)`.
    pub delete_through: String,
    /// `(component)` → `(version)`.
    pub get_version: String,
    /// `(component, version)`, `IF NOT EXISTS`.
    pub init_version: String,
}

impl Statements {
    pub(crate) fn new(ks: &str) -> Self {
        let t = format!("{ks}.log_entries");
        Self {
            bump: format!("UPDATE {t} SET next_seq = ? WHERE p = ? IF next_seq = ?"),
            insert: format!(
                "INSERT INTO {t} (p, seq, appended_at, expires_at, payload) \
                 VALUES (?, ?, ?, ?, ?) USING TTL ?"
            ),
            read: format!(
                "SELECT seq, appended_at, expires_at, payload FROM {t} \
                 WHERE p = ? AND seq >= ? LIMIT ?"
            ),
            // With a clustering restriction absent, a partition that has only its static
            // counter left still returns one row, which is what this read wants.
            next_seq: format!("SELECT next_seq FROM {t} WHERE p = ? LIMIT 1"),
            // The clustering restriction keeps that static-only row out of the count.
            count: format!("SELECT COUNT(*) FROM {t} WHERE p = ? AND seq >= ?"),
            delete_seqs: format!("DELETE FROM {t} WHERE p = ? AND seq IN ?"),
            delete_through: format!("DELETE FROM {t} WHERE p = ? AND seq <= ?"),
            get_version: format!("SELECT version FROM {ks}.schema_version WHERE component = ?"),
            init_version: format!(
                "INSERT INTO {ks}.schema_version (component, version) VALUES (?, ?) IF NOT EXISTS"
            ),
        }
    }

    #[cfg(test)]
    pub(crate) fn all(&self) -> [&str; 9] {
        [
            &self.bump,
            &self.insert,
            &self.read,
            &self.next_seq,
            &self.count,
            &self.delete_seqs,
            &self.delete_through,
            &self.get_version,
            &self.init_version,
        ]
    }
}

/// `CREATE KEYSPACE IF NOT EXISTS` with the configured replication.
pub(crate) fn create_keyspace(cfg: &ScyllaConfig) -> String {
    let replication = match &cfg.replication {
        Replication::Simple { factor } => {
            format!("{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}")
        }
        Replication::NetworkTopology { datacenters } => {
            let mut s = String::from("{'class': 'NetworkTopologyStrategy'");
            for (dc, n) in datacenters {
                let _ = write!(s, ", '{dc}': {n}");
            }
            s.push('}');
            s
        }
    };
    let mut ddl = format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {replication} \
         AND durable_writes = true",
        cfg.keyspace
    );
    if let Some(enabled) = cfg.tablets {
        let _ = write!(ddl, " AND tablets = {{'enabled': {enabled}}}");
    }
    ddl
}

/// The tables, in creation order.
pub(crate) fn create_tables(ks: &str) -> [String; 2] {
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.schema_version \
             (component text PRIMARY KEY, version int)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {ks}.log_entries (\
             p blob, seq bigint, next_seq bigint STATIC, appended_at bigint, \
             expires_at bigint, payload blob, PRIMARY KEY ((p), seq)) \
             WITH CLUSTERING ORDER BY (seq ASC)"
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn data_statements_are_keyed_bound_and_never_filter() {
        let s = Statements::new("guardyn");
        for text in s.all() {
            let upper = text.to_ascii_uppercase();
            assert!(!upper.contains("ALLOW FILTERING"), "{text}");
            assert!(text.contains('?'), "values are bound, not spliced: {text}");
            assert!(text.contains("guardyn."), "keyspace-qualified: {text}");
        }
        for text in [
            &s.bump,
            &s.read,
            &s.next_seq,
            &s.count,
            &s.delete_seqs,
            &s.delete_through,
        ] {
            assert!(
                text.contains("WHERE p = ?"),
                "single-partition, token-routable: {text}"
            );
        }
        assert!(s.bump.ends_with("IF next_seq = ?"), "the append's CAS");
        assert!(s.insert.ends_with("USING TTL ?"), "native TTL per entry");
        assert!(s.read.contains("seq >= ?") && s.read.ends_with("LIMIT ?"));
        assert!(
            s.delete_through.ends_with("seq <= ?"),
            "one range tombstone"
        );
    }

    #[test]
    fn entries_are_clustered_by_sequence_with_a_static_counter() {
        let [version, entries] = create_tables("ks");
        assert!(version.contains("ks.schema_version"));
        assert!(entries.contains("PRIMARY KEY ((p), seq)"));
        assert!(entries.contains("CLUSTERING ORDER BY (seq ASC)"));
        assert!(entries.contains("next_seq bigint STATIC"));
    }

    #[test]
    fn keyspace_replication() {
        let simple = ScyllaConfig::default();
        assert_eq!(
            create_keyspace(&simple),
            "CREATE KEYSPACE IF NOT EXISTS guardyn WITH replication = \
             {'class': 'SimpleStrategy', 'replication_factor': 3} AND durable_writes = true"
        );
        let nts = ScyllaConfig {
            replication: Replication::NetworkTopology {
                datacenters: BTreeMap::from([("dc1".into(), 3), ("dc2".into(), 2)]),
            },
            tablets: Some(false),
            ..ScyllaConfig::default()
        };
        assert_eq!(
            create_keyspace(&nts),
            "CREATE KEYSPACE IF NOT EXISTS guardyn WITH replication = \
             {'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2} AND durable_writes = true \
             AND tablets = {'enabled': false}"
        );
    }
}
