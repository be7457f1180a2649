//! The single writer thread: group commit of every write, and the TTL sweeper thread that
//! feeds it purge requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use guardyn_storage::{
    Condition, JointOutcome, JointTxn, MAX_VALUE_LEN, Mutation, NewEntry, StorageError,
    StorageResult, Txn, TxnOutcome,
};
use redb::{Database, ReadableTable, Table, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use crate::codec::{
    self, LOG_ENTRIES, LOG_EXPIRY, LOG_META, Meta, backend, decode_entry, decode_meta,
    encode_entry, encode_meta, entry_key, entry_key_partition, expiry_key, expiry_key_entry,
};
use crate::snapshot::Generations;

/// One write, applied by the writer thread.
pub(crate) enum Op {
    Commit(Txn),
    Joint(JointTxn),
    Append(Vec<u8>, Vec<NewEntry>),
    Delete(Vec<u8>, Vec<u64>),
    DeleteThrough(Vec<u8>, u64),
    /// Purge at most this many expired log entries.
    Sweep(usize),
    /// Test hook: the writer blocks until the barrier is released, so a test can queue
    /// requests and observe how they are batched.
    #[cfg(test)]
    Hold(Arc<std::sync::Barrier>),
}

impl Op {
    /// The barrier of a test hold; always `None` outside tests.
    fn hold(&self) -> Option<Arc<std::sync::Barrier>> {
        #[cfg(test)]
        if let Self::Hold(barrier) = self {
            return Some(barrier.clone());
        }
        None
    }
}

/// Where the result of an [`Op`] goes.
pub(crate) enum Reply {
    Outcome(oneshot::Sender<StorageResult<TxnOutcome>>),
    Joint(oneshot::Sender<StorageResult<JointOutcome>>),
    Seqs(oneshot::Sender<StorageResult<Vec<u64>>>),
    Unit(oneshot::Sender<StorageResult<()>>),
    Count(oneshot::Sender<StorageResult<usize>>),
}

pub(crate) struct Request {
    pub op: Op,
    pub reply: Option<Reply>,
}

enum Done {
    Outcome(TxnOutcome),
    Joint(JointOutcome),
    Seqs(Vec<u64>),
    Unit,
    Count(usize),
    /// This request was refused before it wrote anything; the rest of the batch stands.
    Refused(StorageError),
}

impl Reply {
    /// Dropped receivers (a caller that gave up) are not an error: the write still happened.
    fn send(self, result: StorageResult<Done>) {
        let mismatch = || StorageError::Backend("writer produced a mismatched reply".into());
        let result = match result {
            Ok(Done::Refused(e)) => Err(e),
            other => other,
        };
        match self {
            Self::Outcome(tx) => {
                let _ = tx.send(result.and_then(|d| match d {
                    Done::Outcome(o) => Ok(o),
                    _ => Err(mismatch()),
                }));
            }
            Self::Joint(tx) => {
                let _ = tx.send(result.and_then(|d| match d {
                    Done::Joint(o) => Ok(o),
                    _ => Err(mismatch()),
                }));
            }
            Self::Seqs(tx) => {
                let _ = tx.send(result.and_then(|d| match d {
                    Done::Seqs(s) => Ok(s),
                    _ => Err(mismatch()),
                }));
            }
            Self::Unit(tx) => {
                let _ = tx.send(result.and_then(|d| match d {
                    Done::Unit => Ok(()),
                    _ => Err(mismatch()),
                }));
            }
            Self::Count(tx) => {
                let _ = tx.send(result.and_then(|d| match d {
                    Done::Count(n) => Ok(n),
                    _ => Err(mismatch()),
                }));
            }
        }
    }
}

/// Counters observable through [`crate::EmbeddedStore::engine_stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: AtomicU64,
}

/// The writer thread's loop: runs until every sender is gone and the queue is drained.
pub(crate) fn run(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<Request>,
    max_batch: usize,
    counters: Arc<Counters>,
    generations: &Generations,
) {
    while let Some(first) = rx.blocking_recv() {
        if let Some(hold) = first.op.hold() {
            hold.wait();
            continue;
        }
        let mut batch = vec![first];
        let mut hold = None;
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(req) => {
                    // A hold ends the batch so that what is queued after it stays queued.
                    if let Some(h) = req.op.hold() {
                        hold = Some(h);
                        break;
                    }
                    batch.push(req);
                }
                Err(_) => break,
            }
        }
        process(&db, batch, &counters, generations);
        if let Some(hold) = hold {
            hold.wait();
        }
    }
    tracing::debug!("storage writer stopped");
}

struct Tables<'txn> {
    kv: Table<'txn, &'static [u8], &'static [u8]>,
    entries: Table<'txn, &'static [u8], &'static [u8]>,
    meta: Table<'txn, &'static [u8], &'static [u8]>,
    expiry: Table<'txn, &'static [u8], &'static [u8]>,
}

fn process(db: &Database, batch: Vec<Request>, counters: &Counters, generations: &Generations) {
    let count = batch.len() as u64;
    let (ops, replies): (Vec<Op>, Vec<Option<Reply>>) =
        batch.into_iter().map(|r| (r.op, r.reply)).unzip();
    match apply_batch(db, ops) {
        Ok((done, committed)) => {
            if committed {
                // Before any answer: a caller's next read must not use an older snapshot.
                generations.committed();
            }
            counters.requests.fetch_add(count, Ordering::Relaxed);
            for (reply, d) in replies.into_iter().zip(done) {
                if let Some(reply) = reply {
                    reply.send(Ok(d));
                }
            }
        }
        Err(e) => {
            // Nothing of the batch was committed; every caller learns it.
            tracing::warn!(error = %e, requests = count, "storage write batch failed");
            let msg = e.to_string();
            for reply in replies.into_iter().flatten() {
                reply.send(Err(StorageError::Backend(msg.clone())));
            }
        }
    }
}

/// Applies every op in one engine transaction and commits it once (one fsync). Returns each
/// op's result and whether anything was committed.
fn apply_batch(db: &Database, ops: Vec<Op>) -> StorageResult<(Vec<Done>, bool)> {
    let txn = db.begin_write().map_err(backend)?;
    let mut done = Vec::with_capacity(ops.len());
    let mut dirty = false;
    {
        let mut t = open_tables(&txn)?;
        let now = codec::now_ms();
        for op in ops {
            let (d, wrote) = apply(&mut t, op, now)?;
            dirty |= wrote;
            done.push(d);
        }
    }
    if dirty {
        txn.commit().map_err(backend)?;
    } else {
        txn.abort().map_err(backend)?;
    }
    Ok((done, dirty))
}

fn open_tables(txn: &WriteTransaction) -> StorageResult<Tables<'_>> {
    Ok(Tables {
        kv: txn.open_table(codec::KV).map_err(backend)?,
        entries: txn.open_table(LOG_ENTRIES).map_err(backend)?,
        meta: txn.open_table(LOG_META).map_err(backend)?,
        expiry: txn.open_table(LOG_EXPIRY).map_err(backend)?,
    })
}

fn apply(t: &mut Tables<'_>, op: Op, now: u64) -> StorageResult<(Done, bool)> {
    Ok(match op {
        Op::Commit(txn) => {
            let outcome = commit(&mut t.kv, &txn)?;
            let wrote = outcome.is_committed() && !txn.mutations.is_empty();
            (Done::Outcome(outcome), wrote)
        }
        Op::Joint(joint) => {
            let done = commit_joint(t, joint, now)?;
            let wrote = matches!(done, Done::Joint(JointOutcome::Committed(_)));
            (done, wrote)
        }
        Op::Append(partition, entries) => {
            let seqs = append(t, &partition, &entries, now)?;
            let wrote = !seqs.is_empty();
            (Done::Seqs(seqs), wrote)
        }
        Op::Delete(partition, seqs) => {
            let removed = delete(t, &partition, &seqs)?;
            (Done::Unit, removed > 0)
        }
        Op::DeleteThrough(partition, through) => {
            let seqs = seqs_through(&t.entries, &partition, through)?;
            let removed = delete(t, &partition, &seqs)?;
            (Done::Unit, removed > 0)
        }
        Op::Sweep(limit) => {
            let removed = sweep(t, limit, now)?;
            (Done::Count(removed), removed > 0)
        }
        #[cfg(test)]
        Op::Hold(_) => (Done::Unit, false),
    })
}

/// Conditions see the state left by earlier transactions of the batch; a failing condition
/// returns before any mutation is applied.
fn commit(
    kv: &mut Table<'_, &'static [u8], &'static [u8]>,
    txn: &Txn,
) -> StorageResult<TxnOutcome> {
    if let Some(condition) = failed_condition(kv, txn)? {
        return Ok(TxnOutcome::Conflict { condition });
    }
    apply_mutations(kv, txn)?;
    Ok(TxnOutcome::Committed)
}

/// The index of the first condition of `txn` that does not hold.
fn failed_condition(
    kv: &Table<'_, &'static [u8], &'static [u8]>,
    txn: &Txn,
) -> StorageResult<Option<usize>> {
    for (i, cond) in txn.conditions.iter().enumerate() {
        let holds = match cond {
            Condition::Absent(k) => kv.get(k.as_slice()).map_err(backend)?.is_none(),
            Condition::Exists(k) => kv.get(k.as_slice()).map_err(backend)?.is_some(),
            Condition::Equals(k, v) => kv
                .get(k.as_slice())
                .map_err(backend)?
                .is_some_and(|g| g.value() == v.as_slice()),
        };
        if !holds {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

fn apply_mutations(
    kv: &mut Table<'_, &'static [u8], &'static [u8]>,
    txn: &Txn,
) -> StorageResult<()> {
    for m in &txn.mutations {
        match m {
            Mutation::Put(k, v) => {
                kv.insert(k.as_slice(), v.as_slice()).map_err(backend)?;
            }
            Mutation::Delete(k) => {
                kv.remove(k.as_slice()).map_err(backend)?;
            }
        }
    }
    Ok(())
}

/// A [`JointTxn`]: its conditions; then the sequences its appends will receive and the record
/// built from them, refused with nothing written if the record is too large; then every
/// write. The plan is exact because this thread is the only writer and appends assign
/// sequences from the partition's meta in order.
fn commit_joint(t: &mut Tables<'_>, joint: JointTxn, now: u64) -> StorageResult<Done> {
    let JointTxn {
        txn,
        updates,
        appends,
        record,
    } = joint;
    if let Some(condition) = failed_condition(&t.kv, &txn)? {
        return Ok(Done::Joint(JointOutcome::Conflict { condition }));
    }
    let mut updated = Vec::with_capacity(updates.len());
    for (i, (key, update)) in updates.into_iter().enumerate() {
        let current = t.kv.get(key.as_slice()).map_err(backend)?;
        let Some(value) = update(current.as_ref().map(|v| v.value())) else {
            return Ok(Done::Joint(JointOutcome::Refused { update: i }));
        };
        if value.len() > MAX_VALUE_LEN {
            return Ok(Done::Refused(too_large("updated value", value.len())));
        }
        updated.push((key, value));
    }
    let mut next: HashMap<&[u8], u64> = HashMap::new();
    let mut planned = Vec::with_capacity(appends.len());
    for (partition, entries) in &appends {
        let first = match next.get(partition.as_slice()) {
            Some(&n) => n,
            None => load_meta(&t.meta, partition)?.next_seq,
        };
        let end = first
            .checked_add(entries.len() as u64)
            .ok_or_else(|| StorageError::Backend("log sequence space exhausted".into()))?;
        planned.push((first..end).collect::<Vec<u64>>());
        next.insert(partition, end);
    }
    let record = match record {
        Some((key, build)) => {
            let value = build(&planned);
            if value.len() > MAX_VALUE_LEN {
                return Ok(Done::Refused(too_large("record", value.len())));
            }
            Some((key, value))
        }
        None => None,
    };
    apply_mutations(&mut t.kv, &txn)?;
    for (key, value) in updated {
        t.kv.insert(key.as_slice(), value.as_slice())
            .map_err(backend)?;
    }
    for ((partition, entries), plan) in appends.iter().zip(&planned) {
        if append(t, partition, entries, now)? != *plan {
            return Err(StorageError::Backend(
                "joint append sequences differ from their plan".into(),
            ));
        }
    }
    if let Some((key, value)) = record {
        t.kv.insert(key.as_slice(), value.as_slice())
            .map_err(backend)?;
    }
    Ok(Done::Joint(JointOutcome::Committed(planned)))
}

fn too_large(what: &str, len: usize) -> StorageError {
    StorageError::InvalidRequest(format!("{what} of {len} bytes exceeds {MAX_VALUE_LEN}"))
}

fn load_meta(
    meta: &Table<'_, &'static [u8], &'static [u8]>,
    partition: &[u8],
) -> StorageResult<Meta> {
    match meta.get(partition).map_err(backend)? {
        Some(v) => decode_meta(v.value()),
        None => Ok(Meta::default()),
    }
}

fn append(
    t: &mut Tables<'_>,
    partition: &[u8],
    entries: &[NewEntry],
    now: u64,
) -> StorageResult<Vec<u64>> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut meta = load_meta(&t.meta, partition)?;
    let mut seqs = Vec::with_capacity(entries.len());
    for e in entries {
        let seq = meta.next_seq;
        meta.next_seq = seq
            .checked_add(1)
            .ok_or_else(|| StorageError::Backend("log sequence space exhausted".into()))?;
        let ttl_ms = u64::try_from(e.ttl.as_millis()).unwrap_or(u64::MAX);
        let expires = now.saturating_add(ttl_ms);
        let key = entry_key(partition, seq);
        t.entries
            .insert(
                key.as_slice(),
                encode_entry(now, expires, &e.payload).as_slice(),
            )
            .map_err(backend)?;
        t.expiry
            .insert(expiry_key(expires, &key).as_slice(), &[][..])
            .map_err(backend)?;
        seqs.push(seq);
    }
    meta.len += seqs.len() as u64;
    t.meta
        .insert(partition, &encode_meta(meta)[..])
        .map_err(backend)?;
    Ok(seqs)
}

fn seqs_through(
    entries: &Table<'_, &'static [u8], &'static [u8]>,
    partition: &[u8],
    through: u64,
) -> StorageResult<Vec<u64>> {
    if through == 0 {
        return Ok(Vec::new());
    }
    let start = entry_key(partition, 1);
    let end = entry_key(partition, through);
    let mut seqs = Vec::new();
    for item in entries
        .range::<&[u8]>(start.as_slice()..=end.as_slice())
        .map_err(backend)?
    {
        let (k, _) = item.map_err(backend)?;
        let k = k.value();
        let seq: [u8; 8] = k[k.len() - 8..]
            .try_into()
            .map_err(|_| StorageError::Corrupt("log entry key too short".into()))?;
        seqs.push(u64::from_be_bytes(seq));
    }
    Ok(seqs)
}

/// Removes the listed entries (and their expiry rows); returns how many existed.
fn delete(t: &mut Tables<'_>, partition: &[u8], seqs: &[u64]) -> StorageResult<u64> {
    let mut removed = 0u64;
    for &seq in seqs {
        let key = entry_key(partition, seq);
        let expires = match t.entries.remove(key.as_slice()).map_err(backend)? {
            Some(old) => decode_entry(old.value())?.expires_at_ms,
            None => continue,
        };
        t.expiry
            .remove(expiry_key(expires, &key).as_slice())
            .map_err(backend)?;
        removed += 1;
    }
    if removed > 0 {
        let mut meta = load_meta(&t.meta, partition)?;
        meta.len = meta.len.saturating_sub(removed);
        t.meta
            .insert(partition, &encode_meta(meta)[..])
            .map_err(backend)?;
    }
    Ok(removed)
}

/// Purges up to `limit` entries whose expiry has passed, reading only the due part of the
/// expiry index.
fn sweep(t: &mut Tables<'_>, limit: usize, now: u64) -> StorageResult<usize> {
    let upper = now.saturating_add(1).to_be_bytes();
    let mut due = Vec::new();
    for item in t
        .expiry
        .range::<&[u8]>(..upper.as_slice())
        .map_err(backend)?
        .take(limit)
    {
        let (k, _) = item.map_err(backend)?;
        due.push(k.value().to_vec());
    }
    let mut per_partition: HashMap<Vec<u8>, u64> = HashMap::new();
    for key in &due {
        t.expiry.remove(key.as_slice()).map_err(backend)?;
        let entry = expiry_key_entry(key)?;
        if t.entries.remove(entry).map_err(backend)?.is_some() {
            *per_partition
                .entry(entry_key_partition(entry)?.to_vec())
                .or_default() += 1;
        }
    }
    for (partition, removed) in per_partition {
        let mut meta = load_meta(&t.meta, &partition)?;
        meta.len = meta.len.saturating_sub(removed);
        t.meta
            .insert(partition.as_slice(), &encode_meta(meta)[..])
            .map_err(backend)?;
    }
    Ok(due.len())
}

/// The sweeper thread: every `interval` it asks the writer to purge up to `batch` expired
/// entries, repeating at once while a full batch was purged. It holds only a weak sender, so
/// it never keeps the writer alive, and it stops when `stop` is dropped or signalled.
pub(crate) fn run_sweeper(
    writer: mpsc::WeakSender<Request>,
    stop: std::sync::mpsc::Receiver<()>,
    interval: Duration,
    batch: usize,
) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        match stop.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        loop {
            let Some(tx) = writer.upgrade() else { return };
            let (reply, rx) = oneshot::channel();
            let req = Request {
                op: Op::Sweep(batch),
                reply: Some(Reply::Count(reply)),
            };
            if tx.blocking_send(req).is_err() {
                return;
            }
            drop(tx);
            match rx.blocking_recv() {
                Ok(Ok(n)) if n >= batch => {
                    tracing::debug!(purged = n, "expired log entries purged, more pending");
                }
                Ok(Ok(n)) => {
                    if n > 0 {
                        tracing::debug!(purged = n, "expired log entries purged");
                    }
                    break;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "log sweep failed");
                    break;
                }
                Err(_) => return,
            }
        }
    }
}
