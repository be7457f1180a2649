//! Server-side (delivery service) helpers. Nothing here needs or sees group
//! secrets: they read what MLS leaves in the clear.
//!
//! * [`parse_message`] decodes any `MLSMessage` and reports its kind, group id,
//!   epoch, content type and sender. For PublicMessage commits and proposals
//!   it also lists the proposals (adds with the KeyPackage credential
//!   identity, removes with the leaf index) so the server can track
//!   membership. Guardyn clients send every handshake message (proposal,
//!   commit) as PublicMessage and every application message as
//!   PrivateMessage ([`openmls::prelude::MIXED_PLAINTEXT_WIRE_FORMAT_POLICY`]);
//!   [`ParsedMessage::check_guardyn_policy`] enforces that.
//! * [`validate_key_package`] fully verifies an uploaded KeyPackage.
//!
//! Signatures on PublicMessages are **not** verified here: for a member
//! sender that needs the group's ratchet tree and GroupContext, which the
//! stateless parser does not keep. The parse is a cheap pre-check and routing
//! aid; the delivery service verifies handshake messages with
//! [`super::ds::DsGroup`] before accepting them.

use openmls::prelude::{
    ContentType, KeyPackage, KeyPackageIn, KeyPackageVerifyError, MlsMessageBodyIn, MlsMessageIn,
    ProposalIn, ProposalOrRefIn, ProtocolVersion, Sender, VLBytes,
    tls_codec::{Deserialize as _, Serialize as _},
};
use openmls::treesync::errors::LifetimeError;
use openmls_rust_crypto::RustCrypto;
use openmls_traits::crypto::OpenMlsCrypto;

pub use super::message_kind::MessageKind;
use super::{client::DEFAULT_CIPHERSUITE, error::MlsError, identity::identity_of};

/// Content type of a PublicMessage / PrivateMessage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    /// Application data.
    Application,
    /// A standalone proposal.
    Proposal,
    /// A commit (advances the epoch).
    Commit,
}

impl From<ContentType> for ContentKind {
    fn from(c: ContentType) -> Self {
        match c {
            ContentType::Application => Self::Application,
            ContentType::Proposal => Self::Proposal,
            ContentType::Commit => Self::Commit,
        }
    }
}

/// Sender of a PublicMessage (RFC 9420 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderInfo {
    /// A member, by leaf index.
    Member(u32),
    /// An external sender, by index into the `external_senders` extension.
    External(u32),
    /// A new member proposing its own addition.
    NewMemberProposal,
    /// A new member joining by external commit.
    NewMemberCommit,
}

impl From<&Sender> for SenderInfo {
    fn from(s: &Sender) -> Self {
        match s {
            Sender::Member(leaf) => Self::Member(leaf.u32()),
            Sender::External(idx) => {
                // The index is a u32 on the wire; its accessor is crate-private.
                let b = idx.tls_serialize_detached().unwrap_or_default();
                let v = b
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(u32::MAX);
                Self::External(v)
            }
            Sender::NewMemberProposal => Self::NewMemberProposal,
            Sender::NewMemberCommit => Self::NewMemberCommit,
        }
    }
}

/// A proposal as visible in a PublicMessage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProposalSummary {
    /// Add the owner of a KeyPackage. The identity is read from the
    /// KeyPackage's BasicCredential without verifying its signature (members
    /// verify it); empty for other credential types.
    Add {
        /// Credential identity of the KeyPackage.
        identity: Vec<u8>,
    },
    /// The sender replaces its own leaf.
    Update,
    /// Remove the member at a leaf index.
    Remove {
        /// Leaf index being removed.
        leaf_index: u32,
    },
    /// The sender removes itself.
    SelfRemove,
    /// Any other proposal type (PSK, ReInit, ExternalInit, GroupContextExtensions, custom),
    /// by its IANA code point.
    Other(u16),
}

/// The visible part of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommitInfo {
    /// Proposals included by value.
    pub proposals: Vec<ProposalSummary>,
    /// Proposals included by reference (ProposalRef hashes of earlier proposals).
    pub proposal_refs: Vec<Vec<u8>>,
    /// Whether the commit carries an UpdatePath (re-keys the committer's path).
    pub has_path: bool,
}

/// Kind-specific details of a parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedBody {
    /// PublicMessage carrying application data (not allowed by RFC 9420 for
    /// real traffic, but decodable).
    Application,
    /// PublicMessage proposal.
    Proposal(ProposalSummary),
    /// PublicMessage commit.
    Commit(CommitInfo),
    /// PrivateMessage: only the header is visible.
    Encrypted,
    /// Welcome.
    Welcome {
        /// Ciphersuite code point.
        ciphersuite: u16,
        /// KeyPackageRefs of the recipients (match them against
        /// [`KeyPackageSummary::key_package_ref`] to route the Welcome).
        recipients: Vec<Vec<u8>>,
    },
    /// GroupInfo.
    GroupInfo {
        /// Ciphersuite code point.
        ciphersuite: u16,
    },
    /// KeyPackage (use [`validate_key_package`] to verify it).
    KeyPackage {
        /// Unverified credential identity.
        identity: Vec<u8>,
    },
}

/// What the server can read from an `MLSMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMessage {
    /// Wire format.
    pub kind: MessageKind,
    /// Group id (PublicMessage, PrivateMessage, GroupInfo).
    pub group_id: Option<Vec<u8>>,
    /// Epoch the message belongs to (PublicMessage, PrivateMessage, GroupInfo).
    pub epoch: Option<u64>,
    /// Content type (PublicMessage, PrivateMessage).
    pub content: Option<ContentKind>,
    /// Sender (PublicMessage only; encrypted in a PrivateMessage).
    pub sender: Option<SenderInfo>,
    /// Kind-specific details.
    pub body: ParsedBody,
}

impl ParsedMessage {
    /// Guardyn wire-format policy: handshake messages must be PublicMessage
    /// (so the server sees membership changes), application messages must be
    /// PrivateMessage.
    pub fn check_guardyn_policy(&self) -> Result<(), MlsError> {
        match (self.kind, self.content) {
            (MessageKind::PrivateMessage, Some(ContentKind::Proposal | ContentKind::Commit)) => {
                Err(MlsError::HandshakeNotPublic)
            }
            (MessageKind::PublicMessage, Some(ContentKind::Application)) => {
                Err(MlsError::ApplicationNotPrivate)
            }
            _ => Ok(()),
        }
    }
}

/// Decodes an `MLSMessage` without any group state or secrets.
pub fn parse_message(bytes: &[u8]) -> Result<ParsedMessage, MlsError> {
    let message = MlsMessageIn::tls_deserialize_exact(bytes)?;
    let body = message.extract();
    let kind = MessageKind::of(&body);
    Ok(match body {
        MlsMessageBodyIn::PublicMessage(m) => {
            let content = ContentKind::from(m.content_type());
            // The decoded PublicMessageIn hides its body, so the framed content
            // is walked again from the (already validated) bytes.
            let detail = public_body(bytes.get(4..).unwrap_or_default(), content)?;
            ParsedMessage {
                kind,
                group_id: Some(m.group_id().as_slice().to_vec()),
                epoch: Some(m.epoch().as_u64()),
                content: Some(content),
                sender: Some(SenderInfo::from(m.sender())),
                body: detail,
            }
        }
        MlsMessageBodyIn::PrivateMessage(m) => ParsedMessage {
            kind,
            group_id: Some(m.group_id().as_slice().to_vec()),
            epoch: Some(m.epoch().as_u64()),
            content: Some(m.content_type().into()),
            sender: None,
            body: ParsedBody::Encrypted,
        },
        MlsMessageBodyIn::Welcome(w) => ParsedMessage {
            kind,
            group_id: None,
            epoch: None,
            content: None,
            sender: None,
            body: ParsedBody::Welcome {
                ciphersuite: u16::from(w.ciphersuite()),
                recipients: w
                    .secrets()
                    .iter()
                    .map(|s| s.new_member().as_slice().to_vec())
                    .collect(),
            },
        },
        MlsMessageBodyIn::GroupInfo(g) => ParsedMessage {
            kind,
            group_id: Some(g.group_id().as_slice().to_vec()),
            epoch: Some(g.epoch().as_u64()),
            content: None,
            sender: None,
            body: ParsedBody::GroupInfo {
                ciphersuite: u16::from(g.ciphersuite()),
            },
        },
        MlsMessageBodyIn::KeyPackage(kp) => ParsedMessage {
            kind,
            group_id: None,
            epoch: None,
            content: None,
            sender: None,
            body: ParsedBody::KeyPackage {
                identity: identity_of(&kp.unverified_credential().credential).unwrap_or_default(),
            },
        },
    })
}

/// Walks `FramedContent` (RFC 9420 §6) up to and including the proposal or
/// the commit's proposal list.
fn public_body(mut r: &[u8], content: ContentKind) -> Result<ParsedBody, MlsError> {
    let r = &mut r;
    let _group_id = VLBytes::tls_deserialize(r)?;
    let _epoch = u64::tls_deserialize(r)?;
    let _sender = Sender::tls_deserialize(r)?;
    let _authenticated_data = VLBytes::tls_deserialize(r)?;
    let _content_type = ContentType::tls_deserialize(r)?;
    Ok(match content {
        ContentKind::Application => ParsedBody::Application,
        ContentKind::Proposal => ParsedBody::Proposal(summarize(ProposalIn::tls_deserialize(r)?)?),
        ContentKind::Commit => ParsedBody::Commit(commit_info(r)?),
    })
}

/// Reads a `Commit` up to the UpdatePath presence byte.
pub(crate) fn commit_info(r: &mut &[u8]) -> Result<CommitInfo, MlsError> {
    let mut info = CommitInfo::default();
    for p in Vec::<ProposalOrRefIn>::tls_deserialize(r)? {
        match p {
            ProposalOrRefIn::Proposal(p) => info.proposals.push(summarize(*p)?),
            ProposalOrRefIn::Reference(r) => info.proposal_refs.push(r.as_slice().to_vec()),
        }
    }
    // optional<UpdatePath>: presence byte.
    info.has_path = u8::tls_deserialize(r)? == 1;
    Ok(info)
}

pub(crate) fn summarize(p: ProposalIn) -> Result<ProposalSummary, MlsError> {
    Ok(match p {
        ProposalIn::Add(add) => {
            // `Add` is `struct { KeyPackage key_package; }`: re-read it as one.
            let kp = KeyPackageIn::tls_deserialize_exact(add.tls_serialize_detached()?)?;
            ProposalSummary::Add {
                identity: identity_of(&kp.unverified_credential().credential).unwrap_or_default(),
            }
        }
        ProposalIn::Update(_) => ProposalSummary::Update,
        ProposalIn::Remove(r) => ProposalSummary::Remove {
            leaf_index: r.removed().u32(),
        },
        ProposalIn::SelfRemove => ProposalSummary::SelfRemove,
        other => ProposalSummary::Other(u16::from(other.proposal_type())),
    })
}

/// What the server accepts as an uploaded KeyPackage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackagePolicy {
    /// Allowed ciphersuite code points.
    pub allowed_ciphersuites: Vec<u16>,
    /// `Some(true)`: only last-resort packages; `Some(false)`: only one-time
    /// packages; `None`: either.
    pub require_last_resort: Option<bool>,
    /// Reject packages whose `not_after - not_before` exceeds this many seconds.
    pub max_lifetime_secs: Option<u64>,
}

impl Default for KeyPackagePolicy {
    fn default() -> Self {
        Self {
            allowed_ciphersuites: vec![u16::from(DEFAULT_CIPHERSUITE)],
            require_last_resort: None,
            // 90 days: clients use 28; leave room for clock skew and policy changes.
            max_lifetime_secs: Some(90 * 24 * 60 * 60),
        }
    }
}

/// A verified KeyPackage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackageSummary {
    /// BasicCredential identity.
    pub identity: Vec<u8>,
    /// Ed25519 (or other) signature public key of the leaf.
    pub signature_key: Vec<u8>,
    /// Ciphersuite code point.
    pub ciphersuite: u16,
    /// Validity start, Unix seconds.
    pub not_before: u64,
    /// Validity end, Unix seconds.
    pub not_after: u64,
    /// Carries the `last_resort` extension.
    pub is_last_resort: bool,
    /// KeyPackageRef (RFC 9420 §5.2): the id Welcomes use for their recipients.
    pub key_package_ref: Vec<u8>,
}

/// Fully verifies an uploaded KeyPackage `MLSMessage`: encoding, protocol
/// version, ciphersuite in the allowed set, both signatures (KeyPackage and
/// leaf node), init key ≠ encryption key, extensions declared in the
/// capabilities, lifetime covering the current time and within policy,
/// BasicCredential, and the last-resort requirement.
pub fn validate_key_package(
    bytes: &[u8],
    policy: &KeyPackagePolicy,
) -> Result<KeyPackageSummary, MlsError> {
    let crypto = RustCrypto::default();
    let kp_in = decode_key_package_in(bytes)?;
    // Checked before signature verification so that an unsupported suite is
    // reported as such rather than as a bad signature. The KeyPackage starts
    // right after the 4-byte MLSMessage header: version u16, cipher_suite u16.
    let suite = bytes
        .get(6..8)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(MlsError::Malformed(
            openmls::prelude::tls_codec::Error::EndOfStream,
        ))?;
    if !policy.allowed_ciphersuites.contains(&suite) {
        return Err(MlsError::CiphersuiteNotAllowed(suite));
    }
    let kp = verify(kp_in, &crypto)?;
    let lifetime = kp.life_time();
    if let Some(max) = policy.max_lifetime_secs
        && lifetime.not_after().saturating_sub(lifetime.not_before()) > max
    {
        return Err(MlsError::KeyPackageLifetimeTooLong);
    }
    let is_last_resort = kp.last_resort();
    if let Some(required) = policy.require_last_resort
        && required != is_last_resort
    {
        return Err(MlsError::LastResortMismatch {
            required,
            found: is_last_resort,
        });
    }
    let identity =
        identity_of(kp.leaf_node().credential()).ok_or(MlsError::UnsupportedCredential)?;
    Ok(KeyPackageSummary {
        identity,
        signature_key: kp.leaf_node().signature_key().as_slice().to_vec(),
        ciphersuite: u16::from(kp.ciphersuite()),
        not_before: lifetime.not_before(),
        not_after: lifetime.not_after(),
        is_last_resort,
        key_package_ref: kp.hash_ref(&crypto)?.as_slice().to_vec(),
    })
}

/// The KeyPackageRef (RFC 9420 §5.2) of a KeyPackage `MLSMessage`, without verifying it (for
/// packages verified when they were stored): `RefHash("MLS 1.0 KeyPackage Reference",
/// KeyPackage)` with the package's ciphersuite hash.
pub fn key_package_ref(bytes: &[u8]) -> Result<Vec<u8>, MlsError> {
    decode_key_package_in(bytes)?;
    let suite = bytes
        .get(6..8)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .and_then(|s| openmls::prelude::Ciphersuite::try_from(s).ok())
        .ok_or(MlsError::UnsupportedCredential)?;
    let mut input =
        VLBytes::new(b"MLS 1.0 KeyPackage Reference".to_vec()).tls_serialize_detached()?;
    input.extend(
        VLBytes::new(bytes.get(4..).unwrap_or_default().to_vec()).tls_serialize_detached()?,
    );
    RustCrypto::default()
        .hash(suite.hash_algorithm(), &input)
        .map_err(|_| MlsError::CiphersuiteNotAllowed(u16::from(suite)))
}

fn decode_key_package_in(bytes: &[u8]) -> Result<KeyPackageIn, MlsError> {
    match MlsMessageIn::tls_deserialize_exact(bytes)?.extract() {
        MlsMessageBodyIn::KeyPackage(kp) => Ok(kp),
        other => Err(MlsError::UnexpectedMessageKind {
            expected: MessageKind::KeyPackage,
            found: MessageKind::of(&other),
        }),
    }
}

/// Decodes and verifies a KeyPackage `MLSMessage` (client side, before adding).
pub(crate) fn decode_key_package(
    bytes: &[u8],
    crypto: &impl OpenMlsCrypto,
) -> Result<KeyPackage, MlsError> {
    verify(decode_key_package_in(bytes)?, crypto)
}

fn verify(kp: KeyPackageIn, crypto: &impl OpenMlsCrypto) -> Result<KeyPackage, MlsError> {
    kp.validate(crypto, ProtocolVersion::Mls10)
        .map_err(|e| match e {
            KeyPackageVerifyError::InvalidSignature
            | KeyPackageVerifyError::InvalidLeafNodeSignature => {
                MlsError::InvalidKeyPackageSignature
            }
            KeyPackageVerifyError::LifetimeError(LifetimeError::Expired { not_after, now }) => {
                MlsError::KeyPackageExpired { not_after, now }
            }
            KeyPackageVerifyError::LifetimeError(LifetimeError::NotValidYet {
                not_before,
                now,
            }) => MlsError::KeyPackageNotYetValid { not_before, now },
            other => MlsError::KeyPackageInvalid(other),
        })
}
