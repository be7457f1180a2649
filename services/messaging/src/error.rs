//! The service's failures and their one mapping to API errors.

use guardyn_common::events::DecodeError;
use guardyn_common::mesh::MeshError;
use guardyn_common::{ApiError, Reason};
use guardyn_storage::StorageError;

use crate::devices::DeviceMismatch;

/// Why a messaging request failed.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    #[error("invalid {field}: {why}")]
    Invalid { field: String, why: String },
    #[error("{field} too large: {why}")]
    TooLarge { field: String, why: String },
    #[error("invalid MLS message in {field}: {why}")]
    InvalidMls { field: String, why: String },
    #[error("account not found")]
    AccountNotFound,
    #[error("group not found")]
    GroupNotFound,
    #[error("group already exists")]
    GroupExists,
    #[error("not a member of the group")]
    NotMember,
    #[error("the envelopes do not match the destination's devices")]
    DeviceMismatch(DeviceMismatch),
    #[error("stale epoch; the group is at epoch {current}")]
    StaleEpoch { current: u64 },
    #[error("queue of device {device} is full")]
    QueueFull { device: guardyn_common::DeviceId },
    #[error("group is full ({max} member devices)")]
    GroupFull { max: usize },
    #[error("a send with this client message id is still in progress")]
    SendInProgress { retry_after_ms: u64 },
    #[error("the device directory is unavailable: {0}")]
    Directory(#[from] MeshError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("corrupt record: {0}")]
    Corrupt(#[from] DecodeError),
    #[error("event bus: {0}")]
    Events(#[from] guardyn_events::EventError),
}

impl MessagingError {
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
    pub(crate) fn mls(field: &str, why: impl std::fmt::Display) -> Self {
        Self::InvalidMls {
            field: field.to_owned(),
            why: why.to_string(),
        }
    }
}

impl From<MessagingError> for ApiError {
    fn from(e: MessagingError) -> Self {
        use MessagingError as E;
        match e {
            E::Invalid { field, why } => ApiError::invalid_field(field, why),
            E::TooLarge { field, why } => ApiError::payload_too_large(field, why),
            E::InvalidMls { field, why } => ApiError::new(
                Reason::InvalidMlsMessage,
                format!("invalid MLS message in {field}"),
            )
            .with_violation(field, why),
            E::AccountNotFound => ApiError::not_found("destination account not found"),
            E::GroupNotFound => ApiError::not_found("group not found"),
            E::GroupExists => ApiError::new(Reason::AlreadyExists, "group id already taken"),
            // Not-a-member and not-found are distinct on purpose: group ids are 128+ random bits,
            // so confirming existence reveals nothing guessable.
            E::NotMember => {
                ApiError::permission_denied("the calling device is not a member of the group")
            }
            E::DeviceMismatch(d) => ApiError::device_mismatch(d.missing, d.extra, d.stale),
            E::StaleEpoch { current } => ApiError::stale_epoch(current),
            E::QueueFull { device } => ApiError::new(
                Reason::QuotaExceeded,
                format!("the queue of destination device {device} is full"),
            ),
            E::GroupFull { max } => ApiError::new(
                Reason::QuotaExceeded,
                format!("a group has at most {max} member devices"),
            ),
            // Same id, same device, the first attempt still running (or crashed less than a
            // lease ago): retrying after the hint returns its result.
            E::SendInProgress { retry_after_ms } => ApiError::new(
                Reason::SendInProgress,
                "a send with this client message id is still in progress; retry",
            )
            .with_retry_after(std::time::Duration::from_millis(retry_after_ms)),
            E::Directory(err) => {
                tracing::warn!(error = %err, "device directory call failed");
                ApiError::new(Reason::Unavailable, "device directory unavailable")
            }
            E::Storage(err) => ApiError::from(err),
            E::Corrupt(ref err) => ApiError::internal(err),
            E::Events(ref err) => ApiError::internal(err),
        }
    }
}

impl From<MessagingError> for tonic::Status {
    fn from(e: MessagingError) -> Self {
        ApiError::from(e).into()
    }
}
