//! Cases for [`crate::KvStore`], durability across reopen included.

use std::ops::Bound;
use std::sync::Arc;

use futures::future::join_all;
use tokio::sync::Barrier;

use super::harness::{KvHarness, assert_invalid, k, keys, ns};
use crate::{Direction, KeyRange, MAX_KEY_LEN, MAX_VALUE_LEN, Txn, TxnOutcome};

pub async fn kv_get_put_delete<H: KvHarness + ?Sized>(h: &H) {
    let kv = h.open_kv().await;
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

pub async fn kv_bytewise_ordering<H: KvHarness + ?Sized>(h: &H) {
    let kv = h.open_kv().await;
    let p = ns("ordering");
    let suffixes: [&[u8]; 10] = [
        b"",
        b"\x00",
        b"\x00\x00",
        b"\x01",
        b"a",
        b"\x7f",
        b"\x80",
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

pub async fn kv_range_bounds<H: KvHarness + ?Sized>(h: &H) {
    let kv = h.open_kv().await;
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

pub async fn kv_size_limits<H: KvHarness + ?Sized>(h: &H) {
    let kv = h.open_kv().await;
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

pub async fn txn_all_or_nothing<H: KvHarness + ?Sized>(h: &H) {
    let kv = h.open_kv().await;
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

pub async fn txn_condition_semantics<H: KvHarness + ?Sized>(h: &H) {
    let kv = h.open_kv().await;
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

pub async fn txn_later_mutation_wins<H: KvHarness + ?Sized>(h: &H) {
    let kv = h.open_kv().await;
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

pub async fn txn_cas_race_has_one_winner<H: KvHarness + ?Sized>(h: &H) {
    const TASKS: usize = 16;
    let kv = h.open_kv().await;
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

pub async fn txn_optimistic_counter<H: KvHarness + ?Sized>(h: &H) {
    const TASKS: u64 = 8;
    const INCREMENTS: u64 = 25;
    let kv = h.open_kv().await;
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

/// Drops every handle and reopens: every acknowledged put and delete, including those of
/// concurrent writers (so batched commits are covered too), must survive.
pub async fn kv_durability_across_reopen<H: KvHarness + ?Sized>(h: &H) {
    let p = ns("kv_durable");
    {
        let kv = h.open_kv().await;
        // Concurrent writers, so batched commits are covered too.
        let writes = (0..32u32).map(|i| {
            let (kv, key) = (kv.clone(), k(&p, &i.to_be_bytes()));
            tokio::spawn(async move { kv.put(&key, &i.to_le_bytes()).await.unwrap() })
        });
        for r in join_all(writes).await {
            r.unwrap();
        }
        kv.delete(&k(&p, &0u32.to_be_bytes())).await.unwrap();
    }
    let kv = h.open_kv().await;
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
}

/// Two instances on one backend: what one writes, the other reads (get and scan), and back.
pub async fn kv_instances_see_each_other<H: KvHarness + ?Sized>(h: &H) {
    let a = h.open_kv().await;
    let b = h.open_kv_instance(&a).await;
    let p = ns("instances_visible");
    let (x, y) = (k(&p, b"x"), k(&p, b"y"));
    a.put(&x, b"from-a").await.unwrap();
    assert_eq!(
        b.get(&x).await.unwrap().as_deref(),
        Some(&b"from-a"[..]),
        "a put through one instance must be visible to a get through the other"
    );
    b.put(&y, b"from-b").await.unwrap();
    let seen = a
        .scan(KeyRange::prefix(&p), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(
        keys(&seen),
        vec![x.clone(), y.clone()],
        "a scan through one instance must see the other's puts"
    );
    let seen = b
        .scan(KeyRange::prefix(&p), Direction::Reverse, 10)
        .await
        .unwrap();
    assert_eq!(
        keys(&seen),
        vec![y.clone(), x.clone()],
        "reverse, other instance"
    );
    let out = b
        .commit(
            Txn::new()
                .require_equals(x.clone(), b"from-a".to_vec())
                .put(x.clone(), b"moved-by-b".to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(out, TxnOutcome::Committed, "condition on the other's write");
    assert_eq!(
        a.get(&x).await.unwrap().as_deref(),
        Some(&b"moved-by-b"[..])
    );
    a.delete(&y).await.unwrap();
    assert_eq!(b.get(&y).await.unwrap(), None, "a delete must be visible");
}

/// Conflicting transactions from two instances, on one key and on two keys taken in opposite
/// orders: exactly one commits, every other one reports a conflict and writes nothing.
pub async fn txn_instances_race_has_one_winner<H: KvHarness + ?Sized>(h: &H) {
    const TASKS: usize = 8;
    let a = h.open_kv().await;
    let b = h.open_kv_instance(&a).await;
    let p = ns("instances_race");
    let (k1, k2) = (k(&p, b"1"), k(&p, b"2"));
    a.put(&k1, b"start").await.unwrap();
    b.put(&k2, b"start").await.unwrap();
    for round in 0..3 {
        let barrier = Arc::new(Barrier::new(TASKS));
        let tasks = (0..TASKS).map(|i| {
            let kv = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (k1, k2, barrier) = (k1.clone(), k2.clone(), barrier.clone());
            tokio::spawn(async move {
                let v1 = kv.get(&k1).await.unwrap().unwrap();
                let v2 = kv.get(&k2).await.unwrap().unwrap();
                let mine = format!("round-{round}-task-{i}").into_bytes();
                // Even tasks take the keys in one order, odd ones in the other; round 0
                // touches only one key.
                let txn = match (round, i % 2) {
                    (0, _) => Txn::new()
                        .require_equals(k1.clone(), v1)
                        .put(k1.clone(), mine),
                    (_, 0) => Txn::new()
                        .require_equals(k1.clone(), v1)
                        .require_equals(k2.clone(), v2)
                        .put(k1.clone(), mine.clone())
                        .put(k2.clone(), mine),
                    _ => Txn::new()
                        .require_equals(k2.clone(), v2)
                        .require_equals(k1.clone(), v1)
                        .put(k2.clone(), mine.clone())
                        .put(k1.clone(), mine),
                };
                barrier.wait().await;
                (i, kv.commit(txn).await.unwrap())
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
            "round {round}: exactly one of the racing transactions from two instances must \
             commit: {results:?}"
        );
        let want = format!("round-{round}-task-{}", winners[0]).into_bytes();
        assert_eq!(
            a.get(&k1).await.unwrap().unwrap(),
            want,
            "round {round}: k1"
        );
        if round > 0 {
            assert_eq!(
                b.get(&k2).await.unwrap().unwrap(),
                want,
                "round {round}: k2"
            );
        }
    }
}
