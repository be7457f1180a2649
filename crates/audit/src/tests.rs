#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use guardyn_common::clock::{Clock, ManualClock, SharedClock, SystemClock};
use guardyn_storage::KvStore;
use guardyn_storage::record::encode;
use guardyn_storage_embedded::EmbeddedStore;
use serde::Serialize;

use super::*;
use crate::record::{head_key, sha256};

async fn open() -> (tempfile::TempDir, Arc<EmbeddedStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), Default::default())
        .await
        .unwrap();
    (dir, store)
}

fn record(i: u32) -> AuditRecord {
    AuditRecord::new(AuditKind::LoginFailed, "acc", Some(1), format!("n {i}"))
}

/// A chain written by the version-1 writer (auth before this crate), byte for byte.
async fn write_v1_chain(kv: &dyn KvStore, n: u64) {
    #[derive(Serialize)]
    struct EntryV1 {
        seq: u64,
        time_ms: u64,
        kind: AuditKind,
        account_id: String,
        device_id: Option<u32>,
        detail: String,
        prev_hash: [u8; 32],
    }
    fn v1<T: Serialize>(value: &T) -> Vec<u8> {
        postcard::to_extend(value, vec![1u8]).unwrap()
    }
    let mut prev = [0u8; 32];
    for seq in 1..=n {
        let entry = EntryV1 {
            seq,
            time_ms: seq,
            kind: AuditKind::AccountRegistered,
            account_id: "old".into(),
            device_id: None,
            detail: String::new(),
            prev_hash: prev,
        };
        let hash = sha256(&v1(&entry));
        kv.put(&entry_key(seq), &v1(&(entry, hash))).await.unwrap();
        prev = hash;
    }
    kv.put(&head_key(), &v1(&(n, prev))).await.unwrap();
}

#[tokio::test]
async fn a_version_1_chain_verifies_and_grows_with_version_2_entries() {
    let (_dir, store) = open().await;
    let kv: Arc<dyn KvStore> = store.clone();
    write_v1_chain(&*kv, 3).await;
    assert_eq!(verify(&*kv).await.unwrap().checked, 3);
    let log = AuditLog::new(kv.clone(), Arc::new(SystemClock));
    log.append(
        AuditRecord::new(AuditKind::RoleChanged, "acc", None, "user -> admin")
            .by("boss", "on call"),
    )
    .await
    .unwrap();
    let v = verify(&*kv).await.unwrap();
    assert_eq!((v.checked, v.first_seq, v.last_seq), (4, 1, 4));
    let all = entries(&*kv).await.unwrap();
    assert_eq!(all[0].account_id, "old");
    assert_eq!(all[3].actor.as_deref(), Some("boss"));
    assert_eq!(all[3].reason, "on call");
}

#[tokio::test]
async fn an_altered_reason_is_detected() {
    let (_dir, store) = open().await;
    let kv: Arc<dyn KvStore> = store.clone();
    let log = AuditLog::new(kv.clone(), Arc::new(SystemClock));
    for i in 0..3 {
        log.append(record(i).by("boss", "because")).await.unwrap();
    }
    let raw = kv.get(&entry_key(2)).await.unwrap().unwrap();
    let mut entry = crate::record::read(&raw).unwrap().entry;
    entry.reason = "no reason".into();
    // Re-encoded with the old hash: the content no longer matches it.
    let forged = crate::record::Stored {
        entry,
        hash: crate::record::read(&raw).unwrap().stored_hash,
    };
    kv.put(&entry_key(2), &encode(&forged)).await.unwrap();
    assert_eq!(verify(&*kv).await, Err(AuditViolation::Altered(2)));
}

#[tokio::test]
async fn pruning_deletes_old_entries_keeps_the_chain_verifiable_and_is_audited() {
    let (_dir, store) = open().await;
    let kv: Arc<dyn KvStore> = store.clone();
    let clock = Arc::new(ManualClock::new());
    let shared: SharedClock = clock.clone();
    let log = AuditLog::new(kv.clone(), shared);
    for i in 0..5 {
        log.append(record(i)).await.unwrap();
    }
    clock.advance(Duration::from_secs(100));
    for i in 5..8 {
        log.append(record(i)).await.unwrap();
    }
    let cutoff = clock.now_ms() - 50_000;
    // Two passes of at most 3: entries 1-3, then 4-5 (6 is newer than the cutoff).
    let p = log.prune(cutoff, 3).await.unwrap().unwrap();
    assert_eq!((p.first_seq, p.last_seq, p.full), (1, 3, true));
    let p = log.prune(cutoff, 3).await.unwrap().unwrap();
    assert_eq!((p.first_seq, p.last_seq, p.full), (4, 5, false));
    assert_eq!(log.prune(cutoff, 3).await.unwrap(), None);

    let left = entries(&*kv).await.unwrap();
    assert_eq!(left.first().unwrap().seq, 6);
    let pruned: Vec<_> = left
        .iter()
        .filter(|e| e.kind == AuditKind::AuditPruned)
        .collect();
    assert_eq!(pruned.len(), 2);
    let v = verify(&*kv).await.unwrap();
    assert_eq!((v.first_seq, v.last_seq, v.checked), (6, 10, 5));
    // The first entry after the checkpoint is still checked against it.
    kv.delete(&entry_key(6)).await.unwrap();
    assert_eq!(verify(&*kv).await, Err(AuditViolation::Missing(6)));
}

#[tokio::test]
async fn pruning_stops_before_a_broken_link_so_the_evidence_stays() {
    let (_dir, store) = open().await;
    let kv: Arc<dyn KvStore> = store.clone();
    let clock = Arc::new(ManualClock::new());
    let log = AuditLog::new(kv.clone(), clock.clone());
    for i in 0..4 {
        log.append(record(i)).await.unwrap();
    }
    let mut raw = kv.get(&entry_key(3)).await.unwrap().unwrap();
    let at = raw.len() - 40;
    raw[at] ^= 1;
    kv.put(&entry_key(3), &raw).await.unwrap();
    clock.advance(Duration::from_secs(10));
    let p = log.prune(clock.now_ms(), 100).await.unwrap().unwrap();
    assert_eq!((p.first_seq, p.last_seq), (1, 2));
    assert!(verify(&*kv).await.unwrap_err().seq() == Some(3));
}

/// Appends per second on the embedded engine (one fsync per engine commit), sequential and
/// 2000 callers at once. `cargo test -p guardyn-audit --release -- --ignored
/// audit_append_throughput --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn audit_append_throughput() {
    let (_dir, store) = open().await;
    let kv: Arc<dyn KvStore> = store.clone();
    let log = Arc::new(AuditLog::new(kv.clone(), Arc::new(SystemClock)));
    let sequential = 200u32;
    let start = Instant::now();
    for i in 0..sequential {
        log.append(record(i)).await.unwrap();
    }
    let seq_rate = f64::from(sequential) / start.elapsed().as_secs_f64();
    let concurrent = 2000u32;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrent {
        let log = log.clone();
        tasks.push(tokio::spawn(async move { log.append(record(i)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let par_rate = f64::from(concurrent) / start.elapsed().as_secs_f64();
    assert_eq!(
        verify(&*kv).await.unwrap().checked,
        u64::from(sequential + concurrent)
    );
    println!(
        "audit appends/s, batched: sequential {seq_rate:.0}, {concurrent} concurrent {par_rate:.0}"
    );
    drop(log);
    store.close().await;
}
