//! Entry lifetimes: the trait's millisecond TTL against ScyllaDB's whole-second native TTL.
//!
//! The server computes an entry's expiry as its own clock, truncated to seconds, plus the TTL in
//! seconds, so a TTL of `ceil(ttl)` could still expire an entry up to a second early. The
//! native TTL is therefore `ceil(ttl) + 1` s (never early; the server purges the entry without
//! any sweeper of ours), and each row also stores the exact `expires_at` in milliseconds, which
//! reads filter on: what a caller sees expires to the millisecond of the append's clock.
//! TTL 0 means "no TTL" to ScyllaDB, which is why the smallest native TTL sent is 1.

use std::time::Duration;

/// The largest TTL ScyllaDB accepts (20 years, in seconds).
pub(crate) const MAX_TTL_SECS: i32 = 630_720_000;

/// The `USING TTL` value for an entry that must disappear `ttl` after the append.
pub(crate) fn native_ttl_secs(ttl: Duration) -> i32 {
    let whole = ttl.as_secs();
    let ceil = if ttl.subsec_nanos() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    };
    i32::try_from(ceil.saturating_add(1))
        .unwrap_or(MAX_TTL_SECS)
        .clamp(1, MAX_TTL_SECS)
}

/// The stored `expires_at` (ms since the epoch), capped to what the native TTL can keep.
pub(crate) fn expires_at_ms(appended_at_ms: u64, ttl: Duration) -> u64 {
    let cap = u64::from(MAX_TTL_SECS.unsigned_abs()) * 1000;
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).min(cap);
    appended_at_ms.saturating_add(ttl_ms)
}

/// Whether an entry read back is still live at `now_ms`.
pub(crate) fn is_live(expires_at_ms: u64, now_ms: u64) -> bool {
    expires_at_ms > now_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_ttl_never_expires_early() {
        assert_eq!(native_ttl_secs(Duration::ZERO), 1, "0 would mean no TTL");
        assert_eq!(native_ttl_secs(Duration::from_millis(1)), 2);
        assert_eq!(native_ttl_secs(Duration::from_secs(1)), 2);
        assert_eq!(native_ttl_secs(Duration::from_millis(1_500)), 3);
        assert_eq!(native_ttl_secs(Duration::from_secs(3_600)), 3_601);
    }

    #[test]
    fn native_ttl_is_clamped_to_what_scylla_accepts() {
        assert_eq!(native_ttl_secs(Duration::MAX), MAX_TTL_SECS);
        assert_eq!(
            native_ttl_secs(Duration::from_secs(MAX_TTL_SECS as u64)),
            MAX_TTL_SECS
        );
    }

    #[test]
    fn expiry_is_exact_in_milliseconds() {
        assert_eq!(expires_at_ms(1_000, Duration::from_millis(1_500)), 2_500);
        assert_eq!(
            expires_at_ms(1_000, Duration::MAX),
            1_000 + MAX_TTL_SECS as u64 * 1000
        );
        assert!(is_live(2_500, 2_499));
        assert!(!is_live(2_500, 2_500));
        assert!(!is_live(1_000, 1_000), "a zero TTL is never readable");
    }
}
