use std::fmt;
use std::ops::Bound;

use async_trait::async_trait;

use crate::StorageResult;

/// A key/value pair returned by scans.
#[derive(Clone, PartialEq, Eq)]
pub struct KvPair {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl fmt::Debug for KvPair {
    // Values may hold key material or tokens' hashes: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvPair")
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("value_len", &self.value.len())
            .finish()
    }
}

/// Scan order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Ascending key order.
    Forward,
    /// Descending key order.
    Reverse,
}

/// A range of keys; bounds compare bytewise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Bound<Vec<u8>>,
    pub end: Bound<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        Self {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        Self {
            start: Bound::Included(prefix.to_vec()),
            end: match prefix_successor(prefix) {
                Some(end) => Bound::Excluded(end),
                None => Bound::Unbounded,
            },
        }
    }

    /// `start <= key < end`.
    pub fn between(start: &[u8], end: &[u8]) -> Self {
        Self {
            start: Bound::Included(start.to_vec()),
            end: Bound::Excluded(end.to_vec()),
        }
    }

    /// Whether `key` lies inside the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        let above_start = match &self.start {
            Bound::Included(s) => key >= s.as_slice(),
            Bound::Excluded(s) => key > s.as_slice(),
            Bound::Unbounded => true,
        };
        let below_end = match &self.end {
            Bound::Included(e) => key <= e.as_slice(),
            Bound::Excluded(e) => key < e.as_slice(),
            Bound::Unbounded => true,
        };
        above_start && below_end
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None` when the prefix is
/// all `0xFF` bytes (then the range is unbounded above).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A precondition checked atomically with a transaction's mutations.
#[derive(Clone, PartialEq, Eq)]
pub enum Condition {
    /// The key must not exist.
    Absent(Vec<u8>),
    /// The key must exist, with any value.
    Exists(Vec<u8>),
    /// The key must exist with exactly this value (compare-and-set).
    Equals(Vec<u8>, Vec<u8>),
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Absent(k) => write!(f, "Absent({})", String::from_utf8_lossy(k)),
            Self::Exists(k) => write!(f, "Exists({})", String::from_utf8_lossy(k)),
            Self::Equals(k, v) => write!(
                f,
                "Equals({}, <{} bytes>)",
                String::from_utf8_lossy(k),
                v.len()
            ),
        }
    }
}

/// A write applied by a transaction.
#[derive(Clone, PartialEq, Eq)]
pub enum Mutation {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

impl fmt::Debug for Mutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Put(k, v) => write!(
                f,
                "Put({}, <{} bytes>)",
                String::from_utf8_lossy(k),
                v.len()
            ),
            Self::Delete(k) => write!(f, "Delete({})", String::from_utf8_lossy(k)),
        }
    }
}

/// An atomic multi-key transaction: every condition is checked and, only if all hold, every
/// mutation is applied, as one indivisible step. Mutations apply in order (a later write to the
/// same key wins).
///
/// Read-modify-write is done optimistically: read, compute, then commit with a [`Condition`]
/// that the values read are unchanged; on [`TxnOutcome::Conflict`] read again and retry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    pub conditions: Vec<Condition>,
    pub mutations: Vec<Mutation>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn require_absent(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.conditions.push(Condition::Absent(key.into()));
        self
    }

    pub fn require_exists(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.conditions.push(Condition::Exists(key.into()));
        self
    }

    pub fn require_equals(mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        self.conditions
            .push(Condition::Equals(key.into(), value.into()));
        self
    }

    /// Require `key` to hold `expected`, where `None` means absent: the natural precondition
    /// after a `get`.
    pub fn require_unchanged(self, key: impl Into<Vec<u8>>, expected: Option<&[u8]>) -> Self {
        match expected {
            Some(v) => self.require_equals(key, v.to_vec()),
            None => self.require_absent(key),
        }
    }

    pub fn put(mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        self.mutations.push(Mutation::Put(key.into(), value.into()));
        self
    }

    pub fn delete(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.mutations.push(Mutation::Delete(key.into()));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty() && self.mutations.is_empty()
    }
}

/// Whether a transaction committed.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every condition held and every mutation is durable.
    Committed,
    /// The condition at this index (into [`Txn::conditions`]) did not hold; nothing was written.
    /// When several conditions fail, this is the first (lowest index) of them.
    Conflict { condition: usize },
}

impl TxnOutcome {
    pub fn is_committed(self) -> bool {
        matches!(self, Self::Committed)
    }
}

/// An ordered, transactional key-value store.
///
/// Contract (checked by [`crate::conformance`]):
/// - keys order bytewise; scans honour bounds exactly and return at most `limit` pairs;
/// - a write that returned `Ok` is durable (survives process kill and reopen);
/// - [`KvStore::commit`] is atomic and serializable with respect to every other write:
///   of two transactions racing on one key with the same precondition, exactly one commits;
/// - keys up to [`crate::MAX_KEY_LEN`] and values up to [`crate::MAX_VALUE_LEN`] are accepted,
///   larger ones rejected with [`crate::StorageError::InvalidRequest`] (and then nothing of the
///   transaction is written).
#[async_trait]
pub trait KvStore: Send + Sync + fmt::Debug + 'static {
    async fn get(&self, key: &[u8]) -> StorageResult<Option<Vec<u8>>>;

    /// Up to `limit` pairs inside `range`, in `direction` order.
    async fn scan(
        &self,
        range: KeyRange,
        direction: Direction,
        limit: usize,
    ) -> StorageResult<Vec<KvPair>>;

    /// Check every condition and apply every mutation atomically.
    async fn commit(&self, txn: Txn) -> StorageResult<TxnOutcome>;

    async fn put(&self, key: &[u8], value: &[u8]) -> StorageResult<()> {
        // A transaction without conditions cannot conflict.
        let _ = self.commit(Txn::new().put(key, value)).await?;
        Ok(())
    }

    async fn delete(&self, key: &[u8]) -> StorageResult<()> {
        let _ = self.commit(Txn::new().delete(key)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_range_covers_exactly_the_prefix() {
        let r = KeyRange::prefix(b"ab");
        assert!(r.contains(b"ab"));
        assert!(r.contains(b"ab\xff\xff"));
        assert!(!r.contains(b"ac"));
        assert!(!r.contains(b"aa\xff"));
        let r = KeyRange::prefix(b"a\xff");
        assert_eq!(r.end, Bound::Excluded(b"b".to_vec()));
        assert_eq!(KeyRange::prefix(b"\xff\xff").end, Bound::Unbounded);
    }
}
