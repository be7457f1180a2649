//! Sequence allocation: the pure half of an append.
//!
//! Each partition keeps its next sequence in a static column (`next_seq`) of the entries
//! table, so the counter and the entries share one partition and one conditional batch writes
//! both: `UPDATE .. SET next_seq = first + n IF next_seq = <expected>` plus one `INSERT` per
//! entry at `first ..= first + n - 1`. Paxos serialises those batches per partition, so
//! sequences are handed out without gaps, in commit order, never twice (the counter is never
//! deleted and has no TTL). A batch that loses the race is not applied; the server returns the
//! current `next_seq`, and the append tries again from there.
//!
//! The expected value comes from a small per-process cache (the last value this process
//! wrote or saw) so an uncontended append costs one LWT; on a cache miss the current value
//! is read first (one quorum read). A stale cache only costs one failed LWT.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use guardyn_storage::StorageError;
use scylla::value::CqlValue;

/// The compare-and-set one attempt performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reservation {
    /// `IF next_seq = ?`: `None` binds null (a partition never appended to).
    pub expect: Option<i64>,
    /// Sequence of the first entry.
    pub first: u64,
    /// The new `next_seq` (`first + n`).
    pub next: u64,
}

impl Reservation {
    pub(crate) fn seqs(&self) -> impl Iterator<Item = u64> + use<> {
        self.first..self.next
    }
}

/// Plans an append of `n` entries when the partition's `next_seq` is `current`.
pub(crate) fn reserve(current: Option<u64>, n: usize) -> Result<Reservation, StorageError> {
    let first = current.unwrap_or(1).max(1);
    let next = u64::try_from(n)
        .ok()
        .and_then(|n| first.checked_add(n))
        .filter(|next| i64::try_from(*next).is_ok())
        .ok_or_else(|| StorageError::InvalidRequest("partition sequence space exhausted".into()))?;
    let expect = current.map(to_i64).transpose()?;
    Ok(Reservation {
        expect,
        first,
        next,
    })
}

/// What the server said about the `next_seq` counter of a partition that lost a race.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Observed {
    /// The counter's current value (`None`: not set yet).
    Known(Option<u64>),
    /// The result did not carry it: read it.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CasOutcome {
    Applied,
    Lost(Observed),
}

/// Reads an LWT result: the `[applied]` column, and when not applied the current value of the
/// condition's column (`next_seq`). Columns are looked up by name because the server adds the
/// key columns, and a not-applied batch may answer one row per statement; the static
/// `next_seq` is the same in each, but a row for a clustering key that does not exist may
/// carry it as null, so null means "not reported" (the counter is then read), never "absent".
pub(crate) fn cas_outcome<'a, R, C>(rows: R) -> Result<CasOutcome, StorageError>
where
    R: IntoIterator<Item = C>,
    C: IntoIterator<Item = (&'a str, Option<&'a CqlValue>)>,
{
    let mut applied = None;
    let mut reported: Option<u64> = None;
    for row in rows {
        for (name, value) in row {
            match (name, value) {
                ("[applied]", Some(CqlValue::Boolean(b))) => {
                    applied = Some(applied.unwrap_or(true) && *b);
                }
                ("next_seq", Some(CqlValue::BigInt(v))) => {
                    let v = from_i64(*v)?;
                    reported = Some(reported.map_or(v, |r| r.max(v)));
                }
                _ => {}
            }
        }
    }
    match applied {
        Some(true) => Ok(CasOutcome::Applied),
        Some(false) => Ok(CasOutcome::Lost(match reported {
            Some(v) => Observed::Known(Some(v)),
            None => Observed::Unknown,
        })),
        None => Err(StorageError::Backend(
            "scylla append: conditional batch result without [applied]".into(),
        )),
    }
}

/// One partition's compare-and-set, as the allocation loop sees it.
pub(crate) trait CasTarget: Sync {
    /// Performs one conditional batch for `r`.
    fn attempt(
        &self,
        r: &Reservation,
    ) -> impl Future<Output = Result<CasOutcome, StorageError>> + Send;
    /// Reads the counter when a lost race did not report it.
    fn reread(&self) -> impl Future<Output = Result<Option<u64>, StorageError>> + Send;
}

/// Runs the compare-and-set loop of one append of `n` entries, starting from the believed
/// counter `current`. Returns the reservation that was applied.
pub(crate) async fn allocate(
    target: &impl CasTarget,
    mut current: Option<u64>,
    n: usize,
    max_attempts: u32,
) -> Result<Reservation, StorageError> {
    for tried in 0..max_attempts {
        let r = reserve(current, n)?;
        match target.attempt(&r).await? {
            CasOutcome::Applied => return Ok(r),
            CasOutcome::Lost(Observed::Known(c)) => current = c,
            CasOutcome::Lost(Observed::Unknown) => current = target.reread().await?,
        }
        tokio::time::sleep(backoff(tried)).await;
    }
    Err(StorageError::Unavailable(format!(
        "scylla append: lost the sequence race {max_attempts} times (contention on one partition)"
    )))
}

/// Pause before attempt `attempt + 1` after `attempt` lost races: exponential from 1 ms, capped
/// at 64 ms, with full jitter so contending instances spread out.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let cap_us = 1_000u64 << attempt.min(6);
    let jitter = RandomState::new().hash_one(attempt) % cap_us.max(1);
    Duration::from_micros(cap_us / 2 + jitter / 2)
}

pub(crate) fn to_i64(v: u64) -> Result<i64, StorageError> {
    i64::try_from(v).map_err(|_| StorageError::InvalidRequest(format!("sequence {v} too large")))
}

pub(crate) fn from_i64(v: i64) -> Result<u64, StorageError> {
    u64::try_from(v).map_err(|_| StorageError::Corrupt(format!("negative stored sequence {v}")))
}

/// Last known `next_seq` per partition, a hint only (a wrong value costs one failed LWT).
/// Bounded: when full it is cleared, which is cheap and keeps the memory of an instance that
/// touched millions of partitions flat.
#[derive(Debug)]
pub(crate) struct SeqCache {
    map: Mutex<HashMap<Vec<u8>, u64>>,
    cap: usize,
}

impl SeqCache {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    /// `None`: nothing known (read the counter). `Some(None)` is never stored: an absent
    /// counter is not cached, the read is cheap and the first append wins or learns the value.
    pub(crate) fn get(&self, partition: &[u8]) -> Option<u64> {
        self.map.lock().ok()?.get(partition).copied()
    }

    pub(crate) fn set(&self, partition: &[u8], next: u64) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= self.cap && !map.contains_key(partition) {
                map.clear();
            }
            map.insert(partition.to_vec(), next);
        }
    }

    pub(crate) fn forget(&self, partition: &[u8]) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(partition);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;
    use std::sync::atomic::Ordering::SeqCst;

    use super::*;

    #[test]
    fn first_append_starts_at_one_and_expects_null() {
        let r = reserve(None, 3).unwrap();
        assert_eq!(r.expect, None);
        assert_eq!(r.seqs().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(r.next, 4);
    }

    #[test]
    fn later_appends_continue_from_the_counter() {
        let r = reserve(Some(10), 2).unwrap();
        assert_eq!(r.expect, Some(10));
        assert_eq!(r.seqs().collect::<Vec<_>>(), vec![10, 11]);
        assert_eq!(r.next, 12);
    }

    #[test]
    fn sequence_space_ends_at_i64_max() {
        assert!(reserve(Some(i64::MAX as u64 - 2), 2).is_ok());
        assert!(matches!(
            reserve(Some(i64::MAX as u64 - 1), 2),
            Err(StorageError::InvalidRequest(_))
        ));
        assert!(reserve(Some(u64::MAX), 1).is_err());
    }

    #[test]
    fn applied_result() {
        let t = CqlValue::Boolean(true);
        assert_eq!(
            cas_outcome([[("[applied]", Some(&t))]]).unwrap(),
            CasOutcome::Applied
        );
    }

    #[test]
    fn lost_race_reports_the_winner_counter_for_the_retry() {
        let f = CqlValue::Boolean(false);
        let p = CqlValue::Blob(b"part".to_vec());
        let n = CqlValue::BigInt(42);
        let got = cas_outcome([[
            ("[applied]", Some(&f)),
            ("p", Some(&p)),
            ("seq", None),
            ("next_seq", Some(&n)),
        ]])
        .unwrap();
        assert_eq!(got, CasOutcome::Lost(Observed::Known(Some(42))));
        // The retry then reserves exactly after the winner's entries.
        assert_eq!(reserve(Some(42), 1).unwrap().first, 42);
    }

    #[test]
    fn one_row_per_batch_statement() {
        let f = CqlValue::Boolean(false);
        let n = CqlValue::BigInt(17);
        // The row of a missing clustering key carries the static column as null.
        let rows = vec![
            vec![("[applied]", Some(&f)), ("seq", None), ("next_seq", None)],
            vec![("[applied]", Some(&f)), ("next_seq", Some(&n))],
        ];
        assert_eq!(
            cas_outcome(rows).unwrap(),
            CasOutcome::Lost(Observed::Known(Some(17)))
        );
    }

    #[test]
    fn lost_race_without_the_counter_asks_for_a_read() {
        let f = CqlValue::Boolean(false);
        assert_eq!(
            cas_outcome([vec![("[applied]", Some(&f))]]).unwrap(),
            CasOutcome::Lost(Observed::Unknown)
        );
        assert_eq!(
            cas_outcome([vec![("[applied]", Some(&f)), ("next_seq", None)]]).unwrap(),
            CasOutcome::Lost(Observed::Unknown)
        );
    }

    #[test]
    fn malformed_results_are_errors() {
        let none: [[(&str, Option<&CqlValue>); 0]; 0] = [];
        assert!(cas_outcome(none).is_err());
        let neg = CqlValue::BigInt(-1);
        let f = CqlValue::Boolean(false);
        assert!(matches!(
            cas_outcome([[("[applied]", Some(&f)), ("next_seq", Some(&neg))]]),
            Err(StorageError::Corrupt(_))
        ));
    }

    /// A partition counter with ScyllaDB's LWT semantics, shared by simulated instances.
    #[derive(Default)]
    struct FakePartition {
        next_seq: Mutex<Option<u64>>,
        lwts: AtomicU32,
    }

    /// One simulated instance's view: whether its lost races report the counter.
    struct Instance<'a> {
        part: &'a FakePartition,
        reports_counter: bool,
    }

    impl CasTarget for Instance<'_> {
        async fn attempt(&self, r: &Reservation) -> Result<CasOutcome, StorageError> {
            self.part.lwts.fetch_add(1, SeqCst);
            let mut cur = self.part.next_seq.lock().unwrap();
            let expect = r.expect.map(|v| u64::try_from(v).unwrap());
            Ok(if *cur == expect {
                *cur = Some(r.next);
                CasOutcome::Applied
            } else if self.reports_counter {
                CasOutcome::Lost(Observed::Known(*cur))
            } else {
                CasOutcome::Lost(Observed::Unknown)
            })
        }

        async fn reread(&self) -> Result<Option<u64>, StorageError> {
            Ok(*self.part.next_seq.lock().unwrap())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_instances_get_disjoint_gapless_ranges() {
        let part = Arc::new(FakePartition::default());
        let tasks = (0..8).map(|t| {
            let part = part.clone();
            tokio::spawn(async move {
                let me = Instance {
                    part: &part,
                    reports_counter: t % 2 == 0,
                };
                let mut mine = Vec::new();
                for i in 0..20 {
                    // Every append starts from a stale belief (nothing appended yet).
                    let r = allocate(&me, None, 1 + (t + i) % 3, 1_000).await.unwrap();
                    mine.extend(r.seqs());
                }
                mine
            })
        });
        let mut all = Vec::new();
        for t in tasks {
            let mine = t.await.unwrap();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "per appender order");
            all.extend(mine);
        }
        all.sort_unstable();
        let n = all.len() as u64;
        assert_eq!(all, (1..=n).collect::<Vec<_>>(), "gapless, never reused");
        assert_eq!(*part.next_seq.lock().unwrap(), Some(n + 1));
    }

    #[tokio::test]
    async fn a_stale_belief_costs_one_lost_race() {
        let part = FakePartition::default();
        *part.next_seq.lock().unwrap() = Some(50);
        let me = Instance {
            part: &part,
            reports_counter: true,
        };
        let r = allocate(&me, Some(7), 2, 5).await.unwrap();
        assert_eq!(r.seqs().collect::<Vec<_>>(), vec![50, 51]);
        assert_eq!(part.lwts.load(SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unreported_counter_is_read_again() {
        let part = FakePartition::default();
        *part.next_seq.lock().unwrap() = Some(9);
        let me = Instance {
            part: &part,
            reports_counter: false,
        };
        let r = allocate(&me, None, 1, 5).await.unwrap();
        assert_eq!(r.first, 9);
    }

    struct Fixed(Result<CasOutcome, StorageError>);

    impl CasTarget for Fixed {
        async fn attempt(&self, _: &Reservation) -> Result<CasOutcome, StorageError> {
            match &self.0 {
                Ok(o) => Ok(*o),
                Err(e) => Err(StorageError::Backend(e.to_string())),
            }
        }

        async fn reread(&self) -> Result<Option<u64>, StorageError> {
            Ok(None)
        }
    }

    #[tokio::test]
    async fn endless_contention_is_unavailable_and_errors_pass_through() {
        let lost = Fixed(Ok(CasOutcome::Lost(Observed::Known(Some(1)))));
        assert!(matches!(
            allocate(&lost, None, 1, 3).await,
            Err(StorageError::Unavailable(_))
        ));
        let failed = Fixed(Err(StorageError::Backend("boom".into())));
        assert!(matches!(
            allocate(&failed, None, 1, 3).await,
            Err(StorageError::Backend(_))
        ));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            let cap = Duration::from_micros(1_000 << attempt.min(6));
            assert!(d >= cap / 2 && d <= cap, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn cache_is_a_bounded_hint() {
        let c = SeqCache::new(2);
        assert_eq!(c.get(b"a"), None);
        c.set(b"a", 5);
        c.set(b"a", 7);
        assert_eq!(c.get(b"a"), Some(7));
        c.set(b"b", 1);
        c.set(b"c", 1);
        assert_eq!(c.get(b"a"), None, "full cache starts over");
        assert_eq!(c.get(b"c"), Some(1));
        c.forget(b"c");
        assert_eq!(c.get(b"c"), None);
    }
}
