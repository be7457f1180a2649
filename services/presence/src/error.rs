//! The service's errors and their one conversion to [`ApiError`].

use guardyn_common::{ApiError, Reason};

/// Failures of presence operations.
#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// Outages, and corrupt stored values (mapped by common's conversion).
    #[error(transparent)]
    Storage(#[from] guardyn_storage::StorageError),
    #[error(transparent)]
    Events(#[from] guardyn_events::EventError),
    #[error("too much contention on account {0}")]
    Contention(crate::model::AccountId),
}

impl From<PresenceError> for ApiError {
    fn from(err: PresenceError) -> Self {
        match err {
            PresenceError::Contention(_) => {
                ApiError::new(Reason::Unavailable, "too many concurrent updates, retry")
                    .with_retry_after(std::time::Duration::from_millis(100))
            }
            PresenceError::Storage(e) => e.into(),
            PresenceError::Events(_) => ApiError::internal(&err),
        }
    }
}

impl From<PresenceError> for tonic::Status {
    fn from(err: PresenceError) -> Self {
        ApiError::from(err).into()
    }
}
