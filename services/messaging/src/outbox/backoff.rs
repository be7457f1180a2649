//! Outbox records whose fan-out failed, and when the sweep tries each again: a record that
//! keeps failing (a corrupt record, a queue whose storage keeps refusing) must neither stop
//! the records after it nor be retried, and logged, on every pass.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

/// Wait after the first failure, doubled after each further one.
const FIRST_RETRY_MS: u64 = 10_000;
/// Longest wait between two attempts.
const MAX_RETRY_MS: u64 = 60 * 60 * 1000;

#[derive(Clone, Copy, Debug)]
struct Failed {
    attempts: u32,
    next_ms: u64,
}

/// Failed outbox keys of this process (by the service clock).
#[derive(Debug, Default)]
pub(crate) struct Backoff(Mutex<HashMap<Vec<u8>, Failed>>);

impl Backoff {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Failed>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the record at `key` may be tried at `now_ms`.
    pub(crate) fn due(&self, key: &[u8], now_ms: u64) -> bool {
        self.map().get(key).is_none_or(|f| f.next_ms <= now_ms)
    }

    /// Record a failure at `now_ms`; returns how many attempts failed in a row.
    pub(crate) fn failed(&self, key: &[u8], now_ms: u64) -> u32 {
        let mut map = self.map();
        let f = map.entry(key.to_vec()).or_insert(Failed {
            attempts: 0,
            next_ms: 0,
        });
        f.attempts = f.attempts.saturating_add(1);
        let wait = FIRST_RETRY_MS
            .saturating_mul(1u64 << (f.attempts - 1).min(20))
            .min(MAX_RETRY_MS);
        f.next_ms = now_ms.saturating_add(wait);
        f.attempts
    }

    pub(crate) fn succeeded(&self, key: &[u8]) {
        self.map().remove(key);
    }

    /// Forget keys a whole sweep did not see (completed or deleted elsewhere).
    pub(crate) fn keep_only(&self, seen: &HashSet<Vec<u8>>) {
        self.map().retain(|k, _| seen.contains(k));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_failing_key_waits_longer_after_each_failure_until_it_succeeds() {
        let b = Backoff::default();
        assert!(b.due(b"k", 0));
        assert_eq!(b.failed(b"k", 1_000), 1);
        assert!(!b.due(b"k", 10_999));
        assert!(b.due(b"k", 11_000));
        assert!(b.due(b"other", 1_000));
        assert_eq!(b.failed(b"k", 11_000), 2);
        assert!(!b.due(b"k", 30_999));
        assert!(b.due(b"k", 31_000));
        for _ in 0..40 {
            b.failed(b"k", 0);
        }
        assert!(b.due(b"k", MAX_RETRY_MS));
        b.succeeded(b"k");
        assert!(b.due(b"k", 0));
        b.failed(b"gone", 0);
        b.keep_only(&HashSet::new());
        assert!(b.due(b"gone", 0));
    }
}
