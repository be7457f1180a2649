//! The service's failures and their one mapping to API errors.

use guardyn_common::{ApiError, Reason};
use guardyn_storage::StorageError;

/// Why a media request failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("invalid {field}: {why}")]
    Invalid { field: String, why: String },
    #[error("{field} too large: {why}")]
    TooLarge { field: String, why: String },
    #[error("upload not found")]
    UploadNotFound,
    #[error("media not found")]
    MediaNotFound,
    #[error("no avatar")]
    AvatarNotFound,
    #[error("not the uploading account")]
    NotOwner,
    #[error("offset mismatch; committed offset is {committed}")]
    OffsetMismatch { committed: u64 },
    #[error("upload incomplete: {committed} of {total} bytes")]
    Incomplete { committed: u64, total: u64 },
    #[error("the uploaded bytes do not match the declared SHA-256")]
    ChecksumMismatch,
    #[error("storage quota of {quota} bytes exceeded")]
    QuotaExceeded { quota: u64 },
    #[error("offset {offset} is beyond the blob size {size}")]
    OutOfRange { offset: u64, size: u64 },
    #[error("chunk object {0} is missing")]
    MissingChunk(String),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("event bus: {0}")]
    Events(#[from] guardyn_events::EventError),
}

impl MediaError {
    pub(crate) fn invalid(field: &str, why: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            why: why.into(),
        }
    }
    pub(crate) fn too_large(field: &str, why: impl Into<String>) -> Self {
        Self::TooLarge {
            field: field.to_owned(),
            why: why.into(),
        }
    }
}

impl From<MediaError> for ApiError {
    fn from(e: MediaError) -> Self {
        use MediaError as E;
        match e {
            E::Invalid { field, why } => ApiError::invalid_field(field, why),
            E::TooLarge { field, why } => ApiError::payload_too_large(field, why),
            E::UploadNotFound => ApiError::not_found("upload not found or expired"),
            E::MediaNotFound => ApiError::not_found("media not found, expired or deleted"),
            E::AvatarNotFound => ApiError::not_found("the account has no avatar"),
            E::NotOwner => ApiError::permission_denied("only the uploading account may do this"),
            E::OffsetMismatch { committed } => ApiError::offset_mismatch(committed),
            E::Incomplete { committed, total } => ApiError::new(
                Reason::UploadIncomplete,
                format!("{committed} of {total} bytes uploaded"),
            )
            .with_metadata("committed_offset", committed.to_string()),
            E::ChecksumMismatch => ApiError::new(
                Reason::ChecksumMismatch,
                "the uploaded bytes do not hash to the declared SHA-256; the upload is discarded",
            ),
            E::QuotaExceeded { quota } => ApiError::new(
                Reason::QuotaExceeded,
                format!("the account's media quota of {quota} bytes would be exceeded"),
            ),
            E::OutOfRange { offset, size } => ApiError::new(
                Reason::InvalidArgument,
                format!("offset {offset} is beyond the blob size {size}"),
            )
            .with_violation("offset", format!("must be less than {size}"))
            .with_code(tonic::Code::OutOfRange),
            E::MissingChunk(ref key) => {
                tracing::error!(key, "a committed chunk object is missing");
                ApiError::new(Reason::Internal, "internal error")
            }
            E::Storage(err) => ApiError::from(err),
            E::Events(ref err) => ApiError::internal(err),
        }
    }
}

impl From<MediaError> for tonic::Status {
    fn from(e: MediaError) -> Self {
        ApiError::from(e).into()
    }
}
