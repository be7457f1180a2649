#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use guardyn_storage::conformance::{Joint, JointHarness, KvHarness, LogHarness};
use guardyn_storage::{
    AppendLog, JointOutcome, JointStore, JointTxn, KvStore, NewEntry, StorageError, Txn, TxnOutcome,
};
use tempfile::TempDir;
use tokio::sync::oneshot;

use crate::writer::{Op, Reply, Request};
use crate::{EmbeddedConfig, EmbeddedError, EmbeddedStore};

/// Conformance harness: one temporary data directory per test, reopened by every `open_*`.
struct Embedded {
    dir: TempDir,
}

impl Embedded {
    fn new() -> Self {
        Self {
            dir: TempDir::new().unwrap(),
        }
    }

    async fn open(&self) -> Arc<EmbeddedStore> {
        EmbeddedStore::open(self.dir.path(), EmbeddedConfig::default())
            .await
            .expect("open embedded store")
    }
}

#[async_trait]
impl KvHarness for Embedded {
    async fn open_kv(&self) -> Arc<dyn KvStore> {
        self.open().await
    }
}

#[async_trait]
impl LogHarness for Embedded {
    async fn open_log(&self) -> Arc<dyn AppendLog> {
        self.open().await
    }
}

#[async_trait]
impl JointHarness for Embedded {
    async fn open_joint(&self) -> Joint {
        let store = self.open().await;
        Joint {
            joint: store.clone(),
            kv: store.clone(),
            log: store,
        }
    }
}

mod joint_conformance {
    guardyn_storage::joint_conformance_suite!(super::Embedded::new());
}

mod kv_conformance {
    guardyn_storage::kv_conformance_suite!(super::Embedded::new());
}

mod log_conformance {
    guardyn_storage::log_conformance_suite!(super::Embedded::new());
}

fn entry(payload: &[u8], ttl: Duration) -> NewEntry {
    NewEntry {
        payload: payload.to_vec(),
        ttl,
    }
}

/// Blocks the writer until the returned barrier is waited on, so that requests sent in the
/// meantime are queued together.
async fn hold_writer(store: &EmbeddedStore) -> Arc<Barrier> {
    let barrier = Arc::new(Barrier::new(2));
    store
        .sender_for_tests()
        .send(Request {
            op: Op::Hold(barrier.clone()),
            reply: None,
        })
        .await
        .unwrap();
    barrier
}

async fn wait_queued(store: &EmbeddedStore, n: usize) {
    let tx = store.sender_for_tests();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tx.max_capacity() - tx.capacity() < n {
        assert!(Instant::now() < deadline, "requests were never queued");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_queued_at_most(store: &EmbeddedStore, n: usize) {
    let tx = store.sender_for_tests();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tx.max_capacity() - tx.capacity() > n {
        assert!(
            Instant::now() < deadline,
            "the writer never took its requests"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_share_commits() {
    let dir = TempDir::new().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default())
        .await
        .unwrap();
    let barrier = hold_writer(&store).await;
    let before = store.engine_stats();
    let puts: Vec<_> = (0..200u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put(&i.to_be_bytes(), b"v").await })
        })
        .collect();
    wait_queued(&store, 200).await;
    tokio::task::spawn_blocking(move || barrier.wait())
        .await
        .unwrap();
    for p in puts {
        p.await.unwrap().unwrap();
    }
    let after = store.engine_stats();
    assert_eq!(after.requests - before.requests, 200);
    // 200 queued requests with max_batch 256: one fsync'd commit for all of them.
    assert_eq!(after.commits - before.commits, 1, "{before:?} -> {after:?}");
    let all = store
        .scan(
            guardyn_storage::KeyRange::all(),
            guardyn_storage::Direction::Forward,
            1000,
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_in_one_batch_see_each_other() {
    let dir = TempDir::new().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default())
        .await
        .unwrap();
    let barrier = hold_writer(&store).await;
    let txns = vec![
        Txn::new()
            .require_absent(b"k".to_vec())
            .put(b"k".to_vec(), b"1".to_vec()),
        // Sees the first: fails, and must not write "other".
        Txn::new()
            .require_absent(b"k".to_vec())
            .put(b"k".to_vec(), b"2".to_vec())
            .put(b"other".to_vec(), b"x".to_vec()),
        Txn::new()
            .require_equals(b"k".to_vec(), b"1".to_vec())
            .put(b"k".to_vec(), b"3".to_vec()),
    ];
    let mut replies = Vec::new();
    for txn in txns {
        let (tx, rx) = oneshot::channel();
        store
            .sender_for_tests()
            .send(Request {
                op: Op::Commit(txn),
                reply: Some(Reply::Outcome(tx)),
            })
            .await
            .unwrap();
        replies.push(rx);
    }
    let commits = store.engine_stats().commits;
    tokio::task::spawn_blocking(move || barrier.wait())
        .await
        .unwrap();
    let mut outcomes = Vec::new();
    for rx in replies {
        outcomes.push(rx.await.unwrap().unwrap());
    }
    assert_eq!(
        outcomes,
        vec![
            TxnOutcome::Committed,
            TxnOutcome::Conflict { condition: 0 },
            TxnOutcome::Committed
        ]
    );
    assert_eq!(
        store.engine_stats().commits,
        commits + 1,
        "one batch, one commit"
    );
    assert_eq!(store.get(b"k").await.unwrap().as_deref(), Some(&b"3"[..]));
    assert_eq!(store.get(b"other").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_purges_expired_entries() {
    let dir = TempDir::new().unwrap();
    let config = EmbeddedConfig {
        sweep_interval: Duration::from_millis(100),
        sweep_batch: 2,
        ..EmbeddedConfig::default()
    };
    let store = EmbeddedStore::open(dir.path(), config).await.unwrap();
    let short = Duration::from_millis(300);
    let entries = vec![
        entry(b"a", short),
        entry(b"b", Duration::from_secs(3600)),
        entry(b"c", short),
        entry(b"d", short),
        entry(b"e", short),
        entry(b"f", short),
    ];
    store.append(b"p", entries).await.unwrap();
    assert_eq!(store.stats(b"p").await.unwrap().len, 6);
    // len counts entries until they are physically purged: watch it drop to the live one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats(b"p").await.unwrap().len != 1 {
        assert!(
            Instant::now() < deadline,
            "expired entries were never purged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let live = store.read(b"p", 0, 10).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].payload, b"b");
    assert_eq!(store.stats(b"p").await.unwrap().next_seq, 7);
    // The purge committed: it survives a reopen.
    drop(store);
    let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default())
        .await
        .unwrap();
    assert_eq!(store.stats(b"p").await.unwrap().len, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_finishes_queued_writes_then_refuses() {
    let dir = TempDir::new().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default())
        .await
        .unwrap();
    let puts: Vec<_> = (0..50u32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.put(&i.to_be_bytes(), b"v").await })
        })
        .collect();
    for p in puts {
        p.await.unwrap().unwrap();
    }
    store.close().await;
    assert!(matches!(
        store.put(b"x", b"v").await,
        Err(StorageError::Closed)
    ));
    assert!(matches!(store.get(b"x").await, Err(StorageError::Closed)));
    assert!(matches!(
        store
            .append(b"p", vec![entry(b"x", Duration::from_secs(60))])
            .await,
        Err(StorageError::Closed)
    ));
    // The directory stays locked until the last handle is gone.
    assert!(
        EmbeddedStore::open(dir.path(), EmbeddedConfig::default())
            .await
            .is_err()
    );
    drop(store);
    let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default())
        .await
        .unwrap();
    for i in 0..50u32 {
        assert!(
            store.get(&i.to_be_bytes()).await.unwrap().is_some(),
            "put {i} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_after_an_answered_write_see_it_though_reads_share_snapshots() {
    let h = Embedded::new();
    let store = h.open().await;
    // Each read first fills the shared snapshot, so a write it missed must retire it.
    for i in 0..50u32 {
        let key = format!("k{i}").into_bytes();
        assert_eq!(store.get(&key).await.unwrap(), None);
        assert_eq!(store.read(b"p", 1, 100).await.unwrap().len(), i as usize);
        store.put(&key, b"v").await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Some(b"v".to_vec()));
        let seqs = store.append(b"p", vec![entry(b"e", Duration::from_secs(60))]);
        assert_eq!(seqs.await.unwrap(), vec![u64::from(i) + 1]);
        assert_eq!(
            store.read(b"p", 1, 100).await.unwrap().len(),
            i as usize + 1
        );
    }
    // Many writers, each reading its own write back while the others commit.
    let tasks: Vec<_> = (0..32u32)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..20u32 {
                    let key = format!("t{t}").into_bytes();
                    let value = n.to_be_bytes();
                    store.put(&key, &value).await.unwrap();
                    assert_eq!(store.get(&key).await.unwrap(), Some(value.to_vec()));
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn refuses_an_unknown_layout_version() {
    let dir = TempDir::new().unwrap();
    drop(
        EmbeddedStore::open(dir.path(), EmbeddedConfig::default())
            .await
            .unwrap(),
    );
    {
        let db = redb::Database::open(dir.path().join(crate::DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(crate::codec::STORE_META)
            .unwrap()
            .insert(crate::codec::FORMAT_KEY, &[99u8][..])
            .unwrap();
        txn.commit().unwrap();
    }
    let err = EmbeddedStore::open(dir.path(), EmbeddedConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, EmbeddedError::UnsupportedFormat { found: 99 }),
        "{err}"
    );
}

#[tokio::test]
async fn debug_prints_the_path_only() {
    let dir = TempDir::new().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default())
        .await
        .unwrap();
    store.put(b"secret-key", b"secret-value").await.unwrap();
    let shown = format!("{store:?}");
    assert!(shown.contains(&dir.path().display().to_string()), "{shown}");
    assert!(!shown.contains("secret"), "{shown}");
}

/// Group-commit throughput: `cargo test -p guardyn-storage-embedded --release -- --ignored
/// --nocapture group_commit_throughput`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a test"]
async fn group_commit_throughput() {
    const PUTS: u32 = 2000;
    let dir = TempDir::new().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default())
        .await
        .unwrap();
    let value = vec![7u8; 200];

    let start = Instant::now();
    for i in 0..PUTS {
        store
            .put(format!("seq/{i}").as_bytes(), &value)
            .await
            .unwrap();
    }
    let sequential = f64::from(PUTS) / start.elapsed().as_secs_f64();

    let before = store.engine_stats();
    let start = Instant::now();
    let tasks: Vec<_> = (0..64u32)
        .map(|t| {
            let (store, value) = (store.clone(), value.clone());
            tokio::spawn(async move {
                for i in 0..PUTS / 64 {
                    store
                        .put(format!("conc/{t}/{i}").as_bytes(), &value)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let done = f64::from(PUTS / 64 * 64);
    let concurrent = done / start.elapsed().as_secs_f64();
    let commits = store.engine_stats().commits - before.commits;
    eprintln!(
        "1 writer: {sequential:.0} puts/s; 64 writers: {concurrent:.0} puts/s ({:.1}x), \
         {commits} commits for {done} puts",
        concurrent / sequential
    );
}

/// A joint transaction refused for its built record's size fails alone: the writes batched
/// with it commit, in the same fsync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_joint_transaction_leaves_its_batch_committed() {
    let dir = TempDir::new().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedConfig::default())
        .await
        .unwrap();
    let barrier = hold_writer(&store).await;
    // The writer has taken the hold: from here on the queue holds only this test's requests.
    wait_queued_at_most(&store, 0).await;
    let commits = store.engine_stats().commits;
    let before = {
        let store = store.clone();
        tokio::spawn(async move { store.put(b"before", b"1").await })
    };
    wait_queued(&store, 1).await;
    let refused = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .commit_joint(JointTxn {
                    txn: Txn::new().put(b"joint".to_vec(), b"x".to_vec()),
                    updates: Vec::new(),
                    appends: vec![(b"q".to_vec(), vec![entry(b"e", Duration::from_secs(60))])],
                    record: Some((
                        b"record".to_vec(),
                        Box::new(|_: &[Vec<u64>]| vec![0; guardyn_storage::MAX_VALUE_LEN + 1]),
                    )),
                })
                .await
        })
    };
    wait_queued(&store, 2).await;
    let after = {
        let store = store.clone();
        tokio::spawn(async move { store.put(b"after", b"2").await })
    };
    wait_queued(&store, 3).await;
    tokio::task::spawn_blocking(move || barrier.wait())
        .await
        .unwrap();
    before.await.unwrap().unwrap();
    after.await.unwrap().unwrap();
    assert!(matches!(
        refused.await.unwrap(),
        Err(StorageError::InvalidRequest(_))
    ));
    assert_eq!(
        store.engine_stats().commits,
        commits + 1,
        "one batch, one commit"
    );
    assert_eq!(
        store.get(b"before").await.unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        store.get(b"after").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    assert_eq!(store.get(b"joint").await.unwrap(), None);
    assert_eq!(store.get(b"record").await.unwrap(), None);
    assert!(store.read(b"q", 0, 10).await.unwrap().is_empty());
    // The refused request took no sequence.
    let j = store
        .commit_joint(JointTxn {
            txn: Txn::new(),
            updates: Vec::new(),
            appends: vec![(b"q".to_vec(), vec![entry(b"e", Duration::from_secs(60))])],
            record: None,
        })
        .await
        .unwrap();
    assert_eq!(j, JointOutcome::Committed(vec![vec![1]]));
}
