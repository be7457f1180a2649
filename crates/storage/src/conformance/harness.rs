//! What a backend provides to the suite, and the helpers every case shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::{AppendLog, BlobStore, JointStore, KvStore, NewEntry, StorageError};

/// What a backend's test provides to run the KV cases: a way to (re)open its [`KvStore`].
#[async_trait]
pub trait KvHarness: Send + Sync {
    /// Open the store. May be called again after every handle from the previous call was
    /// dropped; the new handle must see everything acknowledged through the old ones (embedded:
    /// same data directory; cluster: same database).
    async fn open_kv(&self) -> Arc<dyn KvStore>;

    /// Another instance on the same backend, as a second process of a cluster would open it:
    /// its own handle (own connections, caches, background tasks) on the data `first` sees.
    /// The default shares `first`: an embedded engine is one process, and its instances are
    /// the clones of one handle.
    async fn open_kv_instance(&self, first: &Arc<dyn KvStore>) -> Arc<dyn KvStore> {
        first.clone()
    }
}

/// What a backend's test provides to run the log cases: a way to (re)open its [`AppendLog`].
#[async_trait]
pub trait LogHarness: Send + Sync {
    /// Open the log. May be called again after every handle from the previous call was
    /// dropped; the new handle must see everything acknowledged through the old ones (embedded:
    /// same data directory; cluster: same keyspace).
    async fn open_log(&self) -> Arc<dyn AppendLog>;

    /// Another instance on the same backend (see [`KvHarness::open_kv_instance`]); the
    /// default shares `first`.
    async fn open_log_instance(&self, first: &Arc<dyn AppendLog>) -> Arc<dyn AppendLog> {
        first.clone()
    }
}

/// The three handles of one engine instance the joint cases use.
#[derive(Debug)]
pub struct Joint {
    pub joint: Arc<dyn JointStore>,
    pub kv: Arc<dyn KvStore>,
    pub log: Arc<dyn AppendLog>,
}

/// What a backend's test provides to run the joint cases: a way to (re)open its
/// [`JointStore`] with the KV store and log it commits to.
#[async_trait]
pub trait JointHarness: Send + Sync {
    /// Open the engine. May be called again after every handle from the previous call was
    /// dropped; the new handles must see everything acknowledged through the old ones.
    async fn open_joint(&self) -> Joint;
}

/// What a backend's test provides to run the blob cases: a way to (re)open its [`BlobStore`].
#[async_trait]
pub trait BlobHarness: Send + Sync {
    /// Open the store. May be called again after every handle from the previous call was
    /// dropped; the new handle must see everything acknowledged through the old ones (local:
    /// same directory; object store: same bucket).
    async fn open_blob(&self) -> Arc<dyn BlobStore>;
}

/// A prefix unique to this case and this run (process id, start time and a counter).
pub(crate) fn ns(case: &str) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("conformance/{case}/{}-{nanos:x}-{n}/", std::process::id()).into_bytes()
}

pub(crate) fn k(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    [prefix, suffix].concat()
}

pub(crate) fn keys(pairs: &[crate::KvPair]) -> Vec<Vec<u8>> {
    pairs.iter().map(|p| p.key.clone()).collect()
}

pub(crate) fn entry(payload: &[u8], ttl: Duration) -> NewEntry {
    NewEntry {
        payload: payload.to_vec(),
        ttl,
    }
}

pub(crate) const HOUR: Duration = Duration::from_secs(3600);

pub(crate) fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

pub(crate) fn assert_invalid<T: std::fmt::Debug>(r: Result<T, StorageError>, what: &str) {
    match r {
        Err(StorageError::InvalidRequest(_)) => {}
        other => panic!("{what}: expected InvalidRequest, got {other:?}"),
    }
}
