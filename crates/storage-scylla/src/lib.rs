//! ScyllaDB backend of [`guardyn_storage::AppendLog`]: device queues, group logs and other
//! high-volume append data of a cluster deployment.
//!
//! # Layout
//!
//! One table, `<keyspace>.log_entries`, partitioned by the log partition name and clustered by
//! sequence ascending (`schema`). A read is one partition slice; `delete_through` is one range
//! tombstone; each entry carries a native TTL (`USING TTL`, whole seconds, rounded up plus one
//! so it never expires early) and its exact `expires_at` in milliseconds, which reads filter on
//! (`ttl`). Every data statement is prepared, names the partition key (the driver's default
//! token-aware policy sends it straight to a replica) and needs no `ALLOW FILTERING`.
//!
//! # Sequences: one LWT per append
//!
//! The partition's `next_seq` is a static column of the same table. An append of n entries is
//! one single-partition conditional batch: `UPDATE .. SET next_seq = s + n IF next_seq = s`
//! plus the n `INSERT`s at `s .. s + n`. Paxos orders these batches per partition, so
//! sequences are gapless at assignment, committed in sequence order, and never reused (the
//! counter has no TTL and deletes never touch it), whichever instance appends. The loser of a
//! race gets the winner's `next_seq` in the not-applied result and retries from it after a
//! short jittered backoff (`seq`); `max_append_attempts` bounds the loop. Because seq s + n
//! commits only after seq s reached a quorum, a quorum read that returns the later entry also
//! returns the earlier one (replicas that disagree are reconciled by a second round after both
//! commits), so a reader following a cursor misses nothing; `serial_reads` makes reads
//! linearizable outright at the cost of a Paxos round each.
//!
//! Cost per append (uncontended, counter known from this process's cache): one LWT, i.e. one
//! client round trip and the Paxos rounds of ScyllaDB (prepare+read, accept, learn: about 3
//! replica round trips at `LOCAL_SERIAL`, roughly 3-4x a plain `LOCAL_QUORUM` write). A cache
//! miss adds one quorum read; each lost race adds one LWT. Throughput per partition is bounded
//! by Paxos (hundreds to a few thousand appends/s per partition), which suits device queues
//! (one partition per device, spread over the ring). Rejected alternatives: owner routing (one
//! instance owns each partition and numbers locally) needs a membership/lease protocol and
//! fails over slowly; reserving blocks of sequences per instance is cheaper but lets a reader
//! following a cursor skip an entry appended later with a lower sequence from another block.
//!
//! # `stats`
//!
//! `len` is `SELECT COUNT(*)` over the partition: it reads every live row of the partition
//! (cost linear in its size, fine for bounded queues, not for unbounded logs); it may count
//! entries whose millisecond expiry has passed but whose native TTL has not (at most ~2 s), as
//! the trait allows. `next_seq` is the static counter.
//!
//! # Limits
//!
//! An entry is a cell of the batch: payloads up to [`guardyn_storage::MAX_VALUE_LEN`] work
//! because single-partition batches are exempt from the batch size limits, but a large append
//! goes through the Paxos table, so large payloads cost more than in a plain write. One append
//! is one mutation: at most 15 MiB of payload and 65,534 entries (`InvalidRequest` beyond).
//! Deletes are plain writes timestamped by the coordinator, while appends carry their Paxos
//! ballot time: a delete issued within the cluster's clock skew of the append it removes could
//! be ordered before it (NTP keeps skew to milliseconds; consumers delete what they have
//! already read, long after).

mod config;
mod connect;
mod error;
mod log;
mod schema;
mod seq;
mod ttl;

pub use config::{ConsistencyLevel, Replication, ScyllaConfig, SerialLevel};
pub use error::ConfigError;
pub use log::{ScyllaLog, open, open_shared};
