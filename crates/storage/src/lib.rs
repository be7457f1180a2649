//! Guardyn's storage contracts: the traits every storage engine implements, and nothing else.
//!
//! Three shapes cover everything the services persist:
//!
//! 1. [`KvStore`]: an ordered, transactional key-value store (the shape of TiKV's transactional
//!    API): point reads, range scans in both directions with limits, and atomic multi-key
//!    transactions guarded by compare-and-set conditions. Accounts, devices, keys, sessions,
//!    group state live here.
//! 2. [`AppendLog`]: a partitioned append log with per-entry TTL (the shape of a ScyllaDB table
//!    clustered by sequence). Device message queues live here.
//! 3. [`BlobStore`]: immutable objects by key with ranged reads (the shape of S3). Media chunks
//!    live here.
//!
//! An engine that keeps the first two in one database may also offer [`JointStore`]: a KV
//! transaction plus log appends in one atomic step ([`Stores::joint`]).
//!
//! The [`conformance`] module (feature `conformance`) is the one suite every backend must pass
//! unchanged. An engine enables the feature in its dev-dependencies, implements
//! `conformance::KvHarness`, `conformance::LogHarness` and/or `conformance::BlobHarness`
//! (reopen its stores) in its tests, and runs the whole suite with one line per store:
//! `guardyn_storage::kv_conformance_suite!(MyHarness::new());`,
//! `guardyn_storage::log_conformance_suite!(MyHarness::new());`,
//! `guardyn_storage::blob_conformance_suite!(MyHarness::new());`. Each expands to one tokio
//! test per case with a fresh harness, so a failing case never hides the others.
//!
//! This crate must not depend on any storage engine, on gRPC, or on any Guardyn service: engines
//! depend on it, never the reverse.

mod blob;
mod counted;
mod error;
mod joint;
mod kv;
mod log;
pub mod record;
mod stores;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use blob::{BlobStore, MAX_BLOB_KEY_LEN, MAX_BLOB_SEGMENT_LEN, MAX_OBJECT_LEN, ObjectMeta};
pub use counted::{CountedJoint, CountedKv, CountedLog, WriteCounts, WriteSnapshot, count_writes};
pub use error::{StorageError, StorageResult};
pub use joint::{JointOutcome, JointStore, JointTxn, SeqRecord, Update};
pub use kv::{Condition, Direction, KeyRange, KvPair, KvStore, Mutation, Txn, TxnOutcome};
pub use log::{AppendLog, LogEntry, NewEntry, PartitionStats};
pub use record::Record;
pub use stores::{Close, Stores};

/// Largest key any backend must accept. TiKV allows more, but keys this large are a bug.
pub const MAX_KEY_LEN: usize = 4 * 1024;
/// Largest value any backend must accept (TiKV's default raft entry limit is 8 MiB; stay well
/// below it so a transaction of several such values still fits).
pub const MAX_VALUE_LEN: usize = 2 * 1024 * 1024;
