//! The service's Prometheus metrics, registered in the process registry
//! (`guardyn_notification_*` on the metrics endpoint).

use std::sync::{Arc, Mutex};

use guardyn_common::metrics::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::providers::Platform;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlatformLabels {
    platform: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailedLabels {
    platform: &'static str,
    /// `retry`, `rejected`, `dead_letter` or `no_sender`.
    kind: &'static str,
}

/// Push counters and gauges.
#[derive(Debug, Clone)]
pub(crate) struct PushMetrics {
    sent: Family<PlatformLabels, Counter>,
    failed: Family<FailedLabels, Counter>,
    pruned: Family<PlatformLabels, Counter>,
    coalesced: Counter,
    in_flight: Gauge,
    queue_depth: Gauge,
    oldest_age_ms: Gauge,
    latency: Histogram,
    /// queued_at of the jobs in hand, to report the oldest.
    queued: Arc<Mutex<Vec<u64>>>,
}

impl PushMetrics {
    /// Create the metrics and register them in `metrics`' registry.
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self::unregistered();
        metrics.with_service_registry("notification", |r| {
            let r = r.sub_registry_with_prefix("notification");
            r.register("pushes_sent", "Pushes a provider accepted", m.sent.clone());
            r.register(
                "pushes_failed",
                "Pushes that failed, by kind (retry, rejected, dead_letter, no_sender)",
                m.failed.clone(),
            );
            r.register(
                "tokens_pruned",
                "Tokens deleted because the provider declared them dead",
                m.pruned.clone(),
            );
            r.register(
                "wakes_coalesced",
                "Wake-up jobs served by a push already sent or in flight for the device",
                m.coalesced.clone(),
            );
            r.register(
                "jobs_in_flight",
                "Wake-up jobs this process is handling (the queue depth it sees)",
                m.in_flight.clone(),
            );
            r.register(
                "queue_depth",
                "Wake-up jobs stored and not yet acknowledged, all instances (sampled every second)",
                m.queue_depth.clone(),
            );
            r.register(
                "oldest_job_age_milliseconds",
                "Age (since the mail was queued) of the oldest wake-up job in hand",
                m.oldest_age_ms.clone(),
            );
            r.register(
                "push_latency_seconds",
                "From mail queued to provider request",
                m.latency.clone(),
            );
        });
        m
    }

    pub fn unregistered() -> Self {
        Self {
            sent: Family::default(),
            failed: Family::default(),
            pruned: Family::default(),
            coalesced: Counter::default(),
            in_flight: Gauge::default(),
            queue_depth: Gauge::default(),
            oldest_age_ms: Gauge::default(),
            // 1 ms to ~32 s.
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            queued: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn set_queue_depth(&self, depth: u64) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    pub fn sent(&self, p: Platform) {
        self.sent
            .get_or_create(&PlatformLabels {
                platform: p.label(),
            })
            .inc();
    }

    pub fn failed(&self, p: Platform, kind: &'static str) {
        self.failed
            .get_or_create(&FailedLabels {
                platform: p.label(),
                kind,
            })
            .inc();
    }

    pub fn pruned(&self, p: Platform) {
        self.pruned
            .get_or_create(&PlatformLabels {
                platform: p.label(),
            })
            .inc();
    }

    pub fn coalesced(&self) {
        self.coalesced.inc();
    }

    /// The time from mail queued to the provider request.
    pub fn latency(&self, queued_at_ms: u64, now_ms: u64) {
        self.latency
            .observe(now_ms.saturating_sub(queued_at_ms) as f64 / 1000.0);
    }

    /// A job taken in hand; the guard gives it back when dropped.
    pub fn job_started(&self, queued_at_ms: u64, now_ms: u64) -> JobGuard {
        self.in_flight.inc();
        let mut q = self.queued.lock().unwrap_or_else(|p| p.into_inner());
        q.push(queued_at_ms);
        self.set_oldest(&q, now_ms);
        JobGuard {
            metrics: self.clone(),
            queued_at_ms,
            now_ms,
        }
    }

    fn set_oldest(&self, q: &[u64], now_ms: u64) {
        let age = q
            .iter()
            .min()
            .map_or(0, |oldest| now_ms.saturating_sub(*oldest));
        self.oldest_age_ms
            .set(i64::try_from(age).unwrap_or(i64::MAX));
    }
}

/// A job in hand (see [`PushMetrics::job_started`]).
#[derive(Debug)]
pub(crate) struct JobGuard {
    metrics: PushMetrics,
    queued_at_ms: u64,
    now_ms: u64,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        let mut q = self
            .metrics
            .queued
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(i) = q.iter().position(|t| *t == self.queued_at_ms) {
            q.swap_remove(i);
        }
        self.metrics.set_oldest(&q, self.now_ms);
    }
}
