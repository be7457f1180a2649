//! [`ScyllaLog`]: the [`AppendLog`] on one ScyllaDB table.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use guardyn_storage::{
    AppendLog, LogEntry, MAX_KEY_LEN, MAX_VALUE_LEN, NewEntry, PartitionStats, StorageError,
    StorageResult,
};
use scylla::client::session::Session;
use scylla::serialize::SerializationError;
use scylla::serialize::row::{RowSerializationContext, SerializeRow};
use scylla::serialize::writers::RowWriter;
use scylla::statement::SerialConsistency;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::Row;

use crate::config::ScyllaConfig;
use crate::schema::{DELETE_CHUNK, Statements};
use crate::seq::{self, CasOutcome, CasTarget, SeqCache};
use crate::{connect, error, ttl};

/// Rows fetched per read round trip (payloads are up to 2 MiB each).
const READ_PAGE_ROWS: usize = 256;
/// Partitions whose counter one process remembers (a hint, see `seq::SeqCache`).
const SEQ_CACHE_PARTITIONS: usize = 65_536;

/// The ScyllaDB append log. Cheap to share behind an `Arc`; the driver session inside keeps a
/// connection pool per node (per shard on ScyllaDB) and routes each statement token-aware.
pub struct ScyllaLog {
    session: Session,
    keyspace: String,
    stmts: Prepared,
    cache: SeqCache,
    max_append_attempts: u32,
}

impl fmt::Debug for ScyllaLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScyllaLog")
            .field("keyspace", &self.keyspace)
            .finish_non_exhaustive()
    }
}

struct Prepared {
    bump: PreparedStatement,
    insert: PreparedStatement,
    read: PreparedStatement,
    next_seq: PreparedStatement,
    count: PreparedStatement,
    delete_seqs: PreparedStatement,
    delete_through: PreparedStatement,
    serial: SerialConsistency,
}

/// Connects, creates the keyspace and tables when absent, checks the schema version and
/// prepares every statement.
pub async fn open(cfg: &ScyllaConfig) -> Result<ScyllaLog, StorageError> {
    cfg.validate()?;
    let session = connect::session(cfg).await?;

    connect::ensure_schema(&session, cfg).await?;
    let text = Statements::new(&cfg.keyspace);
    let prepare = |what: &'static str, text: String, idempotent: bool| {
        let session = &session;
        async move {
            let mut p = session
                .prepare(text)
                .await
                .map_err(|e| error::prepare(what, &e))?;
            p.set_is_idempotent(idempotent);
            Ok::<_, StorageError>(p)
        }
    };
    let serial = connect::serial(cfg.serial_consistency);
    let mut stmts = Prepared {
        // Appends are not idempotent: a blind retry after an ambiguous timeout could apply a
        // reservation twice. The append loop decides itself.
        bump: prepare("bump", text.bump, false).await?,
        insert: prepare("insert", text.insert, false).await?,
        read: prepare("read", text.read, true).await?,
        next_seq: prepare("next_seq", text.next_seq, true).await?,
        count: prepare("count", text.count, true).await?,
        delete_seqs: prepare("delete", text.delete_seqs, true).await?,
        delete_through: prepare("delete_through", text.delete_through, true).await?,
        serial,
    };
    stmts.read.set_consistency(connect::read_consistency(cfg));
    stmts
        .next_seq
        .set_consistency(connect::read_consistency(cfg));
    tracing::info!(
        keyspace = %cfg.keyspace,
        nodes = ?cfg.nodes,
        consistency = ?cfg.consistency,
        "scylla append log open"
    );
    Ok(ScyllaLog {
        session,
        keyspace: cfg.keyspace.clone(),
        stmts,
        cache: SeqCache::new(SEQ_CACHE_PARTITIONS),
        max_append_attempts: cfg.max_append_attempts,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn check_partition(partition: &[u8]) -> StorageResult<()> {
    if partition.is_empty() || partition.len() > MAX_KEY_LEN {
        return Err(StorageError::InvalidRequest(format!(
            "partition name must be 1 to {MAX_KEY_LEN} bytes, got {}",
            partition.len()
        )));
    }
    Ok(())
}

/// Statements of one batch (the protocol counts them in a u16; one is the counter bump).
const MAX_ENTRIES_PER_APPEND: usize = u16::MAX as usize - 1;
/// An append is one mutation, which must fit in half a commitlog segment (32 MiB segments by
/// default); stay below with room for keys and overhead.
const MAX_APPEND_BYTES: usize = 15 * 1024 * 1024;

/// Refuses an append the cluster could not take as one atomic batch, before anything is sent.
fn check_batch(entries: &[NewEntry]) -> StorageResult<()> {
    let bytes: usize = entries.iter().map(|e| e.payload.len()).sum();
    if entries.len() > MAX_ENTRIES_PER_APPEND || bytes > MAX_APPEND_BYTES {
        return Err(StorageError::InvalidRequest(format!(
            "one append takes at most {MAX_ENTRIES_PER_APPEND} entries and {MAX_APPEND_BYTES} \
             payload bytes on ScyllaDB, got {} entries and {bytes} bytes",
            entries.len()
        )));
    }
    Ok(())
}

/// One statement's values in an append batch: the counter bump or an entry.
enum BatchRow<'a> {
    Bump(i64, &'a [u8], Option<i64>),
    Entry(&'a [u8], i64, i64, i64, &'a [u8], i32),
}

impl SerializeRow for BatchRow<'_> {
    fn serialize(
        &self,
        ctx: &RowSerializationContext<'_>,
        writer: &mut RowWriter<'_>,
    ) -> Result<(), SerializationError> {
        match self {
            BatchRow::Bump(new, p, expect) => (new, p, expect).serialize(ctx, writer),
            BatchRow::Entry(p, seq, at, exp, payload, ttl) => {
                (p, seq, at, exp, payload, ttl).serialize(ctx, writer)
            }
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// One append's compare-and-set against the cluster.
struct AppendTarget<'a> {
    log: &'a ScyllaLog,
    partition: &'a [u8],
    entries: &'a [NewEntry],
    appended_at: i64,
}

impl CasTarget for AppendTarget<'_> {
    async fn attempt(&self, r: &seq::Reservation) -> StorageResult<CasOutcome> {
        self.log
            .try_append(self.partition, r, self.entries, self.appended_at)
            .await
    }

    async fn reread(&self) -> StorageResult<Option<u64>> {
        self.log.read_next_seq(self.partition).await
    }
}

impl ScyllaLog {
    async fn read_next_seq(&self, partition: &[u8]) -> StorageResult<Option<u64>> {
        let result = self
            .session
            .execute_unpaged(&self.stmts.next_seq, (partition,))
            .await
            .map_err(|e| error::execution("read next_seq", &e))?;
        match connect::first_row::<(Option<i64>,)>(result)? {
            Some((Some(v),)) => Ok(Some(seq::from_i64(v)?)),
            _ => Ok(None),
        }
    }

    /// One conditional batch: the counter compare-and-set and every entry, applied together or
    /// not at all.
    async fn try_append(
        &self,
        partition: &[u8],
        r: &seq::Reservation,
        entries: &[NewEntry],
        appended_at: i64,
    ) -> StorageResult<CasOutcome> {
        let now = appended_at.unsigned_abs();
        let mut batch = Batch::new(BatchType::Logged);
        batch.set_serial_consistency(Some(self.stmts.serial));
        batch.append_statement(self.stmts.bump.clone());
        let mut values = Vec::with_capacity(entries.len() + 1);
        values.push(BatchRow::Bump(seq::to_i64(r.next)?, partition, r.expect));
        for (seq, e) in r.seqs().zip(entries) {
            batch.append_statement(self.stmts.insert.clone());
            let expires = ttl::expires_at_ms(now, e.ttl);
            values.push(BatchRow::Entry(
                partition,
                seq::to_i64(seq)?,
                appended_at,
                seq::to_i64(expires)?,
                &e.payload,
                ttl::native_ttl_secs(e.ttl),
            ));
        }
        let result = self
            .session
            .batch(&batch, &values)
            .await
            .map_err(|e| error::execution("append", &e))?;
        let rows = result
            .into_rows_result()
            .map_err(|e| StorageError::Backend(format!("scylla append: no LWT result: {e}")))?;
        let specs = rows.column_specs();
        let names: Vec<&str> = specs.iter().map(|s| s.name()).collect();
        let parsed = rows
            .rows::<Row>()
            .map_err(|e| StorageError::Corrupt(format!("scylla append result: {e}")))?
            .collect::<Result<Vec<Row>, _>>()
            .map_err(|e| StorageError::Corrupt(format!("scylla append result: {e}")))?;
        seq::cas_outcome(parsed.iter().map(|row| {
            names
                .iter()
                .copied()
                .zip(row.columns.iter().map(Option::as_ref))
        }))
    }
}

#[async_trait]
impl AppendLog for ScyllaLog {
    async fn append(&self, partition: &[u8], entries: Vec<NewEntry>) -> StorageResult<Vec<u64>> {
        check_partition(partition)?;
        if let Some(e) = entries.iter().find(|e| e.payload.len() > MAX_VALUE_LEN) {
            return Err(StorageError::InvalidRequest(format!(
                "payload of {} bytes exceeds {MAX_VALUE_LEN}",
                e.payload.len()
            )));
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        check_batch(&entries)?;
        let appended_at = seq::to_i64(now_ms())?;
        let current = match self.cache.get(partition) {
            Some(v) => Some(v),
            None => self.read_next_seq(partition).await?,
        };
        let target = AppendTarget {
            log: self,
            partition,
            entries: &entries,
            appended_at,
        };
        let allocated =
            seq::allocate(&target, current, entries.len(), self.max_append_attempts).await;
        match allocated {
            Ok(r) => {
                self.cache.set(partition, r.next);
                Ok(r.seqs().collect())
            }
            Err(e) => {
                // After a timed-out LWT the counter is unknown: do not trust the hint.
                self.cache.forget(partition);
                Err(e)
            }
        }
    }

    async fn read(
        &self,
        partition: &[u8],
        from: u64,
        limit: usize,
    ) -> StorageResult<Vec<LogEntry>> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let Ok(mut from) = i64::try_from(from) else {
            return Ok(out);
        };
        let now = now_ms();
        loop {
            let page = (limit - out.len()).min(READ_PAGE_ROWS);
            let page_i32 = i32::try_from(page).unwrap_or(i32::MAX);
            let result = self
                .session
                .execute_unpaged(&self.stmts.read, (partition, from, page_i32))
                .await
                .map_err(|e| error::execution("read", &e))?;
            let rows = result
                .into_rows_result()
                .map_err(|e| StorageError::Backend(format!("scylla read: {e}")))?;
            let mut got = 0;
            let mut last = None;
            let typed = rows
                .rows::<(i64, i64, i64, Vec<u8>)>()
                .map_err(|e| StorageError::Corrupt(format!("scylla read: {e}")))?;
            for row in typed {
                let (seq, at, exp, payload) =
                    row.map_err(|e| StorageError::Corrupt(format!("scylla read: {e}")))?;
                got += 1;
                last = Some(seq);
                // Rows past their millisecond expiry wait for the server's whole-second TTL:
                // hide them here (see `ttl`).
                let expires_at_ms = seq::from_i64(exp)?;
                if ttl::is_live(expires_at_ms, now) {
                    out.push(LogEntry {
                        seq: seq::from_i64(seq)?,
                        appended_at_ms: seq::from_i64(at)?,
                        expires_at_ms,
                        payload,
                    });
                }
            }
            match last {
                Some(last) if got == page && out.len() < limit && last < i64::MAX => {
                    from = last + 1;
                }
                _ => return Ok(out),
            }
        }
    }

    async fn delete(&self, partition: &[u8], seqs: &[u64]) -> StorageResult<()> {
        let mut keys: Vec<i64> = seqs.iter().filter_map(|s| i64::try_from(*s).ok()).collect();
        keys.sort_unstable();
        keys.dedup();
        for chunk in keys.chunks(DELETE_CHUNK) {
            self.session
                .execute_unpaged(&self.stmts.delete_seqs, (partition, chunk))
                .await
                .map_err(|e| error::execution("delete", &e))?;
        }
        Ok(())
    }

    async fn delete_through(&self, partition: &[u8], through: u64) -> StorageResult<()> {
        if through == 0 {
            return Ok(());
        }
        let through = i64::try_from(through).unwrap_or(i64::MAX);
        self.session
            .execute_unpaged(&self.stmts.delete_through, (partition, through))
            .await
            .map_err(|e| error::execution("delete_through", &e))?;
        Ok(())
    }

    async fn stats(&self, partition: &[u8]) -> StorageResult<PartitionStats> {
        let counted = self
            .session
            .execute_unpaged(&self.stmts.count, (partition, 0i64))
            .await
            .map_err(|e| error::execution("count", &e))?;
        let len = match connect::first_row::<(i64,)>(counted)? {
            Some((n,)) => seq::from_i64(n)?,
            None => 0,
        };
        let next_seq = self.read_next_seq(partition).await?.unwrap_or(1).max(1);
        Ok(PartitionStats { len, next_seq })
    }
}

/// `Arc` form for `Stores`.
pub async fn open_shared(cfg: &ScyllaConfig) -> Result<Arc<dyn AppendLog>, StorageError> {
    Ok(Arc::new(open(cfg).await?))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use guardyn_storage::MAX_VALUE_LEN;

    use super::*;

    fn entries(n: usize, len: usize) -> Vec<NewEntry> {
        (0..n)
            .map(|_| NewEntry {
                payload: vec![0; len],
                ttl: Duration::from_secs(1),
            })
            .collect()
    }

    #[test]
    fn appends_must_fit_one_batch_and_one_mutation() {
        assert!(check_batch(&entries(7, MAX_VALUE_LEN)).is_ok(), "14 MiB");
        assert!(matches!(
            check_batch(&entries(8, MAX_VALUE_LEN)),
            Err(StorageError::InvalidRequest(_))
        ));
        assert!(check_batch(&entries(MAX_ENTRIES_PER_APPEND, 1)).is_ok());
        assert!(check_batch(&entries(MAX_ENTRIES_PER_APPEND + 1, 0)).is_err());
    }
}
