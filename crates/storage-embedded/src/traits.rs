//! The [`KvStore`] and [`AppendLog`] implementations: request validation, reads on
//! snapshots, writes handed to the writer thread.

use std::ops::Bound;

use async_trait::async_trait;
use guardyn_storage::{
    AppendLog, Condition, Direction, JointOutcome, JointStore, JointTxn, KeyRange, KvPair, KvStore,
    LogEntry, MAX_KEY_LEN, MAX_VALUE_LEN, Mutation, NewEntry, PartitionStats, StorageError,
    StorageResult, Txn, TxnOutcome,
};

use crate::EmbeddedStore;
use crate::codec::{self, backend, decode_entry, decode_meta, entry_key};
use crate::writer::{Op, Reply};

fn check_key(key: &[u8]) -> StorageResult<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(StorageError::InvalidRequest(format!(
            "key of {} bytes exceeds {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> StorageResult<()> {
    if value.len() > MAX_VALUE_LEN {
        return Err(StorageError::InvalidRequest(format!(
            "value of {} bytes exceeds {MAX_VALUE_LEN}",
            value.len()
        )));
    }
    Ok(())
}

fn check_partition(partition: &[u8]) -> StorageResult<()> {
    if partition.is_empty() {
        return Err(StorageError::InvalidRequest("empty partition name".into()));
    }
    check_key(partition)
}

fn check_entries(partition: &[u8], entries: &[NewEntry]) -> StorageResult<()> {
    check_partition(partition)?;
    for e in entries {
        check_value(&e.payload)?;
    }
    Ok(())
}

fn check_txn(txn: &Txn) -> StorageResult<()> {
    for c in &txn.conditions {
        match c {
            Condition::Absent(k) | Condition::Exists(k) | Condition::Equals(k, _) => {
                check_key(k)?;
            }
        }
    }
    for m in &txn.mutations {
        match m {
            Mutation::Put(k, v) => {
                check_key(k)?;
                check_value(v)?;
            }
            Mutation::Delete(k) => check_key(k)?,
        }
    }
    Ok(())
}

/// Whether no key can satisfy both bounds (redb, like `BTreeMap`, must not see such ranges).
fn is_empty_range(range: &KeyRange) -> bool {
    use Bound::{Excluded, Included};
    match (&range.start, &range.end) {
        (Included(s), Included(e)) => s > e,
        (Included(s) | Excluded(s), Excluded(e)) | (Excluded(s), Included(e)) => s >= e,
        _ => false,
    }
}

#[async_trait]
impl KvStore for EmbeddedStore {
    async fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        check_key(key)?;
        let key = key.to_vec();
        self.with_snapshot(move |r| {
            let table = r.kv()?;
            Ok(table
                .get(key.as_slice())
                .map_err(backend)?
                .map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn scan(
        &self,
        range: KeyRange,
        direction: Direction,
        limit: usize,
    ) -> StorageResult<Vec<KvPair>> {
        if limit == 0 || is_empty_range(&range) {
            return Ok(Vec::new());
        }
        self.with_snapshot(move |r| {
            let table = r.kv()?;
            let bounds = (
                range.start.as_ref().map(Vec::as_slice),
                range.end.as_ref().map(Vec::as_slice),
            );
            let iter = table.range::<&[u8]>(bounds).map_err(backend)?;
            let iter: Box<dyn Iterator<Item = _>> = match direction {
                Direction::Forward => Box::new(iter),
                Direction::Reverse => Box::new(iter.rev()),
            };
            iter.take(limit)
                .map(|item| {
                    let (k, v) = item.map_err(backend)?;
                    Ok(KvPair {
                        key: k.value().to_vec(),
                        value: v.value().to_vec(),
                    })
                })
                .collect()
        })
        .await
    }

    async fn commit(&self, txn: Txn) -> StorageResult<TxnOutcome> {
        check_txn(&txn)?;
        if txn.is_empty() {
            return Ok(TxnOutcome::Committed);
        }
        self.write(Op::Commit(txn), Reply::Outcome).await
    }
}

/// The record's size is checked by the writer, once it is built.
#[async_trait]
impl JointStore for EmbeddedStore {
    async fn commit_joint(&self, joint: JointTxn) -> StorageResult<JointOutcome> {
        check_txn(&joint.txn)?;
        for (key, _) in &joint.updates {
            check_key(key)?;
        }
        for (partition, entries) in &joint.appends {
            check_entries(partition, entries)?;
        }
        if let Some((key, _)) = &joint.record {
            check_key(key)?;
        }
        self.write(Op::Joint(joint), Reply::Joint).await
    }
}

#[async_trait]
impl AppendLog for EmbeddedStore {
    async fn append(&self, partition: &[u8], entries: Vec<NewEntry>) -> StorageResult<Vec<u64>> {
        check_entries(partition, &entries)?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.write(Op::Append(partition.to_vec(), entries), Reply::Seqs)
            .await
    }

    async fn read(
        &self,
        partition: &[u8],
        from: u64,
        limit: usize,
    ) -> StorageResult<Vec<LogEntry>> {
        check_partition(partition)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = entry_key(partition, from.max(1));
        let end = entry_key(partition, u64::MAX);
        self.with_snapshot(move |r| {
            let table = r.entries()?;
            let now = codec::now_ms();
            let mut out = Vec::new();
            for item in table
                .range::<&[u8]>(start.as_slice()..=end.as_slice())
                .map_err(backend)?
            {
                let (k, v) = item.map_err(backend)?;
                let e = decode_entry(v.value())?;
                if e.expires_at_ms <= now {
                    continue;
                }
                let k = k.value();
                let seq: [u8; 8] = k[k.len() - 8..]
                    .try_into()
                    .map_err(|_| StorageError::Corrupt("log entry key too short".into()))?;
                out.push(LogEntry {
                    seq: u64::from_be_bytes(seq),
                    appended_at_ms: e.appended_at_ms,
                    expires_at_ms: e.expires_at_ms,
                    payload: e.payload.to_vec(),
                });
                if out.len() == limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete(&self, partition: &[u8], seqs: &[u64]) -> StorageResult<()> {
        check_partition(partition)?;
        if seqs.is_empty() {
            return Ok(());
        }
        self.write(Op::Delete(partition.to_vec(), seqs.to_vec()), Reply::Unit)
            .await
    }

    async fn delete_through(&self, partition: &[u8], through: u64) -> StorageResult<()> {
        check_partition(partition)?;
        if through == 0 {
            return Ok(());
        }
        self.write(Op::DeleteThrough(partition.to_vec(), through), Reply::Unit)
            .await
    }

    async fn stats(&self, partition: &[u8]) -> StorageResult<PartitionStats> {
        check_partition(partition)?;
        let partition = partition.to_vec();
        self.with_snapshot(move |r| {
            let table = r.meta()?;
            let meta = match table.get(partition.as_slice()).map_err(backend)? {
                Some(v) => decode_meta(v.value())?,
                None => codec::Meta::default(),
            };
            Ok(PartitionStats {
                len: meta.len,
                next_seq: meta.next_seq,
            })
        })
        .await
    }
}

#[async_trait]
impl guardyn_storage::Close for EmbeddedStore {
    async fn close(&self) {
        EmbeddedStore::close(self).await;
    }
}
