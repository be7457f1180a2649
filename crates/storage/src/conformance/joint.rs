//! Cases for [`crate::JointStore`]: all or nothing across the KV store and the log, records
//! built from the real sequences, one winner of a race, durability across reopen.

use futures::future::join_all;

use super::harness::{HOUR, Joint, JointHarness, assert_invalid, entry, k, ns};
use crate::{JointOutcome, JointTxn, MAX_VALUE_LEN, SeqRecord, Txn};

/// A record listing the sequences, one byte each (the cases append few entries).
fn seq_record() -> SeqRecord {
    Box::new(|seqs: &[Vec<u64>]| {
        seqs.iter()
            .flatten()
            .map(|&s| u8::try_from(s).unwrap())
            .collect()
    })
}

fn joint(txn: Txn, appends: Vec<(Vec<u8>, &[&[u8]])>, record: Option<Vec<u8>>) -> JointTxn {
    JointTxn {
        txn,
        updates: Vec::new(),
        appends: appends
            .into_iter()
            .map(|(p, payloads)| (p, payloads.iter().map(|b| entry(b, HOUR)).collect()))
            .collect(),
        record: record.map(|key| (key, seq_record())),
    }
}

pub async fn joint_all_or_nothing<H: JointHarness + ?Sized>(h: &H) {
    let Joint { joint: j, kv, log } = h.open_joint().await;
    let p = ns("joint_atomic");
    let (guard, put, rec) = (k(&p, b"guard"), k(&p, b"put"), k(&p, b"rec"));
    let (q1, q2) = (k(&p, b"q1"), k(&p, b"q2"));
    kv.put(&guard, b"1").await.unwrap();

    let refused = joint(
        Txn::new()
            .require_exists(guard.clone())
            .require_equals(guard.clone(), b"2".to_vec())
            .put(put.clone(), b"x".to_vec()),
        vec![(q1.clone(), &[b"a"]), (q2.clone(), &[b"b"])],
        Some(rec.clone()),
    );
    assert_eq!(
        j.commit_joint(refused).await.unwrap(),
        JointOutcome::Conflict { condition: 1 },
        "the failing condition's index must be reported"
    );
    assert_eq!(kv.get(&put).await.unwrap(), None, "a conflict puts nothing");
    assert_eq!(kv.get(&rec).await.unwrap(), None, "nor the record");
    for q in [&q1, &q2] {
        assert!(log.read(q, 0, 10).await.unwrap().is_empty(), "nor appends");
    }

    let accepted = joint(
        Txn::new()
            .require_equals(guard.clone(), b"1".to_vec())
            .put(put.clone(), b"x".to_vec())
            .delete(guard.clone()),
        vec![(q1.clone(), &[b"a", b"b"]), (q2.clone(), &[b"c"])],
        Some(rec.clone()),
    );
    let JointOutcome::Committed(seqs) = j.commit_joint(accepted).await.unwrap() else {
        panic!("a joint transaction whose conditions hold must commit");
    };
    assert_eq!(seqs, vec![vec![1, 2], vec![1]], "log sequences start at 1");
    assert_eq!(kv.get(&guard).await.unwrap(), None);
    assert_eq!(kv.get(&put).await.unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(
        kv.get(&rec).await.unwrap().as_deref(),
        Some(&[1, 2, 1][..]),
        "the record is built from the sequences the entries received"
    );
    let read = log.read(&q1, 0, 10).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
    assert_eq!(log.stats(&q2).await.unwrap().len, 1);
}

pub async fn joint_record_follows_earlier_appends<H: JointHarness + ?Sized>(h: &H) {
    let Joint { joint: j, kv, log } = h.open_joint().await;
    let p = ns("joint_seqs");
    let (q, rec) = (k(&p, b"q"), k(&p, b"rec"));
    log.append(&q, vec![entry(b"1", HOUR), entry(b"2", HOUR)])
        .await
        .unwrap();
    // The same partition twice in one transaction: the second append follows the first.
    let t = joint(
        Txn::new(),
        vec![(q.clone(), &[b"3"]), (q.clone(), &[b"4", b"5"])],
        Some(rec.clone()),
    );
    assert_eq!(
        j.commit_joint(t).await.unwrap(),
        JointOutcome::Committed(vec![vec![3], vec![4, 5]])
    );
    assert_eq!(kv.get(&rec).await.unwrap().as_deref(), Some(&[3, 4, 5][..]));
    let next = log.append(&q, vec![entry(b"6", HOUR)]).await.unwrap();
    assert_eq!(next, vec![6], "plain appends continue after joint ones");
}

/// Eight joint transactions incrementing one counter by an update all commit: none conflicts,
/// none sees a stale value. A refusing update writes nothing of its transaction.
pub async fn joint_updates<H: JointHarness + ?Sized>(h: &H) {
    let Joint { joint: j, kv, log } = h.open_joint().await;
    let p = ns("joint_updates");
    let (counter, q, put) = (k(&p, b"counter"), k(&p, b"q"), k(&p, b"put"));
    let increment = |limit: u8| -> crate::Update {
        Box::new(move |current: Option<&[u8]>| {
            let n = current.map_or(0, |v| v[0]);
            (n < limit).then(|| vec![n + 1])
        })
    };
    let adders = (0..8).map(|_| {
        let j = j.clone();
        let t = JointTxn {
            txn: Txn::new(),
            updates: vec![(counter.clone(), increment(u8::MAX))],
            appends: vec![(q.clone(), vec![entry(b"e", HOUR)])],
            record: None,
        };
        async move { j.commit_joint(t).await.unwrap() }
    });
    for outcome in join_all(adders).await {
        assert!(matches!(outcome, JointOutcome::Committed(_)), "{outcome:?}");
    }
    assert_eq!(kv.get(&counter).await.unwrap(), Some(vec![8]));
    assert_eq!(log.stats(&q).await.unwrap().len, 8);

    let refused = JointTxn {
        txn: Txn::new().put(put.clone(), b"x".to_vec()),
        updates: vec![
            (k(&p, b"other"), increment(u8::MAX)),
            (counter.clone(), increment(8)),
        ],
        appends: vec![(q.clone(), vec![entry(b"e", HOUR)])],
        record: Some((k(&p, b"rec"), seq_record())),
    };
    assert_eq!(
        j.commit_joint(refused).await.unwrap(),
        JointOutcome::Refused { update: 1 },
        "the refusing update's index must be reported"
    );
    assert_eq!(kv.get(&counter).await.unwrap(), Some(vec![8]));
    assert_eq!(
        kv.get(&k(&p, b"other")).await.unwrap(),
        None,
        "no update of it lands"
    );
    assert_eq!(kv.get(&put).await.unwrap(), None, "nor its mutations");
    assert_eq!(
        kv.get(&k(&p, b"rec")).await.unwrap(),
        None,
        "nor its record"
    );
    assert_eq!(log.stats(&q).await.unwrap().len, 8, "nor its appends");
}

pub async fn joint_size_limits<H: JointHarness + ?Sized>(h: &H) {
    let Joint { joint: j, kv, log } = h.open_joint().await;
    let p = ns("joint_limits");
    let (q, put, rec) = (k(&p, b"q"), k(&p, b"put"), k(&p, b"rec"));
    let huge = vec![0u8; MAX_VALUE_LEN + 1];
    let oversized_entry = joint(
        Txn::new().put(put.clone(), b"x".to_vec()),
        vec![(q.clone(), &[b"ok", &huge])],
        None,
    );
    assert_invalid(j.commit_joint(oversized_entry).await, "an oversized entry");
    let oversized_record = JointTxn {
        txn: Txn::new().put(put.clone(), b"x".to_vec()),
        updates: Vec::new(),
        appends: vec![(q.clone(), vec![entry(b"ok", HOUR)])],
        record: Some((rec.clone(), Box::new(move |_: &[Vec<u64>]| huge.clone()))),
    };
    assert_invalid(
        j.commit_joint(oversized_record).await,
        "an oversized record",
    );
    let empty_partition = joint(Txn::new(), vec![(Vec::new(), &[b"x"])], None);
    assert_invalid(j.commit_joint(empty_partition).await, "an empty partition");
    assert_eq!(
        kv.get(&put).await.unwrap(),
        None,
        "a refused request puts nothing"
    );
    assert_eq!(kv.get(&rec).await.unwrap(), None);
    assert!(log.read(&q, 0, 10).await.unwrap().is_empty(), "nor appends");
}

/// Eight joint transactions with the same precondition: one commits, its appends and record
/// alone are stored.
pub async fn joint_race_has_one_winner<H: JointHarness + ?Sized>(h: &H) {
    let Joint { joint: j, kv, log } = h.open_joint().await;
    let p = ns("joint_race");
    let (id, q) = (k(&p, b"id"), k(&p, b"q"));
    let racers = (0..8u8).map(|i| {
        let (j, id, q) = (j.clone(), id.clone(), q.clone());
        async move {
            let t = JointTxn {
                txn: Txn::new().require_absent(id.clone()),
                updates: Vec::new(),
                appends: vec![(q, vec![entry(&[i], HOUR)])],
                record: Some((id, Box::new(move |_: &[Vec<u64>]| vec![i]))),
            };
            (i, j.commit_joint(t).await.unwrap())
        }
    });
    let results = join_all(racers).await;
    let winners: Vec<u8> = results
        .iter()
        .filter(|(_, o)| matches!(o, JointOutcome::Committed(_)))
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one racer commits: {results:?}");
    assert_eq!(kv.get(&id).await.unwrap(), Some(vec![winners[0]]));
    let entries = log.read(&q, 0, 100).await.unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|e| e.payload.clone())
            .collect::<Vec<_>>(),
        vec![vec![winners[0]]],
        "the losers appended nothing"
    );
}

pub async fn joint_durability_across_reopen<H: JointHarness + ?Sized>(h: &H) {
    let p = ns("joint_durable");
    let (q, rec) = (k(&p, b"q"), k(&p, b"rec"));
    {
        let Joint { joint: j, .. } = h.open_joint().await;
        let t = joint(
            Txn::new(),
            vec![(q.clone(), &[b"a", b"b"])],
            Some(rec.clone()),
        );
        assert!(matches!(
            j.commit_joint(t).await.unwrap(),
            JointOutcome::Committed(_)
        ));
    }
    let Joint { kv, log, .. } = h.open_joint().await;
    assert_eq!(kv.get(&rec).await.unwrap().as_deref(), Some(&[1, 2][..]));
    assert_eq!(log.read(&q, 0, 10).await.unwrap().len(), 2);
    let next = log.append(&q, vec![entry(b"c", HOUR)]).await.unwrap();
    assert_eq!(next, vec![3], "sequences continue after reopen");
}
