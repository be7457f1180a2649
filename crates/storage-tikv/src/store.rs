//! [`TikvStore`]: the [`KvStore`] on TiKV's transactional API.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use guardyn_storage::{
    Direction, KeyRange, KvPair, KvStore, StorageError, StorageResult, Txn, TxnOutcome,
};
use tikv_client::{
    BoundRange, CheckLevel, Snapshot, Transaction, TransactionClient, TransactionOptions,
};

use crate::classify::{Class, classify, to_storage};
use crate::codec::{Keyspace, decode_value};
use crate::config::TikvConfig;
use crate::plan::{Plan, Write, check_key};

/// A handle on one deployment's keys in a TiKV cluster. Cheap to share behind an `Arc`; every
/// handle (in this process or another) sees the same data.
pub struct TikvStore {
    client: TransactionClient,
    keys: Keyspace,
    op_timeout: Duration,
    max_attempts: u32,
    pd_endpoints: Vec<String>,
}

impl fmt::Debug for TikvStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TikvStore")
            .field("pd_endpoints", &self.pd_endpoints)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl TikvStore {
    /// Validate `config` and connect to PD. Fails with `InvalidRequest` naming the config key
    /// for a bad value or a missing TLS file, `Unavailable` when PD cannot be reached (or not
    /// within `op_timeout_ms`): a caller may wait and open again.
    pub async fn open(config: &TikvConfig) -> StorageResult<Self> {
        config.validate()?;
        let mut client_config = tikv_client::Config::default()
            .with_timeout(config.request_timeout())
            .with_grpc_max_decoding_message_size(config.max_response_bytes);
        if let Some(tls) = &config.tls {
            for (key, path) in [
                ("tls.ca_path", &tls.ca_path),
                ("tls.cert_path", &tls.cert_path),
                ("tls.key_path", &tls.key_path),
            ] {
                std::fs::metadata(path).map_err(|e| {
                    StorageError::InvalidRequest(format!("{key}: {}: {e}", path.display()))
                })?;
            }
            client_config =
                client_config.with_security(&tls.ca_path, &tls.cert_path, &tls.key_path);
        }
        let connect =
            TransactionClient::new_with_config(config.pd_endpoints.clone(), client_config);
        let client = tokio::time::timeout(config.op_timeout(), connect)
            .await
            .map_err(|_| {
                StorageError::Unavailable(format!(
                    "TiKV: no PD of {:?} answered within {} ms",
                    config.pd_endpoints, config.op_timeout_ms
                ))
            })?
            // With the config validated and the TLS files present, a failed connect is PD out
            // of reach (tikv-client reports it as an internal error): worth waiting for.
            .map_err(|e| {
                StorageError::Unavailable(format!(
                    "TiKV: cannot connect to PD {:?}: {e}",
                    config.pd_endpoints
                ))
            })?;
        tracing::info!(pd = ?config.pd_endpoints, prefix = %config.key_prefix, "connected to TiKV");
        Ok(Self {
            client,
            keys: Keyspace::new(config.key_prefix.as_bytes()),
            op_timeout: config.op_timeout(),
            max_attempts: config.max_txn_attempts,
            pd_endpoints: config.pd_endpoints.clone(),
        })
    }

    /// Run `op` within the operation deadline. A commit cut off by it may have landed, like
    /// any commit whose answer was lost.
    async fn deadline<T>(&self, op: impl Future<Output = StorageResult<T>>) -> StorageResult<T> {
        tokio::time::timeout(self.op_timeout, op)
            .await
            .unwrap_or_else(|_| {
                Err(StorageError::Unavailable(format!(
                    "TiKV did not answer within {} ms",
                    self.op_timeout.as_millis()
                )))
            })
    }

    /// A read-only view at a fresh timestamp from PD: it sees every commit acknowledged before
    /// this call (TSO timestamps are monotonic across the cluster).
    async fn snapshot(&self) -> StorageResult<Snapshot> {
        let ts = self
            .client
            .current_timestamp()
            .await
            .map_err(|e| to_storage(&e))?;
        Ok(self.client.snapshot(ts, options()))
    }

    async fn attempt(&self, plan: &Plan) -> tikv_client::Result<TxnOutcome> {
        let mut txn = self.client.begin_with_options(options()).await?;
        let result = run(&mut txn, plan).await;
        if let Err(e) = &result
            && classify(e) != Class::Undetermined
        {
            // Release whatever prewrite locked, so others need not wait for the lock TTL.
            if let Err(rollback) = txn.rollback().await {
                tracing::debug!(error = %rollback, "TiKV rollback after a failed commit");
            }
        }
        result
    }
}

/// Run `attempt` (one optimistic transaction) until it commits or answers `Conflict`,
/// starting over while it loses write races, at most `max_attempts` times. Only a lost race is
/// retried: it guarantees nothing was committed, unlike an unanswered commit.
async fn with_retries<F, Fut>(max_attempts: u32, mut attempt: F) -> StorageResult<TxnOutcome>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = tikv_client::Result<TxnOutcome>>,
{
    let mut n = 1;
    loop {
        match attempt().await {
            Ok(outcome) => return Ok(outcome),
            Err(e) if classify(&e) == Class::Conflict && n < max_attempts => {
                tracing::debug!(attempt = n, error = %e, "TiKV write conflict, retrying");
                tokio::time::sleep(backoff(n)).await;
                n += 1;
            }
            Err(e) => return Err(to_storage(&e)),
        }
    }
}

/// Optimistic transactions (see the crate docs for why). A transaction dropped by the
/// operation deadline leaves its locks to TiKV's lock TTL; that is not a bug worth a panic.
fn options() -> TransactionOptions {
    TransactionOptions::new_optimistic().drop_check(CheckLevel::Warn)
}

/// Conditions read at the transaction's start timestamp; mutations and locks prewritten at
/// commit, which fails with a write conflict if any of those keys changed since then.
async fn run(txn: &mut Transaction, plan: &Plan) -> tikv_client::Result<TxnOutcome> {
    if !plan.conditions.is_empty() {
        let found: HashMap<Vec<u8>, Vec<u8>> = txn
            .batch_get(plan.condition_keys())
            .await?
            .map(|pair| (Vec::from(pair.0), pair.1))
            .collect();
        if let Some(condition) = plan.first_failing(&found) {
            txn.rollback().await?;
            return Ok(TxnOutcome::Conflict { condition });
        }
    }
    if plan.writes.is_empty() {
        // Every condition held at one timestamp: nothing to write, nothing to lock.
        txn.rollback().await?;
        return Ok(TxnOutcome::Committed);
    }
    txn.lock_keys(plan.keys_to_lock()).await?;
    for w in &plan.writes {
        match w {
            Write::Put(k, v) => txn.put(k.clone(), v.clone()).await?,
            Write::Delete(k) => txn.delete(k.clone()).await?,
        }
    }
    txn.commit().await?;
    Ok(TxnOutcome::Committed)
}

/// Exponential from 4 ms to 128 ms, jittered so racing writers do not collide again in step.
fn backoff(attempt: u32) -> Duration {
    let cap_ms = 2u64 << attempt.clamp(1, 6);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    Duration::from_millis(cap_ms / 2 + nanos % (cap_ms / 2 + 1))
}

#[async_trait]
impl KvStore for TikvStore {
    async fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        check_key(key)?;
        let key = self.keys.key(key);
        self.deadline(async {
            let mut snapshot = self.snapshot().await?;
            let value = snapshot.get(key).await.map_err(|e| to_storage(&e))?;
            value.map(decode_value).transpose()
        })
        .await
    }

    async fn scan(
        &self,
        range: KeyRange,
        direction: Direction,
        limit: usize,
    ) -> StorageResult<Vec<KvPair>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let Some((start, end)) = self.keys.range(&range) else {
            return Ok(Vec::new());
        };
        let bounds: BoundRange = match end {
            Some(end) => (start..end).into(),
            None => (start..).into(),
        };
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        self.deadline(async {
            let mut snapshot = self.snapshot().await?;
            let pairs: Vec<tikv_client::KvPair> = match direction {
                Direction::Forward => snapshot.scan(bounds, limit).await.map(Iterator::collect),
                Direction::Reverse => snapshot
                    .scan_reverse(bounds, limit)
                    .await
                    .map(Iterator::collect),
            }
            .map_err(|e| to_storage(&e))?;
            pairs
                .into_iter()
                .map(|pair| {
                    Ok(KvPair {
                        key: self.keys.strip(Vec::from(pair.0))?,
                        value: decode_value(pair.1)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn commit(&self, txn: Txn) -> StorageResult<TxnOutcome> {
        let plan = Plan::new(&self.keys, &txn)?;
        if txn.is_empty() {
            return Ok(TxnOutcome::Committed);
        }
        let attempts = self.max_attempts;
        self.deadline(with_retries(attempts, || self.attempt(&plan)))
            .await
    }
}

#[cfg(test)]
mod tests {
    // tikv-client's error type is large; it is its API, not ours.
    #![allow(clippy::unwrap_used, clippy::result_large_err)]
    use std::sync::Mutex;

    use super::*;

    fn conflict() -> tikv_client::Error {
        tikv_client::Error::KeyError(Box::new(tikv_client::ProtoKeyError {
            conflict: Some(Default::default()),
            ..Default::default()
        }))
    }

    /// Runs `with_retries` over scripted attempt results; returns its answer and the number
    /// of attempts made.
    async fn scripted(
        max: u32,
        script: Vec<tikv_client::Result<TxnOutcome>>,
    ) -> (StorageResult<TxnOutcome>, usize) {
        let script = Mutex::new(script.into_iter());
        let calls = Mutex::new(0);
        let out = with_retries(max, || {
            *calls.lock().unwrap() += 1;
            let next = script.lock().unwrap().next().unwrap();
            async move { next }
        })
        .await;
        let n = *calls.lock().unwrap();
        (out, n)
    }

    #[tokio::test]
    async fn open_reports_config_mistakes_and_outages_apart() {
        use crate::config::{TikvConfig, TikvTlsConfig};
        let bad = TikvConfig {
            key_prefix: "no-slash".into(),
            ..TikvConfig::default()
        };
        match TikvStore::open(&bad).await {
            Err(StorageError::InvalidRequest(m)) => assert!(m.starts_with("key_prefix:"), "{m}"),
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
        let missing_tls = TikvConfig {
            tls: Some(TikvTlsConfig {
                ca_path: "/nonexistent/ca.pem".into(),
                cert_path: "/nonexistent/cert.pem".into(),
                key_path: "/nonexistent/key.pem".into(),
            }),
            ..TikvConfig::default()
        };
        match TikvStore::open(&missing_tls).await {
            Err(StorageError::InvalidRequest(m)) => assert!(m.starts_with("tls.ca_path:"), "{m}"),
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
        // Nothing listens on loopback port 1: PD is out of reach, which is worth waiting for.
        let unreachable = TikvConfig {
            pd_endpoints: vec!["127.0.0.1:1".into()],
            ..TikvConfig::default()
        };
        match TikvStore::open(&unreachable).await {
            Err(StorageError::Unavailable(m)) => assert!(m.contains("127.0.0.1:1"), "{m}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn lost_races_are_retried_until_an_answer() {
        let (out, n) = scripted(
            8,
            vec![Err(conflict()), Err(conflict()), Ok(TxnOutcome::Committed)],
        )
        .await;
        assert_eq!(out.unwrap(), TxnOutcome::Committed);
        assert_eq!(n, 3);
        // The re-read after a lost race may find the condition broken: that is the answer.
        let (out, n) = scripted(
            8,
            vec![Err(conflict()), Ok(TxnOutcome::Conflict { condition: 2 })],
        )
        .await;
        assert_eq!(out.unwrap(), TxnOutcome::Conflict { condition: 2 });
        assert_eq!(n, 2);
    }

    #[tokio::test]
    async fn retries_are_bounded() {
        let (out, n) = scripted(3, (0..10).map(|_| Err(conflict())).collect()).await;
        assert!(matches!(out, Err(StorageError::Unavailable(_))), "{out:?}");
        assert_eq!(n, 3);
    }

    #[tokio::test]
    async fn other_failures_are_not_retried() {
        let undetermined = tikv_client::Error::UndeterminedError(Box::new(conflict()));
        let (out, n) = scripted(8, vec![Err(undetermined), Ok(TxnOutcome::Committed)]).await;
        assert!(matches!(out, Err(StorageError::Unavailable(_))), "{out:?}");
        assert_eq!(n, 1, "a commit that may have landed must not run again");
        let (out, n) = scripted(
            8,
            vec![
                Err(tikv_client::Error::NoCurrentRegions),
                Ok(TxnOutcome::Committed),
            ],
        )
        .await;
        assert!(matches!(out, Err(StorageError::Unavailable(_))), "{out:?}");
        assert_eq!(n, 1);
        let (out, n) = scripted(8, vec![Err(tikv_client::Error::StringError("bug".into()))]).await;
        assert!(matches!(out, Err(StorageError::Backend(_))), "{out:?}");
        assert_eq!(n, 1);
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for attempt in 0..20 {
            let b = backoff(attempt);
            let cap = 2u64 << attempt.clamp(1, 6);
            assert!(b >= Duration::from_millis(cap / 2), "{attempt}: {b:?}");
            assert!(b <= Duration::from_millis(cap), "{attempt}: {b:?}");
        }
        assert!(backoff(20) <= Duration::from_millis(128));
    }
}
