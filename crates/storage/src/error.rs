use thiserror::Error;

/// Errors a storage backend reports. Transaction conflicts are not errors: see
/// [`crate::TxnOutcome`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The caller broke a documented limit (key or value too large, empty partition name...).
    #[error("invalid storage request: {0}")]
    InvalidRequest(String),
    /// A persisted value could not be decoded (unknown version tag, truncated bytes).
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The backend could not be reached or timed out; the operation may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The backend is closed (shutting down).
    #[error("storage is closed")]
    Closed,
    /// Any other engine failure.
    #[error("storage backend error: {0}")]
    Backend(String),
}

pub type StorageResult<T> = Result<T, StorageError>;
