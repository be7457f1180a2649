//! The SDK's single error type.

use guardyn_proto::guardyn::common::v1::ErrorReason;

/// Everything an SDK call can fail with. Messages never contain keys, tokens, passwords or
/// message contents.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    /// The server answered with an error status. `reason` is the Guardyn `ErrorReason`
    /// (e.g. `DEVICE_MISMATCH`), when the server sent one.
    #[error("server error {code:?} ({reason}): {message}", reason = reason.map(ErrorReason::reason).unwrap_or("no reason"))]
    Server {
        /// gRPC status code.
        code: tonic::Code,
        /// Guardyn error reason from the `google.rpc.ErrorInfo` detail.
        reason: Option<ErrorReason>,
        /// The server's message.
        message: String,
    },
    /// Could not connect to the server.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The login needs a second factor; call `Client::complete_mfa` with the ticket.
    #[error("the account has two-factor authentication: a TOTP or recovery code is needed")]
    MfaRequired,
    /// A cryptographic operation failed (bad signature, undecryptable message, ...).
    #[error("crypto: {0}")]
    Crypto(#[from] guardyn_crypto::Error),
    /// An MLS operation failed.
    #[error("mls: {0}")]
    Mls(#[from] guardyn_crypto::mls::MlsError),
    /// Reading or writing the state file failed.
    #[error("state file: {0}")]
    Io(#[from] std::io::Error),
    /// The state file could not be opened with the given passphrase or key (or was modified).
    #[error("state file: wrong passphrase/key or corrupted file")]
    StateLocked,
    /// A stored or received structure is malformed.
    #[error("malformed {what}: {reason}")]
    Format {
        /// What was being decoded.
        what: &'static str,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The server sent something that violates the API contract.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A retry loop (device mismatch, stale epoch) did not converge.
    #[error("gave up after {attempts} attempts: {last}")]
    RetriesExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: Box<SdkError>,
    },
    /// The client is not signed in (no tokens), or the state belongs to another device.
    #[error("not signed in: {0}")]
    NotSignedIn(&'static str),
    /// Unknown group id.
    #[error("unknown group")]
    UnknownGroup,
    /// The request is not valid (caught before contacting the server).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A downloaded attachment failed verification (segment authentication, size or SHA-256):
    /// the server or the network changed it, or the sender's attachment is wrong.
    #[error("attachment failed verification: {0}")]
    Corrupt(&'static str),
    /// A wait (for an epoch, for an event) timed out.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// A device of `account` presented an identity key different from the one pinned for it:
    /// nothing is sent to the account until the user compares safety numbers and calls
    /// [`crate::Client::accept_identity`].
    #[error(
        "the identity key of device {device} of account {account} changed: verify the safety number and accept it before sending"
    )]
    IdentityChanged {
        /// The peer account.
        account: String,
        /// The device whose key changed.
        device: u32,
    },
    /// An MLS credential naming device `device` of `account` (a group member leaf or a
    /// claimed KeyPackage) does not carry the signature key the directory pins for that
    /// device: someone else is speaking as it. The group (or the add) is refused.
    #[error(
        "an MLS leaf names device {device} of account {account} with a key that is not that device's"
    )]
    MlsIdentityMismatch {
        /// The account the leaf names.
        account: String,
        /// The device the leaf names.
        device: u32,
    },
    /// A device of `account` offered (in its bundle) or used (in an initial message) only
    /// X3DH, without a KEM prekey, and
    /// [`crate::ClientConfig::allow_x3dh_fallback`] is off.
    #[error("device {device} of account {account} did not use post-quantum (KEM) key agreement")]
    PqxdhRequired {
        /// The peer account.
        account: String,
        /// The device without a KEM prekey.
        device: u32,
    },
    /// A client configuration document was refused (not applied).
    #[error("client configuration refused: {0}")]
    ClientConfigRefused(#[from] crate::config_doc::ConfigRefusal),
}

impl SdkError {
    /// The error of a retry loop that ran out of `attempts`, carrying its last failure.
    pub(crate) fn exhausted(attempts: u32, last: Option<SdkError>) -> Self {
        Self::RetriesExhausted {
            attempts,
            last: Box::new(last.unwrap_or_else(|| Self::Protocol("no attempt made".into()))),
        }
    }

    /// The Guardyn error reason, for server errors.
    pub fn reason(&self) -> Option<ErrorReason> {
        match self {
            Self::Server { reason, .. } => *reason,
            Self::RetriesExhausted { last, .. } => last.reason(),
            _ => None,
        }
    }

    /// The gRPC code, for server errors.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Server { code, .. } => Some(*code),
            Self::RetriesExhausted { last, .. } => last.code(),
            _ => None,
        }
    }
}

impl From<tonic::Status> for SdkError {
    fn from(status: tonic::Status) -> Self {
        use tonic_types::StatusExt;
        let reason = status
            .get_details_error_info()
            .and_then(|info| ErrorReason::from_reason(&info.reason));
        Self::Server {
            code: status.code(),
            reason,
            message: status.message().to_owned(),
        }
    }
}
