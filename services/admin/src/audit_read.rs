//! The audit log's read side: filtered pages and chain verification.

use guardyn_audit::{AuditEntry, AuditKind, AuditViolation, Verified};
use guardyn_storage::{Direction, StorageError};

use crate::core::Core;
use crate::error::AdminError;

/// Entries read per scan.
const SCAN: usize = 500;
/// Most entries one page looks at before it answers with what it found.
const MAX_SCANNED: usize = 10_000;

/// Which entries, in which order, from where.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub account_id: Option<String>,
    pub actor: Option<String>,
    /// Empty: every kind.
    pub kinds: Vec<AuditKind>,
    pub since_ms: u64,
    pub until_ms: Option<u64>,
    pub oldest_first: bool,
    /// The sequence number to start at (inclusive); `None`: the newest or oldest.
    pub from_seq: Option<u64>,
    pub limit: usize,
}

impl AuditQuery {
    fn matches(&self, e: &AuditEntry) -> bool {
        self.account_id.as_ref().is_none_or(|a| *a == e.account_id)
            && self
                .actor
                .as_ref()
                .is_none_or(|a| Some(a) == e.actor.as_ref())
            && (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && e.time_ms >= self.since_ms
            && self.until_ms.is_none_or(|u| e.time_ms < u)
    }
}

/// A page and the sequence number the next starts at (`None`: the last page).
#[derive(Debug)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_seq: Option<u64>,
}

impl Core {
    pub async fn audit_page(&self, q: &AuditQuery) -> Result<AuditPage, AdminError> {
        let (direction, step): (Direction, fn(u64) -> Option<u64>) = if q.oldest_first {
            (Direction::Forward, |s| s.checked_add(1))
        } else {
            (Direction::Reverse, |s| s.checked_sub(1).filter(|s| *s > 0))
        };
        let mut at = q
            .from_seq
            .unwrap_or(if q.oldest_first { 0 } else { u64::MAX - 1 });
        let mut entries = Vec::new();
        let mut scanned = 0;
        loop {
            let batch = guardyn_audit::page(&*self.kv, at, direction, SCAN).await?;
            for e in &batch {
                scanned += 1;
                let next = step(e.seq);
                if q.matches(e) {
                    entries.push(e.clone());
                }
                if entries.len() >= q.limit || scanned >= MAX_SCANNED {
                    return Ok(AuditPage {
                        entries,
                        next_seq: next,
                    });
                }
            }
            match batch.last().and_then(|e| step(e.seq)) {
                Some(next) if batch.len() == SCAN => at = next,
                _ => {
                    return Ok(AuditPage {
                        entries,
                        next_seq: None,
                    });
                }
            }
        }
    }

    /// The chain's state: `Ok(Err(..))` is a broken chain (an answer), `Err` a failure to read.
    pub async fn verify_audit(&self) -> Result<Result<Verified, AuditViolation>, AdminError> {
        match guardyn_audit::verify(&*self.kv).await {
            Err(AuditViolation::Storage(msg)) => Err(StorageError::Unavailable(msg).into()),
            other => Ok(other),
        }
    }
}
