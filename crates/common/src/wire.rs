//! Small conversions between wire scalars and domain values that every service's edge needs.

/// Unix milliseconds as a protobuf timestamp.
pub fn timestamp(ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        // Below 1e9, fits.
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

/// A protobuf timestamp as Unix milliseconds (0 when absent or before 1970).
pub fn millis(ts: Option<&prost_types::Timestamp>) -> u64 {
    ts.map(|t| {
        u64::try_from(t.seconds)
            .unwrap_or(0)
            .saturating_mul(1000)
            .saturating_add(u64::try_from(t.nanos / 1_000_000).unwrap_or(0))
    })
    .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(millis(Some(&timestamp(1_234_567))), 1_234_567);
        assert_eq!(millis(None), 0);
    }
}
