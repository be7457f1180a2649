//! [`AppendLog`] on the `guardyn_log` table and its per-partition counters.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::Pool;
use guardyn_storage::{
    AppendLog, LogEntry, MAX_KEY_LEN, MAX_VALUE_LEN, NewEntry, PartitionStats, StorageError,
    StorageResult,
};

use crate::PostgresStore;
use crate::error::{Failure, retrying};

/// The database server's clock in milliseconds since the Unix epoch: every instance stamps and
/// expires entries on this one clock.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// Longest TTL stored (about 100 years), so `appended_at + ttl` cannot overflow a bigint.
const MAX_TTL_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

#[async_trait]
impl AppendLog for PostgresStore {
    async fn append(&self, partition: &[u8], entries: Vec<NewEntry>) -> StorageResult<Vec<u64>> {
        validate_append(partition, &entries)?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let count = i64::try_from(entries.len()).unwrap_or(i64::MAX);
        let ttls: Vec<i64> = entries.iter().map(|e| ttl_ms(e.ttl)).collect();
        let payloads: Vec<&[u8]> = entries.iter().map(|e| e.payload.as_slice()).collect();
        let first: i64 = retrying(|| async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // Locks the partition's counter row until commit: appends to one partition commit
            // in sequence order, on every instance.
            let reserve = tx
                .prepare_cached(
                    "INSERT INTO guardyn_log_seq AS s (partition, next_seq) VALUES ($1::bytea, 1 + $2::bigint) \
                     ON CONFLICT (partition) DO UPDATE SET next_seq = s.next_seq + $2 \
                     RETURNING next_seq - $2",
                )
                .await?;
            let first: i64 = tx.query_one(&reserve, &[&partition, &count]).await?.get(0);
            let insert = tx
                .prepare_cached(&format!(
                    "INSERT INTO guardyn_log (partition, seq, appended_at_ms, expires_at_ms, payload) \
                     SELECT $1::bytea, $2::bigint + t.i - 1, n.ms, n.ms + t.ttl, t.payload \
                     FROM unnest($3::bigint[], $4::bytea[]) WITH ORDINALITY AS t(ttl, payload, i), \
                          (SELECT {NOW_MS} AS ms) AS n"
                ))
                .await?;
            tx.execute(&insert, &[&partition, &first, &ttls, &payloads])
                .await?;
            tx.commit().await?;
            Ok(first)
        })
        .await?;
        let first = seq_out(first)?;
        Ok((first..first + entries.len() as u64).collect())
    }

    async fn read(
        &self,
        partition: &[u8],
        from: u64,
        limit: usize,
    ) -> StorageResult<Vec<LogEntry>> {
        let Ok(from) = i64::try_from(from) else {
            return Ok(Vec::new());
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = retrying(|| async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT seq, appended_at_ms, expires_at_ms, payload FROM guardyn_log \
                     WHERE partition = $1 AND seq >= $2 AND expires_at_ms > {NOW_MS} \
                     ORDER BY seq LIMIT $3"
                ))
                .await?;
            Ok(client.query(&stmt, &[&partition, &from, &limit]).await?)
        })
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(LogEntry {
                    seq: seq_out(r.get(0))?,
                    appended_at_ms: seq_out(r.get(1))?,
                    expires_at_ms: seq_out(r.get(2))?,
                    payload: r.get(3),
                })
            })
            .collect()
    }

    async fn delete(&self, partition: &[u8], seqs: &[u64]) -> StorageResult<()> {
        let seqs: Vec<i64> = seqs.iter().filter_map(|s| i64::try_from(*s).ok()).collect();
        if seqs.is_empty() {
            return Ok(());
        }
        retrying(|| async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("DELETE FROM guardyn_log WHERE partition = $1 AND seq = ANY($2)")
                .await?;
            client.execute(&stmt, &[&partition, &seqs]).await?;
            Ok(())
        })
        .await
    }

    async fn delete_through(&self, partition: &[u8], through: u64) -> StorageResult<()> {
        if through == 0 {
            return Ok(());
        }
        let through = i64::try_from(through).unwrap_or(i64::MAX);
        retrying(|| async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached("DELETE FROM guardyn_log WHERE partition = $1 AND seq <= $2")
                .await?;
            client.execute(&stmt, &[&partition, &through]).await?;
            Ok(())
        })
        .await
    }

    async fn stats(&self, partition: &[u8]) -> StorageResult<PartitionStats> {
        let (len, next): (i64, Option<i64>) = retrying(|| async {
            let client = self.client().await?;
            let stmt = client
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM guardyn_log WHERE partition = $1), \
                            (SELECT next_seq FROM guardyn_log_seq WHERE partition = $1)",
                )
                .await?;
            let row = client.query_one(&stmt, &[&partition]).await?;
            Ok((row.get(0), row.get(1)))
        })
        .await?;
        Ok(PartitionStats {
            len: seq_out(len)?,
            next_seq: seq_out(next.unwrap_or(1))?,
        })
    }
}

fn validate_append(partition: &[u8], entries: &[NewEntry]) -> StorageResult<()> {
    if partition.is_empty() || partition.len() > MAX_KEY_LEN {
        return Err(StorageError::InvalidRequest(format!(
            "partition name of {} bytes (1..={MAX_KEY_LEN})",
            partition.len()
        )));
    }
    if let Some(e) = entries.iter().find(|e| e.payload.len() > MAX_VALUE_LEN) {
        return Err(StorageError::InvalidRequest(format!(
            "payload of {} bytes exceeds {MAX_VALUE_LEN}",
            e.payload.len()
        )));
    }
    Ok(())
}

pub(crate) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).map_or(MAX_TTL_MS, |ms| ms.min(MAX_TTL_MS))
}

fn seq_out(v: i64) -> StorageResult<u64> {
    u64::try_from(v).map_err(|_| StorageError::Corrupt(format!("negative stored number {v}")))
}

/// Purge expired entries every `interval`, `batch` rows per statement, until aborted.
pub(crate) async fn purge_loop(pool: Pool, interval: Duration, batch: u32) {
    let batch = i64::from(batch);
    loop {
        tokio::time::sleep(interval).await;
        loop {
            match purge_once(&pool, batch).await {
                Ok(n) if n >= u64::try_from(batch).unwrap_or(u64::MAX) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "purging expired log entries failed");
                    break;
                }
            }
        }
    }
}

async fn purge_once(pool: &Pool, batch: i64) -> StorageResult<u64> {
    retrying(|| async {
        let client = pool.get().await.map_err(Failure::from)?;
        let stmt = client
            .prepare_cached(&format!(
                "DELETE FROM guardyn_log WHERE ctid = ANY(ARRAY( \
                     SELECT ctid FROM guardyn_log WHERE expires_at_ms <= {NOW_MS} LIMIT $1))"
            ))
            .await?;
        Ok(client.execute(&stmt, &[&batch]).await?)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_clamped() {
        assert_eq!(ttl_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ttl_ms(Duration::MAX), MAX_TTL_MS);
        assert_eq!(ttl_ms(Duration::from_secs(u64::MAX / 1000)), MAX_TTL_MS);
    }

    #[test]
    fn append_validation() {
        let e = |n| NewEntry {
            payload: vec![0; n],
            ttl: Duration::from_secs(1),
        };
        assert!(validate_append(b"p", &[e(MAX_VALUE_LEN)]).is_ok());
        assert!(validate_append(b"", &[e(1)]).is_err());
        assert!(validate_append(&vec![b'p'; MAX_KEY_LEN + 1], &[e(1)]).is_err());
        assert!(validate_append(b"p", &[e(1), e(MAX_VALUE_LEN + 1)]).is_err());
    }
}
