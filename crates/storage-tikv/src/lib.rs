//! Guardyn's TiKV backend: [`guardyn_storage::KvStore`] on TiKV's transactional (Percolator)
//! API, through `tikv-client` 0.4.
//!
//! `tikv-client` brings its own, older gRPC stack (tonic 0.10, prost 0.12, hyper 0.14); none of
//! its types leave this crate. Its TLS is rustls 0.21 on ring (no OpenSSL, and no process-wide
//! rustls 0.23 provider involved).
//!
//! # Mapping
//!
//! - **Keys**: `key_prefix ++ key` ([`TikvConfig::key_prefix`]), so several deployments share
//!   a cluster; every scan is clamped to the prefix. API v2 keyspaces would do the same on the
//!   server side but need a cluster configured for them; a prefix works on any cluster.
//! - **Values**: a one-byte format tag, then the caller's bytes (`codec.rs`): an empty value is
//!   never an empty TiKV value, and a later format can be told apart. `KvStore` has no TTL,
//!   so there is no expiry in the envelope (TiKV's own TTL exists only in raw mode).
//! - **Reads** (`get`, `scan`): a snapshot at a fresh PD timestamp, so a read sees every
//!   commit acknowledged before it started. Reverse scans are TiKV reverse scans; bounds become
//!   half-open prefixed ranges (`Excluded(k)` start → `k\0`, `Included(k)` end → `k\0`).
//! - **`commit`**: one *optimistic* transaction per attempt. Conditions are read at the start
//!   timestamp (one batch get); a failed one rolls back and answers `Conflict{index}`. Otherwise
//!   condition keys the transaction does not write are locked (`lock_keys`: prewritten as
//!   `Lock`), mutations buffered in order, and the commit's prewrite fails with a write
//!   conflict if any of those keys changed after the start timestamp; then the attempt starts
//!   over (re-reading, so a condition that no longer holds becomes `Conflict`), at most
//!   `max_txn_attempts` times with jittered backoff. A commit whose primary got no answer is
//!   never retried (it may have landed): it fails as `Unavailable`, like a timeout.
//!
//! Why optimistic: Guardyn's transactions are short, touch few keys, and rarely contend
//! (per-account or per-group keys); their conditions are themselves compare-and-set checks, so
//! a lost race mostly ends in `Conflict` for the caller's own retry loop. Optimistic costs one
//! TSO, one batch get and the two-phase commit; pessimistic adds a lock round trip per key
//! and lock waits, which only pays under heavy contention.
//!
//! # Guarantees relied on
//!
//! Percolator snapshot isolation with write-conflict detection on every prewritten key (locks
//! included), which makes the conditional commit serializable; TSO timestamps monotonic across
//! the cluster; a commit acknowledged only once its primary is committed through Raft (durable
//! on a majority); bytewise key order and reverse scans.

mod classify;
mod codec;
mod config;
mod plan;
mod store;

#[cfg(test)]
mod tests;

pub use config::{MAX_PREFIX_LEN, TikvConfig, TikvTlsConfig};
pub use store::TikvStore;
