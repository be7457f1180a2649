//! Retrying start-up dependencies with capped exponential backoff until one deadline for all
//! of them (see [`crate::startup`]).

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// At most one "waiting for" line per dependency this often.
pub const LOG_EVERY: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A signal arrived while start-up was waiting.
#[derive(Debug)]
pub struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stopped while waiting for dependencies")
    }
}

impl std::error::Error for Stopped {}

/// Retries start-up dependencies until one deadline for all of them.
#[derive(Debug)]
pub struct Waiter {
    deadline: Instant,
    timeout_secs: u64,
    stop: CancellationToken,
}

impl Waiter {
    /// Wait at most `timeout_secs` from now in all; give up with [`Stopped`] once `stop` is
    /// cancelled.
    pub fn new(timeout_secs: u64, stop: CancellationToken) -> Self {
        Self {
            deadline: Instant::now() + Duration::from_secs(timeout_secs),
            timeout_secs,
            stop,
        }
    }

    /// Run `attempt` until it succeeds. `key` is the configuration key naming the dependency
    /// (in the log and in the final error), `what` says what it is.
    pub async fn until<T, E, F, Fut>(
        &self,
        key: &str,
        what: &str,
        mut attempt: F,
    ) -> anyhow::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<anyhow::Error>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut logged: Option<Instant> = None;
        let mut error = String::from("no answer");
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return Err(Stopped.into()),
                result = tokio::time::timeout_at(self.deadline, attempt()) => match result {
                    Ok(Ok(value)) => {
                        if logged.is_some() {
                            tracing::info!(key, "{what} is available");
                        }
                        return Ok(value);
                    }
                    Ok(Err(e)) => error = format!("{:#}", e.into()),
                    // The deadline passed mid-attempt: the last failure says the most.
                    Err(_) => {}
                },
            }
            let now = Instant::now();
            if now >= self.deadline {
                anyhow::bail!(
                    "{what} ({key}) did not become available within server.startup_timeout_secs \
                     = {}: {error}",
                    self.timeout_secs
                );
            }
            if logged.is_none_or(|at| now.duration_since(at) >= LOG_EVERY) {
                tracing::warn!(key, %error, "waiting for {what}");
                logged = Some(now);
            }
            tokio::select! {
                _ = self.stop.cancelled() => return Err(Stopped.into()),
                _ = tokio::time::sleep_until((now + backoff).min(self.deadline)) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
