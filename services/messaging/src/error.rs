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
    /// A handshake message that fails verification against the group's public state.
    #[error("{field} fails verification against the group state: {why}")]
    InvalidCommit { field: String, why: String },
    /// A member leaf not bound to the device it names.
    #[error("{field}: MLS identity not bound to its device: {why}")]
    IdentityMismatch { field: String, why: String },
    /// The group's epoch counter is exhausted.
    #[error("the group has reached the last epoch")]
    EpochExhausted,
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
    #[error("the ratchet tree of epoch {epoch} is not kept")]
    TreeNotKept { epoch: u64 },
    #[error("stale epoch; the group is at epoch {current}")]
    StaleEpoch { current: u64 },
    #[error("queue of device {device} is full ({limit})")]
    QueueFull {
        account: guardyn_common::AccountId,
        device: guardyn_common::DeviceId,
        limit: QueueLimit,
    },
    #[error("rate limited: {0}")]
    RateLimited(ApiError),
    #[error("group is full ({max} member devices)")]
    GroupFull { max: usize },
    /// The group record would outgrow what storage holds (`what`: proposals, state size).
    #[error("group state limit: {what}")]
    GroupStateLimit { what: String },
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

/// Which quota of a device queue a send would exceed ([`crate::quota`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueLimit {
    /// `messaging.max_queue_len`.
    QueueLen,
    /// `messaging.max_queue_bytes`.
    QueueBytes,
    /// `messaging.max_sender_queue_len`: the sending account's share.
    SenderQueueLen,
    /// `messaging.max_sender_queue_bytes`: the sending account's share.
    SenderQueueBytes,
}

impl QueueLimit {
    /// The `limit` metadata of the error, a stable string.
    pub fn name(self) -> &'static str {
        match self {
            Self::QueueLen => "queue_len",
            Self::QueueBytes => "queue_bytes",
            Self::SenderQueueLen => "sender_queue_len",
            Self::SenderQueueBytes => "sender_queue_bytes",
        }
    }
}

impl std::fmt::Display for QueueLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl MessagingError {
    pub(crate) fn limited(e: ApiError) -> Self {
        Self::RateLimited(e)
    }
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
    pub(crate) fn commit(field: &str, why: impl std::fmt::Display) -> Self {
        Self::InvalidCommit {
            field: field.to_owned(),
            why: why.to_string(),
        }
    }
    pub(crate) fn identity(field: &str, why: impl Into<String>) -> Self {
        Self::IdentityMismatch {
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
            E::InvalidCommit { field, why } => ApiError::new(
                Reason::InvalidCommit,
                format!("{field} fails verification against the group state"),
            )
            .with_violation(field, why),
            E::IdentityMismatch { field, why } => ApiError::new(
                Reason::MlsIdentityMismatch,
                format!("{field}: an MLS credential is not bound to the device it names"),
            )
            .with_violation(field, why),
            E::EpochExhausted => ApiError::new(
                Reason::InvalidArgument,
                "the group has reached the last epoch; create a new group",
            )
            .with_violation("epoch", "no epoch follows 18446744073709551615"),
            E::AccountNotFound => ApiError::not_found("destination account not found"),
            E::GroupExists => ApiError::new(Reason::AlreadyExists, "group id already taken"),
            // One answer for "no such group" and "not a member", so no RPC tells an outsider
            // which group ids exist.
            E::GroupNotFound | E::NotMember => {
                ApiError::not_found("no such group, or the calling device is not a member of it")
            }
            E::TreeNotKept { epoch } => ApiError::not_found(format!(
                "the ratchet tree of epoch {epoch} is no longer kept (or that epoch added no \
                 members): join by external commit"
            )),
            E::DeviceMismatch(d) => ApiError::device_mismatch(d.missing, d.extra, d.stale),
            E::StaleEpoch { current } => ApiError::stale_epoch(current),
            // Not retryable soon: room comes back when the recipient acknowledges.
            E::QueueFull {
                account,
                device,
                limit,
            } => ApiError::new(
                Reason::QuotaExceeded,
                format!("the queue of destination device {account}.{device} is full ({limit})"),
            )
            .with_metadata("limit", limit.name())
            .with_metadata("account_id", account.to_string())
            .with_metadata("device_id", device.to_string()),
            E::RateLimited(e) => e,
            E::GroupStateLimit { what } => ApiError::new(
                Reason::QuotaExceeded,
                format!("the group's state would exceed its limit: {what}"),
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
