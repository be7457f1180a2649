//! Cases for [`crate::AppendLog`], durability across reopen included.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;

use super::harness::{HOUR, LogHarness, assert_invalid, entry, k, now_ms, ns};
use crate::{AppendLog, MAX_KEY_LEN, MAX_VALUE_LEN};

pub async fn log_sequences<H: LogHarness + ?Sized>(h: &H) {
    let log = h.open_log().await;
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

pub async fn log_concurrent_appends<H: LogHarness + ?Sized>(h: &H) {
    const TASKS: usize = 8;
    const APPENDS: usize = 10;
    let log = h.open_log().await;
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

pub async fn log_read_cursor<H: LogHarness + ?Sized>(h: &H) {
    let log = h.open_log().await;
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

pub async fn log_delete<H: LogHarness + ?Sized>(h: &H) {
    let log = h.open_log().await;
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

pub async fn log_partition_isolation<H: LogHarness + ?Sized>(h: &H) {
    let log = h.open_log().await;
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

pub async fn log_invalid_requests<H: LogHarness + ?Sized>(h: &H) {
    let log = h.open_log().await;
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

pub async fn log_ttl_expiry<H: LogHarness + ?Sized>(h: &H) {
    let log = h.open_log().await;
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

/// Drops every handle and reopens: acknowledged appends and deletes must survive, and
/// sequences must continue, even in a partition that was emptied.
pub async fn log_durability_across_reopen<H: LogHarness + ?Sized>(h: &H) {
    let p = ns("log_durable");
    let part = k(&p, b"log");
    let empty_part = k(&p, b"log-emptied");
    let (last_seq, emptied_seq) = {
        let log = h.open_log().await;
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
    let log = h.open_log().await;
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

/// Two instances append concurrently to one partition while a reader on one of them follows
/// with a cursor (`read(last seen + 1)`): the reader sees every entry exactly once, in strictly
/// increasing order, and sequences are unique across the instances.
pub async fn log_instances_append_while_cursor_follows<H: LogHarness + ?Sized>(h: &H) {
    const APPENDERS_PER_INSTANCE: usize = 2;
    const APPENDS: usize = 30;
    let a = h.open_log().await;
    let b = h.open_log_instance(&a).await;
    let part = ns("log_instances_cursor");
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let appenders: Vec<_> = (0..2 * APPENDERS_PER_INSTANCE)
        .map(|t| {
            let log = if t % 2 == 0 { a.clone() } else { b.clone() };
            let (part, done) = (part.clone(), done.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for i in 0..APPENDS {
                    // Batches of 1 to 3 entries, so multi-entry appends interleave too.
                    let batch: Vec<_> = (0..1 + (i % 3))
                        .map(|j| entry(format!("{t}/{i}/{j}").as_bytes(), HOUR))
                        .collect();
                    let payloads: Vec<Vec<u8>> = batch.iter().map(|e| e.payload.clone()).collect();
                    let seqs = log.append(&part, batch).await.unwrap();
                    assert_eq!(seqs.len(), payloads.len());
                    mine.extend(seqs.into_iter().zip(payloads));
                }
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                mine
            })
        })
        .collect();
    let reader = {
        let (log, part, done) = (b.clone(), part.clone(), done.clone());
        tokio::spawn(async move {
            let mut seen: Vec<(u64, Vec<u8>)> = Vec::new();
            let mut cursor = 0;
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            loop {
                let finished =
                    done.load(std::sync::atomic::Ordering::SeqCst) == 2 * APPENDERS_PER_INSTANCE;
                let page = log.read(&part, cursor, 7).await.unwrap();
                for e in &page {
                    assert!(
                        e.seq >= cursor,
                        "read({cursor}) returned seq {} (seen twice)",
                        e.seq
                    );
                    cursor = e.seq + 1;
                    seen.push((e.seq, e.payload.clone()));
                }
                // Drained after every appender returned: nothing more can become visible.
                if page.is_empty() && finished {
                    return seen;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "reader did not finish"
                );
                if page.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        })
    };
    let mut appended = Vec::new();
    for r in join_all(appenders).await {
        let mine = r.unwrap();
        assert!(
            mine.windows(2).all(|w| w[0].0 < w[1].0),
            "one appender's sequences must increase"
        );
        appended.extend(mine);
    }
    appended.sort();
    assert!(
        appended.windows(2).all(|w| w[0].0 < w[1].0),
        "sequences from two instances must be distinct"
    );
    let seen = reader.await.unwrap();
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "the cursor reader must see strictly increasing sequences"
    );
    assert_eq!(
        seen.len(),
        appended.len(),
        "the cursor reader missed entries (an entry became visible below its cursor)"
    );
    assert_eq!(
        seen, appended,
        "the reader must see exactly what was appended"
    );
}
