//! MLS (RFC 9420) via openmls.
//!
//! ## MLS
//!
//! Guardyn groups use the Messaging Layer Security protocol (RFC 9420, through
//! `openmls`) with ciphersuite `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`.
//! MLS gives every group member confidentiality and authenticity of
//! application messages (each is encrypted under the epoch's key schedule and
//! signed by the sender's leaf key, so members learn the authenticated sender
//! identity), forward secrecy (message keys are deleted after use; past-epoch
//! keys are kept for at most [`client::MAX_PAST_EPOCHS`] epochs so in-flight
//! messages still decrypt), and post-compromise security once the compromised
//! member commits or is updated (self-update / remove). Members agree on the
//! membership and the transcript of each epoch; a removed member cannot read
//! anything sent after the removing commit. MLS does **not** hide metadata
//! from the server: Guardyn clients send proposals and commits as
//! PublicMessage (wire-format policy `MIXED_PLAINTEXT`: handshake in the clear,
//! application messages always PrivateMessage) so the delivery service can
//! order commits by epoch and follow membership, which means the server sees
//! group ids, epochs, who adds or removes whom (credential identities and leaf
//! indices), message sizes and timing. It does not authenticate identities
//! beyond the BasicCredential the client chose (binding
//! `<account_id>:<device_id>` to a real account is the server's and the
//! application's job), and it cannot protect a device whose persisted key
//! store ([`MlsClient::to_bytes`]) is stolen — that blob must be encrypted at
//! rest. The server-side helpers in [`server`] never touch group secrets:
//! [`server::parse_message`] decodes any MLSMessage and reports its wire
//! format, group id, epoch, content type and (for PublicMessage) sender and
//! contained proposals, without verifying PublicMessage signatures (a cheap
//! stateless pre-check); [`ds::DsGroup`] keeps a group's public state (openmls
//! `PublicGroup`) and verifies every proposal and commit against it (sender
//! signature, membership, epoch, proposals, UpdatePath) and that a new
//! epoch's GroupInfo describes the resulting state; [`server::validate_key_package`] fully
//! verifies uploaded KeyPackages (both signatures, protocol version, allowed
//! ciphersuite, init key ≠ leaf key, extensions declared in capabilities,
//! lifetime current and bounded, BasicCredential, last-resort flag) and
//! returns the KeyPackageRef the server uses to route Welcomes.

pub mod client;
pub mod ds;
pub mod error;
pub mod group;
mod identity;
mod message_kind;
pub mod provider;
pub mod server;

pub use client::{DEFAULT_CIPHERSUITE, MlsClient};
pub use ds::{AddedKeyPackage, DsGroup, LeafChange, LeafInfo, VerifiedCommit, VerifiedProposal};
pub use error::MlsError;
pub use group::{CommitBundle, CommitSummary, Group, MemberInfo, OpenWelcome, Received};
pub use message_kind::MessageKind;
pub use provider::MlsProvider;
pub use server::{
    CommitInfo, ContentKind, KeyPackagePolicy, KeyPackageSummary, ParsedBody, ParsedMessage,
    ProposalSummary, SenderInfo, key_package_ref, parse_message, validate_key_package,
};

#[cfg(test)]
mod tests_ds;
#[cfg(test)]
mod tests_group;
#[cfg(test)]
mod tests_server;
#[cfg(test)]
mod tests_vectors;
