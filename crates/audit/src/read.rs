//! Reading the chain back: all of it, a page of it, or verifying it.

use guardyn_storage::record::decode;
use guardyn_storage::{Direction, KeyRange, KvStore};

use crate::model::AuditError;
use crate::record::{AuditEntry, Link, checkpoint_key, entry_key, head_key, read, seq_of};

/// Entries read per scan.
const SCAN: usize = 1000;

/// Every entry still stored, in order (tests and tools; admin pages with [`page`]).
pub async fn entries(kv: &dyn KvStore) -> Result<Vec<AuditEntry>, AuditError> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let batch = page(kv, from, Direction::Forward, SCAN).await?;
        let Some(last) = batch.last() else { break };
        from = last.seq.saturating_add(1);
        out.extend(batch);
    }
    Ok(out)
}

/// Up to `limit` entries starting at sequence number `from` (inclusive), ascending or
/// descending.
pub async fn page(
    kv: &dyn KvStore,
    from: u64,
    direction: Direction,
    limit: usize,
) -> Result<Vec<AuditEntry>, AuditError> {
    let range = match direction {
        Direction::Forward => KeyRange::between(&entry_key(from), &entry_key(u64::MAX)),
        Direction::Reverse => KeyRange::between(&entry_key(0), &entry_key(from.saturating_add(1))),
    };
    let pairs = kv.scan(range, direction, limit).await?;
    pairs.iter().map(|p| Ok(read(&p.value)?.entry)).collect()
}

/// What [`verify`] checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Entries whose hash and link were checked.
    pub checked: u64,
    /// The first of them (entries before it were pruned; 1 when none were).
    pub first_seq: u64,
    /// The last of them: the head when verification started.
    pub last_seq: u64,
}

/// The first problem [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditViolation {
    #[error("entry {0} is missing (expected next in the chain)")]
    Missing(u64),
    #[error("entry {0} does not decode")]
    Undecodable(u64),
    #[error("entry {0} was altered (hash mismatch)")]
    Altered(u64),
    #[error("entry {0} does not link to its predecessor")]
    BrokenLink(u64),
    #[error("the chain ends at {found} but the head says {expected}")]
    Truncated { expected: u64, found: u64 },
    #[error("storage: {0}")]
    Storage(String),
}

impl AuditViolation {
    /// The sequence number of the broken link, if the violation names one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            AuditViolation::Missing(s)
            | AuditViolation::Undecodable(s)
            | AuditViolation::Altered(s)
            | AuditViolation::BrokenLink(s) => Some(*s),
            AuditViolation::Truncated { found, .. } => Some(found.saturating_add(1)),
            AuditViolation::Storage(_) => None,
        }
    }
}

/// Check the chain from the pruning checkpoint (or the first entry) to the head as it was when
/// verification started; entries appended meanwhile are left to the next run. A prune that
/// moves the checkpoint while this runs makes it start again.
pub async fn verify(kv: &dyn KvStore) -> Result<Verified, AuditViolation> {
    let mut attempts = 0;
    loop {
        let checkpoint = link(kv, &checkpoint_key()).await?;
        match verify_from(kv, checkpoint).await {
            Err(AuditViolation::Missing(seq)) if attempts < 3 => {
                attempts += 1;
                if link(kv, &checkpoint_key()).await? == checkpoint {
                    return Err(AuditViolation::Missing(seq));
                }
            }
            other => return other,
        }
    }
}

async fn link(kv: &dyn KvStore, key: &[u8]) -> Result<Option<Link>, AuditViolation> {
    let storage = |e: guardyn_storage::StorageError| AuditViolation::Storage(e.to_string());
    match kv.get(key).await.map_err(storage)? {
        Some(raw) => Ok(Some(decode::<Link>(&raw).map_err(storage)?)),
        None => Ok(None),
    }
}

async fn verify_from(
    kv: &dyn KvStore,
    checkpoint: Option<Link>,
) -> Result<Verified, AuditViolation> {
    let head = link(kv, &head_key()).await?;
    let first_seq = checkpoint.map_or(1, |c| c.seq + 1);
    let mut expected_seq = first_seq;
    let mut prev = checkpoint.map_or([0u8; 32], |c| c.hash);
    // Without a head every entry is suspect: scan them all and report them.
    let end = head.map_or(u64::MAX, |h| h.seq.saturating_add(1));
    let mut start = entry_key(first_seq);
    let end = entry_key(end);
    loop {
        let batch = kv
            .scan(KeyRange::between(&start, &end), Direction::Forward, SCAN)
            .await
            .map_err(|e| AuditViolation::Storage(e.to_string()))?;
        let Some(last) = batch.last() else { break };
        start = last.key.clone();
        start.push(0);
        for pair in &batch {
            let seq = seq_of(&pair.key).ok_or(AuditViolation::Undecodable(expected_seq))?;
            if seq != expected_seq {
                return Err(AuditViolation::Missing(expected_seq));
            }
            let read = read(&pair.value).map_err(|_| AuditViolation::Undecodable(seq))?;
            if read.entry.seq != seq || read.actual_hash != read.stored_hash {
                return Err(AuditViolation::Altered(seq));
            }
            if read.entry.prev_hash != prev {
                return Err(AuditViolation::BrokenLink(seq));
            }
            prev = read.actual_hash;
            expected_seq += 1;
        }
    }
    let found = expected_seq - 1;
    let verified = Verified {
        checked: expected_seq - first_seq,
        first_seq,
        last_seq: found,
    };
    match head {
        None if found == 0 => Ok(verified),
        None => Err(AuditViolation::Truncated { expected: 0, found }),
        Some(h) if h.seq != found => Err(AuditViolation::Truncated {
            expected: h.seq,
            found,
        }),
        Some(h) if h.hash != prev => Err(AuditViolation::Altered(found)),
        Some(_) => Ok(verified),
    }
}
