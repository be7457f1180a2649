//! Versioned migrations, applied at open.
//!
//! `guardyn_schema` holds one row per applied version. Every process that opens the database
//! runs the pending migrations inside one transaction that first takes a transaction-scoped
//! advisory lock, so instances starting together apply each migration exactly once and none
//! of them sees a half-built schema. A database whose version is newer than this build knows is
//! refused instead of being written with an older layout.

use guardyn_storage::StorageError;
use tokio_postgres::Client;

use crate::error::Failure;

/// Advisory lock key of the migration step (`guardyn` in ASCII, as a number).
const MIGRATION_LOCK: i64 = 0x0067_7561_7264_796e;

/// Every migration, in order; the index + 1 is its version. Never edit an applied one: append.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the ordered KV store and the append log.
    //
    // `bytea` compares bytewise (memcmp, then length), which is exactly the KvStore order.
    // The log's per-partition counter row is what makes sequences unique and increasing across
    // processes: an append locks it (UPDATE ... RETURNING) until its transaction commits.
    r"
    CREATE TABLE guardyn_kv (
        key   bytea PRIMARY KEY,
        value bytea NOT NULL
    );
    CREATE TABLE guardyn_log_seq (
        partition bytea PRIMARY KEY,
        next_seq  bigint NOT NULL
    );
    CREATE TABLE guardyn_log (
        partition      bytea  NOT NULL,
        seq            bigint NOT NULL,
        appended_at_ms bigint NOT NULL,
        expires_at_ms  bigint NOT NULL,
        payload        bytea  NOT NULL,
        PRIMARY KEY (partition, seq)
    );
    CREATE INDEX guardyn_log_expiry ON guardyn_log (expires_at_ms);
    ",
];

/// Bring the schema to the newest version this build knows.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), Failure> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS guardyn_schema (
            version    integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let row = tx
        .query_one("SELECT COALESCE(max(version), 0) FROM guardyn_schema", &[])
        .await?;
    let current: i32 = row.get(0);
    let known = i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX);
    if current > known {
        return Err(Failure::Fatal(StorageError::Backend(format!(
            "the database schema is at version {current}, newer than this build knows ({known})"
        ))));
    }
    for (index, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let version = i32::try_from(index + 1).unwrap_or(i32::MAX);
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO guardyn_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(version, "applied PostgreSQL schema migration");
    }
    tx.commit().await?;
    Ok(())
}
