//! The service's error type and its one conversion to [`ApiError`].

use std::time::Duration;

use guardyn_common::{ApiError, Reason};
use tonic::Code;

/// Everything that can go wrong in the auth service.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{field}: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("password must be {min} to 1024 bytes")]
    WeakPassword { min: usize },
    #[error("password is one of the most common passwords")]
    CommonPassword,
    #[error("{field}: invalid key: {reason}")]
    InvalidKey { field: String, reason: String },
    #[error("{field}: signature does not verify against the identity key")]
    InvalidSignature { field: String },
    #[error("{field}: more than {limit} items")]
    PayloadTooLarge { field: String, limit: usize },
    #[error("{field}: {reason}")]
    InvalidMls { field: String, reason: String },
    /// An MLS credential not bound to the device it names (identity or pinned signature key).
    #[error("{field}: {reason}")]
    MlsIdentityMismatch { field: String, reason: String },
    #[error("username is taken")]
    UsernameTaken,
    #[error("{resource} already exists")]
    AlreadyExists { resource: &'static str },
    /// `authenticated`: the caller holds a token (the password is re-checked), so the code is
    /// PERMISSION_DENIED rather than UNAUTHENTICATED.
    #[error("invalid credentials")]
    InvalidCredentials { authenticated: bool },
    #[error("invalid or expired refresh token")]
    InvalidRefreshToken,
    #[error("session was revoked")]
    SessionRevoked,
    #[error("device was removed")]
    DeviceRemoved,
    #[error("invalid or already used code")]
    InvalidCode { code: Code },
    #[error("code is unknown, expired or used")]
    CodeExpired,
    /// ApproveLink of a code that is not (or no longer) pending: NOT_FOUND, since the caller
    /// is signed in and the code is not its credential.
    #[error("link code is unknown, expired or already approved")]
    LinkCodeUnknown,
    #[error("the link request has not been approved yet")]
    LinkPending { retry_after: Duration },
    #[error("this operation needs a recent step-up (AuthService.StepUp)")]
    StepUpRequired { window_secs: u64 },
    #[error("a second factor is required")]
    MfaRequired,
    #[error("the account is suspended")]
    AccountSuspended,
    #[error("the deployment's last owner cannot lose the owner role")]
    LastOwner,
    #[error("the deployment already has an owner")]
    OwnerExists,
    #[error("TOTP is already enabled")]
    MfaAlreadyEnabled,
    #[error("TOTP is not enabled or no enrolment is pending")]
    MfaNotEnabled,
    #[error("{resource} not found")]
    NotFound { resource: &'static str },
    #[error("the account's last device cannot be removed; delete the account instead")]
    LastDevice,
    #[error("the account has the maximum number of devices")]
    DeviceLimit,
    #[error("quota {quota} exceeded")]
    QuotaExceeded { quota: &'static str },
    #[error("device has no usable prekeys")]
    PrekeysExhausted,
    #[error("too many failed attempts, retry later")]
    /// A persisted lockout (`limit`: `login_lockout`, `login_lockout_global`, `mfa_lockout`).
    LockedOut {
        retry_after: Duration,
        limit: &'static str,
    },
    /// Every Argon2id slot stayed busy for `auth.argon2_queue_ms`.
    #[error("server is busy checking passwords, retry later")]
    HashingOverloaded { retry_after: Duration },
    /// A rate limiter's refusal, already shaped for the client.
    #[error("{0}")]
    Limited(ApiError),
    #[error("storage: {0}")]
    Storage(#[from] guardyn_storage::StorageError),
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    #[error("token signing: {0}")]
    Sign(#[from] guardyn_common::auth::SignError),
    #[error("password hashing: {0}")]
    Hash(String),
    #[error("storage kept conflicting; gave up")]
    Contention,
    #[error("audit log: {0}")]
    Audit(#[from] guardyn_audit::AuditError),
    /// The master key file cannot be used (missing when configured, unreadable, wrong size).
    #[error("auth master key: {0}")]
    MasterKey(String),
    /// A sealed secret does not open: the master key is not the one it was sealed with (or
    /// the value was altered).
    #[error(
        "a sealed {what} cannot be opened with this master key (auth.master_key_file replaced or lost?)"
    )]
    Unseal { what: &'static str },
}

pub type AuthResult<T> = Result<T, AuthError>;

impl AuthError {
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        use AuthError as E;
        let msg = err.to_string();
        match err {
            E::InvalidField { field, reason } => ApiError::invalid_field(field, reason),
            E::WeakPassword { min } => ApiError::new(Reason::WeakPassword, msg)
                .with_violation("password", format!("must be {min} to 1024 bytes"))
                .with_metadata("min_length", min.to_string()),
            E::CommonPassword => ApiError::new(Reason::WeakPassword, msg)
                .with_violation("password", "is one of the most common passwords")
                .with_metadata("check", "common_passwords"),
            E::InvalidKey { field, reason } => ApiError::new(Reason::InvalidKey, msg)
                .with_violation(field.clone(), reason)
                .with_metadata("field", field),
            E::InvalidSignature { field } => ApiError::new(Reason::InvalidSignature, msg)
                .with_violation(field.clone(), "signature does not verify")
                .with_metadata("field", field),
            E::PayloadTooLarge { field, limit } => ApiError::new(Reason::PayloadTooLarge, msg)
                .with_violation(field.clone(), format!("at most {limit}"))
                .with_metadata("field", field)
                .with_metadata("limit", limit.to_string()),
            E::InvalidMls { field, reason } => ApiError::new(Reason::InvalidMlsMessage, msg)
                .with_violation(field.clone(), reason)
                .with_metadata("field", field),
            E::MlsIdentityMismatch { field, reason } => {
                ApiError::new(Reason::MlsIdentityMismatch, msg)
                    .with_violation(field.clone(), reason)
                    .with_metadata("field", field)
            }
            E::UsernameTaken => {
                ApiError::new(Reason::AlreadyExists, msg).with_metadata("resource", "username")
            }
            E::AlreadyExists { resource } => {
                ApiError::new(Reason::AlreadyExists, msg).with_metadata("resource", resource)
            }
            E::InvalidCredentials { authenticated } => {
                let e = ApiError::new(Reason::InvalidCredentials, msg);
                if authenticated {
                    e.with_code(Code::PermissionDenied)
                } else {
                    e
                }
            }
            E::InvalidRefreshToken => ApiError::new(Reason::InvalidRefreshToken, msg),
            E::SessionRevoked => ApiError::new(Reason::SessionRevoked, msg),
            E::DeviceRemoved => ApiError::new(Reason::DeviceRemoved, msg),
            E::InvalidCode { code } => ApiError::new(Reason::InvalidCode, msg).with_code(code),
            E::CodeExpired => ApiError::new(Reason::CodeExpired, msg),
            E::LinkCodeUnknown => ApiError::new(Reason::CodeExpired, msg)
                .with_code(Code::NotFound)
                .with_metadata("resource", "link_request"),
            E::LinkPending { retry_after } => {
                ApiError::new(Reason::LinkPending, msg).with_retry_after(retry_after)
            }
            E::StepUpRequired { window_secs } => ApiError::new(Reason::StepUpRequired, msg)
                .with_metadata("window_secs", window_secs.to_string()),
            E::MfaRequired => ApiError::new(Reason::MfaRequired, msg),
            E::AccountSuspended => ApiError::new(Reason::AccountSuspended, msg),
            E::LastOwner => ApiError::new(Reason::LastOwner, msg),
            E::OwnerExists => {
                ApiError::new(Reason::AlreadyExists, msg).with_metadata("resource", "owner")
            }
            E::MfaAlreadyEnabled => ApiError::new(Reason::MfaAlreadyEnabled, msg),
            E::MfaNotEnabled => ApiError::new(Reason::MfaNotEnabled, msg),
            E::NotFound { resource } => {
                ApiError::new(Reason::NotFound, msg).with_metadata("resource", resource)
            }
            E::LastDevice => ApiError::new(Reason::LastDevice, msg),
            E::DeviceLimit => ApiError::new(Reason::DeviceLimitReached, msg),
            E::QuotaExceeded { quota } => {
                ApiError::new(Reason::QuotaExceeded, msg).with_metadata("quota", quota)
            }
            E::PrekeysExhausted => ApiError::new(Reason::PrekeysExhausted, msg),
            E::LockedOut { retry_after, limit } => ApiError::new(Reason::RateLimited, msg)
                .with_metadata("limit", limit)
                .with_retry_after(retry_after),
            E::HashingOverloaded { retry_after } => ApiError::new(Reason::Overloaded, msg)
                .with_metadata("limit", "argon2_concurrency")
                .with_retry_after(retry_after),
            E::Limited(api) => api,
            E::Storage(e) | E::Audit(guardyn_audit::AuditError::Storage(e)) => ApiError::from(e),
            E::Audit(guardyn_audit::AuditError::Contention)
            | E::Corrupt(_)
            | E::Sign(_)
            | E::Hash(_)
            | E::Contention
            | E::MasterKey(_)
            | E::Unseal { .. } => ApiError::internal(&err_box(msg)),
        }
    }
}

fn err_box(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

impl From<AuthError> for tonic::Status {
    fn from(err: AuthError) -> Self {
        ApiError::from(err).into()
    }
}
