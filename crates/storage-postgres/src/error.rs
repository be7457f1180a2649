//! How driver and pool failures become [`StorageError`]s, and which ones are retried.

use std::time::Duration;

use guardyn_storage::StorageError;

/// What to do with a failed attempt.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The transaction lost a serialization race (SQLSTATE 40001) or a deadlock (40P01):
    /// nothing was written, running it again is correct.
    Retry(String),
    Fatal(StorageError),
}

impl From<StorageError> for Failure {
    fn from(e: StorageError) -> Self {
        Self::Fatal(e)
    }
}

/// The class of a SQLSTATE, as far as the caller is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    Retry,
    Unavailable,
    Backend,
}

/// Classify a SQLSTATE (`None`: no server answer at all, i.e. an I/O or protocol failure).
pub(crate) fn classify(code: Option<&str>) -> Class {
    let Some(code) = code else {
        return Class::Unavailable;
    };
    match code {
        // serialization_failure, deadlock_detected
        "40001" | "40P01" => Class::Retry,
        // admin/crash shutdown, cannot_connect_now, database_dropped; idle-session timeouts
        "57P01" | "57P02" | "57P03" | "57P04" | "57P05" => Class::Unavailable,
        _ if code.starts_with("08") => Class::Unavailable, // connection exception
        _ if code.starts_with("53") => Class::Unavailable, // insufficient resources
        _ => Class::Backend,
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        let class = if e.is_closed() {
            Class::Unavailable
        } else {
            classify(e.code().map(tokio_postgres::error::SqlState::code))
        };
        // The driver's Display of a database error is the server's message; it never contains
        // a parameter value.
        let text = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        match class {
            Class::Retry => Self::Retry(text),
            Class::Unavailable => Self::Fatal(StorageError::Unavailable(text)),
            Class::Backend => Self::Fatal(StorageError::Backend(text)),
        }
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            deadpool_postgres::PoolError::Closed => Self::Fatal(StorageError::Closed),
            other => Self::Fatal(StorageError::Unavailable(format!(
                "no PostgreSQL connection: {other}"
            ))),
        }
    }
}

/// Attempts per operation before a lost race is reported as unavailable (the caller may retry).
pub(crate) const MAX_ATTEMPTS: u32 = 40;

/// Backoff before attempt `attempt` (1-based): exponential from 1 ms, capped at 50 ms, with
/// jitter from the clock's low bits so racing transactions spread out.
pub(crate) fn backoff(attempt: u32) -> Duration {
    let base = 1u64 << attempt.min(6);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    Duration::from_micros((base * 1_000).min(50_000) / 2 + nanos % (base * 500).max(1))
}

/// Run `attempt` until it succeeds, fails for good, or lost [`MAX_ATTEMPTS`] races.
pub(crate) async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, StorageError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut last = String::new();
    for n in 1..=MAX_ATTEMPTS {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(why)) => {
                last = why;
                tokio::time::sleep(backoff(n)).await;
            }
        }
    }
    Err(StorageError::Unavailable(format!(
        "transaction kept losing serialization races ({MAX_ATTEMPTS} attempts): {last}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified() {
        assert_eq!(classify(Some("40001")), Class::Retry);
        assert_eq!(classify(Some("40P01")), Class::Retry);
        assert_eq!(classify(Some("08006")), Class::Unavailable);
        assert_eq!(classify(Some("57P01")), Class::Unavailable);
        assert_eq!(classify(Some("53300")), Class::Unavailable);
        assert_eq!(classify(None), Class::Unavailable);
        assert_eq!(classify(Some("23505")), Class::Backend);
        assert_eq!(classify(Some("54000")), Class::Backend);
    }

    #[test]
    fn backoff_is_bounded() {
        for n in 1..=MAX_ATTEMPTS {
            assert!(backoff(n) <= Duration::from_millis(100), "attempt {n}");
        }
    }

    #[tokio::test]
    async fn retries_stop_at_the_first_fatal_error() {
        let mut calls = 0;
        let r: Result<(), _> = retrying(|| {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(Failure::Retry("race".to_owned()))
                } else {
                    Err(Failure::Fatal(StorageError::Closed))
                }
            }
        })
        .await;
        assert!(matches!(r, Err(StorageError::Closed)));
        assert_eq!(calls, 3);
    }
}
