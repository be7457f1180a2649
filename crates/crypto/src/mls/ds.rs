//! The delivery service's copy of a group's public state (openmls [`PublicGroup`]).
//!
//! The stateless parser in [`super::server`] cannot verify a member's signature: that needs the
//! group's ratchet tree and GroupContext. [`DsGroup`] keeps both (no secret: the server never
//! holds a member key), so the server can refuse a forged or malformed handshake message before
//! it wins an epoch. What it verifies: framing, epoch, sender membership, the sender's signature,
//! every proposal's validity, the UpdatePath's structure and parent hashes, and that a new
//! epoch's GroupInfo describes exactly the state the commit produced. What only members can check
//! (membership tags, confirmation tags, path secrets) stays with them.
//!
//! Persisted form ([`DsGroup::to_bytes`]): `b"GDSG"` · version `u8` (= 1) · group id (`u32`
//! length + bytes) · the openmls public storage as an [`MlsProvider`] blob (tree, context,
//! confirmation tag, interim transcript hash and queued proposals).

use std::fmt;

use openmls::messages::group_info::VerifiableGroupInfo;
use openmls::prelude::{
    Credential, GroupId, LeafNode, LeafNodeIndex, MlsMessageBodyIn, MlsMessageIn,
    OpenMlsSignaturePublicKey, ProcessedMessageContent, Proposal, ProposalStore, ProtocolMessage,
    PublicGroup, StagedCommit, VLBytes, Verifiable as _,
    tls_codec::{Deserialize as _, Serialize as _, Size as _},
};
use openmls_traits::OpenMlsProvider as _;

use super::{
    error::MlsError, identity::identity_of, message_kind::MessageKind, provider::MlsProvider,
    server::ProposalSummary, server::SenderInfo,
};

const MAGIC: &[u8; 4] = b"GDSG";
/// Version byte of the persisted [`DsGroup`] format.
pub const DS_GROUP_STATE_VERSION: u8 = 1;

/// One leaf of the public tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// Leaf index.
    pub leaf_index: u32,
    /// BasicCredential identity (empty for other credential types).
    pub identity: Vec<u8>,
    /// The leaf's signature public key.
    pub signature_key: Vec<u8>,
}

/// A leaf a commit added or changed (credential or signature key), with what was there before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafChange {
    /// The leaf in the new epoch.
    pub leaf: LeafInfo,
    /// The leaf at that index in the previous epoch, if any.
    pub previous: Option<LeafInfo>,
}

/// A KeyPackage added by an Add proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedKeyPackage {
    /// BasicCredential identity of the KeyPackage.
    pub identity: Vec<u8>,
    /// The KeyPackage's signature public key.
    pub signature_key: Vec<u8>,
    /// Its KeyPackageRef (RFC 9420 §5.2).
    pub key_package_ref: Vec<u8>,
}

/// A verified proposal, now queued in the public state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedProposal {
    /// The proposing member's leaf.
    pub sender_leaf: u32,
    /// Its ProposalRef.
    pub proposal_ref: Vec<u8>,
    /// What it proposes.
    pub summary: ProposalSummary,
    /// For an Add: the KeyPackage.
    pub added: Option<AddedKeyPackage>,
    /// For an Update: the sender's proposed leaf.
    pub update: Option<LeafInfo>,
}

/// A verified commit, merged into the public state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCommit {
    /// Who committed.
    pub sender: SenderInfo,
    /// The committer's leaf in the new epoch (for an external commit, the joiner's new leaf).
    pub sender_leaf: u32,
    /// The new epoch.
    pub epoch: u64,
    /// KeyPackages added (by value or by reference).
    pub added: Vec<AddedKeyPackage>,
    /// Leaf indices removed.
    pub removed: Vec<u32>,
    /// Every leaf that is new or whose credential or signature key changed.
    pub changed: Vec<LeafChange>,
}

/// The public state of one group, as the delivery service keeps it.
pub struct DsGroup {
    provider: MlsProvider,
    public: PublicGroup,
}

impl fmt::Debug for DsGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DsGroup")
            .field("epoch", &self.epoch())
            .field("members", &self.public.members().count())
            .finish_non_exhaustive()
    }
}

impl DsGroup {
    /// Starts tracking a group from a GroupInfo `MLSMessage` that carries the ratchet tree
    /// (what a creator publishes): verifies the tree, every leaf and the GroupInfo signature.
    pub fn from_group_info(group_info: &[u8]) -> Result<Self, MlsError> {
        let vgi = decode_group_info(group_info)?;
        let tree = vgi
            .extensions()
            .ratchet_tree()
            .ok_or(MlsError::MissingRatchetTree)?
            .ratchet_tree()
            .clone();
        let provider = MlsProvider::new();
        let (public, _) = PublicGroup::from_external(
            provider.crypto(),
            provider.storage(),
            tree,
            vgi,
            ProposalStore::new(),
        )
        .map_err(|e| MlsError::InvalidGroupState(e.to_string()))?;
        Ok(Self { provider, public })
    }

    /// The group id.
    pub fn group_id(&self) -> &[u8] {
        self.public.group_id().as_slice()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.public.group_context().epoch().as_u64()
    }

    /// Every member leaf.
    pub fn members(&self) -> Vec<LeafInfo> {
        self.public
            .members()
            .map(|m| leaf_info(m.index.u32(), &m.credential, m.signature_key))
            .collect()
    }

    /// How many proposals are queued for the current epoch.
    pub fn queued_proposals(&self) -> usize {
        self.public
            .queued_proposals(self.provider.storage())
            .map_or(0, |q| q.len())
    }

    /// The leaf whose credential identity is `identity`.
    pub fn leaf_of(&self, identity: &[u8]) -> Option<u32> {
        self.members()
            .into_iter()
            .find(|m| m.identity == identity)
            .map(|m| m.leaf_index)
    }

    /// Verifies a PublicMessage proposal against the current epoch and queues it, so a later
    /// commit may reference it.
    pub fn process_proposal(&mut self, message: &[u8]) -> Result<VerifiedProposal, MlsError> {
        let processed = self
            .public
            .process_message(self.provider.crypto(), protocol_message(message)?)
            .map_err(|e| MlsError::InvalidHandshake(e.to_string()))?;
        let sender = SenderInfo::from(processed.sender());
        let SenderInfo::Member(sender_leaf) = sender else {
            return Err(MlsError::InvalidHandshake(
                "proposals must come from members".into(),
            ));
        };
        let queued = match processed.into_content() {
            ProcessedMessageContent::ProposalMessage(p) => *p,
            _ => return Err(MlsError::InvalidHandshake("not a proposal".into())),
        };
        let proposal_ref = queued.proposal_reference_ref().as_slice().to_vec();
        let (summary, added, update) = match queued.proposal() {
            Proposal::Add(add) => {
                let kp = self.added(add.key_package())?;
                (
                    ProposalSummary::Add {
                        identity: kp.identity.clone(),
                    },
                    Some(kp),
                    None,
                )
            }
            Proposal::Update(u) => (
                ProposalSummary::Update,
                None,
                Some(leaf_node_info(sender_leaf, u.leaf_node())),
            ),
            Proposal::Remove(r) => (
                ProposalSummary::Remove {
                    leaf_index: r.removed().u32(),
                },
                None,
                None,
            ),
            Proposal::SelfRemove => (ProposalSummary::SelfRemove, None, None),
            other => (
                ProposalSummary::Other(u16::from(other.proposal_type())),
                None,
                None,
            ),
        };
        self.public
            .add_proposal(self.provider.storage(), queued)
            .map_err(MlsError::Storage)?;
        Ok(VerifiedProposal {
            sender_leaf,
            proposal_ref,
            summary,
            added,
            update,
        })
    }

    /// Verifies a PublicMessage commit against the current epoch and merges it: the state moves
    /// to the next epoch. On error the state is unchanged.
    pub fn process_commit(&mut self, message: &[u8]) -> Result<VerifiedCommit, MlsError> {
        let processed = self
            .public
            .process_message(self.provider.crypto(), protocol_message(message)?)
            .map_err(|e| MlsError::InvalidHandshake(e.to_string()))?;
        let sender = SenderInfo::from(processed.sender());
        let staged = match processed.into_content() {
            ProcessedMessageContent::StagedCommitMessage(s) => *s,
            _ => return Err(MlsError::InvalidHandshake("not a commit".into())),
        };
        let external_leaf = match sender {
            SenderInfo::Member(_) => None,
            SenderInfo::NewMemberCommit => Some(
                self.public
                    .ext_commit_sender_index(&staged)
                    .map_err(MlsError::Library)?
                    .u32(),
            ),
            _ => {
                return Err(MlsError::InvalidHandshake(
                    "commits must come from members or joiners".into(),
                ));
            }
        };
        let (added, removed) = self.effects(&staged)?;
        let before = self.members();
        self.public
            .merge_commit(self.provider.storage(), staged)
            .map_err(|e| MlsError::InvalidHandshake(e.to_string()))?;
        let changed = self
            .members()
            .into_iter()
            .filter_map(|leaf| {
                let previous = before
                    .iter()
                    .find(|b| b.leaf_index == leaf.leaf_index)
                    .cloned();
                let same = previous.as_ref().is_some_and(|p| {
                    p.identity == leaf.identity && p.signature_key == leaf.signature_key
                });
                (!same).then_some(LeafChange { leaf, previous })
            })
            .collect();
        let sender_leaf = match (sender, external_leaf) {
            (SenderInfo::Member(l), _) | (_, Some(l)) => l,
            _ => return Err(MlsError::InvalidHandshake("unknown committer".into())),
        };
        Ok(VerifiedCommit {
            sender,
            sender_leaf,
            epoch: self.epoch(),
            added,
            removed,
            changed,
        })
    }

    /// Checks that a GroupInfo `MLSMessage` describes exactly the current state (GroupContext,
    /// confirmation tag, and the ratchet tree if it carries one) and is signed by a member.
    /// Without a tree it is bound to this state's tree all the same: the GroupContext holds
    /// the tree hash.
    pub fn check_group_info(&self, group_info: &[u8]) -> Result<(), MlsError> {
        let vgi = decode_group_info(group_info)?;
        let mismatch = |what: &str| MlsError::GroupInfoMismatch(what.to_owned());
        if vgi.group_context().tls_serialize_detached()?
            != self.public.group_context().tls_serialize_detached()?
        {
            return Err(mismatch("group context"));
        }
        if let Some(tree) = vgi.extensions().ratchet_tree()
            && tree.ratchet_tree().tls_serialize_detached()? != self.ratchet_tree()?
        {
            return Err(mismatch("ratchet tree"));
        }
        // GroupInfoTBS = group_context · extensions · confirmation_tag · signer (u32), then the
        // signature: the tag and the signer are not exposed, so they are read from the bytes.
        let body = group_info.get(4..).ok_or(MlsError::Malformed(
            openmls::prelude::tls_codec::Error::EndOfStream,
        ))?;
        let tbs_len = body
            .len()
            .checked_sub(vgi.signature().tls_serialized_len())
            .ok_or_else(|| mismatch("length"))?;
        let mut tail = body
            .get(
                vgi.group_context().tls_serialized_len() + vgi.extensions().tls_serialized_len()
                    ..tbs_len,
            )
            .ok_or_else(|| mismatch("length"))?;
        let tag = VLBytes::tls_deserialize(&mut tail)?;
        let signer = u32::tls_deserialize_exact(tail)?;
        if tag.tls_serialize_detached()?
            != self.public.confirmation_tag().tls_serialize_detached()?
        {
            return Err(mismatch("confirmation tag"));
        }
        let key = self
            .public
            .leaf(LeafNodeIndex::new(signer))
            .ok_or_else(|| mismatch("signer"))?
            .signature_key()
            .clone();
        let key = OpenMlsSignaturePublicKey::from_signature_key(
            key,
            self.public.ciphersuite().signature_algorithm(),
        );
        vgi.verify(self.provider.crypto(), &key)
            .map_err(|_| mismatch("signature"))?;
        Ok(())
    }

    /// The current epoch's ratchet tree (TLS-encoded `RatchetTree`), what a joiner needs beside
    /// a GroupInfo or Welcome that leaves it out. Public: it holds public keys and credentials.
    pub fn ratchet_tree(&self) -> Result<Vec<u8>, MlsError> {
        Ok(self.public.export_ratchet_tree().tls_serialize_detached()?)
    }

    /// Serialises the state (see the module docs). Contains no secret.
    pub fn to_bytes(&self) -> Result<Vec<u8>, MlsError> {
        let id = self.group_id();
        let provider = self.provider.to_bytes()?;
        let mut out = Vec::with_capacity(9 + id.len() + provider.len());
        out.extend_from_slice(MAGIC);
        out.push(DS_GROUP_STATE_VERSION);
        let len = u32::try_from(id.len()).map_err(|_| MlsError::StateFormat("group id"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(id);
        out.extend_from_slice(&provider);
        Ok(out)
    }

    /// Restores a state saved with [`DsGroup::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MlsError> {
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or(MlsError::StateFormat("missing GDSG magic"))?;
        let (&version, rest) = rest
            .split_first()
            .ok_or(MlsError::StateFormat("truncated"))?;
        if version != DS_GROUP_STATE_VERSION {
            return Err(MlsError::UnsupportedStateVersion(version));
        }
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(MlsError::StateFormat("truncated"))?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(MlsError::StateFormat("truncated"));
        }
        let (id, rest) = rest.split_at(len);
        let provider = MlsProvider::from_bytes(rest)?;
        let public = PublicGroup::load(provider.storage(), &GroupId::from_slice(id))?
            .ok_or(MlsError::StateFormat("no public group in the state"))?;
        Ok(Self { provider, public })
    }

    fn added(&self, kp: &openmls::prelude::KeyPackage) -> Result<AddedKeyPackage, MlsError> {
        Ok(AddedKeyPackage {
            identity: identity_of(kp.leaf_node().credential()).unwrap_or_default(),
            signature_key: kp.leaf_node().signature_key().as_slice().to_vec(),
            key_package_ref: kp.hash_ref(self.provider.crypto())?.as_slice().to_vec(),
        })
    }

    fn effects(&self, staged: &StagedCommit) -> Result<(Vec<AddedKeyPackage>, Vec<u32>), MlsError> {
        let added = staged
            .add_proposals()
            .map(|p| self.added(p.add_proposal().key_package()))
            .collect::<Result<_, _>>()?;
        let removed = staged
            .remove_proposals()
            .map(|p| p.remove_proposal().removed().u32())
            .collect();
        Ok((added, removed))
    }
}

fn leaf_info(leaf_index: u32, credential: &Credential, signature_key: Vec<u8>) -> LeafInfo {
    LeafInfo {
        leaf_index,
        identity: identity_of(credential).unwrap_or_default(),
        signature_key,
    }
}

fn leaf_node_info(leaf_index: u32, leaf: &LeafNode) -> LeafInfo {
    leaf_info(
        leaf_index,
        leaf.credential(),
        leaf.signature_key().as_slice().to_vec(),
    )
}

fn protocol_message(bytes: &[u8]) -> Result<ProtocolMessage, MlsError> {
    match MlsMessageIn::tls_deserialize_exact(bytes)?.extract() {
        MlsMessageBodyIn::PublicMessage(m) => Ok(m.into()),
        other => Err(MlsError::UnexpectedMessageKind {
            expected: MessageKind::PublicMessage,
            found: MessageKind::of(&other),
        }),
    }
}

fn decode_group_info(bytes: &[u8]) -> Result<VerifiableGroupInfo, MlsError> {
    match MlsMessageIn::tls_deserialize_exact(bytes)?.extract() {
        MlsMessageBodyIn::GroupInfo(g) => Ok(g),
        other => Err(MlsError::UnexpectedMessageKind {
            expected: MessageKind::GroupInfo,
            found: MessageKind::of(&other),
        }),
    }
}
