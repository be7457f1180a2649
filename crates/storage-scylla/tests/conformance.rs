//! The shared conformance suite against a real ScyllaDB cluster.
//!
//! ScyllaDB cannot run on the CI machines, so every case returns early (and says so on
//! stderr) unless `GUARDYN_TEST_SCYLLA_NODES` names contact points (`host:9042,host:9042`);
//! when it does, every case must pass. Optional: `GUARDYN_TEST_SCYLLA_KEYSPACE` (default
//! `guardyn_conformance`), `GUARDYN_TEST_SCYLLA_RF` (SimpleStrategy factor, default 1). The
//! cases use unique partition names, so they run concurrently on one keyspace and leave it
//! reusable.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;

use async_trait::async_trait;
use guardyn_storage::AppendLog;
use guardyn_storage::conformance::LogHarness;
use guardyn_storage_scylla::{Replication, ScyllaConfig};

const NODES_VAR: &str = "GUARDYN_TEST_SCYLLA_NODES";

struct Scylla {
    cfg: ScyllaConfig,
}

impl Scylla {
    /// The harness, or `None` (the case is skipped) when no cluster is named.
    fn from_env() -> Option<Self> {
        let nodes = std::env::var(NODES_VAR)
            .ok()
            .filter(|v| !v.trim().is_empty())?;
        let factor = std::env::var("GUARDYN_TEST_SCYLLA_RF")
            .ok()
            .map(|v| v.parse().expect("GUARDYN_TEST_SCYLLA_RF must be a number"))
            .unwrap_or(1);
        let keyspace = std::env::var("GUARDYN_TEST_SCYLLA_KEYSPACE")
            .unwrap_or_else(|_| "guardyn_conformance".to_owned());
        Some(Self {
            cfg: ScyllaConfig {
                nodes: nodes.split(',').map(|n| n.trim().to_owned()).collect(),
                keyspace,
                replication: Replication::Simple { factor },
                ..ScyllaConfig::default()
            },
        })
    }
}

#[async_trait]
impl LogHarness for Scylla {
    async fn open_log(&self) -> Arc<dyn AppendLog> {
        Arc::new(
            guardyn_storage_scylla::open(&self.cfg)
                .await
                .expect("open the ScyllaDB log named by GUARDYN_TEST_SCYLLA_NODES"),
        )
    }

    /// A second session on the same keyspace: its own connections and its own sequence
    /// cache, as another process of the cluster has.
    async fn open_log_instance(&self, _first: &Arc<dyn AppendLog>) -> Arc<dyn AppendLog> {
        self.open_log().await
    }
}

/// Evaluated inside each generated test: `return` skips that test.
macro_rules! scylla_or_skip {
    () => {
        match Scylla::from_env() {
            Some(h) => h,
            None => {
                eprintln!("skipped: {NODES_VAR} is not set (no ScyllaDB cluster here)");
                return;
            }
        }
    };
}

mod log_conformance {
    use super::*;

    guardyn_storage::log_conformance_suite!(scylla_or_skip!());
}
