use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::StorageResult;

/// An entry to append.
#[derive(Clone, PartialEq, Eq)]
pub struct NewEntry {
    pub payload: Vec<u8>,
    /// The entry disappears this long after it was appended.
    pub ttl: Duration,
}

impl fmt::Debug for NewEntry {
    // Payloads are ciphertext: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewEntry")
            .field("payload_len", &self.payload.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// A stored entry.
#[derive(Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Position in the partition; strictly increasing, never reused (also after deletes).
    pub seq: u64,
    /// Milliseconds since the Unix epoch at which the entry was appended.
    pub appended_at_ms: u64,
    /// Milliseconds since the Unix epoch after which the entry is gone.
    pub expires_at_ms: u64,
    pub payload: Vec<u8>,
}

impl fmt::Debug for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogEntry")
            .field("seq", &self.seq)
            .field("appended_at_ms", &self.appended_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

/// Summary of one partition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Entries stored and not deleted. May still count entries whose TTL has passed but that
    /// were not purged yet; never counts deleted ones.
    pub len: u64,
    /// The sequence the next append will receive (or a larger one).
    pub next_seq: u64,
}

/// A partitioned append log with per-entry TTL.
///
/// Contract (checked by [`crate::conformance`]):
/// - sequences start at 1 and strictly increase within a partition, never reused;
/// - an `append` that returned `Ok` is durable (survives process kill and reopen);
/// - `read` returns entries in sequence order, never an expired or deleted one;
/// - partitions are independent: nothing done to one is visible in another;
/// - partition names are 1 to [`crate::MAX_KEY_LEN`] bytes and payloads at most
///   [`crate::MAX_VALUE_LEN`] bytes, anything else is rejected with
///   [`crate::StorageError::InvalidRequest`] (and then nothing of the append is written).
#[async_trait]
pub trait AppendLog: Send + Sync + fmt::Debug + 'static {
    /// Append entries atomically; returns the sequence assigned to each, in order.
    async fn append(&self, partition: &[u8], entries: Vec<NewEntry>) -> StorageResult<Vec<u64>>;

    /// Up to `limit` live entries with `seq >= from`, in ascending order.
    async fn read(&self, partition: &[u8], from: u64, limit: usize)
    -> StorageResult<Vec<LogEntry>>;

    /// Delete the entries with these sequences (missing ones are ignored).
    async fn delete(&self, partition: &[u8], seqs: &[u64]) -> StorageResult<()>;

    /// Delete every entry with `seq <= through`.
    async fn delete_through(&self, partition: &[u8], through: u64) -> StorageResult<()>;

    async fn stats(&self, partition: &[u8]) -> StorageResult<PartitionStats>;
}
