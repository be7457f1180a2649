//! The conformance suite every backend must pass unchanged.
//!
//! A backend's tests implement [`Harness`] and call [`run_all`] (or single cases). Every case
//! opens the stores itself and works under its own key prefix / partition names, made unique
//! per run, so the suite can run against a shared cluster without cleaning it first. Cases that
//! check durability drop every handle they got from [`Harness::open`] and open again.
//!
//! Failures panic with a message naming the broken contract: this is test code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

mod kv;
mod log;

pub use kv::*;
pub use log::*;

use crate::{AppendLog, KvStore, NewEntry, StorageError};

/// What a backend's test provides: a way to (re)open its stores.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Open the stores. May be called again after every handle from the previous call was
    /// dropped; the new handles must see everything acknowledged through the old ones (embedded:
    /// same data directory; cluster: same namespace).
    async fn open(&self) -> (Arc<dyn KvStore>, Arc<dyn AppendLog>);
}

/// Every case, in an order that keeps reopen cases last.
pub async fn run_all<H: Harness>(h: &H) {
    kv_get_put_delete(h).await;
    kv_bytewise_ordering(h).await;
    kv_range_bounds(h).await;
    kv_size_limits(h).await;
    txn_all_or_nothing(h).await;
    txn_condition_semantics(h).await;
    txn_later_mutation_wins(h).await;
    txn_cas_race_has_one_winner(h).await;
    txn_optimistic_counter(h).await;
    log_sequences(h).await;
    log_concurrent_appends(h).await;
    log_read_cursor(h).await;
    log_delete(h).await;
    log_partition_isolation(h).await;
    log_invalid_requests(h).await;
    log_ttl_expiry(h).await;
    durability_across_reopen(h).await;
}

/// A prefix unique to this case and this run (process id, start time and a counter).
pub(super) fn ns(case: &str) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("conformance/{case}/{}-{nanos:x}-{n}/", std::process::id()).into_bytes()
}

pub(super) fn k(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    [prefix, suffix].concat()
}

pub(super) fn keys(pairs: &[crate::KvPair]) -> Vec<Vec<u8>> {
    pairs.iter().map(|p| p.key.clone()).collect()
}

pub(super) fn entry(payload: &[u8], ttl: Duration) -> NewEntry {
    NewEntry {
        payload: payload.to_vec(),
        ttl,
    }
}

pub(super) const HOUR: Duration = Duration::from_secs(3600);

pub(super) fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

pub(super) fn assert_invalid<T: std::fmt::Debug>(r: Result<T, StorageError>, what: &str) {
    match r {
        Err(StorageError::InvalidRequest(_)) => {}
        other => panic!("{what}: expected InvalidRequest, got {other:?}"),
    }
}
