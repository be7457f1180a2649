//! The shared conformance suite against a real PostgreSQL (see `throwaway`), plus what only
//! this engine can show: migrations applied once by instances that open together.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use guardyn_storage::conformance::{KvHarness, LogHarness};
use guardyn_storage::{AppendLog, KvStore, StorageError};

use crate::{PostgresConfig, PostgresStore, throwaway};

/// Every case opens its own pools on the shared server's default database; the cases' keys and
/// partitions are unique per run, so they need no database of their own.
struct Postgres {
    config: PostgresConfig,
}

impl Postgres {
    fn new() -> Option<Self> {
        throwaway::shared_or_skip().map(|server| Self {
            config: server.config(),
        })
    }

    async fn open(&self) -> Arc<PostgresStore> {
        PostgresStore::open(&self.config)
            .await
            .expect("open PostgreSQL store")
    }
}

#[async_trait]
impl KvHarness for Postgres {
    async fn open_kv(&self) -> Arc<dyn KvStore> {
        self.open().await
    }

    async fn open_kv_instance(&self, _first: &Arc<dyn KvStore>) -> Arc<dyn KvStore> {
        self.open().await
    }
}

#[async_trait]
impl LogHarness for Postgres {
    async fn open_log(&self) -> Arc<dyn AppendLog> {
        self.open().await
    }

    async fn open_log_instance(&self, _first: &Arc<dyn AppendLog>) -> Arc<dyn AppendLog> {
        self.open().await
    }
}

mod kv_conformance {
    guardyn_storage::kv_conformance_suite!(match super::Postgres::new() {
        Some(harness) => harness,
        None => return,
    });
}

mod log_conformance {
    guardyn_storage::log_conformance_suite!(match super::Postgres::new() {
        Some(harness) => harness,
        None => return,
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_opening_together_migrate_once() {
    let Some(server) = throwaway::shared_or_skip() else {
        return;
    };
    let config = server.fresh_database().await;
    let opens = (0..6).map(|_| {
        let config = config.clone();
        tokio::spawn(async move { PostgresStore::open(&config).await })
    });
    for r in futures_join(opens).await {
        r.expect("concurrent open");
    }
    let (client, conn) = tokio_postgres::connect(&config.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let versions: Vec<i32> = client
        .query("SELECT version FROM guardyn_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: Vec<i32> = (1..=i32::try_from(crate::schema::MIGRATIONS.len()).unwrap()).collect();
    assert_eq!(versions, want, "each migration applied exactly once");

    // A database from a newer build is refused rather than written with an older layout.
    client
        .execute("INSERT INTO guardyn_schema (version) VALUES (1000)", &[])
        .await
        .unwrap();
    match PostgresStore::open(&config).await {
        Err(StorageError::Backend(msg)) => assert!(msg.contains("newer"), "{msg}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = PostgresConfig {
        url: format!("postgres://guardyn@127.0.0.1:{port}/guardyn"),
        connect_timeout_ms: 500,
        ..PostgresConfig::default()
    };
    match PostgresStore::open(&config).await {
        Err(StorageError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

async fn futures_join<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}
