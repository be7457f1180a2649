//! The service's failures and their one mapping to API errors.

use guardyn_common::ApiError;
use guardyn_storage::StorageError;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("event bus: {0}")]
    Events(#[from] guardyn_events::EventError),
    #[error("audit log: {0}")]
    Audit(#[from] guardyn_audit::AuditError),
    /// The client configuration signing key cannot be loaded or created (start-up).
    #[error("client configuration signing key {0}")]
    SigningKey(String),
    /// A client configuration request field is invalid.
    #[error("{field}: {why}")]
    ConfigInvalid { field: &'static str, why: String },
    /// A client configuration payload is over the size limit.
    #[error("payload_json is {len} bytes, over the {max}-byte limit")]
    ConfigTooLarge { len: usize, max: usize },
    /// No client configuration was published yet.
    #[error("no client configuration was published yet")]
    ConfigNotPublished,
    /// Concurrent publishes kept winning the version compare-and-set.
    #[error("too much contention publishing the client configuration")]
    ConfigContention,
    /// An account operation through the `AccountAdmin` seam (auth) was refused or failed.
    #[error("accounts: {0}")]
    Accounts(#[from] guardyn_common::admin::AccountAdminError),
    /// The first owner's enrolment code did not match or could not be read.
    #[error("owner enrolment: {0}")]
    Bootstrap(#[from] crate::users_bootstrap::BootstrapError),
    /// A user-lifecycle request field is invalid.
    #[error("{field}: {why}")]
    UsersInvalid { field: &'static str, why: String },
    /// Granting or removing the owner or admin role takes an owner.
    #[error("only an owner grants or removes the owner and admin roles")]
    OwnerRequired,
    /// A system notice request field is invalid.
    #[error("{field}: {why}")]
    NoticeInvalid { field: &'static str, why: String },
    /// A rate limit's refusal, already shaped for the client.
    #[error("{0}")]
    Limited(ApiError),
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Storage(err) => ApiError::from(err),
            AdminError::Events(ref err) => ApiError::internal(err),
            AdminError::Audit(guardyn_audit::AuditError::Storage(err)) => ApiError::from(err),
            AdminError::Audit(ref err) => {
                ApiError::new(guardyn_common::error::Reason::Unavailable, err.to_string())
                    .with_retry_after(std::time::Duration::from_millis(200))
            }
            AdminError::SigningKey(_) => ApiError::internal(&e),
            AdminError::ConfigInvalid { field, why } => ApiError::invalid_field(field, why),
            AdminError::ConfigTooLarge { .. } => {
                ApiError::payload_too_large("payload_json", e.to_string())
            }
            AdminError::ConfigNotPublished => {
                ApiError::not_found(e.to_string()).with_metadata("resource", "client_config")
            }
            AdminError::Accounts(err) => accounts_error(err),
            AdminError::Bootstrap(crate::users_bootstrap::BootstrapError::Invalid) => {
                ApiError::new(guardyn_common::error::Reason::InvalidCode, e.to_string())
            }
            AdminError::Bootstrap(ref err) => ApiError::internal(err),
            AdminError::UsersInvalid { field, why } => ApiError::invalid_field(field, why),
            AdminError::NoticeInvalid { field, why } => ApiError::invalid_field(field, why),
            AdminError::OwnerRequired => {
                ApiError::new(guardyn_common::error::Reason::RoleRequired, e.to_string())
                    .with_metadata("roles", "owner")
            }
            AdminError::Limited(api) => api,
            AdminError::ConfigContention => {
                ApiError::new(guardyn_common::error::Reason::Unavailable, e.to_string())
                    .with_retry_after(std::time::Duration::from_millis(200))
            }
        }
    }
}

/// Refusals of auth's account operations keep their reason; an outage stays retryable.
fn accounts_error(err: guardyn_common::admin::AccountAdminError) -> ApiError {
    use guardyn_common::admin::AccountAdminError as E;
    use guardyn_common::error::Reason;
    let msg = err.to_string();
    match err {
        E::NotFound(resource) => ApiError::not_found(msg).with_metadata("resource", resource),
        E::LastOwner => ApiError::new(Reason::LastOwner, msg),
        E::OwnerExists => {
            ApiError::new(Reason::AlreadyExists, msg).with_metadata("resource", "owner")
        }
        E::LastDevice => ApiError::new(Reason::LastDevice, msg),
        E::Mesh(ref mesh) if mesh.is_retryable() => {
            ApiError::new(Reason::Unavailable, "accounts unavailable, retry")
                .with_retry_after(std::time::Duration::from_secs(1))
        }
        E::Mesh(ref mesh) => ApiError::internal(mesh),
    }
}

impl From<AdminError> for tonic::Status {
    fn from(e: AdminError) -> Self {
        ApiError::from(e).into()
    }
}
