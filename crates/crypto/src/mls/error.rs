//! The single error type of the MLS module.

use openmls::prelude::{
    CommitBuilderStageError, CreateCommitError, CreateMessageError, ExportGroupInfoError,
    ExternalCommitBuilderError, ExternalCommitBuilderFinalizeError, KeyPackageNewError,
    KeyPackageVerifyError, MergeCommitError, MergePendingCommitError, NewGroupError,
    ProcessMessageError, ProposeAddMemberError, ProposeRemoveMemberError, ProposeSelfUpdateError,
    WelcomeError,
};
use openmls_rust_crypto::MemoryStorageError;

use super::message_kind::MessageKind;

type S = MemoryStorageError;

/// Everything that can go wrong in [`crate::mls`]. Variants carry no secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MlsError {
    // --- encoding / input shape ---
    /// The bytes are not a valid TLS-encoded MLS structure.
    #[error("malformed MLS encoding: {0:?}")]
    Malformed(openmls::prelude::tls_codec::Error),
    /// A well-formed MLS message of the wrong kind was supplied.
    #[error("expected {expected:?}, got {found:?}")]
    UnexpectedMessageKind {
        /// What the operation needs.
        expected: MessageKind,
        /// What the bytes contain.
        found: MessageKind,
    },
    /// Guardyn policy: handshake messages must be PublicMessage so the delivery
    /// service can see membership changes.
    #[error("handshake message sent as PrivateMessage")]
    HandshakeNotPublic,
    /// An application message was framed as PublicMessage (RFC 9420 forbids it).
    #[error("application message sent as PublicMessage")]
    ApplicationNotPrivate,
    /// The credential is not a BasicCredential.
    #[error("unsupported credential type")]
    UnsupportedCredential,
    /// A group operation named a leaf index with no member.
    #[error("no member at leaf index {0}")]
    UnknownMember(u32),

    // --- delivery-service public state ---
    /// A GroupInfo without the ratchet tree extension.
    #[error("group info carries no ratchet tree")]
    MissingRatchetTree,
    /// The public group state could not be built (bad tree, leaf or GroupInfo signature).
    #[error("invalid group state: {0}")]
    InvalidGroupState(String),
    /// A proposal or commit failed verification against the group's public state.
    #[error("invalid handshake message: {0}")]
    InvalidHandshake(String),
    /// A member leaf the caller's check rejected (its key is not the one pinned for the device
    /// it names); nothing was joined or merged.
    #[error("untrusted group member {}", String::from_utf8_lossy(identity))]
    UntrustedMember {
        /// The leaf's credential identity.
        identity: Vec<u8>,
    },
    /// A GroupInfo does not describe the group's current public state.
    #[error("group info does not match the group state: {0}")]
    GroupInfoMismatch(String),

    // --- key packages ---
    /// The KeyPackage uses a ciphersuite outside the allowed set.
    #[error("ciphersuite 0x{0:04x} is not allowed")]
    CiphersuiteNotAllowed(u16),
    /// The KeyPackage (or its leaf node) signature does not verify.
    #[error("key package signature is invalid")]
    InvalidKeyPackageSignature,
    /// The KeyPackage lifetime ended.
    #[error("key package expired (not_after {not_after}, now {now})")]
    KeyPackageExpired {
        /// End of validity, seconds since the Unix epoch.
        not_after: u64,
        /// Validation time, seconds since the Unix epoch.
        now: u64,
    },
    /// The KeyPackage lifetime has not started.
    #[error("key package not valid yet (not_before {not_before}, now {now})")]
    KeyPackageNotYetValid {
        /// Start of validity, seconds since the Unix epoch.
        not_before: u64,
        /// Validation time, seconds since the Unix epoch.
        now: u64,
    },
    /// The KeyPackage lifetime range is longer than the policy allows.
    #[error("key package lifetime range too long")]
    KeyPackageLifetimeTooLong,
    /// The KeyPackage is or is not last-resort, contrary to what was required.
    #[error("key package last-resort flag is {found}, required {required}")]
    LastResortMismatch {
        /// Required flag.
        required: bool,
        /// Flag found in the KeyPackage.
        found: bool,
    },
    /// Any other KeyPackage verification failure reported by openmls.
    #[error("key package invalid: {0}")]
    KeyPackageInvalid(KeyPackageVerifyError),
    /// Creating a KeyPackage failed.
    #[error("creating key package: {0}")]
    KeyPackageCreation(#[from] KeyPackageNewError),

    // --- client state ---
    /// Generating the signature key pair failed.
    #[error("signature key generation failed")]
    KeyGeneration,
    /// The key store could not be read or written.
    #[error("key store error: {0:?}")]
    Storage(S),
    /// The key store lock was poisoned by a panic in another thread.
    #[error("key store lock poisoned")]
    StoragePoisoned,
    /// Persisted state has an unknown version byte.
    #[error("unsupported persisted state version {0}")]
    UnsupportedStateVersion(u8),
    /// Persisted state is corrupt.
    #[error("invalid persisted state: {0}")]
    StateFormat(&'static str),
    /// The signature key named by persisted state is missing from the key store.
    #[error("signature key missing from key store")]
    MissingSignatureKey,
    /// No state for the requested group.
    #[error("group not found")]
    GroupNotFound,
    /// Reading or writing a state file failed.
    #[error("state file I/O: {0}")]
    Io(#[from] std::io::Error),

    // --- group operations (sources come from openmls) ---
    /// Creating a group failed.
    #[error("creating group: {0}")]
    NewGroup(#[from] NewGroupError<S>),
    /// Joining from a Welcome failed (e.g. no matching KeyPackage in the key store).
    #[error("joining from welcome: {0}")]
    Welcome(#[from] WelcomeError<S>),
    /// Preparing an external commit failed.
    #[error("external join: {0}")]
    ExternalJoin(#[from] ExternalCommitBuilderError<S>),
    /// Finalising an external commit failed.
    #[error("external join: {0}")]
    ExternalJoinFinalize(#[from] ExternalCommitBuilderFinalizeError<S>),
    /// Building a commit failed.
    #[error("creating commit: {0}")]
    CreateCommit(#[from] CreateCommitError),
    /// Staging a built commit failed.
    #[error("staging commit: {0}")]
    StageCommit(#[from] CommitBuilderStageError<S>),
    /// A commit was asked of a group that has one pending or that this client left.
    #[error("the group has a pending commit or is inactive")]
    NotOperational,
    /// Proposing an add failed.
    #[error("proposing add: {0}")]
    ProposeAdd(#[from] ProposeAddMemberError<S>),
    /// Proposing a removal failed.
    #[error("proposing removal: {0}")]
    ProposeRemove(#[from] ProposeRemoveMemberError<S>),
    /// Proposing a self-update failed.
    #[error("proposing self update: {0}")]
    ProposeSelfUpdate(#[from] ProposeSelfUpdateError<S>),
    /// Merging an own pending commit failed.
    #[error("merging pending commit: {0}")]
    MergePending(#[from] MergePendingCommitError<S>),
    /// Merging a received commit failed.
    #[error("merging commit: {0}")]
    Merge(#[from] MergeCommitError<S>),
    /// Processing (decrypting / verifying) an incoming message failed.
    #[error("processing message: {0}")]
    Process(#[from] ProcessMessageError<S>),
    /// Encrypting an application message failed (e.g. removed from the group).
    #[error("creating message: {0}")]
    CreateMessage(#[from] CreateMessageError),
    /// Exporting the GroupInfo failed.
    #[error("exporting group info: {0}")]
    ExportGroupInfo(#[from] ExportGroupInfoError),
    /// openmls reported an internal error.
    #[error("openmls internal error: {0}")]
    Library(#[from] openmls::error::LibraryError),
}

impl From<openmls::prelude::tls_codec::Error> for MlsError {
    fn from(e: openmls::prelude::tls_codec::Error) -> Self {
        Self::Malformed(e)
    }
}

impl From<S> for MlsError {
    fn from(e: S) -> Self {
        Self::Storage(e)
    }
}
