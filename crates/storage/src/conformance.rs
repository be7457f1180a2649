//! The conformance suite every backend must pass unchanged.
//!
//! A backend's tests implement [`Harness`] and call [`run_all`] (or single cases). Every case
//! opens the stores itself and works under its own key prefix / partition names, made unique
//! per run, so the suite can run against a shared cluster without cleaning it first. Cases that
//! check durability drop every handle they got from [`Harness::open`] and open again.
//!
//! Failures panic with a message naming the broken contract: this is test code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::future::join_all;
use tokio::sync::Barrier;

use crate::{
    AppendLog, Direction, KeyRange, KvStore, MAX_KEY_LEN, MAX_VALUE_LEN, NewEntry, StorageError,
    Txn, TxnOutcome,
};

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
fn ns(case: &str) -> Vec<u8> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("conformance/{case}/{}-{nanos:x}-{n}/", std::process::id()).into_bytes()
}

fn k(prefix: &[u8], suffix: &[u8]) -> Vec<u8> {
    [prefix, suffix].concat()
}

fn keys(pairs: &[crate::KvPair]) -> Vec<Vec<u8>> {
    pairs.iter().map(|p| p.key.clone()).collect()
}

fn entry(payload: &[u8], ttl: Duration) -> NewEntry {
    NewEntry {
        payload: payload.to_vec(),
        ttl,
    }
}

const HOUR: Duration = Duration::from_secs(3600);

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn assert_invalid<T: std::fmt::Debug>(r: Result<T, StorageError>, what: &str) {
    match r {
        Err(StorageError::InvalidRequest(_)) => {}
        other => panic!("{what}: expected InvalidRequest, got {other:?}"),
    }
}

pub async fn kv_get_put_delete<H: Harness>(h: &H) {
    let (kv, _) = h.open().await;
    let p = ns("get_put_delete");
    let a = k(&p, b"a");
    assert_eq!(kv.get(&a).await.unwrap(), None, "fresh key must be absent");
    kv.put(&a, b"one").await.unwrap();
    assert_eq!(kv.get(&a).await.unwrap().as_deref(), Some(&b"one"[..]));
    kv.put(&a, b"two").await.unwrap();
    assert_eq!(
        kv.get(&a).await.unwrap().as_deref(),
        Some(&b"two"[..]),
        "put must overwrite"
    );
    kv.put(&a, b"").await.unwrap();
    assert_eq!(
        kv.get(&a).await.unwrap(),
        Some(Vec::new()),
        "an empty value is a value, not absence"
    );
    kv.delete(&a).await.unwrap();
    assert_eq!(kv.get(&a).await.unwrap(), None, "delete must remove");
    kv.delete(&a).await.unwrap();
    kv.delete(&k(&p, b"never")).await.unwrap();
}

pub async fn kv_bytewise_ordering<H: Harness>(h: &H) {
    let (kv, _) = h.open().await;
    let p = ns("ordering");
    let suffixes: [&[u8]; 10] = [
        b"",
        b"\x00",
        b"\x00\x00",
        b"\x01",
        b"\x7f",
        b"\x80",
        b"a",
        b"\xff",
        b"\xff\x00",
        b"\xff\xff",
    ];
    // Insert in a scrambled order so that insertion order cannot pass for key order.
    for i in [7, 2, 9, 0, 5, 3, 8, 1, 6, 4] {
        kv.put(&k(&p, suffixes[i]), &[u8::try_from(i).unwrap()])
            .await
            .unwrap();
    }
    let expected: Vec<Vec<u8>> = suffixes.iter().map(|s| k(&p, s)).collect();
    let fwd = kv
        .scan(KeyRange::prefix(&p), Direction::Forward, 100)
        .await
        .unwrap();
    assert_eq!(keys(&fwd), expected, "forward scan must order bytewise");
    for (i, pair) in fwd.iter().enumerate() {
        assert_eq!(pair.value, [u8::try_from(i).unwrap()], "value of key {i}");
    }
    let rev = kv
        .scan(KeyRange::prefix(&p), Direction::Reverse, 100)
        .await
        .unwrap();
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(
        keys(&rev),
        reversed,
        "reverse scan must be the exact reverse"
    );

    // A prefix ending in 0xFF: its range end carries into the previous byte.
    let ff = kv
        .scan(KeyRange::prefix(&k(&p, b"\xff")), Direction::Forward, 100)
        .await
        .unwrap();
    assert_eq!(keys(&ff), expected[7..].to_vec(), "prefix ending in 0xFF");
}

pub async fn kv_range_bounds<H: Harness>(h: &H) {
    let (kv, _) = h.open().await;
    let p = ns("range");
    for c in b'a'..=b'j' {
        kv.put(&k(&p, &[c]), &[c]).await.unwrap();
    }
    let key = |c: u8| k(&p, &[c]);
    let span = |from: u8, to: u8| (from..=to).map(key).collect::<Vec<_>>();
    let scan = |start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, dir: Direction, limit: usize| {
        let kv = kv.clone();
        async move { keys(&kv.scan(KeyRange { start, end }, dir, limit).await.unwrap()) }
    };
    use Bound::{Excluded, Included, Unbounded};
    use Direction::{Forward, Reverse};

    type Case = (Bound<Vec<u8>>, Bound<Vec<u8>>, Vec<Vec<u8>>, &'static str);
    let cases: Vec<Case> = vec![
        (
            Included(key(b'c')),
            Included(key(b'f')),
            span(b'c', b'f'),
            "[c,f]",
        ),
        (
            Included(key(b'c')),
            Excluded(key(b'f')),
            span(b'c', b'e'),
            "[c,f)",
        ),
        (
            Excluded(key(b'c')),
            Included(key(b'f')),
            span(b'd', b'f'),
            "(c,f]",
        ),
        (
            Excluded(key(b'c')),
            Excluded(key(b'f')),
            span(b'd', b'e'),
            "(c,f)",
        ),
        // Bounds that fall between stored keys.
        (
            Included(k(&p, b"c\x00")),
            Excluded(k(&p, b"e\x00")),
            span(b'd', b'e'),
            "[c0,e0)",
        ),
        (
            Included(key(b'e')),
            Included(key(b'e')),
            vec![key(b'e')],
            "[e,e]",
        ),
        (Included(key(b'e')), Excluded(key(b'e')), vec![], "[e,e)"),
        (Excluded(key(b'e')), Included(key(b'e')), vec![], "(e,e]"),
        (
            Included(key(b'f')),
            Excluded(key(b'c')),
            vec![],
            "start after end",
        ),
        (
            Included(key(b'f')),
            Included(key(b'c')),
            vec![],
            "start after end, inclusive",
        ),
    ];
    for (start, end, expected, name) in cases {
        let fwd = scan(start.clone(), end.clone(), Forward, 100).await;
        assert_eq!(fwd, expected, "forward scan {name}");
        let rev = scan(start.clone(), end.clone(), Reverse, 100).await;
        let mut want = expected.clone();
        want.reverse();
        assert_eq!(rev, want, "reverse scan {name}");
        // Limits keep the first pairs in scan order.
        let fwd2 = scan(start.clone(), end.clone(), Forward, 2).await;
        assert_eq!(
            fwd2,
            expected.iter().take(2).cloned().collect::<Vec<_>>(),
            "forward {name} limit 2"
        );
        let rev2 = scan(start, end, Reverse, 2).await;
        assert_eq!(
            rev2,
            want.iter().take(2).cloned().collect::<Vec<_>>(),
            "reverse {name} limit 2"
        );
    }

    // Unbounded ends: with a limit smaller than the keys this case owns on that side, the
    // result cannot reach other tenants' keys.
    let fwd = scan(Included(key(b'h')), Unbounded, Forward, 3).await;
    assert_eq!(fwd, span(b'h', b'j'), "[h, +inf) forward limit 3");
    let rev = scan(Unbounded, Included(key(b'c')), Reverse, 3).await;
    assert_eq!(
        rev,
        vec![key(b'c'), key(b'b'), key(b'a')],
        "(-inf, c] reverse limit 3"
    );
    let rev = scan(Unbounded, Excluded(key(b'c')), Reverse, 2).await;
    assert_eq!(rev, vec![key(b'b'), key(b'a')], "(-inf, c) reverse limit 2");
    let fwd = scan(Excluded(key(b'h')), Unbounded, Forward, 2).await;
    assert_eq!(fwd, span(b'i', b'j'), "(h, +inf) forward limit 2");

    // Prefix ranges and limits.
    let all = kv.scan(KeyRange::prefix(&p), Forward, 100).await.unwrap();
    assert_eq!(keys(&all), span(b'a', b'j'), "prefix scan");
    let first3 = kv.scan(KeyRange::prefix(&p), Forward, 3).await.unwrap();
    assert_eq!(keys(&first3), span(b'a', b'c'), "prefix scan limit 3");
    let last3 = kv.scan(KeyRange::prefix(&p), Reverse, 3).await.unwrap();
    assert_eq!(
        keys(&last3),
        vec![key(b'j'), key(b'i'), key(b'h')],
        "reverse prefix limit 3"
    );
    let none = kv.scan(KeyRange::prefix(&p), Forward, 0).await.unwrap();
    assert!(none.is_empty(), "limit 0 returns nothing");
    let between = kv
        .scan(KeyRange::between(&key(b'b'), &key(b'd')), Forward, 100)
        .await
        .unwrap();
    assert_eq!(keys(&between), span(b'b', b'c'), "between is half-open");
    let missing = kv
        .scan(KeyRange::prefix(&k(&p, b"zz")), Forward, 100)
        .await
        .unwrap();
    assert!(missing.is_empty(), "prefix with no keys");
}

pub async fn kv_size_limits<H: Harness>(h: &H) {
    let (kv, _) = h.open().await;
    let p = ns("limits");
    let mut big_key = k(&p, b"");
    big_key.resize(MAX_KEY_LEN, b'k');
    kv.put(&big_key, b"v").await.unwrap();
    assert_eq!(kv.get(&big_key).await.unwrap().as_deref(), Some(&b"v"[..]));
    let mut too_long = big_key.clone();
    too_long.push(b'k');
    assert_invalid(kv.put(&too_long, b"v").await, "put key of MAX_KEY_LEN + 1");
    assert_invalid(
        kv.commit(Txn::new().put(too_long.clone(), b"v".to_vec()))
            .await,
        "txn put key of MAX_KEY_LEN + 1",
    );

    let big_value = vec![0xA5u8; MAX_VALUE_LEN];
    let vk = k(&p, b"value");
    kv.put(&vk, &big_value).await.unwrap();
    assert_eq!(
        kv.get(&vk).await.unwrap().map(|v| v.len()),
        Some(MAX_VALUE_LEN),
        "a MAX_VALUE_LEN value must round-trip"
    );
    assert_eq!(kv.get(&vk).await.unwrap().unwrap(), big_value);
    let too_big = vec![0u8; MAX_VALUE_LEN + 1];
    let vk2 = k(&p, b"value2");
    assert_invalid(kv.put(&vk2, &too_big).await, "value of MAX_VALUE_LEN + 1");
    // A rejected transaction writes nothing, not even its valid mutations.
    assert_invalid(
        kv.commit(
            Txn::new()
                .put(k(&p, b"ok"), b"v".to_vec())
                .put(vk2.clone(), too_big),
        )
        .await,
        "txn with one oversized value",
    );
    assert_eq!(
        kv.get(&k(&p, b"ok")).await.unwrap(),
        None,
        "rejected txn wrote"
    );
    assert_eq!(kv.get(&vk2).await.unwrap(), None);
}

pub async fn txn_all_or_nothing<H: Harness>(h: &H) {
    let (kv, _) = h.open().await;
    let p = ns("atomic");
    let (a, b, c) = (k(&p, b"a"), k(&p, b"b"), k(&p, b"c"));
    kv.put(&a, b"1").await.unwrap();

    for failing in 0..3 {
        let mut txn = Txn::new();
        for i in 0..3 {
            txn = if i == failing {
                txn.require_equals(a.clone(), b"wrong".to_vec())
            } else {
                txn.require_exists(a.clone())
            };
        }
        let out = kv
            .commit(txn.put(b.clone(), b"x".to_vec()).delete(a.clone()))
            .await
            .unwrap();
        assert_eq!(
            out,
            TxnOutcome::Conflict { condition: failing },
            "the failing condition's index must be reported"
        );
        assert_eq!(
            kv.get(&b).await.unwrap(),
            None,
            "conflicting txn must write nothing"
        );
        assert_eq!(
            kv.get(&a).await.unwrap().as_deref(),
            Some(&b"1"[..]),
            "nor delete"
        );
    }
    // With several failing conditions, the first one is reported.
    let out = kv
        .commit(
            Txn::new()
                .require_exists(a.clone())
                .require_absent(a.clone())
                .require_exists(c.clone())
                .put(c.clone(), b"x".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(out, TxnOutcome::Conflict { condition: 1 });

    let out = kv
        .commit(
            Txn::new()
                .require_equals(a.clone(), b"1".to_vec())
                .require_absent(b.clone())
                .put(b.clone(), b"2".to_vec())
                .put(c.clone(), b"3".to_vec())
                .delete(a.clone()),
        )
        .await
        .unwrap();
    assert_eq!(out, TxnOutcome::Committed);
    assert_eq!(kv.get(&a).await.unwrap(), None);
    assert_eq!(kv.get(&b).await.unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(kv.get(&c).await.unwrap().as_deref(), Some(&b"3"[..]));
}

pub async fn txn_condition_semantics<H: Harness>(h: &H) {
    let (kv, _) = h.open().await;
    let p = ns("conditions");
    let (present, empty, missing) = (k(&p, b"present"), k(&p, b"empty"), k(&p, b"missing"));
    kv.put(&present, b"v").await.unwrap();
    kv.put(&empty, b"").await.unwrap();

    let check = |txn: Txn, want: bool, what: &'static str| {
        let kv = kv.clone();
        async move {
            let out = kv.commit(txn).await.unwrap();
            assert_eq!(out.is_committed(), want, "{what}: got {out:?}");
        }
    };
    check(
        Txn::new().require_absent(missing.clone()),
        true,
        "Absent on missing",
    )
    .await;
    check(
        Txn::new().require_absent(present.clone()),
        false,
        "Absent on present",
    )
    .await;
    check(
        Txn::new().require_absent(empty.clone()),
        false,
        "Absent on empty value",
    )
    .await;
    check(
        Txn::new().require_exists(present.clone()),
        true,
        "Exists on present",
    )
    .await;
    check(
        Txn::new().require_exists(empty.clone()),
        true,
        "Exists on empty value",
    )
    .await;
    check(
        Txn::new().require_exists(missing.clone()),
        false,
        "Exists on missing",
    )
    .await;
    check(
        Txn::new().require_equals(present.clone(), b"v".to_vec()),
        true,
        "Equals same",
    )
    .await;
    check(
        Txn::new().require_equals(present.clone(), b"w".to_vec()),
        false,
        "Equals other",
    )
    .await;
    check(
        Txn::new().require_equals(present.clone(), b"v\0".to_vec()),
        false,
        "Equals longer",
    )
    .await;
    check(
        Txn::new().require_equals(present.clone(), Vec::new()),
        false,
        "Equals empty vs v",
    )
    .await;
    check(
        Txn::new().require_equals(empty.clone(), Vec::new()),
        true,
        "Equals empty",
    )
    .await;
    check(
        Txn::new().require_equals(missing.clone(), Vec::new()),
        false,
        "Equals on missing",
    )
    .await;
    check(
        Txn::new().require_unchanged(missing.clone(), None),
        true,
        "unchanged absent",
    )
    .await;
    check(
        Txn::new().require_unchanged(present.clone(), Some(b"v")),
        true,
        "unchanged v",
    )
    .await;
    check(Txn::new(), true, "empty transaction").await;
    // Conditions see the state before the transaction's own mutations.
    check(
        Txn::new()
            .require_absent(missing.clone())
            .put(missing.clone(), b"x".to_vec()),
        true,
        "Absent then put",
    )
    .await;
    check(
        Txn::new().require_absent(missing.clone()),
        false,
        "Absent after put",
    )
    .await;
}

pub async fn txn_later_mutation_wins<H: Harness>(h: &H) {
    let (kv, _) = h.open().await;
    let p = ns("order");
    let (a, b, c) = (k(&p, b"a"), k(&p, b"b"), k(&p, b"c"));
    kv.put(&c, b"old").await.unwrap();
    let txn = Txn::new()
        .put(a.clone(), b"1".to_vec())
        .put(a.clone(), b"2".to_vec())
        .put(b.clone(), b"1".to_vec())
        .delete(b.clone())
        .delete(c.clone())
        .put(c.clone(), b"new".to_vec());
    assert!(kv.commit(txn).await.unwrap().is_committed());
    assert_eq!(
        kv.get(&a).await.unwrap().as_deref(),
        Some(&b"2"[..]),
        "put, put"
    );
    assert_eq!(kv.get(&b).await.unwrap(), None, "put, delete");
    assert_eq!(
        kv.get(&c).await.unwrap().as_deref(),
        Some(&b"new"[..]),
        "delete, put"
    );
}

pub async fn txn_cas_race_has_one_winner<H: Harness>(h: &H) {
    const TASKS: usize = 16;
    let (kv, _) = h.open().await;
    let key = k(&ns("cas_race"), b"owner");
    kv.put(&key, b"nobody").await.unwrap();
    let barrier = Arc::new(Barrier::new(TASKS));
    let tasks = (0..TASKS).map(|i| {
        let (kv, key, barrier) = (kv.clone(), key.clone(), barrier.clone());
        tokio::spawn(async move {
            let seen = kv.get(&key).await.unwrap().unwrap();
            barrier.wait().await;
            let out = kv
                .commit(
                    Txn::new()
                        .require_equals(key.clone(), seen)
                        .put(key.clone(), format!("task-{i}").into_bytes()),
                )
                .await
                .unwrap();
            (i, out)
        })
    });
    let results: Vec<(usize, TxnOutcome)> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let winners: Vec<usize> = results
        .iter()
        .filter(|(_, o)| o.is_committed())
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one CAS from the same value must win: {results:?}"
    );
    for (_, out) in &results {
        if !out.is_committed() {
            assert_eq!(*out, TxnOutcome::Conflict { condition: 0 });
        }
    }
    assert_eq!(
        kv.get(&key).await.unwrap().unwrap(),
        format!("task-{}", winners[0]).into_bytes(),
        "the stored value must be the winner's"
    );
}

pub async fn txn_optimistic_counter<H: Harness>(h: &H) {
    const TASKS: u64 = 8;
    const INCREMENTS: u64 = 25;
    let (kv, _) = h.open().await;
    let key = k(&ns("counter"), b"n");
    let tasks = (0..TASKS).map(|_| {
        let (kv, key) = (kv.clone(), key.clone());
        tokio::spawn(async move {
            for _ in 0..INCREMENTS {
                loop {
                    let seen = kv.get(&key).await.unwrap();
                    let n = seen
                        .as_deref()
                        .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
                    let txn = Txn::new()
                        .require_unchanged(key.clone(), seen.as_deref())
                        .put(key.clone(), (n + 1).to_be_bytes().to_vec());
                    if kv.commit(txn).await.unwrap().is_committed() {
                        break;
                    }
                }
            }
        })
    });
    for r in join_all(tasks).await {
        r.unwrap();
    }
    let v = kv.get(&key).await.unwrap().unwrap();
    assert_eq!(
        u64::from_be_bytes(v.as_slice().try_into().unwrap()),
        TASKS * INCREMENTS,
        "optimistic increments were lost or duplicated"
    );
}

pub async fn log_sequences<H: Harness>(h: &H) {
    let (_, log) = h.open().await;
    let part = ns("log_seq");
    let empty = log.stats(&part).await.unwrap();
    assert_eq!(empty.len, 0, "fresh partition is empty");
    assert!(empty.next_seq >= 1, "next_seq of a fresh partition");
    let first = log.append(&part, vec![entry(b"a", HOUR)]).await.unwrap();
    assert_eq!(first, vec![1], "sequences start at 1");
    let more = log
        .append(
            &part,
            vec![entry(b"b", HOUR), entry(b"c", HOUR), entry(b"d", HOUR)],
        )
        .await
        .unwrap();
    assert_eq!(more.len(), 3, "one sequence per entry");
    let all: Vec<u64> = first.iter().chain(&more).copied().collect();
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {all:?}"
    );
    assert!(
        log.append(&part, Vec::new()).await.unwrap().is_empty(),
        "empty append"
    );
    let stats = log.stats(&part).await.unwrap();
    assert_eq!(stats.len, 4);
    assert!(
        stats.next_seq > all[3],
        "next_seq must exceed the last assigned"
    );

    // Deleting everything must not let sequences be reused.
    log.delete(&part, &[all[3]]).await.unwrap();
    let after_delete = log.append(&part, vec![entry(b"e", HOUR)]).await.unwrap()[0];
    assert!(after_delete > all[3], "seq reused after delete");
    log.delete_through(&part, after_delete).await.unwrap();
    assert_eq!(log.stats(&part).await.unwrap().len, 0);
    let after_through = log.append(&part, vec![entry(b"f", HOUR)]).await.unwrap()[0];
    assert!(
        after_through > after_delete,
        "seq reused after delete_through"
    );
    let read = log.read(&part, 0, 10).await.unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(
        (read[0].seq, read[0].payload.as_slice()),
        (after_through, &b"f"[..])
    );
}

pub async fn log_concurrent_appends<H: Harness>(h: &H) {
    const TASKS: usize = 8;
    const APPENDS: usize = 10;
    let (_, log) = h.open().await;
    let part = ns("log_concurrent");
    let tasks = (0..TASKS).map(|t| {
        let (log, part) = (log.clone(), part.clone());
        tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..APPENDS {
                let payload = format!("{t}/{i}").into_bytes();
                let seqs = log
                    .append(&part, vec![entry(&payload, HOUR)])
                    .await
                    .unwrap();
                mine.push((seqs[0], payload));
            }
            mine
        })
    });
    let mut all = Vec::new();
    for r in join_all(tasks).await {
        let mine = r.unwrap();
        assert!(
            mine.windows(2).all(|w| w[0].0 < w[1].0),
            "one appender's sequences must increase"
        );
        all.extend(mine);
    }
    all.sort();
    assert!(
        all.windows(2).all(|w| w[0].0 < w[1].0),
        "sequences must be distinct"
    );
    let read = log.read(&part, 1, 1000).await.unwrap();
    let got: Vec<(u64, Vec<u8>)> = read.into_iter().map(|e| (e.seq, e.payload)).collect();
    assert_eq!(got, all, "read must return every append, in sequence order");
    assert_eq!(
        log.stats(&part).await.unwrap().len,
        (TASKS * APPENDS) as u64
    );
}

pub async fn log_read_cursor<H: Harness>(h: &H) {
    let (_, log) = h.open().await;
    let part = ns("log_cursor");
    let before = now_ms();
    let entries = (0..10u8).map(|i| entry(&[i], HOUR)).collect();
    let seqs = log.append(&part, entries).await.unwrap();
    let after = now_ms();

    let mut cursor = 0;
    let mut pages = Vec::new();
    loop {
        let page = log.read(&part, cursor, 3).await.unwrap();
        assert!(page.len() <= 3, "limit must be honoured");
        let Some(last) = page.last() else { break };
        cursor = last.seq + 1;
        pages.push(page.len());
        for e in &page {
            let i = seqs.iter().position(|s| *s == e.seq).expect("unknown seq");
            assert_eq!(
                e.payload,
                [u8::try_from(i).unwrap()],
                "payload of seq {}",
                e.seq
            );
            assert!(
                e.appended_at_ms + 5_000 >= before && e.appended_at_ms <= after + 5_000,
                "appended_at_ms must be the append's wall-clock time"
            );
            let ttl = e.expires_at_ms.saturating_sub(e.appended_at_ms);
            assert!(
                ttl.abs_diff(3_600_000) <= 1_000,
                "expires_at_ms - appended_at_ms must be the TTL, got {ttl} ms"
            );
        }
    }
    assert_eq!(pages, vec![3, 3, 3, 1], "paging through 10 entries by 3");
    let from_mid = log.read(&part, seqs[4], 100).await.unwrap();
    assert_eq!(
        from_mid.iter().map(|e| e.seq).collect::<Vec<_>>(),
        seqs[4..].to_vec(),
        "read from a seq includes it"
    );
    assert!(
        log.read(&part, seqs[9] + 1, 100).await.unwrap().is_empty(),
        "read past end"
    );
    assert!(log.read(&part, 0, 0).await.unwrap().is_empty(), "limit 0");
    assert!(
        log.read(&ns("log_cursor_none"), 0, 10)
            .await
            .unwrap()
            .is_empty(),
        "unknown partition"
    );
}

pub async fn log_delete<H: Harness>(h: &H) {
    let (_, log) = h.open().await;
    let part = ns("log_delete");
    let seqs = log
        .append(&part, (0..10u8).map(|i| entry(&[i], HOUR)).collect())
        .await
        .unwrap();
    let live = |log: Arc<dyn AppendLog>, part: Vec<u8>| async move {
        log.read(&part, 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect::<Vec<_>>()
    };
    log.delete(&part, &[seqs[1], seqs[5], seqs[5], seqs[9] + 100])
        .await
        .unwrap();
    let want: Vec<u64> = [0, 2, 3, 4, 6, 7, 8, 9].iter().map(|&i| seqs[i]).collect();
    assert_eq!(
        live(log.clone(), part.clone()).await,
        want,
        "delete by seqs"
    );
    assert_eq!(log.stats(&part).await.unwrap().len, 8, "len after delete");
    log.delete(&part, &[]).await.unwrap();

    log.delete_through(&part, seqs[3]).await.unwrap();
    let want: Vec<u64> = [4, 6, 7, 8, 9].iter().map(|&i| seqs[i]).collect();
    assert_eq!(
        live(log.clone(), part.clone()).await,
        want,
        "delete_through"
    );
    assert_eq!(
        log.stats(&part).await.unwrap().len,
        5,
        "len after delete_through"
    );
    log.delete_through(&part, 0).await.unwrap();
    assert_eq!(
        live(log.clone(), part.clone()).await.len(),
        5,
        "delete_through(0) is a no-op"
    );
    log.delete_through(&part, u64::MAX).await.unwrap();
    assert!(
        live(log.clone(), part.clone()).await.is_empty(),
        "delete_through(MAX)"
    );
    let stats = log.stats(&part).await.unwrap();
    assert_eq!(stats.len, 0);
    assert!(
        stats.next_seq > seqs[9],
        "next_seq survives deleting everything"
    );
}

pub async fn log_partition_isolation<H: Harness>(h: &H) {
    let (_, log) = h.open().await;
    let base = ns("log_isolation");
    // Names that are prefixes of each other must not bleed into one another.
    let parts = [
        k(&base, b"p"),
        k(&base, b"pp"),
        k(&base, b"p\x00"),
        k(&base, b"q"),
    ];
    for (i, part) in parts.iter().enumerate() {
        for n in 0..=i {
            let seqs = log
                .append(part, vec![entry(format!("{i}/{n}").as_bytes(), HOUR)])
                .await
                .unwrap();
            if n == 0 {
                assert_eq!(seqs, vec![1], "each partition's sequences start at 1");
            }
        }
    }
    for (i, part) in parts.iter().enumerate() {
        let got = log.read(part, 0, 100).await.unwrap();
        let want: Vec<Vec<u8>> = (0..=i).map(|n| format!("{i}/{n}").into_bytes()).collect();
        assert_eq!(
            got.into_iter().map(|e| e.payload).collect::<Vec<_>>(),
            want,
            "partition {i} must hold only its own entries"
        );
        assert_eq!(log.stats(part).await.unwrap().len, (i + 1) as u64);
    }
    log.delete_through(&parts[0], u64::MAX).await.unwrap();
    log.delete(&parts[1], &[1]).await.unwrap();
    assert!(log.read(&parts[0], 0, 100).await.unwrap().is_empty());
    assert_eq!(log.read(&parts[1], 0, 100).await.unwrap().len(), 1);
    assert_eq!(
        log.read(&parts[2], 0, 100).await.unwrap().len(),
        3,
        "untouched partition"
    );
    assert_eq!(
        log.read(&parts[3], 0, 100).await.unwrap().len(),
        4,
        "untouched partition"
    );
}

pub async fn log_invalid_requests<H: Harness>(h: &H) {
    let (_, log) = h.open().await;
    assert_invalid(
        log.append(b"", vec![entry(b"x", HOUR)]).await,
        "empty partition name",
    );
    let mut long = ns("log_invalid");
    long.resize(MAX_KEY_LEN + 1, b'p');
    assert_invalid(
        log.append(&long, vec![entry(b"x", HOUR)]).await,
        "partition name too long",
    );
    let part = ns("log_invalid");
    assert_invalid(
        log.append(
            &part,
            vec![entry(b"ok", HOUR), entry(&vec![0; MAX_VALUE_LEN + 1], HOUR)],
        )
        .await,
        "payload of MAX_VALUE_LEN + 1",
    );
    assert!(
        log.read(&part, 0, 10).await.unwrap().is_empty(),
        "rejected append wrote"
    );
}

pub async fn log_ttl_expiry<H: Harness>(h: &H) {
    let (_, log) = h.open().await;
    let part = ns("log_ttl");
    let seqs = log
        .append(
            &part,
            vec![
                entry(b"short", Duration::from_secs(1)),
                entry(b"long", HOUR),
                entry(b"short2", Duration::from_secs(1)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        log.read(&part, 0, 10).await.unwrap().len(),
        3,
        "nothing expired yet"
    );
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let got = log.read(&part, 0, 10).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|e| (e.seq, e.payload.clone()))
            .collect::<Vec<_>>(),
        vec![(seqs[1], b"long".to_vec())],
        "expired entries must not be returned, live neighbours must"
    );
    let limited = log.read(&part, 0, 1).await.unwrap();
    assert_eq!(
        limited.len(),
        1,
        "expired entries must not use up the limit"
    );
    let next = log
        .append(&part, vec![entry(b"later", HOUR)])
        .await
        .unwrap()[0];
    assert!(next > seqs[2], "expiry must not let sequences be reused");
}

pub async fn durability_across_reopen<H: Harness>(h: &H) {
    let p = ns("durable");
    let part = k(&p, b"log");
    let empty_part = k(&p, b"log-emptied");
    let (last_seq, emptied_seq) = {
        let (kv, log) = h.open().await;
        // Concurrent writers, so batched commits are covered too.
        let writes = (0..32u32).map(|i| {
            let (kv, key) = (kv.clone(), k(&p, &i.to_be_bytes()));
            tokio::spawn(async move { kv.put(&key, &i.to_le_bytes()).await.unwrap() })
        });
        for r in join_all(writes).await {
            r.unwrap();
        }
        kv.delete(&k(&p, &0u32.to_be_bytes())).await.unwrap();
        let mut last = 0;
        for i in 0..5u8 {
            last = log.append(&part, vec![entry(&[i], HOUR)]).await.unwrap()[0];
        }
        log.delete(&part, &[1]).await.unwrap();
        let emptied = log
            .append(&empty_part, vec![entry(b"x", HOUR)])
            .await
            .unwrap()[0];
        log.delete_through(&empty_part, u64::MAX).await.unwrap();
        (last, emptied)
    };
    let (kv, log) = h.open().await;
    let all = kv
        .scan(KeyRange::prefix(&p), Direction::Forward, 100)
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        31,
        "every acknowledged put (and the delete) must survive reopen"
    );
    for (n, pair) in all.iter().enumerate() {
        let i = u32::try_from(n + 1).unwrap();
        assert_eq!(pair.key, k(&p, &i.to_be_bytes()));
        assert_eq!(pair.value, i.to_le_bytes(), "value of key {i} after reopen");
    }
    let entries = log.read(&part, 0, 100).await.unwrap();
    assert_eq!(
        entries.iter().map(|e| e.payload[0]).collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "every acknowledged append (minus the deleted one) must survive reopen"
    );
    assert_eq!(log.stats(&part).await.unwrap().len, 4);
    let next = log.append(&part, vec![entry(b"n", HOUR)]).await.unwrap()[0];
    assert!(next > last_seq, "sequences must continue after reopen");
    let next = log
        .append(&empty_part, vec![entry(b"n", HOUR)])
        .await
        .unwrap()[0];
    assert!(
        next > emptied_seq,
        "sequences must continue after reopen even when the partition was emptied"
    );
}
