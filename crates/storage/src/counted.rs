//! Write counters around a [`KvStore`] and an [`AppendLog`]: how many storage writes the
//! server does per operation (e.g. per MLS group message in `guardyn bench`), whatever the
//! engine behind them.
//!
//! Only writes that took effect count: a committed transaction, a successful append or delete.
//! A transaction refused by its conditions, or any call that returned an error, wrote nothing
//! (the traits promise it) and counts nothing. Reads only delegate. The cost per write call is
//! a few relaxed atomic adds, so the decorators stay on in production.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::StorageResult;
use crate::joint::{JointOutcome, JointStore, JointTxn};
use crate::kv::{Direction, KeyRange, KvPair, KvStore, Mutation, Txn, TxnOutcome};
use crate::log::{AppendLog, LogEntry, NewEntry, PartitionStats};
use crate::stores::Stores;

/// Running totals of the writes that went through [`CountedKv`] and [`CountedLog`].
///
/// Relaxed atomics: each total is exact, but two totals read one after the other are not a
/// consistent snapshot while writes are in flight (fine for counters scraped over time).
#[derive(Debug, Default)]
pub struct WriteCounts {
    kv_commits: AtomicU64,
    kv_keys_written: AtomicU64,
    kv_keys_deleted: AtomicU64,
    log_appends: AtomicU64,
    log_entries_appended: AtomicU64,
    log_deletes: AtomicU64,
    log_entries_deleted: AtomicU64,
    bytes_written: AtomicU64,
}

/// A plain copy of [`WriteCounts`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteSnapshot {
    /// Committed KV transactions (a `put` or `delete` is one).
    pub kv_commits: u64,
    /// `Put` mutations of committed transactions.
    pub kv_keys_written: u64,
    /// `Delete` mutations of committed transactions.
    pub kv_keys_deleted: u64,
    /// Successful `append` calls.
    pub log_appends: u64,
    /// Entries those calls appended.
    pub log_entries_appended: u64,
    /// Successful `delete` and `delete_through` calls.
    pub log_deletes: u64,
    /// Log entries deleted: the sequences named by `delete`, plus 1 per `delete_through`
    /// (the engine removes a whole prefix in one operation; how many entries it held is not
    /// known without reading it).
    pub log_entries_deleted: u64,
    /// Key and value bytes of KV puts plus payload bytes of appended log entries.
    pub bytes_written: u64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

fn len(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl WriteCounts {
    pub fn snapshot(&self) -> WriteSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WriteSnapshot {
            kv_commits: get(&self.kv_commits),
            kv_keys_written: get(&self.kv_keys_written),
            kv_keys_deleted: get(&self.kv_keys_deleted),
            log_appends: get(&self.log_appends),
            log_entries_appended: get(&self.log_entries_appended),
            log_deletes: get(&self.log_deletes),
            log_entries_deleted: get(&self.log_entries_deleted),
            bytes_written: get(&self.bytes_written),
        }
    }

    fn appended(&self, entries: u64, bytes: u64) {
        add(&self.log_appends, 1);
        add(&self.log_entries_appended, entries);
        add(&self.bytes_written, bytes);
    }

    fn kv_committed(&self, w: KvWrites) {
        add(&self.kv_commits, 1);
        add(&self.kv_keys_written, w.puts);
        add(&self.kv_keys_deleted, w.deletes);
        add(&self.bytes_written, w.bytes);
    }
}

/// What one transaction writes, tallied before it moves into the engine.
#[derive(Clone, Copy, Default)]
struct KvWrites {
    puts: u64,
    deletes: u64,
    bytes: u64,
}

impl KvWrites {
    fn of(mutations: &[Mutation]) -> Self {
        let mut w = Self::default();
        for m in mutations {
            match m {
                Mutation::Put(k, v) => {
                    w.puts += 1;
                    w.bytes += len(k.len() + v.len());
                }
                Mutation::Delete(_) => w.deletes += 1,
            }
        }
        w
    }
}

/// A [`KvStore`] that counts its committed writes into [`WriteCounts`].
pub struct CountedKv {
    inner: Arc<dyn KvStore>,
    counts: Arc<WriteCounts>,
}

impl CountedKv {
    pub fn new(inner: Arc<dyn KvStore>, counts: Arc<WriteCounts>) -> Self {
        Self { inner, counts }
    }
}

impl fmt::Debug for CountedKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CountedKv").field(&self.inner).finish()
    }
}

#[async_trait]
impl KvStore for CountedKv {
    async fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        self.inner.get(key).await
    }

    async fn scan(
        &self,
        range: KeyRange,
        direction: Direction,
        limit: usize,
    ) -> StorageResult<Vec<KvPair>> {
        self.inner.scan(range, direction, limit).await
    }

    async fn commit(&self, txn: Txn) -> StorageResult<TxnOutcome> {
        // The mutations move into the engine; count them only once it answered Committed.
        let writes = KvWrites::of(&txn.mutations);
        let outcome = self.inner.commit(txn).await?;
        if outcome.is_committed() {
            self.counts.kv_committed(writes);
        }
        Ok(outcome)
    }

    // Delegated rather than left to the defaults: an engine may implement them faster.
    async fn put(&self, key: &[u8], value: &[u8]) -> StorageResult<()> {
        self.inner.put(key, value).await?;
        self.counts.kv_committed(KvWrites {
            puts: 1,
            deletes: 0,
            bytes: len(key.len() + value.len()),
        });
        Ok(())
    }

    async fn delete(&self, key: &[u8]) -> StorageResult<()> {
        self.inner.delete(key).await?;
        self.counts.kv_committed(KvWrites {
            puts: 0,
            deletes: 1,
            bytes: 0,
        });
        Ok(())
    }
}

/// An [`AppendLog`] that counts its appends and deletes into [`WriteCounts`].
pub struct CountedLog {
    inner: Arc<dyn AppendLog>,
    counts: Arc<WriteCounts>,
}

impl CountedLog {
    pub fn new(inner: Arc<dyn AppendLog>, counts: Arc<WriteCounts>) -> Self {
        Self { inner, counts }
    }
}

impl fmt::Debug for CountedLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CountedLog").field(&self.inner).finish()
    }
}

#[async_trait]
impl AppendLog for CountedLog {
    async fn append(&self, partition: &[u8], entries: Vec<NewEntry>) -> StorageResult<Vec<u64>> {
        let n = len(entries.len());
        let bytes: u64 = entries.iter().map(|e| len(e.payload.len())).sum();
        let seqs = self.inner.append(partition, entries).await?;
        self.counts.appended(n, bytes);
        Ok(seqs)
    }

    async fn read(
        &self,
        partition: &[u8],
        from: u64,
        limit: usize,
    ) -> StorageResult<Vec<LogEntry>> {
        self.inner.read(partition, from, limit).await
    }

    async fn delete(&self, partition: &[u8], seqs: &[u64]) -> StorageResult<()> {
        self.inner.delete(partition, seqs).await?;
        add(&self.counts.log_deletes, 1);
        add(&self.counts.log_entries_deleted, len(seqs.len()));
        Ok(())
    }

    async fn delete_through(&self, partition: &[u8], through: u64) -> StorageResult<()> {
        self.inner.delete_through(partition, through).await?;
        add(&self.counts.log_deletes, 1);
        add(&self.counts.log_entries_deleted, 1);
        Ok(())
    }

    async fn stats(&self, partition: &[u8]) -> StorageResult<PartitionStats> {
        self.inner.stats(partition).await
    }
}

/// A [`JointStore`] that counts its committed writes into [`WriteCounts`]: as one KV commit
/// (its puts, deletes, updates and record) plus one log append per partition it appended to.
pub struct CountedJoint {
    inner: Arc<dyn JointStore>,
    counts: Arc<WriteCounts>,
}

impl CountedJoint {
    pub fn new(inner: Arc<dyn JointStore>, counts: Arc<WriteCounts>) -> Self {
        Self { inner, counts }
    }
}

impl fmt::Debug for CountedJoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CountedJoint").field(&self.inner).finish()
    }
}

#[async_trait]
impl JointStore for CountedJoint {
    async fn commit_joint(&self, mut txn: JointTxn) -> StorageResult<JointOutcome> {
        let mut kv = KvWrites::of(&txn.txn.mutations);
        let appends: Vec<(u64, u64)> = txn
            .appends
            .iter()
            .filter(|(_, e)| !e.is_empty())
            .map(|(_, e)| (len(e.len()), e.iter().map(|e| len(e.payload.len())).sum()))
            .collect();
        // The sizes of built values are known only once the engine built them.
        let built = Arc::new(AtomicU64::new(0));
        let updates = std::mem::take(&mut txn.updates);
        for (key, update) in updates {
            let (seen, key_len) = (built.clone(), len(key.len()));
            txn.updates.push((
                key,
                Box::new(move |current: Option<&[u8]>| {
                    let value = update(current)?;
                    seen.fetch_add(key_len + len(value.len()), Ordering::Relaxed);
                    Some(value)
                }),
            ));
            kv.puts += 1;
        }
        if let Some((key, build)) = txn.record.take() {
            let (seen, key_len) = (built.clone(), len(key.len()));
            txn.record = Some((
                key,
                Box::new(move |seqs: &[Vec<u64>]| {
                    let value = build(seqs);
                    seen.fetch_add(key_len + len(value.len()), Ordering::Relaxed);
                    value
                }),
            ));
            kv.puts += 1;
        }
        let outcome = self.inner.commit_joint(txn).await?;
        if matches!(outcome, JointOutcome::Committed(_)) {
            kv.bytes += built.load(Ordering::Relaxed);
            self.counts.kv_committed(kv);
            for (entries, bytes) in appends {
                self.counts.appended(entries, bytes);
            }
        }
        Ok(outcome)
    }
}

/// `stores` with their KV and log writes counted (blobs are not: media chunks are not what
/// the counts measure). Closing still reaches the engines.
pub fn count_writes(stores: Stores) -> (Stores, Arc<WriteCounts>) {
    let counts = Arc::new(WriteCounts::default());
    let (k, l, j) = (counts.clone(), counts.clone(), counts.clone());
    let stores = stores.wrapped(
        |kv| Arc::new(CountedKv::new(kv, k)),
        |log| Arc::new(CountedLog::new(log, l)),
        |joint| Arc::new(CountedJoint::new(joint, j)),
    );
    (stores, counts)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::kv::Condition;

    /// The smallest engine the decorators can wrap: a map and a vector per partition.
    #[derive(Debug, Default)]
    struct Mem {
        kv: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
        log: Mutex<BTreeMap<Vec<u8>, Vec<u64>>>,
    }

    #[async_trait]
    impl KvStore for Mem {
        async fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
            Ok(self.kv.lock().unwrap().get(key).cloned())
        }

        async fn scan(
            &self,
            range: KeyRange,
            _direction: Direction,
            limit: usize,
        ) -> StorageResult<Vec<KvPair>> {
            let kv = self.kv.lock().unwrap();
            Ok(kv
                .iter()
                .filter(|(k, _)| range.contains(k))
                .take(limit)
                .map(|(k, v)| KvPair {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect())
        }

        async fn commit(&self, txn: Txn) -> StorageResult<TxnOutcome> {
            let mut kv = self.kv.lock().unwrap();
            for (i, c) in txn.conditions.iter().enumerate() {
                let holds = match c {
                    Condition::Absent(k) => !kv.contains_key(k),
                    Condition::Exists(k) => kv.contains_key(k),
                    Condition::Equals(k, v) => kv.get(k) == Some(v),
                };
                if !holds {
                    return Ok(TxnOutcome::Conflict { condition: i });
                }
            }
            for m in txn.mutations {
                match m {
                    Mutation::Put(k, v) => kv.insert(k, v),
                    Mutation::Delete(k) => kv.remove(&k),
                };
            }
            Ok(TxnOutcome::Committed)
        }
    }

    #[async_trait]
    impl AppendLog for Mem {
        async fn append(
            &self,
            partition: &[u8],
            entries: Vec<NewEntry>,
        ) -> StorageResult<Vec<u64>> {
            let mut log = self.log.lock().unwrap();
            let p = log.entry(partition.to_vec()).or_default();
            let first = p.last().copied().unwrap_or(0) + 1;
            let seqs: Vec<u64> = (first..first + entries.len() as u64).collect();
            p.extend(&seqs);
            Ok(seqs)
        }

        async fn read(
            &self,
            _partition: &[u8],
            _from: u64,
            _limit: usize,
        ) -> StorageResult<Vec<LogEntry>> {
            Ok(Vec::new())
        }

        async fn delete(&self, partition: &[u8], seqs: &[u64]) -> StorageResult<()> {
            if let Some(p) = self.log.lock().unwrap().get_mut(partition) {
                p.retain(|s| !seqs.contains(s));
            }
            Ok(())
        }

        async fn delete_through(&self, partition: &[u8], through: u64) -> StorageResult<()> {
            if let Some(p) = self.log.lock().unwrap().get_mut(partition) {
                p.retain(|s| *s > through);
            }
            Ok(())
        }

        async fn stats(&self, partition: &[u8]) -> StorageResult<PartitionStats> {
            let log = self.log.lock().unwrap();
            let p = log.get(partition).cloned().unwrap_or_default();
            Ok(PartitionStats {
                len: p.len() as u64,
                next_seq: p.last().copied().unwrap_or(0) + 1,
            })
        }
    }

    #[async_trait]
    impl JointStore for Mem {
        async fn commit_joint(&self, txn: JointTxn) -> StorageResult<JointOutcome> {
            let mut updated = Vec::new();
            for (i, (key, update)) in txn.updates.into_iter().enumerate() {
                let current = self.kv.lock().unwrap().get(&key).cloned();
                match update(current.as_deref()) {
                    Some(v) => updated.push((key, v)),
                    None => return Ok(JointOutcome::Refused { update: i }),
                }
            }
            if let TxnOutcome::Conflict { condition } = self.commit(txn.txn).await? {
                return Ok(JointOutcome::Conflict { condition });
            }
            self.kv.lock().unwrap().extend(updated);
            let mut seqs = Vec::new();
            for (partition, entries) in txn.appends {
                seqs.push(self.append(&partition, entries).await?);
            }
            if let Some((key, build)) = txn.record {
                let value = build(&seqs);
                self.kv.lock().unwrap().insert(key, value);
            }
            Ok(JointOutcome::Committed(seqs))
        }
    }

    fn entry(payload: &[u8]) -> NewEntry {
        NewEntry {
            payload: payload.to_vec(),
            ttl: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn writes_that_took_effect_are_counted_and_reads_are_not() {
        let mem = Arc::new(Mem::default());
        let counts = Arc::new(WriteCounts::default());
        let kv = CountedKv::new(mem.clone(), counts.clone());
        let log = CountedLog::new(mem.clone(), counts.clone());

        kv.put(b"a", b"123").await.unwrap();
        let txn = Txn::new()
            .require_absent(b"b".to_vec())
            .put(b"b".to_vec(), b"45".to_vec())
            .delete(b"a".to_vec());
        assert!(kv.commit(txn).await.unwrap().is_committed());
        // Refused by its condition: nothing written, nothing counted.
        let refused = Txn::new()
            .require_absent(b"b".to_vec())
            .put(b"c".to_vec(), b"x".to_vec());
        assert!(!kv.commit(refused).await.unwrap().is_committed());
        kv.delete(b"b").await.unwrap();
        assert_eq!(kv.get(b"b").await.unwrap(), None);
        let _ = kv
            .scan(KeyRange::all(), Direction::Forward, 10)
            .await
            .unwrap();

        let seqs = log
            .append(b"p", vec![entry(b"xyz"), entry(b"w")])
            .await
            .unwrap();
        assert_eq!(seqs, vec![1, 2]);
        log.append(b"p", vec![entry(b"v")]).await.unwrap();
        log.delete(b"p", &[1, 2]).await.unwrap();
        log.delete_through(b"p", 3).await.unwrap();
        let _ = log.read(b"p", 1, 10).await.unwrap();
        assert_eq!(log.stats(b"p").await.unwrap().len, 0);

        assert_eq!(
            counts.snapshot(),
            WriteSnapshot {
                kv_commits: 3,
                kv_keys_written: 2,
                kv_keys_deleted: 2,
                log_appends: 2,
                log_entries_appended: 3,
                log_deletes: 2,
                log_entries_deleted: 3,
                // "a123" + "b45" + "xyz" + "w" + "v"
                bytes_written: 4 + 3 + 3 + 1 + 1,
            }
        );
    }

    #[tokio::test]
    async fn a_joint_commit_counts_as_one_kv_commit_and_its_appends() {
        let mem = Arc::new(Mem::default());
        let counts = Arc::new(WriteCounts::default());
        let joint = CountedJoint::new(mem.clone(), counts.clone());
        let txn = |absent: &[u8]| JointTxn {
            txn: Txn::new()
                .require_absent(absent.to_vec())
                .put(b"k".to_vec(), b"v".to_vec()),
            updates: vec![(
                b"u".to_vec(),
                Box::new(|_: Option<&[u8]>| Some(b"12".to_vec())),
            )],
            appends: vec![
                (b"p".to_vec(), vec![entry(b"ab"), entry(b"c")]),
                (b"q".to_vec(), vec![entry(b"d")]),
            ],
            record: Some((
                b"r".to_vec(),
                Box::new(|seqs: &[Vec<u64>]| vec![0; seqs.concat().len()]),
            )),
        };
        let out = joint.commit_joint(txn(b"absent")).await.unwrap();
        assert_eq!(out, JointOutcome::Committed(vec![vec![1, 2], vec![1]]));
        // Refused: nothing counted.
        let out = joint.commit_joint(txn(b"k")).await.unwrap();
        assert_eq!(out, JointOutcome::Conflict { condition: 0 });
        assert_eq!(
            counts.snapshot(),
            WriteSnapshot {
                kv_commits: 1,
                kv_keys_written: 3,
                kv_keys_deleted: 0,
                log_appends: 2,
                log_entries_appended: 3,
                log_deletes: 0,
                log_entries_deleted: 0,
                // "kv" + "u12" + "r" and its 3-byte record + "ab" + "c" + "d"
                bytes_written: 2 + 3 + 4 + 2 + 1 + 1,
            }
        );
    }

    #[tokio::test]
    async fn counted_stores_keep_their_closers_and_share_one_count() {
        let mem = Arc::new(Mem::default());
        let blob: Arc<dyn crate::BlobStore> = Arc::new(NoBlob);
        let closed = Arc::new(Closed::default());
        let stores = crate::Stores::new(mem.clone(), mem.clone(), blob).closing(closed.clone());
        let (stores, counts) = count_writes(stores);
        stores.kv.put(b"k", b"v").await.unwrap();
        stores.log.append(b"p", vec![entry(b"e")]).await.unwrap();
        let s = counts.snapshot();
        assert_eq!((s.kv_keys_written, s.log_entries_appended), (1, 1));
        stores.close().await;
        assert_eq!(closed.0.load(Ordering::Relaxed), 1);
    }

    #[derive(Debug, Default)]
    struct Closed(AtomicU64);

    #[async_trait]
    impl crate::Close for Closed {
        async fn close(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[derive(Debug)]
    struct NoBlob;

    #[async_trait]
    impl crate::BlobStore for NoBlob {
        async fn put(&self, _key: &str, _data: bytes::Bytes) -> StorageResult<()> {
            Ok(())
        }
        async fn get_range(
            &self,
            _key: &str,
            _range: std::ops::Range<u64>,
        ) -> StorageResult<Option<bytes::Bytes>> {
            Ok(None)
        }
        async fn size(&self, _key: &str) -> StorageResult<Option<u64>> {
            Ok(None)
        }
        async fn delete(&self, _key: &str) -> StorageResult<()> {
            Ok(())
        }
        async fn list(&self, _prefix: &str) -> StorageResult<Vec<crate::ObjectMeta>> {
            Ok(Vec::new())
        }
    }
}
