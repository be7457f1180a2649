//! The one mapping from domain errors to `tonic::Status`.
//!
//! Services turn their typed errors into an [`ApiError`]; [`ApiError`] becomes a `Status` whose
//! details carry a `google.rpc.ErrorInfo` with a stable reason string (the names of
//! `guardyn.common.v1.ErrorReason` without the prefix), `google.rpc.BadRequest` field violations
//! for invalid input, `google.rpc.RetryInfo` when a retry makes sense, and any service-specific
//! detail message. Clients branch on the reason, never on the message text.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use prost::Message;
use tonic::{Code, Status};

/// `ErrorInfo.domain` for every Guardyn error.
pub const ERROR_DOMAIN: &str = "guardyn.v1";

/// Stable machine-readable error reasons: the generated `guardyn.common.v1.ErrorReason`, so
/// server and clients share one list.
pub use guardyn_proto::guardyn::common::v1::ErrorReason as Reason;

/// The gRPC code each reason travels with, as documented in `errors.proto`. A few reasons have
/// a second, documented code in specific RPCs; those use [`ApiError::with_code`].
pub fn default_code(reason: Reason) -> Code {
    use Reason as R;
    match reason {
        R::Unspecified | R::Internal => Code::Internal,
        R::InvalidArgument
        | R::PayloadTooLarge
        | R::InvalidKey
        | R::InvalidSignature
        | R::WeakPassword
        | R::InvalidMlsMessage
        | R::InvalidCommit
        | R::MlsIdentityMismatch => Code::InvalidArgument,
        R::Unauthenticated
        | R::TokenExpired
        | R::SessionRevoked
        | R::DeviceRemoved
        | R::InvalidCredentials
        | R::InvalidRefreshToken
        | R::InvalidCode
        | R::CodeExpired
        | R::UnidentifiedAccessDenied
        | R::AccountSuspended => Code::Unauthenticated,
        R::PermissionDenied | R::RoleRequired => Code::PermissionDenied,
        R::NotFound => Code::NotFound,
        R::AlreadyExists => Code::AlreadyExists,
        R::MfaRequired
        | R::DeviceMismatch
        | R::PrekeysExhausted
        | R::KeyPackagesExhausted
        | R::OffsetMismatch
        | R::UploadIncomplete
        | R::ChecksumMismatch
        | R::MfaAlreadyEnabled
        | R::MfaNotEnabled
        | R::LastDevice
        | R::StepUpRequired
        | R::LinkPending
        | R::PushPlatformUnavailable
        | R::MfaEnrollmentRequired
        | R::LastOwner => Code::FailedPrecondition,
        R::StaleEpoch | R::SendInProgress => Code::Aborted,
        R::RateLimited | R::QuotaExceeded | R::DeviceLimitReached | R::Overloaded => {
            Code::ResourceExhausted
        }
        R::Unavailable => Code::Unavailable,
        R::DeadlineExceeded => Code::DeadlineExceeded,
    }
}

/// One invalid request field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request message, e.g. `envelopes[2].content`.
    pub field: String,
    pub description: String,
}

/// An error on its way to the client. Boxed: it travels in every handler's `Result`.
#[derive(Clone, PartialEq)]
pub struct ApiError(Box<Inner>);

#[derive(Clone, PartialEq)]
struct Inner {
    reason: Reason,
    code: Code,
    message: String,
    violations: Vec<FieldViolation>,
    metadata: HashMap<String, String>,
    retry_after: Option<Duration>,
    extra: Vec<prost_types::Any>,
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("reason", &self.0.reason)
            .field("message", &self.0.message)
            .field("violations", &self.0.violations)
            .field("retry_after", &self.0.retry_after)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.reason.reason(), self.0.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            reason,
            code: default_code(reason),
            message: message.into(),
            violations: Vec::new(),
            metadata: HashMap::new(),
            retry_after: None,
            extra: Vec::new(),
        }))
    }

    /// Invalid input in one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let field = field.into();
        let description = description.into();
        Self::new(Reason::InvalidArgument, format!("{field}: {description}"))
            .with_violation(field, description)
    }

    /// A field over its size limit: `PAYLOAD_TOO_LARGE` (INVALID_ARGUMENT) naming the field.
    pub fn payload_too_large(field: impl Into<String>, description: impl Into<String>) -> Self {
        let field = field.into();
        Self::new(Reason::PayloadTooLarge, format!("{field} too large"))
            .with_violation(field, description)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Reason::Unauthenticated, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(Reason::PermissionDenied, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Reason::NotFound, message)
    }

    /// An internal failure. The cause is logged here and never sent to the client.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(Reason::Internal, "internal error")
    }

    /// Send a different code than the reason's default, where the contract documents one
    /// (e.g. `INVALID_CREDENTIALS` as PERMISSION_DENIED when an authenticated RPC re-checks a
    /// password).
    pub fn with_code(mut self, code: Code) -> Self {
        self.0.code = code;
        self
    }

    pub fn with_violation(
        mut self,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        self.0.violations.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
        self
    }

    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.metadata.insert(key.into(), value.into());
        self
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.0.retry_after = Some(after);
        self
    }

    /// Attach a service-specific detail message (e.g. `guardyn.common.v1.DeviceMismatch`).
    pub fn with_detail<M: prost::Name>(mut self, detail: &M) -> Self {
        self.0.extra.push(prost_types::Any {
            type_url: M::type_url(),
            value: detail.encode_to_vec(),
        });
        self
    }

    pub fn reason(&self) -> Reason {
        self.0.reason
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    pub fn violations(&self) -> &[FieldViolation] {
        &self.0.violations
    }

    pub fn code(&self) -> Code {
        self.0.code
    }
}

/// How long a client should wait before retrying after a storage outage.
const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The one mapping of storage failures, for every service: an outage (unreachable, closed,
/// failing engine) is `UNAVAILABLE` with a retry hint, since the same request can succeed once
/// the store is back; a corrupt value or a request the engine refuses is a server bug,
/// `INTERNAL`. The cause is logged here and never sent.
impl From<guardyn_storage::StorageError> for ApiError {
    fn from(err: guardyn_storage::StorageError) -> Self {
        use guardyn_storage::StorageError as E;
        match err {
            E::Unavailable(_) | E::Closed | E::Backend(_) => {
                tracing::warn!(error = %err, "storage unavailable");
                Self::new(Reason::Unavailable, "storage unavailable, retry")
                    .with_retry_after(STORAGE_RETRY_AFTER)
            }
            // Corrupt values, refused requests and anything newer are bugs to look at.
            _ => Self::internal(&err),
        }
    }
}

impl ApiError {
    /// `DEVICE_MISMATCH` with its `DeviceMismatch` detail: the envelopes of a send do not
    /// match the destination's current devices.
    pub fn device_mismatch(missing: Vec<u32>, extra: Vec<u32>, stale: Vec<u32>) -> Self {
        Self::new(
            Reason::DeviceMismatch,
            "the envelopes do not match the destination's current devices",
        )
        .with_detail(&guardyn_proto::guardyn::common::v1::DeviceMismatch {
            missing_devices: missing,
            extra_devices: extra,
            stale_devices: stale,
        })
    }

    /// `OFFSET_MISMATCH` with its `OffsetMismatch` detail: an upload chunk was not sent at the
    /// committed offset; the client resumes from `committed`.
    pub fn offset_mismatch(committed: u64) -> Self {
        Self::new(
            Reason::OffsetMismatch,
            format!("the chunk must start at the committed offset {committed}"),
        )
        .with_detail(&guardyn_proto::guardyn::common::v1::OffsetMismatch {
            committed_offset: committed,
        })
    }

    /// `STALE_EPOCH` with its `StaleEpoch` detail: another commit won the group's epoch.
    pub fn stale_epoch(current: u64) -> Self {
        Self::new(
            Reason::StaleEpoch,
            format!("the group is at epoch {current}"),
        )
        .with_detail(&guardyn_proto::guardyn::common::v1::StaleEpoch {
            current_epoch: current,
        })
    }
}

fn any<M: Message>(type_name: &str, msg: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/{type_name}"),
        value: msg.encode_to_vec(),
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let err = *err.0;
        use tonic_types::pb;
        let code = err.code;
        let mut details = vec![any(
            "google.rpc.ErrorInfo",
            &pb::ErrorInfo {
                reason: err.reason.reason().to_owned(),
                domain: ERROR_DOMAIN.to_owned(),
                metadata: err.metadata,
            },
        )];
        if !err.violations.is_empty() {
            details.push(any(
                "google.rpc.BadRequest",
                &pb::BadRequest {
                    field_violations: err
                        .violations
                        .into_iter()
                        .map(|v| pb::bad_request::FieldViolation {
                            field: v.field,
                            description: v.description,
                            ..Default::default()
                        })
                        .collect(),
                },
            ));
        }
        if let Some(after) = err.retry_after {
            details.push(any(
                "google.rpc.RetryInfo",
                &pb::RetryInfo {
                    retry_delay: Some(prost_types::Duration {
                        seconds: i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
                        nanos: i32::try_from(after.subsec_nanos()).unwrap_or(0),
                    }),
                },
            ));
        }
        details.extend(err.extra);
        let status = pb::Status {
            code: code as i32,
            message: err.message.clone(),
            details,
        };
        Status::with_details(code, err.message, status.encode_to_vec().into())
    }
}

/// Read the reason back out of a `Status` (clients and tests).
pub fn reason_of(status: &Status) -> Option<String> {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|info| info.reason)
}

/// Read the field violations back out of a `Status` (clients and tests).
pub fn violations_of(status: &Status) -> Vec<FieldViolation> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| FieldViolation {
                    field: v.field,
                    description: v.description,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn status_carries_reason_violations_and_retry() {
        let err = ApiError::invalid_field("username", "must be 3 to 32 characters")
            .with_violation("password", "too short")
            .with_retry_after(Duration::from_secs(3));
        let status: Status = err.into();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(reason_of(&status).as_deref(), Some("INVALID_ARGUMENT"));
        let v = violations_of(&status);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].field, "username");
        use tonic_types::StatusExt;
        let retry = status.get_details_retry_info().unwrap();
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(3)));
    }

    #[test]
    fn every_reason_maps_to_the_code_its_proto_comment_documents() {
        use prost::Message as _;
        let set =
            prost_types::FileDescriptorSet::decode(guardyn_proto::FILE_DESCRIPTOR_SET).unwrap();
        let file = set
            .file
            .iter()
            .find(|f| f.name() == "guardyn/common/v1/errors.proto")
            .unwrap();
        let enum_index = file
            .enum_type
            .iter()
            .position(|e| e.name() == "ErrorReason")
            .unwrap();
        let info = file.source_code_info.as_ref().unwrap();
        let mut checked = 0;
        for (i, value) in file.enum_type[enum_index].value.iter().enumerate() {
            let reason = Reason::try_from(value.number()).unwrap();
            if reason == Reason::Unspecified {
                continue;
            }
            // Path: enum_type (5) / index / value (2) / index.
            let path = [5, enum_index as i32, 2, i as i32];
            let comment = info
                .location
                .iter()
                .find(|l| l.path == path)
                .and_then(|l| l.leading_comments.clone())
                .unwrap_or_default();
            let documented = comment.trim_start().split(['.', ' ']).next().unwrap();
            let code = default_code(reason);
            let expected = crate::metrics::code_name(code);
            assert_eq!(
                documented,
                expected,
                "{}: comment says {documented}",
                value.name()
            );
            checked += 1;
        }
        assert!(checked > 30);
    }

    #[test]
    fn storage_outages_are_retryable_and_corruption_is_internal() {
        use guardyn_storage::StorageError as E;
        use tonic_types::StatusExt;
        for e in [
            E::Unavailable("x".into()),
            E::Closed,
            E::Backend("io".into()),
        ] {
            let status: Status = ApiError::from(e).into();
            assert_eq!(status.code(), Code::Unavailable);
            assert_eq!(reason_of(&status).as_deref(), Some("UNAVAILABLE"));
            assert!(status.get_details_retry_info().is_some());
        }
        let status: Status = ApiError::from(E::Corrupt("v9 /secret".into())).into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let cause = std::io::Error::other("disk /var/secret failed");
        let status: Status = ApiError::internal(&cause).into();
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }
}
