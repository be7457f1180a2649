//! The service's failures and their one mapping to API errors.

use guardyn_common::{ApiError, Reason};
use guardyn_storage::StorageError;

use crate::providers::Platform;

/// Why a notification request failed.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    #[error("push token not found")]
    TokenNotFound,
    #[error("the device already holds {max} push tokens")]
    TooManyTokens { max: usize },
    #[error("no {} provider is configured", .0.label())]
    PlatformUnavailable(Platform),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("event bus: {0}")]
    Events(#[from] guardyn_events::EventError),
}

impl From<NotificationError> for ApiError {
    fn from(e: NotificationError) -> Self {
        use NotificationError as E;
        match e {
            E::TokenNotFound => ApiError::not_found("no such push token on this device"),
            E::TooManyTokens { max } => ApiError::new(
                Reason::QuotaExceeded,
                format!("a device may hold at most {max} push tokens; unregister one first"),
            )
            .with_metadata("limit", max.to_string()),
            E::PlatformUnavailable(p) => ApiError::new(
                Reason::PushPlatformUnavailable,
                format!(
                    "this server has no {} provider configured; register another platform",
                    p.label()
                ),
            )
            .with_metadata("platform", p.label()),
            E::Storage(err) => ApiError::from(err),
            E::Events(ref err) => ApiError::internal(err),
        }
    }
}

impl From<NotificationError> for tonic::Status {
    fn from(e: NotificationError) -> Self {
        ApiError::from(e).into()
    }
}
