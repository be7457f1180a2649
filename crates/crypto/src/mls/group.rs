//! Group operations for a client: create, join, commit, propose, process,
//! encrypt.
//!
//! Commits are not merged when they are created. The delivery service orders
//! commits per epoch (compare-and-set), so the flow is: create the commit, send
//! it, and call [`Group::merge_pending_commit`] only once the server accepted
//! it; if another commit won the epoch, call [`Group::discard_pending_commit`]
//! and process the winner. Incoming commits are merged by
//! [`Group::process_message`] because the server already ordered them.

use std::fmt;

use openmls::prelude::{
    CommitBuilder, GroupId, Initial, LeafNodeIndex, LeafNodeParameters, MlsGroup, MlsMessageBodyIn,
    MlsMessageIn, ProcessedMessageContent, ProcessedWelcome, ProtocolMessage, RatchetTreeIn,
    StagedCommit, tls_codec::Deserialize as _, tls_codec::Serialize as _,
};
use openmls_traits::OpenMlsProvider as _;

use super::{
    client::{MlsClient, capabilities, join_config},
    error::MlsError,
    identity::identity_of,
    message_kind::MessageKind,
    server::SenderInfo,
};

/// A group as seen by one member. The state lives in the member's key store
/// (persisted with [`MlsClient::to_bytes`]); this is the loaded handle.
pub struct Group {
    inner: MlsGroup,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("group_id_len", &self.inner.group_id().as_slice().len())
            .field("epoch", &self.inner.epoch().as_u64())
            .field("members", &self.inner.members().count())
            .field("active", &self.inner.is_active())
            .finish_non_exhaustive()
    }
}

/// Output of a commit: send `commit` to the server; deliver `welcome` to the
/// added members; publish `group_info` for external joins. All fields are
/// serialised `MLSMessage`s; neither the Welcome nor the GroupInfo carries the
/// ratchet tree (the delivery service serves it).
pub struct CommitBundle {
    /// The commit (a PublicMessage under the Guardyn wire-format policy).
    pub commit: Vec<u8>,
    /// Welcome for new members, if the commit added any.
    pub welcome: Option<Vec<u8>>,
    /// Signed GroupInfo for the new epoch, without the ratchet tree.
    pub group_info: Option<Vec<u8>>,
}

impl fmt::Debug for CommitBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitBundle")
            .field("commit_len", &self.commit.len())
            .field("welcome_len", &self.welcome.as_ref().map(Vec::len))
            .field("group_info_len", &self.group_info.as_ref().map(Vec::len))
            .finish()
    }
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Leaf index in the ratchet tree.
    pub leaf_index: u32,
    /// BasicCredential identity.
    pub identity: Vec<u8>,
    /// The leaf's signature public key (compare it with the key the directory pins for the
    /// device the identity names).
    pub signature_key: Vec<u8>,
}

/// What processing an incoming message produced.
pub enum Received {
    /// A decrypted application message.
    Application {
        /// Sender's leaf index.
        sender: u32,
        /// Sender's credential identity (authenticated by the signature).
        sender_identity: Vec<u8>,
        /// The plaintext.
        plaintext: Vec<u8>,
    },
    /// A proposal; it was queued and will be covered by the next commit.
    Proposal {
        /// Who proposed.
        sender: SenderInfo,
    },
    /// A commit that was verified and merged; the group is now at `epoch`.
    /// Also returned when the server echoes this client's own pending commit
    /// (which is then merged).
    Commit(CommitSummary),
    /// This client's own PrivateMessage echoed back by the server; ignore it.
    OwnMessage,
}

impl fmt::Debug for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Application {
                sender, plaintext, ..
            } => f
                .debug_struct("Application")
                .field("sender", sender)
                .field("plaintext_len", &plaintext.len())
                .finish_non_exhaustive(),
            Self::Proposal { sender } => {
                f.debug_struct("Proposal").field("sender", sender).finish()
            }
            Self::Commit(s) => f.debug_tuple("Commit").field(s).finish(),
            Self::OwnMessage => f.write_str("OwnMessage"),
        }
    }
}

/// Membership effect of a merged commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitSummary {
    /// Epoch after the merge.
    pub epoch: u64,
    /// Who committed.
    pub sender: SenderInfo,
    /// Identities added by the commit.
    pub added: Vec<Vec<u8>>,
    /// Leaf indices removed by the commit.
    pub removed: Vec<u32>,
    /// True if this client was removed; the group is now inactive.
    pub self_removed: bool,
}

impl Group {
    /// Creates a new group with this client as the only member (epoch 0).
    pub fn create(client: &MlsClient, group_id: &[u8]) -> Result<Self, MlsError> {
        let inner = MlsGroup::new_with_group_id(
            &client.provider,
            &client.signer,
            &client.create_config(),
            GroupId::from_slice(group_id),
            client.credential.clone(),
        )?;
        Ok(Self { inner })
    }

    /// Joins from a serialised Welcome `MLSMessage`. `ratchet_tree` is the tree of the epoch
    /// the Welcome is for ([`OpenWelcome::epoch`]), from the delivery service, unless the
    /// Welcome's GroupInfo carries it ([`OpenWelcome::carries_tree`]). Works only if `client`'s
    /// key store still holds the private keys of the KeyPackage it was built for.
    pub fn join_from_welcome(
        client: &MlsClient,
        welcome: &[u8],
        ratchet_tree: Option<&[u8]>,
    ) -> Result<Self, MlsError> {
        OpenWelcome::open(client, welcome)?.join(client, ratchet_tree, |_| true)
    }

    /// Joins by external commit from a serialised GroupInfo `MLSMessage` and the ratchet tree
    /// of its epoch (`None` when the GroupInfo carries it). Returns the group, already at the
    /// new epoch, and the commit to send to the server. If the server rejects it, drop the
    /// group and retry with a fresh GroupInfo.
    pub fn join_by_external_commit(
        client: &MlsClient,
        group_info: &[u8],
        ratchet_tree: Option<&[u8]>,
    ) -> Result<(Self, Vec<u8>), MlsError> {
        let group_info = match decode(group_info)? {
            MlsMessageBodyIn::GroupInfo(g) => g,
            other => return Err(unexpected(MessageKind::GroupInfo, &other)),
        };
        let provider = &client.provider;
        let mut builder = MlsGroup::external_commit_builder().with_config(join_config());
        if let Some(tree) = ratchet_tree {
            builder = builder.with_ratchet_tree(RatchetTreeIn::tls_deserialize_exact(tree)?);
        }
        let (inner, bundle) = builder
            .build_group(provider, group_info, client.credential.clone())?
            .leaf_node_parameters(
                LeafNodeParameters::builder()
                    .with_capabilities(capabilities())
                    .build(),
            )
            .load_psks(provider.storage())?
            .build(provider.rand(), provider.crypto(), &client.signer, |_| true)?
            .finalize(provider)?;
        Ok((
            Self { inner },
            bundle.into_commit().tls_serialize_detached()?,
        ))
    }

    /// Loads a group from the client's key store.
    pub fn load(client: &MlsClient, group_id: &[u8]) -> Result<Self, MlsError> {
        MlsGroup::load(client.provider.storage(), &GroupId::from_slice(group_id))?
            .map(|inner| Self { inner })
            .ok_or(MlsError::GroupNotFound)
    }

    /// The group id.
    pub fn group_id(&self) -> &[u8] {
        self.inner.group_id().as_slice()
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch().as_u64()
    }

    /// False once this client has been removed.
    pub fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    /// This client's leaf index.
    pub fn own_leaf_index(&self) -> u32 {
        self.inner.own_leaf_index().u32()
    }

    /// Current members (non-Basic credentials are reported with an empty identity).
    pub fn members(&self) -> Vec<MemberInfo> {
        self.inner
            .members()
            .map(|m| MemberInfo {
                leaf_index: m.index.u32(),
                identity: identity_of(&m.credential).unwrap_or_default(),
                signature_key: m.signature_key,
            })
            .collect()
    }

    /// Commit adding the given serialised KeyPackages (`MLSMessage`s).
    pub fn add_members(
        &mut self,
        client: &MlsClient,
        key_packages: &[&[u8]],
    ) -> Result<CommitBundle, MlsError> {
        let kps = key_packages
            .iter()
            .map(|kp| super::server::decode_key_package(kp, client.provider.crypto()))
            .collect::<Result<Vec<_>, _>>()?;
        // No UpdatePath: a commit of Adds needs none (RFC 9420 §12.4), and in a tree built by
        // Adds (blank parents) a path is encrypted to nearly every member, about 80 bytes each,
        // which would make adding to a large group cost a commit as large as the group. The
        // committer refreshes its own leaf with `self_update` when it wants to.
        self.commit(client, |b| b.propose_adds(kps))
    }

    /// Commit removing the members at `leaf_indices`.
    pub fn remove_members(
        &mut self,
        client: &MlsClient,
        leaf_indices: &[u32],
    ) -> Result<CommitBundle, MlsError> {
        let leaves = self.existing_leaves(leaf_indices)?;
        self.commit(client, |b| b.propose_removals(leaves))
    }

    /// Commit rotating this client's leaf (encryption) key: post-compromise
    /// security for everything after the commit.
    pub fn self_update(&mut self, client: &MlsClient) -> Result<CommitBundle, MlsError> {
        self.commit(client, |b| {
            b.leaf_node_parameters(LeafNodeParameters::default())
                .consume_proposal_store(true)
        })
    }

    /// Proposal (not a commit) to add a KeyPackage.
    pub fn propose_add(
        &mut self,
        client: &MlsClient,
        key_package: &[u8],
    ) -> Result<Vec<u8>, MlsError> {
        let kp = super::server::decode_key_package(key_package, client.provider.crypto())?;
        let (msg, _) = self
            .inner
            .propose_add_member(&client.provider, &client.signer, &kp)?;
        Ok(msg.tls_serialize_detached()?)
    }

    /// Proposal to remove the member at `leaf_index`.
    pub fn propose_remove(
        &mut self,
        client: &MlsClient,
        leaf_index: u32,
    ) -> Result<Vec<u8>, MlsError> {
        let leaf = self.existing_leaves(&[leaf_index])?[0];
        let (msg, _) = self
            .inner
            .propose_remove_member(&client.provider, &client.signer, leaf)?;
        Ok(msg.tls_serialize_detached()?)
    }

    /// Proposal to update this client's leaf.
    pub fn propose_self_update(&mut self, client: &MlsClient) -> Result<Vec<u8>, MlsError> {
        let (msg, _) = self.inner.propose_self_update(
            &client.provider,
            &client.signer,
            LeafNodeParameters::default(),
        )?;
        Ok(msg.tls_serialize_detached()?)
    }

    /// Commit covering all queued proposals (own and received).
    pub fn commit_pending_proposals(
        &mut self,
        client: &MlsClient,
    ) -> Result<CommitBundle, MlsError> {
        self.commit(client, |b| b.consume_proposal_store(true))
    }

    /// Builds and stages a commit. Its GroupInfo (for the delivery service) and its Welcome
    /// leave the ratchet tree out, whatever the group's stored configuration says: the tree
    /// grows with the group (about 200 bytes per member) and the delivery service, which
    /// verifies every commit against it, serves it to joiners instead (RFC 9420 §12.4.3.3).
    fn commit(
        &mut self,
        client: &MlsClient,
        proposals: impl for<'a> FnOnce(
            CommitBuilder<'a, Initial, &'a mut MlsGroup>,
        ) -> CommitBuilder<'a, Initial, &'a mut MlsGroup>,
    ) -> Result<CommitBundle, MlsError> {
        if !self.inner.is_active() || self.inner.pending_commit().is_some() {
            return Err(MlsError::NotOperational);
        }
        let provider = &client.provider;
        let staged = proposals(self.inner.commit_builder())
            .load_psks(provider.storage())?
            .use_ratchet_tree_extension(false)
            .create_group_info(true)
            .build(provider.rand(), provider.crypto(), &client.signer, |_| true)?
            .stage_commit(provider)?;
        let (commit, welcome, group_info) = staged.into_messages();
        Ok(CommitBundle {
            commit: commit.tls_serialize_detached()?,
            welcome: welcome.map(|w| w.tls_serialize_detached()).transpose()?,
            group_info: group_info.map(|g| g.tls_serialize_detached()).transpose()?,
        })
    }

    /// Applies this client's own commit after the server accepted it.
    pub fn merge_pending_commit(&mut self, client: &MlsClient) -> Result<(), MlsError> {
        Ok(self.inner.merge_pending_commit(&client.provider)?)
    }

    /// Drops this client's own commit after the server rejected it (another
    /// commit won the epoch).
    pub fn discard_pending_commit(&mut self, client: &MlsClient) -> Result<(), MlsError> {
        Ok(self.inner.clear_pending_commit(client.provider.storage())?)
    }

    /// Encrypts an application message (always a PrivateMessage).
    pub fn encrypt(&mut self, client: &MlsClient, plaintext: &[u8]) -> Result<Vec<u8>, MlsError> {
        let msg = self
            .inner
            .create_message(&client.provider, &client.signer, plaintext)?;
        Ok(msg.tls_serialize_detached()?)
    }

    /// This member's view of the current epoch's ratchet tree (TLS-encoded `RatchetTree`).
    pub fn ratchet_tree(&self) -> Result<Vec<u8>, MlsError> {
        Ok(self.inner.export_ratchet_tree().tls_serialize_detached()?)
    }

    /// A signed GroupInfo with the ratchet tree (what a creator publishes with CreateGroup).
    pub fn export_group_info(&self, client: &MlsClient) -> Result<Vec<u8>, MlsError> {
        let gi = self
            .inner
            .export_group_info(client.provider.crypto(), &client.signer, true)?;
        Ok(gi.tls_serialize_detached()?)
    }

    /// Verifies and applies an incoming PublicMessage / PrivateMessage.
    /// Application messages are decrypted, proposals queued, commits merged.
    pub fn process_message(
        &mut self,
        client: &MlsClient,
        message: &[u8],
    ) -> Result<Received, MlsError> {
        self.process_message_checked(client, message, |_| true)
    }

    /// [`Group::process_message`], refusing ([`MlsError::UntrustedMember`], nothing merged) an
    /// application message whose sender's leaf, or a commit one of whose new or updated leaves,
    /// `accept` rejects.
    pub fn process_message_checked(
        &mut self,
        client: &MlsClient,
        message: &[u8],
        accept: impl Fn(&MemberInfo) -> bool,
    ) -> Result<Received, MlsError> {
        let protocol: ProtocolMessage = match decode(message)? {
            MlsMessageBodyIn::PublicMessage(m) => m.into(),
            MlsMessageBodyIn::PrivateMessage(m) => m.into(),
            other => return Err(unexpected(MessageKind::PublicMessage, &other)),
        };
        let processed = self.inner.process_message(&client.provider, protocol)?;
        let sender = SenderInfo::from(processed.sender());
        let sender_identity = identity_of(processed.credential()).unwrap_or_default();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                let SenderInfo::Member(leaf) = sender else {
                    return Err(MlsError::ApplicationNotPrivate);
                };
                let member = self
                    .inner
                    .members()
                    .find(|m| m.index.u32() == leaf)
                    .ok_or(MlsError::UnknownMember(leaf))?;
                check(
                    &accept,
                    MemberInfo {
                        leaf_index: leaf,
                        identity: sender_identity.clone(),
                        signature_key: member.signature_key,
                    },
                )?;
                Ok(Received::Application {
                    sender: leaf,
                    sender_identity,
                    plaintext: app.into_bytes(),
                })
            }
            ProcessedMessageContent::ProposalMessage(p)
            | ProcessedMessageContent::ExternalJoinProposalMessage(p) => {
                self.inner
                    .store_pending_proposal(client.provider.storage(), *p)?;
                Ok(Received::Proposal { sender })
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                for leaf in new_leaves(&staged) {
                    check(&accept, leaf)?;
                }
                let (added, removed, self_removed) = effects(&staged);
                self.inner.merge_staged_commit(&client.provider, *staged)?;
                Ok(Received::Commit(CommitSummary {
                    epoch: self.epoch(),
                    sender,
                    added,
                    removed,
                    self_removed,
                }))
            }
            // The server fanned our own commit back: it won the epoch.
            ProcessedMessageContent::OwnPendingCommit => {
                let (added, removed, self_removed) =
                    self.inner.pending_commit().map(effects).unwrap_or_default();
                self.inner.merge_pending_commit(&client.provider)?;
                Ok(Received::Commit(CommitSummary {
                    epoch: self.epoch(),
                    sender,
                    added,
                    removed,
                    self_removed,
                }))
            }
            ProcessedMessageContent::OwnPrivateMessage => Ok(Received::OwnMessage),
        }
    }

    fn existing_leaves(&self, leaf_indices: &[u32]) -> Result<Vec<LeafNodeIndex>, MlsError> {
        leaf_indices
            .iter()
            .map(|&i| {
                let leaf = LeafNodeIndex::new(i);
                self.inner
                    .member(leaf)
                    .map(|_| leaf)
                    .ok_or(MlsError::UnknownMember(i))
            })
            .collect()
    }
}

fn check(accept: &impl Fn(&MemberInfo) -> bool, m: MemberInfo) -> Result<(), MlsError> {
    if accept(&m) {
        Ok(())
    } else {
        Err(MlsError::UntrustedMember {
            identity: m.identity,
        })
    }
}

/// The leaves a staged commit adds or replaces (leaf indices are not known before the merge and
/// are reported as 0).
fn new_leaves(staged: &StagedCommit) -> Vec<MemberInfo> {
    let info = |leaf: &openmls::prelude::LeafNode| MemberInfo {
        leaf_index: 0,
        identity: identity_of(leaf.credential()).unwrap_or_default(),
        signature_key: leaf.signature_key().as_slice().to_vec(),
    };
    staged
        .add_proposals()
        .map(|p| info(p.add_proposal().key_package().leaf_node()))
        .chain(
            staged
                .update_proposals()
                .map(|p| info(p.update_proposal().leaf_node())),
        )
        .chain(staged.update_path_leaf_node().map(info))
        .collect()
}

fn effects(staged: &StagedCommit) -> (Vec<Vec<u8>>, Vec<u32>, bool) {
    let added = staged
        .add_proposals()
        .map(|p| {
            identity_of(p.add_proposal().key_package().leaf_node().credential()).unwrap_or_default()
        })
        .collect();
    let removed = staged
        .remove_proposals()
        .map(|p| p.remove_proposal().removed().u32())
        .collect();
    (added, removed, staged.self_removed())
}

fn decode(bytes: &[u8]) -> Result<MlsMessageBodyIn, MlsError> {
    Ok(MlsMessageIn::tls_deserialize_exact(bytes)?.extract())
}

fn unexpected(expected: MessageKind, found: &MlsMessageBodyIn) -> MlsError {
    MlsError::UnexpectedMessageKind {
        expected,
        found: MessageKind::of(found),
    }
}

/// A Welcome decrypted with the client's KeyPackage, before the group is joined: it names the
/// group and epoch whose ratchet tree the join needs.
pub struct OpenWelcome {
    inner: ProcessedWelcome,
}

impl fmt::Debug for OpenWelcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenWelcome")
            .field("epoch", &self.epoch())
            .field("carries_tree", &self.carries_tree())
            .finish_non_exhaustive()
    }
}

impl OpenWelcome {
    /// Decrypts a serialised Welcome `MLSMessage` addressed to one of `client`'s KeyPackages.
    pub fn open(client: &MlsClient, welcome: &[u8]) -> Result<Self, MlsError> {
        let welcome = match decode(welcome)? {
            MlsMessageBodyIn::Welcome(w) => w,
            other => return Err(unexpected(MessageKind::Welcome, &other)),
        };
        let inner = ProcessedWelcome::new_from_welcome(&client.provider, &join_config(), welcome)?;
        Ok(Self { inner })
    }

    /// The group id, as the (not yet verified) GroupInfo states it.
    pub fn group_id(&self) -> &[u8] {
        self.inner
            .unverified_group_info()
            .group_context()
            .group_id()
            .as_slice()
    }

    /// The epoch the Welcome is for, as the (not yet verified) GroupInfo states it.
    pub fn epoch(&self) -> u64 {
        self.inner
            .unverified_group_info()
            .group_context()
            .epoch()
            .as_u64()
    }

    /// Whether the GroupInfo carries the ratchet tree (Welcomes of older clients).
    pub fn carries_tree(&self) -> bool {
        self.inner
            .unverified_group_info()
            .extensions()
            .ratchet_tree()
            .is_some()
    }

    /// Joins with the epoch's ratchet tree (`None` when the Welcome carries it), refusing the
    /// group ([`MlsError::UntrustedMember`]) when `accept` rejects one of its members (e.g. a
    /// leaf whose signature key is not the one the directory pins for the device it names).
    /// The tree is verified against the GroupInfo's tree hash, so its source needs no trust.
    pub fn join(
        self,
        client: &MlsClient,
        ratchet_tree: Option<&[u8]>,
        accept: impl Fn(&MemberInfo) -> bool,
    ) -> Result<Group, MlsError> {
        let tree = ratchet_tree
            .map(RatchetTreeIn::tls_deserialize_exact)
            .transpose()?;
        let staged = self.inner.into_staged_welcome(&client.provider, tree)?;
        for m in staged.members() {
            check(
                &accept,
                MemberInfo {
                    leaf_index: m.index.u32(),
                    identity: identity_of(&m.credential).unwrap_or_default(),
                    signature_key: m.signature_key,
                },
            )?;
        }
        let inner = staged.into_group(&client.provider)?;
        Ok(Group { inner })
    }
}
