use guardyn_storage::StorageError;
use thiserror::Error;

/// Errors reported by an [`crate::EventBus`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EventError {
    /// A subject or pattern broke the syntax rules of [`crate::subject`].
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject {
        subject: String,
        reason: &'static str,
    },
    /// A queue name broke the rules of [`crate::subject::validate_queue_name`].
    #[error("invalid queue name {queue:?}: {reason}")]
    InvalidQueue { queue: String, reason: &'static str },
    /// The payload is larger than [`crate::EventsConfig::max_payload`].
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge { len: usize, max: usize },
    /// The backend cannot be reached right now; the operation may be retried.
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    /// The durable queue storage failed (in-process backend).
    #[error("event queue storage failed: {0}")]
    Storage(#[from] StorageError),
    /// Any other backend failure.
    #[error("event bus backend error: {0}")]
    Backend(String),
}
