//! Wall-clock time behind a trait, so expiry logic (codes, tokens, presence, TTLs) is tested by
//! moving a clock instead of sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// The current time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> SystemTime;

    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }

    /// For clocks that move in jumps (tests): a receiver marked changed every time the clock
    /// is moved. Timer loops that compute deadlines from [`Clock::now`] wait on it as well as on
    /// the runtime timer for their next deadline, so moving the clock fires due timers at once
    /// instead of after a real sleep. `None` (the default) for clocks that move with real time,
    /// where the runtime timer alone is enough.
    fn jumps(&self) -> Option<watch::Receiver<()>> {
        None
    }
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to (tests). Clones share the same time; every
/// [`ManualClock::advance`] wakes the waiters of [`Clock::jumps`].
#[derive(Clone, Debug)]
pub struct ManualClock {
    ms: Arc<AtomicU64>,
    jumped: Arc<watch::Sender<()>>,
}

impl ManualClock {
    /// Starts at the current system time.
    pub fn new() -> Self {
        Self {
            ms: Arc::new(AtomicU64::new(SystemClock.now_ms())),
            jumped: Arc::new(watch::Sender::new(())),
        }
    }

    pub fn advance(&self, by: Duration) {
        self.ms.fetch_add(
            u64::try_from(by.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
        // Marks every receiver changed; having none is fine.
        self.jumped.send_replace(());
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.ms.load(Ordering::SeqCst))
    }

    fn jumps(&self) -> Option<watch::Receiver<()>> {
        Some(self.jumped.subscribe())
    }
}

/// Resolves when a clock from [`Clock::jumps`] jumps; never for clocks that move with real
/// time (`None`). Timer loops `select!` on it next to their runtime sleep.
pub async fn jumped(rx: &mut Option<watch::Receiver<()>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// The loop of every background sweeper: run `pass` now, then every `interval` and whenever a
/// manual clock jumps, until `shutdown`. A pass that returns `true` (it filled its batch, so more
/// work is due) is followed by another after a 10 ms breather instead of a whole interval, so
/// a backlog drains in bounded steps without monopolising the runtime.
pub async fn run_passes<F, Fut>(
    clock: &SharedClock,
    shutdown: &tokio_util::sync::CancellationToken,
    interval: Duration,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut jumps = clock.jumps();
    loop {
        let pause = if pass().await {
            Duration::from_millis(10)
        } else {
            interval
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
            () = jumped(&mut jumps) => {}
        }
    }
}

/// The clock handle services hold.
pub type SharedClock = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let c = ManualClock::new();
        let t0 = c.now_ms();
        assert_eq!(c.now_ms(), t0);
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now_ms(), t0 + 90_000);
    }

    #[test]
    fn advancing_a_manual_clock_wakes_its_jump_waiters() {
        let c = ManualClock::new();
        let mut rx = c
            .jumps()
            .unwrap_or_else(|| panic!("manual clocks report jumps"));
        assert!(!rx.has_changed().unwrap_or(true));
        c.clone().advance(Duration::from_secs(1));
        assert!(rx.has_changed().unwrap_or(false));
        rx.mark_unchanged();
        assert!(SystemClock.jumps().is_none());
    }
}
