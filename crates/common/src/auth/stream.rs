//! Authentication of long-lived server streams.
//!
//! The auth layer checks a token once, when the stream opens; a stream can outlive the token
//! and the session. Every streaming handler takes a [`StreamAuth`] from
//! [`super::TokenVerifier::guard_stream`] before it starts and ends the stream with the error
//! [`StreamAuth::ended`] resolves to.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt as _};

use super::revocation::{SessionWatch, unix_now};
use crate::error::{ApiError, Reason};

/// Watches one stream's caller: its session's revocation and its token's expiry.
#[derive(Debug)]
pub struct StreamAuth {
    watch: SessionWatch,
    /// Unix seconds after which the token is refused (its `exp` plus the verifier's leeway).
    expires_at: u64,
}

impl StreamAuth {
    pub(crate) fn new(watch: SessionWatch, expires_at: u64) -> Self {
        Self { watch, expires_at }
    }

    /// Resolves when the stream must end: `UNAUTHENTICATED` with `SESSION_REVOKED` once the
    /// session is revoked (at once if it already was when the guard was taken), or with
    /// `TOKEN_EXPIRED` once the token expires. Cancel-safe: call it in every `select!` round.
    pub async fn ended(&self) -> ApiError {
        let wait = self.until_expiry();
        let expiry = async {
            match wait {
                Some(wait) => tokio::time::sleep(wait).await,
                // Beyond what the clock can represent: never.
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = self.watch.revoked() => Self::revoked_error(),
            () = expiry => Self::expired_error(),
        }
    }

    /// [`StreamAuth::ended`] for a loop that wakes at `wake_at` anyway (a keepalive): one
    /// timer for both, which an idle stream holds while it waits. Resolves with the error
    /// `ended` would give, or with `None` at `wake_at` while the stream may go on.
    pub async fn ended_or(&self, wake_at: tokio::time::Instant) -> Option<ApiError> {
        let expiry = self
            .until_expiry()
            .and_then(|wait| tokio::time::Instant::now().checked_add(wait));
        let (at, expires) = match expiry {
            Some(expiry) if expiry <= wake_at => (expiry, true),
            _ => (wake_at, false),
        };
        tokio::select! {
            biased;
            () = self.watch.revoked() => Some(Self::revoked_error()),
            () = tokio::time::sleep_until(at) => expires.then(Self::expired_error),
        }
    }

    /// Time left until the token expires; `None` beyond what the clock can represent.
    fn until_expiry(&self) -> Option<Duration> {
        // Token expiry is stamped on the system clock, as the verifier reads it.
        UNIX_EPOCH
            .checked_add(Duration::from_secs(self.expires_at))
            .map(|deadline| {
                deadline
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            })
    }

    /// Wrap a response stream: its items pass through until the caller's authentication
    /// ends, then it ends with that error. For streams whose handler has no loop of its own.
    pub fn wrap<T, S>(self, inner: S) -> impl Stream<Item = Result<T, tonic::Status>> + Send
    where
        T: Send + 'static,
        S: Stream<Item = Result<T, tonic::Status>> + Send + 'static,
    {
        let state = Some((self, Box::pin(inner)));
        futures::stream::unfold(state, |state| async move {
            let (auth, mut inner) = state?;
            if let Err(e) = auth.check() {
                return Some((Err(e.into()), None));
            }
            tokio::select! {
                biased;
                e = auth.ended() => Some((Err(e.into()), None)),
                item = inner.next() => item.map(|i| (i, Some((auth, inner)))),
            }
        })
    }

    /// Whether the stream may go on right now: the error [`StreamAuth::ended`] would resolve
    /// to if the session is revoked or the token expired already. For loops that do work
    /// between waits (a backlog drained before the first `select!`).
    pub fn check(&self) -> Result<(), ApiError> {
        if self.watch.is_revoked() {
            return Err(Self::revoked_error());
        }
        if unix_now() >= self.expires_at {
            return Err(Self::expired_error());
        }
        Ok(())
    }

    fn revoked_error() -> ApiError {
        ApiError::new(Reason::SessionRevoked, "the session was revoked")
    }

    fn expired_error() -> ApiError {
        ApiError::new(
            Reason::TokenExpired,
            "the access token expired; reconnect with a fresh one",
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::auth::RevocationList;

    #[tokio::test]
    async fn the_guard_ends_on_revocation_and_on_expiry() {
        let list = RevocationList::new();
        let far = StreamAuth::new(list.watch("s"), unix_now() + 3600);
        assert!(far.check().is_ok());
        list.revoke("s", unix_now() + 60);
        assert_eq!(far.check().unwrap_err().reason(), Reason::SessionRevoked);
        assert_eq!(far.ended().await.reason(), Reason::SessionRevoked);
        let soon = StreamAuth::new(list.watch("t"), unix_now().saturating_sub(1));
        assert_eq!(soon.check().unwrap_err().reason(), Reason::TokenExpired);
        assert_eq!(soon.ended().await.reason(), Reason::TokenExpired);
    }

    #[tokio::test]
    async fn one_timer_serves_the_wake_up_and_the_expiry() {
        let list = RevocationList::new();
        let soon = tokio::time::Instant::now() + Duration::from_millis(20);
        let far = StreamAuth::new(list.watch("f"), unix_now() + 3600);
        assert!(
            far.ended_or(soon).await.is_none(),
            "woken, still authenticated"
        );
        let expired = StreamAuth::new(list.watch("e"), unix_now().saturating_sub(1));
        let late = tokio::time::Instant::now() + Duration::from_secs(3600);
        let e = expired
            .ended_or(late)
            .await
            .expect("the expiry comes first");
        assert_eq!(e.reason(), Reason::TokenExpired);
        list.revoke("f", unix_now() + 60);
        let e = far.ended_or(late).await.expect("revoked");
        assert_eq!(e.reason(), Reason::SessionRevoked);
    }

    #[tokio::test]
    async fn a_wrapped_stream_ends_with_the_error_once_authentication_ends() {
        let list = RevocationList::new();
        let auth = StreamAuth::new(list.watch("w"), unix_now() + 3600);
        let inner =
            futures::stream::iter([Ok::<u8, tonic::Status>(1)]).chain(futures::stream::pending());
        let mut wrapped = Box::pin(auth.wrap(inner));
        assert_eq!(wrapped.next().await.unwrap().unwrap(), 1);
        list.revoke("w", unix_now() + 60);
        let end = wrapped.next().await.unwrap().unwrap_err();
        assert_eq!(
            crate::error::reason_of(&end).as_deref(),
            Some("SESSION_REVOKED")
        );
        assert!(wrapped.next().await.is_none());
    }
}
