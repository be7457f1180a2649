//! Latency statistics and the stamped message bodies every `guardyn bench` phase measures with.

use std::time::{Duration, Instant};

pub(crate) struct Stats {
    pub(crate) count: usize,
    pub(crate) secs: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

impl Stats {
    pub(crate) fn of(mut samples: Vec<Duration>, secs: f64) -> Self {
        samples.sort();
        let pct = |q: f64| -> f64 {
            if samples.is_empty() {
                return 0.0;
            }
            let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1000.0
        };
        Self {
            count: samples.len(),
            secs,
            p50_ms: pct(0.50),
            p99_ms: pct(0.99),
            p999_ms: pct(0.999),
            max_ms: pct(1.0),
        }
    }

    pub(crate) fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.count as f64 / self.secs
        } else {
            0.0
        }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "count": self.count, "seconds": self.secs, "per_second": self.rate(),
            "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "p999_ms": self.p999_ms, "max_ms": self.max_ms,
        })
    }
}

/// Received (tag, send offset) notes from the receivers' pumps.
pub(crate) type Note = (u64, Duration);

pub(crate) fn stamp(base: Instant, tag: u64, size: usize) -> Vec<u8> {
    let mut body = vec![0u8; size.max(16)];
    body[..8].copy_from_slice(&tag.to_be_bytes());
    let at = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
    body[8..16].copy_from_slice(&at.to_be_bytes());
    body
}

pub(crate) fn unstamp(base: Instant, body: &[u8]) -> Option<Note> {
    let tag = u64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    let at = u64::from_be_bytes(body.get(8..16)?.try_into().ok()?);
    Some((tag, base.elapsed().saturating_sub(Duration::from_nanos(at))))
}
