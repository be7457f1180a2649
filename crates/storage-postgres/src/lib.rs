//! Guardyn's PostgreSQL backend: one database holding both the [`guardyn_storage::KvStore`]
//! and the [`guardyn_storage::AppendLog`], shared by every process of a cluster.
//!
//! Driver: `tokio-postgres` with a `deadpool-postgres` pool; statements are prepared once per
//! connection (`prepare_cached`). TLS is not supported yet (plain TCP or a Unix socket).
//!
//! # Guarantees relied on
//!
//! - **Atomic conditional commit**: `commit(Txn)` runs in one SERIALIZABLE transaction that
//!   reads every condition's key, and applies the mutations only when all hold. PostgreSQL's
//!   serializable snapshot isolation aborts one of two transactions whose reads and writes
//!   overlap (SQLSTATE 40001, or 40P01 on a deadlock); such attempts wrote nothing and are
//!   retried here up to [`error::MAX_ATTEMPTS`] times, after which the caller gets
//!   `Unavailable`. A condition read in the snapshot that fails yields `Conflict`.
//! - **Scan order**: keys are `bytea`, which compares bytewise; scans are `ORDER BY key` with
//!   the bounds as `WHERE` clauses and `LIMIT`.
//! - **Sequences**: `guardyn_log_seq` keeps one counter row per partition, never deleted. An
//!   append increments it by the number of entries (`INSERT ... ON CONFLICT DO UPDATE ...
//!   RETURNING`), which row-locks it until the append's transaction commits. So sequences are
//!   unique and increasing across every process, and appends to one partition commit in
//!   sequence order: a reader that follows with `read(last + 1)` never skips an entry that
//!   commits later with a smaller sequence. Cost: appends to one partition serialize on that
//!   row for the length of one transaction (one round trip + one WAL flush); different
//!   partitions do not contend.
//! - **TTL**: `appended_at_ms` and `expires_at_ms` come from the database server's clock (one
//!   clock for every instance); reads filter expired rows, and every process purges them in
//!   bounded batches every `purge_interval_ms` (concurrent purges are harmless).
//! - **Durability**: an acknowledged write is a committed transaction; with PostgreSQL's
//!   default `synchronous_commit = on` (and `fsync = on`) it is in the flushed WAL.
//!
//! Known limit: PostgreSQL's B-tree entries are at most about 2.7 KB after compression, so a
//! key that long that does not compress is rejected by the server (`Backend`), although the
//! contract allows 4 KiB keys. Guardyn's own keys are under 300 bytes.

mod config;
mod error;
mod kv;
mod log;
mod schema;

#[cfg(any(test, feature = "throwaway"))]
pub mod throwaway;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, Pool, Runtime};
use guardyn_storage::{Close, StorageError, StorageResult};
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

pub use config::{ConfigProblem, PostgresConfig, REDACTED};

use crate::error::Failure;

/// Both stores on one PostgreSQL database. Cheap to share behind an `Arc`; each process opens
/// one (its own pool), and any number of processes may open the same database.
pub struct PostgresStore {
    pool: Pool,
    target: String,
    purger: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .field("pool", &self.pool.status())
            .finish()
    }
}

impl PostgresStore {
    /// Connect, apply pending migrations and start the TTL purge task.
    pub async fn open(config: &PostgresConfig) -> StorageResult<Arc<Self>> {
        config
            .validate()
            .map_err(|p| StorageError::InvalidRequest(format!("storage.postgres.{p}")))?;
        let mut pg = tokio_postgres::Config::from_str(&config.url)
            .map_err(|e| StorageError::InvalidRequest(format!("storage.postgres.url: {e}")))?;
        if let Some(password) = password(config).await? {
            pg.password(password);
        }
        let timeout = Duration::from_millis(config.connect_timeout_ms);
        pg.connect_timeout(timeout);
        if pg.get_application_name().is_none() {
            pg.application_name("guardyn");
        }
        let pool = Pool::builder(Manager::new(pg, NoTls))
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| StorageError::Backend(format!("building the connection pool: {e}")))?;
        let store = Arc::new(Self {
            pool,
            target: config::redact_url(&config.url),
            purger: Mutex::new(None),
        });
        error::retrying(|| async {
            let mut client = store.pool.get().await?;
            schema::migrate(&mut client).await
        })
        .await?;
        let purger = tokio::spawn(log::purge_loop(
            store.pool.clone(),
            Duration::from_millis(config.purge_interval_ms),
            config.purge_batch,
        ));
        *store.purger.lock().unwrap_or_else(PoisonError::into_inner) = Some(purger);
        tracing::info!(target = %store.target, "opened PostgreSQL storage");
        Ok(store)
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, Failure> {
        Ok(self.pool.get().await?)
    }

    fn stop_purger(&self) {
        if let Some(task) = self
            .purger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.stop_purger();
    }
}

#[async_trait]
impl Close for PostgresStore {
    async fn close(&self) {
        self.stop_purger();
        self.pool.close();
    }
}

async fn password(config: &PostgresConfig) -> StorageResult<Option<String>> {
    if let Some(p) = &config.password {
        return Ok(Some(p.clone()));
    }
    let Some(path) = &config.password_file else {
        return Ok(None);
    };
    let text = tokio::fs::read_to_string(path).await.map_err(|e| {
        StorageError::InvalidRequest(format!(
            "storage.postgres.password_file: reading {}: {e}",
            path.display()
        ))
    })?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
}
