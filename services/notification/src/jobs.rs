//! The wake-up job runner: consumes `notification-wake` jobs (enqueued durably by messaging
//! for a device with no open Listen stream) and pushes each device at most once per
//! `coalesce_ms`, with retries, dead letters and pruning of dead tokens.
//!
//! One job, [`Core::process`]:
//! 1. Settings NONE, or no token: done.
//! 2. The device's [`PushMarker`] (shared by every instance, changed only by compare-and-set)
//!    decides: mail queued before the last served push (`served_ms`) or within `coalesce_ms`
//!    after it is served by that push (the woken device connects and fetches its whole
//!    queue), so the job is acked; a push in flight (a live claim) or a retry backoff defer
//!    the job to when that ends (`Job::retry_after`), when it is checked again. Otherwise this
//!    instance claims the device (decision time and a lease of `claim_ms`) and pushes every
//!    token.
//! 3. Any token delivered: the marker records the push as served, and only then is the job
//!    acked, so a job redelivered after a crash or restart finds it served and pushes nothing.
//!    Gone tokens are deleted. Only retry answers: `attempts` grows and the device waits an
//!    exponential, jittered backoff (at least the provider's Retry-After) before any job may
//!    push it again; after `max_attempts` a [`DeadLetter`] is written, the wake counts as
//!    served and the job is acked. Only refusals: logged (no token), served, acked.
//!
//! The window's cost: a device that a push woke, that connected, drained its queue and went
//! offline again, all within `coalesce_ms`, is not pushed for mail arriving in the rest of
//! that window (it gets it at its next connection or with the next mail's push). The
//! alternative, deferring such mail to the window's end, pushes twice for every burst that
//! straddles a push.
//!
//! Crash windows: dying after the claim and before the provider accepted leaves a claim that
//! lapses after `claim_ms`; the job, redelivered by the queue (`ack_wait`), then pushes. Dying
//! after the provider accepted and before the marker write pushes once more after the lapse:
//! a duplicate, content-free wake-up (a window of one provider round trip plus one KV write),
//! the price of never losing one. Dying after the marker write and before the ack costs
//! nothing: the redelivered job finds the push served.
//!
//! Retry delays are the queue's own (`Job::retry_after`, durable on both buses), so a deferred
//! job survives a restart; the per-device attempt count lives in the marker, not in the job's
//! delivery count (which restarts at 1 with the in-process bus and also counts deferrals).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use guardyn_common::clock::run_passes;
use guardyn_common::events::Payload as _;
use guardyn_common::events::notification::{WAKE_QUEUE, WakeJob};
use guardyn_events::{EventError, Job};
use guardyn_storage::record::encode;
use guardyn_storage::{Direction, KeyRange, Txn, TxnOutcome};
use rand::RngExt as _;
use tokio::sync::Semaphore;
use tracing::Instrument as _;

use crate::core::Core;
use crate::error::NotificationError;
use crate::providers::{Outcome, Platform, Wake};
use crate::store::{self, DeadLetter, PushMarker, StoredToken};

/// Delay before a job that failed on storage or bus trouble is tried again.
const OUTAGE_RETRY: Duration = Duration::from_secs(5);
/// Longest Retry-After honoured; a provider asking for more gets retried after this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How soon a job that found a push in flight for its device looks again, in ms.
const CLAIM_RECHECK_MS: u64 = 1_000;
/// Dead letters one sweeper pass deletes.
const SWEEP_BATCH: usize = 100;

/// How a handled job is settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    Ack,
    RetryAfter(Duration),
}

/// Start consuming the wake-up queue (the consumer exists when this returns) with at most
/// `concurrency` jobs in hand, until shutdown.
pub(crate) async fn spawn(core: Arc<Core>) -> Result<(), EventError> {
    let mut jobs = core.bus.consume(WAKE_QUEUE).await?;
    let permits = Arc::new(Semaphore::new(core.cfg.concurrency));
    tokio::spawn(async move {
        loop {
            // The permit is taken before the next job, so jobs beyond the bound stay in the
            // queue (where other instances can take them) instead of waiting here.
            let permit = tokio::select! {
                () = core.shutdown.cancelled() => return,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let next = tokio::select! {
                () = core.shutdown.cancelled() => return,
                next = jobs.next() => next,
            };
            match next {
                Some(Ok(job)) => {
                    let core = core.clone();
                    // In the trace of the send that queued the mail.
                    let span = tracing::info_span!(
                        "wake_job",
                        otel.kind = "consumer",
                        delivery = job.delivery_count(),
                    );
                    job.trace_context().set_parent_of(&span);
                    tokio::spawn(
                        async move {
                            handle(&core, job).await;
                            drop(permit);
                        }
                        .instrument(span),
                    );
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "wake-up queue error");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => return,
            }
        }
    });
    Ok(())
}

async fn handle(core: &Core, job: Job) {
    let wake = match WakeJob::decode(job.payload()) {
        Ok(w) => w,
        Err(err) => {
            tracing::warn!(error = %err, "dropping a malformed wake-up job");
            settle(job, Settle::Ack).await;
            return;
        }
    };
    let _in_hand = core
        .metrics
        .job_started(wake.queued_at_ms, core.clock.now_ms());
    let how = match core.process(&wake).await {
        Ok(how) => how,
        Err(err) => {
            tracing::warn!(error = %err, "wake-up job failed; retrying");
            Settle::RetryAfter(OUTAGE_RETRY)
        }
    };
    settle(job, how).await;
}

async fn settle(job: Job, how: Settle) {
    let result = match how {
        Settle::Ack => job.ack().await,
        Settle::RetryAfter(delay) => job.retry_after(delay).await,
    };
    if let Err(err) = result {
        // Unsettled, the job comes back after ack_wait; the marker makes that harmless.
        tracing::warn!(error = %err, "could not settle a wake-up job");
    }
}

/// What the pushes of one claim came to.
#[derive(Debug, Default)]
struct Pushed {
    delivered: bool,
    /// Some token asked to retry, with the longest Retry-After given.
    retry: Option<Option<Duration>>,
    /// Platforms that answered retry.
    retrying: Vec<Platform>,
    last_outcome: String,
}

impl Core {
    /// Handle one wake-up job (see the module docs).
    pub async fn process(&self, wake: &WakeJob) -> Result<Settle, NotificationError> {
        let (account, device) = (wake.account, wake.device);
        let settings = self.settings(account, device).await?;
        let Some(alert) = settings.wake(wake.urgent, self.clock.now_ms()) else {
            return Ok(Settle::Ack);
        };
        let tokens = self.device_tokens(account, device).await?;
        if tokens.is_empty() {
            return Ok(Settle::Ack);
        }
        let key = store::marker_key(account, device);
        let claimed_ms = loop {
            let now = self.clock.now_ms();
            let stored = self.read::<PushMarker>(&key).await?;
            let raw = stored.as_ref().map(|s| s.raw.clone());
            let m = stored.map(|s| s.value).unwrap_or_default();
            if m.served_ms != 0
                && wake.queued_at_ms < m.served_ms.saturating_add(self.cfg.coalesce_ms)
            {
                self.metrics.coalesced();
                return Ok(Settle::Ack);
            }
            if m.not_before_ms > now {
                return Ok(Settle::RetryAfter(Duration::from_millis(
                    m.not_before_ms - now,
                )));
            }
            if m.claim_until_ms > now {
                // Usually over within a provider round trip; checked again soon rather than
                // at the lease's end, which only a crashed sender reaches.
                let wait = (m.claim_until_ms - now).min(CLAIM_RECHECK_MS);
                return Ok(Settle::RetryAfter(Duration::from_millis(wait)));
            }
            let next = PushMarker {
                claimed_ms: now,
                claim_until_ms: now.saturating_add(self.cfg.claim_ms),
                ..m
            };
            let txn = Txn::new()
                .require_unchanged(key.clone(), raw.as_deref())
                .put(key.clone(), encode(&next));
            if self.kv.commit(txn).await? == TxnOutcome::Committed {
                break now;
            }
        };
        let pushed = self
            .push_all(wake, &tokens, Wake { alert }, claimed_ms)
            .await;
        self.finish(wake, claimed_ms, pushed).await
    }

    async fn push_all(
        &self,
        wake: &WakeJob,
        tokens: &[StoredToken],
        msg: Wake,
        now_ms: u64,
    ) -> Pushed {
        let sends = tokens.iter().map(|t| async move {
            let target = t.target();
            let outcome = match self.providers.get(target.platform) {
                Some(sender) => {
                    self.metrics.latency(wake.queued_at_ms, self.clock.now_ms());
                    sender.send(&target, msg).await
                }
                None => Outcome::Rejected {
                    reason: "no sender for this platform".into(),
                },
            };
            (t, outcome)
        });
        let mut pushed = Pushed::default();
        for (t, outcome) in futures::future::join_all(sends).await {
            let platform = t.target().platform;
            let label = platform.label();
            match outcome {
                Outcome::Delivered => {
                    pushed.delivered = true;
                    self.metrics.sent(platform);
                }
                Outcome::Gone => {
                    self.metrics.pruned(platform);
                    if let Err(err) = self
                        .prune_token(wake.account, wake.device, t.id(), &t.token)
                        .await
                    {
                        tracing::warn!(error = %err, "could not delete a dead push token");
                    }
                    pushed.last_outcome = format!("{label}: gone");
                }
                Outcome::Retry { after } => {
                    self.metrics.failed(platform, "retry");
                    let longest = pushed.retry.flatten().max(after);
                    pushed.retry = Some(longest);
                    pushed.retrying.push(platform);
                    pushed.last_outcome = format!("{label}: retry");
                }
                Outcome::Rejected { reason } => {
                    self.metrics.failed(platform, "rejected");
                    tracing::warn!(platform = label, token_hint = %crate::model::hint(&t.token),
                        %reason, at_ms = now_ms, "provider refused a push");
                    pushed.last_outcome = format!("{label}: rejected");
                }
            }
        }
        pushed
    }

    /// Record what the claim came to in the device's marker, and how to settle the job.
    async fn finish(
        &self,
        wake: &WakeJob,
        claimed_ms: u64,
        pushed: Pushed,
    ) -> Result<Settle, NotificationError> {
        let key = store::marker_key(wake.account, wake.device);
        loop {
            let now = self.clock.now_ms();
            // Our claim wrote the marker: gone means the device was removed meanwhile, and
            // writing it again would leave a record behind.
            let Some(stored) = self.read::<PushMarker>(&key).await? else {
                return Ok(Settle::Ack);
            };
            let raw = Some(stored.raw);
            let m = stored.value;
            let mut next = m;
            // Release our claim, unless it lapsed and another instance holds a newer one.
            if m.claimed_ms == claimed_ms {
                next.claim_until_ms = 0;
            }
            let mut txn = Txn::new().require_unchanged(key.clone(), raw.as_deref());
            let how = match pushed.retry {
                Some(after) if !pushed.delivered => {
                    next.attempts = m.attempts.saturating_add(1);
                    if next.attempts >= self.cfg.max_attempts {
                        let letter = DeadLetter {
                            queued_at_ms: wake.queued_at_ms,
                            failed_at_ms: now,
                            attempts: next.attempts,
                            urgent: wake.urgent,
                            last_outcome: pushed.last_outcome.clone(),
                        };
                        txn = txn
                            .put(
                                store::dead_letter_key(wake.account, wake.device, now),
                                encode(&letter),
                            )
                            .put(
                                store::dead_letter_index_key(wake.account, wake.device, now),
                                Vec::new(),
                            );
                        next.served_ms = next.served_ms.max(claimed_ms);
                        next.attempts = 0;
                        next.not_before_ms = 0;
                        Settle::Ack
                    } else {
                        let delay = self.backoff(next.attempts, after);
                        next.not_before_ms = now.saturating_add(millis(delay));
                        Settle::RetryAfter(delay)
                    }
                }
                _ => {
                    // Delivered, or nothing left to retry (gone or refused): the wake-up is
                    // served as far as it can be.
                    next.served_ms = next.served_ms.max(claimed_ms);
                    next.attempts = 0;
                    next.not_before_ms = 0;
                    Settle::Ack
                }
            };
            txn = txn.put(key.clone(), encode(&next));
            if self.kv.commit(txn).await? == TxnOutcome::Committed {
                if how == Settle::Ack && pushed.retry.is_some() && !pushed.delivered {
                    for p in &pushed.retrying {
                        self.metrics.failed(*p, "dead_letter");
                    }
                    tracing::warn!(account = %wake.account, device = wake.device.get(),
                        attempts = self.cfg.max_attempts, "wake-up dead-lettered");
                }
                return Ok(how);
            }
        }
    }

    /// Exponential backoff with equal jitter (half fixed, half random), capped at
    /// `backoff_max_ms`, and never shorter than the provider's Retry-After.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .cfg
            .backoff_base_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(32))
            .min(self.cfg.backoff_max_ms);
        let half = exp / 2;
        let jittered = half + rand::rng().random_range(0..=exp - half);
        let floor = retry_after.map_or(0, |d| millis(d.min(MAX_RETRY_AFTER)));
        Duration::from_millis(jittered.max(floor).max(1))
    }

    /// Delete dead letters older than the retention; `true` when the batch was full.
    pub async fn sweep_dead_letters(&self) -> Result<bool, NotificationError> {
        let retention = self.cfg.dead_letter_retention_secs.saturating_mul(1000);
        let cutoff = self.clock.now_ms().saturating_sub(retention);
        let range = KeyRange::between(
            store::DEAD_LETTER_INDEX,
            &store::dead_letter_index_bound(cutoff),
        );
        let batch = self.kv.scan(range, Direction::Forward, SWEEP_BATCH).await?;
        let full = batch.len() == SWEEP_BATCH;
        for entry in batch {
            let mut txn = Txn::new().delete(entry.key.clone());
            if let Some(letter) = store::parse_dead_letter_index(&entry.key) {
                txn = txn.delete(letter);
            }
            let _ = self.kv.commit(txn).await?;
        }
        Ok(full)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The dead-letter sweeper: a bounded pass every `sweep_interval_secs` until shutdown.
pub(crate) async fn run_sweeper(core: Arc<Core>) {
    let interval = Duration::from_secs(core.cfg.sweep_interval_secs);
    run_passes(&core.clock, &core.shutdown, interval, || {
        let core = &core;
        async move {
            match core.sweep_dead_letters().await {
                Ok(full) => full,
                Err(err) => {
                    tracing::warn!(error = %err, "dead-letter sweep failed");
                    false
                }
            }
        }
    })
    .await;
}

/// Samples the wake queue's backlog (all instances) into the `queue_depth` gauge every
/// second, until shutdown.
pub(crate) async fn sample_queue_depth(core: Arc<Core>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = core.shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match core.bus.queue_depth(WAKE_QUEUE).await {
            Ok(depth) => core.metrics.set_queue_depth(depth),
            Err(err) => tracing::debug!(error = %err, "cannot read the wake queue depth"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use guardyn_common::clock::{Clock as _, ManualClock};
    use guardyn_common::{AccountId, DeviceId};
    use guardyn_events::{EventsConfig, InProcessBus};
    use guardyn_storage_embedded::EmbeddedStore;

    use super::*;
    use crate::config::NotificationConfig;
    use crate::metrics::PushMetrics;
    use crate::model::{Mode, NewToken, Settings, TokenId};
    use crate::providers::{Providers, Sender, Target};
    use crate::store::TokenSet;

    /// A provider double: answers from a script (then Delivered) and records every push.
    #[derive(Debug, Default)]
    struct Script {
        answers: Mutex<VecDeque<Outcome>>,
        pushes: Mutex<Vec<(String, Wake)>>,
    }

    #[derive(Debug)]
    struct FakeSender(Arc<Script>);

    #[async_trait::async_trait]
    impl Sender for FakeSender {
        fn platform(&self) -> Platform {
            Platform::Fcm
        }
        async fn send(&self, target: &Target, wake: Wake) -> Outcome {
            self.0
                .pushes
                .lock()
                .unwrap()
                .push((target.token.clone(), wake));
            self.0
                .answers
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Outcome::Delivered)
        }
    }

    struct Env {
        core: Core,
        clock: ManualClock,
        script: Arc<Script>,
        account: AccountId,
        device: DeviceId,
        _dir: tempfile::TempDir,
    }

    impl Env {
        async fn new(cfg: NotificationConfig) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open(dir.path(), Default::default())
                .await
                .unwrap();
            let clock = ManualClock::new();
            let script = Arc::new(Script::default());
            let core = Core {
                cfg,
                kv: store.clone(),
                bus: Arc::new(InProcessBus::new(store, EventsConfig::default())),
                clock: Arc::new(clock.clone()),
                providers: Providers::new(
                    [Arc::new(FakeSender(script.clone())) as Arc<dyn Sender>],
                ),
                metrics: PushMetrics::unregistered(),
                write_limiter: guardyn_common::ratelimit::KeyedLimiter::new(
                    "test",
                    guardyn_common::ratelimit::RateLimit::new(1, 1),
                ),
                shutdown: Default::default(),
            };
            let env = Self {
                core,
                clock,
                script,
                account: AccountId::random(),
                device: DeviceId::new(2).unwrap(),
                _dir: dir,
            };
            env.add_token("fcm-token-1").await;
            env
        }

        async fn add_token(&self, token: &str) -> TokenId {
            let key = store::tokens_key(self.account, self.device);
            let mut set = self
                .core
                .read::<TokenSet>(&key)
                .await
                .unwrap()
                .map(|s| s.value)
                .unwrap_or_default();
            let id = TokenId::random();
            let new = NewToken {
                platform: Platform::Fcm,
                token: token.into(),
                topic: String::new(),
                apns_sandbox: false,
                web_push: None,
            };
            set.tokens
                .push(StoredToken::new(id, new, self.clock.now_ms()));
            self.core.kv.put(&key, &encode(&set)).await.unwrap();
            id
        }

        /// A wake-up for mail queued now.
        fn wake(&self, urgent: bool) -> WakeJob {
            WakeJob {
                account: self.account,
                device: self.device,
                urgent,
                queued_at_ms: self.clock.now_ms(),
            }
        }

        async fn run(&self, w: &WakeJob) -> Settle {
            self.core.process(w).await.unwrap()
        }

        fn answer(&self, outcomes: impl IntoIterator<Item = Outcome>) {
            self.script.answers.lock().unwrap().extend(outcomes);
        }

        fn pushes(&self) -> Vec<(String, Wake)> {
            self.script.pushes.lock().unwrap().clone()
        }

        fn tick(&self, ms: u64) {
            self.clock.advance(Duration::from_millis(ms));
        }

        async fn settings(&self, mode: Mode, mute_until_ms: u64) {
            self.core
                .set_settings(
                    self.account,
                    self.device,
                    Settings {
                        mode,
                        mute_until_ms,
                    },
                )
                .await
                .unwrap();
        }
    }

    fn cfg() -> NotificationConfig {
        NotificationConfig {
            coalesce_ms: 1_000,
            max_attempts: 3,
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..NotificationConfig::default()
        }
    }

    #[tokio::test]
    async fn a_burst_is_coalesced_into_one_push_per_window() {
        let env = Env::new(cfg()).await;
        let first = env.wake(false);
        let second = env.wake(true);
        assert_eq!(env.run(&first).await, Settle::Ack);
        // Queued before the push was decided: served by it.
        assert_eq!(env.run(&second).await, Settle::Ack);
        assert_eq!(env.pushes().len(), 1);

        // Mail after the push, inside the window: left to that push.
        env.tick(990);
        let later = env.wake(true);
        assert_eq!(env.run(&later).await, Settle::Ack);
        assert_eq!(env.pushes().len(), 1);

        // The window is over: the next mail is pushed.
        env.tick(10);
        let next = env.wake(false);
        assert_eq!(env.run(&next).await, Settle::Ack);
        assert_eq!(env.pushes().len(), 2);
    }

    #[tokio::test]
    async fn settings_choose_alert_silent_or_nothing() {
        let env = Env::new(cfg()).await;
        let step = async |urgent: bool| {
            env.tick(5_000);
            let before = env.pushes().len();
            assert_eq!(env.run(&env.wake(urgent)).await, Settle::Ack);
            let pushes = env.pushes();
            (pushes.len() > before).then(|| pushes[pushes.len() - 1].1.alert)
        };
        assert_eq!(
            step(true).await,
            Some(true),
            "urgent mail alerts by default"
        );
        assert_eq!(step(false).await, Some(false), "other mail wakes silently");
        env.settings(Mode::Silent, 0).await;
        assert_eq!(step(true).await, Some(false), "SILENT never alerts");
        let muted_until = env.clock.now_ms() + 60_000;
        env.settings(Mode::Alert, muted_until).await;
        assert_eq!(step(true).await, Some(false), "muted: silent");
        env.tick(60_000);
        assert_eq!(step(true).await, Some(true), "mute over: alerts again");
        env.settings(Mode::None, 0).await;
        assert_eq!(step(true).await, None, "NONE: no push at all");
    }

    #[tokio::test]
    async fn a_gone_token_is_pruned_and_the_others_still_pushed() {
        let env = Env::new(cfg()).await;
        env.add_token("fcm-token-2").await;
        env.answer([Outcome::Gone, Outcome::Delivered]);
        assert_eq!(env.run(&env.wake(false)).await, Settle::Ack);
        let left: Vec<String> = env
            .core
            .device_tokens(env.account, env.device)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.token)
            .collect();
        assert_eq!(left, ["fcm-token-2"]);
    }

    #[tokio::test]
    async fn retry_backs_off_honours_retry_after_then_delivers() {
        let env = Env::new(cfg()).await;
        env.answer([Outcome::Retry {
            after: Some(Duration::from_secs(5)),
        }]);
        let w = env.wake(true);
        let Settle::RetryAfter(d) = env.run(&w).await else {
            panic!("a retry answer must defer the job")
        };
        assert!(d >= Duration::from_secs(5), "Retry-After honoured: {d:?}");
        // Another job for the device waits for the same backoff instead of pushing now.
        let other = env.wake(false);
        assert!(matches!(env.run(&other).await, Settle::RetryAfter(_)));
        assert_eq!(env.pushes().len(), 1);
        env.tick(millis(d));
        assert_eq!(env.run(&w).await, Settle::Ack);
        assert_eq!(env.run(&other).await, Settle::Ack);
        assert_eq!(env.pushes().len(), 2);
    }

    #[tokio::test]
    async fn backoff_grows_with_jitter_and_stays_capped() {
        let env = Env::new(cfg()).await;
        for attempt in 1..=10 {
            let exp = (100u64 << (attempt - 1)).min(1_000);
            let d = millis(env.core.backoff(attempt, None));
            assert!((exp / 2..=exp).contains(&d), "attempt {attempt}: {d}");
        }
        let long = env.core.backoff(1, Some(Duration::from_secs(30)));
        assert_eq!(long, Duration::from_secs(30));
    }

    #[tokio::test]
    async fn max_attempts_write_a_dead_letter_that_the_sweeper_removes() {
        let env = Env::new(cfg()).await;
        env.answer([
            Outcome::Retry { after: None },
            Outcome::Retry { after: None },
            Outcome::Retry { after: None },
        ]);
        let w = env.wake(true);
        for _ in 0..2 {
            let Settle::RetryAfter(d) = env.run(&w).await else {
                panic!("attempts left: retry")
            };
            env.tick(millis(d));
        }
        assert_eq!(env.run(&w).await, Settle::Ack, "given up after 3 attempts");
        assert_eq!(env.pushes().len(), 3);
        let letters = async || {
            let prefix = [
                store::device_prefix(env.account, env.device),
                b"x/".to_vec(),
            ]
            .concat();
            env.core
                .kv
                .scan(KeyRange::prefix(&prefix), Direction::Forward, 10)
                .await
                .unwrap()
                .len()
        };
        assert_eq!(letters().await, 1);
        // The job redelivered after giving up pushes nothing more.
        assert_eq!(env.run(&w).await, Settle::Ack);
        assert_eq!(env.pushes().len(), 3);

        assert!(!env.core.sweep_dead_letters().await.unwrap());
        let index = KeyRange::prefix(store::DEAD_LETTER_INDEX);
        let count = async || {
            env.core
                .kv
                .scan(index.clone(), Direction::Forward, 10)
                .await
                .unwrap()
                .len()
        };
        assert_eq!(count().await, 1, "kept during the retention");
        env.tick(env.core.cfg.dead_letter_retention_secs * 1000 + 1);
        env.core.sweep_dead_letters().await.unwrap();
        assert_eq!(count().await, 0);
        assert_eq!(
            letters().await,
            0,
            "the dead letter went with its index entry"
        );
    }

    #[tokio::test]
    async fn a_job_redelivered_after_success_does_not_push_again() {
        let env = Env::new(cfg()).await;
        let w = env.wake(true);
        assert_eq!(env.run(&w).await, Settle::Ack);
        // The ack was lost (crash, restart): the queue hands the same job out again, even
        // long after the coalescing window.
        env.tick(60_000);
        assert_eq!(env.run(&w).await, Settle::Ack);
        assert_eq!(env.pushes().len(), 1);
    }

    #[tokio::test]
    async fn a_crashed_senders_claim_lapses_and_the_job_then_pushes() {
        let env = Env::new(cfg()).await;
        let w = env.wake(false);
        // Another instance claimed the device and died before pushing.
        let now = env.clock.now_ms();
        let stale = PushMarker {
            claimed_ms: now,
            claim_until_ms: now + env.core.cfg.claim_ms,
            ..PushMarker::default()
        };
        env.core
            .kv
            .put(&store::marker_key(env.account, env.device), &encode(&stale))
            .await
            .unwrap();
        assert_eq!(
            env.run(&w).await,
            Settle::RetryAfter(Duration::from_millis(CLAIM_RECHECK_MS))
        );
        env.tick(env.core.cfg.claim_ms - 1);
        assert_eq!(
            env.run(&w).await,
            Settle::RetryAfter(Duration::from_millis(1))
        );
        assert!(env.pushes().is_empty());
        env.tick(1);
        assert_eq!(env.run(&w).await, Settle::Ack);
        assert_eq!(env.pushes().len(), 1);
    }
}
