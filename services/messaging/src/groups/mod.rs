//! `GroupService`: the MLS delivery service (RFC 9420 / RFC 9750).
//!
//! Invariants: the group record changes only by compare-and-set on its stored bytes, so exactly
//! one commit per epoch wins; membership changes come only from accepted commits (plus the
//! `left` mark of LeaveGroup); every fanned-out MLS message is stored once in the group log,
//! which each member device reads from its own cursor ([`cursors`]; a Welcome is referenced
//! from the new members' queues instead); an accepted commit's or relayed proposal's fan-out is
//! written to the outbox in the same transaction as the compare-and-set, an application
//! message's with the completion of its client message id ([`crate::outbox`]).
//!
//! Every commit and proposal is verified against the group's public state (openmls
//! `PublicGroup`, [`guardyn_crypto::mls::DsGroup`], named by the group record and changed in
//! the same compare-and-set, [`bulk`]) before it is accepted, and every leaf it adds or changes
//! must be bound to its device ([`binding`]): a forged or malformed handshake message is refused
//! with INVALID_COMMIT and cannot take an epoch from honest members.

pub(crate) mod binding;
pub(crate) mod bulk;
pub(crate) mod cursors;
pub(crate) mod mls;
pub(crate) mod relay;
pub(crate) mod state;
pub(crate) mod trees;

use std::collections::BTreeSet;

use guardyn_common::{AccountId, DeviceId, GroupId};
use guardyn_crypto::mls::{ContentKind, DsGroup, MessageKind, ParsedBody, SenderInfo};
use guardyn_storage::Txn;
use guardyn_storage::record::{decode, encode};

use self::bulk::{load_public, public_bytes, ratchet_tree};
use self::cursors::membership_changes;
use self::state::{Bulk, BulkState, GroupState, Loaded, Member};
use crate::core::Core;
use crate::error::MessagingError;
use crate::outbox::{FanOut, Kind};
use crate::quota::Policy;
use crate::store::{self, Membership};

/// Largest LeaveGroup proposal.
pub(crate) const MAX_LEAVE_PROPOSAL: usize = 64 * 1024;

/// Proposals relayed per group and epoch, at most: they stay in the group record until a commit.
pub(crate) const MAX_QUEUED_PROPOSALS: usize = 64;

/// Largest encoded group record, below the store's 2 MiB value limit: a commit or proposal that
/// would outgrow it is refused with QUOTA_EXCEEDED instead of failing in storage. The record
/// holds the leaves (tens of bytes per member) and a small bulky state ([`bulk`]).
pub(crate) const MAX_GROUP_RECORD_BYTES: usize = 1_900_000;

/// A validated SendCommit.
#[derive(Debug)]
pub(crate) struct Commit {
    pub group: GroupId,
    pub epoch: u64,
    pub commit: Vec<u8>,
    pub group_info: Vec<u8>,
    pub welcome: Option<Vec<u8>>,
    pub welcome_recipients: Vec<(AccountId, DeviceId)>,
}

pub(crate) fn check_size(field: &str, b: &[u8], max: usize) -> Result<(), MessagingError> {
    if b.is_empty() {
        return Err(MessagingError::invalid(field, "must not be empty"));
    }
    if b.len() > max {
        return Err(MessagingError::too_large(
            field,
            format!("at most {max} bytes"),
        ));
    }
    Ok(())
}

impl Core {
    pub(crate) async fn load_group(&self, group: &GroupId) -> Result<Loaded, MessagingError> {
        let raw = self
            .kv
            .get(&store::group_key(group))
            .await?
            .ok_or(MessagingError::GroupNotFound)?;
        let state = decode::<GroupState>(&raw)?;
        Ok(Loaded { raw, state })
    }

    /// The gate of every group write, before its input is examined: a caller outside the group
    /// learns nothing about it. A group stored before cursors gets them here.
    /// `account_suffices`: a device of an account with a member device
    /// passes (external commits).
    pub(crate) async fn require_member(
        &self,
        group: &GroupId,
        account: AccountId,
        device: DeviceId,
        account_suffices: bool,
    ) -> Result<(), MessagingError> {
        let g = self.load_group(group).await?.state;
        if g.leaf_of(account, device).is_none() && !(account_suffices && g.has_account(account)) {
            return Err(MessagingError::NotMember);
        }
        // Every write after this gate fans out by cursor, so a group stored before cursors
        // gets them here, once.
        if !g.indexed {
            self.ensure_indexed(group).await?;
        }
        Ok(())
    }

    pub(crate) async fn create_group(
        &self,
        account: AccountId,
        device: DeviceId,
        group: &GroupId,
        group_info: Vec<u8>,
    ) -> Result<GroupState, MessagingError> {
        self.limits.create_group(account)?;
        check_size("group_info", &group_info, self.cfg.max_mls_message_bytes)?;
        let gi = mls::parse(
            "group_info",
            &group_info,
            group.as_bytes(),
            MessageKind::GroupInfo,
            None,
        )?;
        if gi.epoch != Some(0) {
            return Err(MessagingError::mls("group_info", "must be for epoch 0"));
        }
        let ds = DsGroup::from_group_info(&group_info)
            .map_err(|e| MessagingError::commit("group_info", e))?;
        match ds.members().as_slice() {
            [creator] => {
                let m = self.bound_leaf("group_info", creator).await?;
                if !m.is(account, device) {
                    return Err(MessagingError::identity(
                        "group_info",
                        "the group's only member must be the calling device",
                    ));
                }
            }
            _ => {
                return Err(MessagingError::invalid(
                    "group_info",
                    "must describe a group whose only member is the calling device",
                ));
            }
        }
        let now = self.clock.now_ms();
        let bulk = BulkState {
            group_info,
            public: public_bytes(&ds)?,
        };
        let key = store::group_key(group);
        let (bulk, txn) = Bulk::first(group, &bulk, Txn::new());
        let state = GroupState {
            epoch: 0,
            created_ms: now,
            updated_ms: now,
            leaves: vec![Some(Member::new(account, device))],
            indexed: true,
            bulk,
            welcome_trees: Vec::new(),
        };
        let from = self.log.stats(&store::group_log(group)).await?.next_seq;
        let creator = Membership::new(group.clone(), from, 0);
        let outcome = self
            .kv
            .commit(
                txn.require_absent(key.clone())
                    .put(key, encode(&state))
                    .put(
                        store::membership_key(account, device, group),
                        encode(&creator),
                    ),
            )
            .await?;
        if !outcome.is_committed() {
            return Err(MessagingError::GroupExists);
        }
        Ok(state)
    }

    /// Accept a commit for the group's current epoch; returns the new epoch and the accept
    /// time.
    pub(crate) async fn send_commit(
        &self,
        account: AccountId,
        device: DeviceId,
        r: Commit,
    ) -> Result<(u64, u64), MessagingError> {
        check_size("commit", &r.commit, self.cfg.max_mls_message_bytes)?;
        check_size("group_info", &r.group_info, self.cfg.max_mls_message_bytes)?;
        if let Some(w) = &r.welcome {
            check_size("welcome", w, self.cfg.max_welcome_bytes)?;
            self.limits.welcome(account)?;
        }
        let next_epoch = r
            .epoch
            .checked_add(1)
            .ok_or(MessagingError::EpochExhausted)?;
        self.require_member(&r.group, account, device, true).await?;
        let commit = mls::parse(
            "commit",
            &r.commit,
            r.group.as_bytes(),
            MessageKind::PublicMessage,
            Some(ContentKind::Commit),
        )?;
        if commit.epoch != Some(r.epoch) {
            return Err(MessagingError::mls(
                "commit",
                "epoch differs from the request's epoch",
            ));
        }
        let gi = mls::parse(
            "group_info",
            &r.group_info,
            r.group.as_bytes(),
            MessageKind::GroupInfo,
            None,
        )?;
        if gi.epoch != Some(next_epoch) {
            return Err(MessagingError::mls(
                "group_info",
                "must be for the commit's new epoch",
            ));
        }
        let welcome_recipients: BTreeSet<(AccountId, DeviceId)> =
            r.welcome_recipients.iter().copied().collect();
        let welcome_refs: BTreeSet<Vec<u8>> = match &r.welcome {
            Some(w) => {
                match mls::parse("welcome", w, r.group.as_bytes(), MessageKind::Welcome, None)?.body
                {
                    ParsedBody::Welcome { recipients, .. } => recipients.into_iter().collect(),
                    _ => return Err(MessagingError::mls("welcome", "not a Welcome")),
                }
            }
            None => BTreeSet::new(),
        };

        loop {
            let loaded = self.load_group(&r.group).await?;
            let g = &loaded.state;
            let caller_leaf = g.leaf_of(account, device);
            match commit.sender {
                Some(SenderInfo::Member(leaf)) => {
                    if caller_leaf != Some(leaf) {
                        return Err(MessagingError::NotMember);
                    }
                }
                Some(SenderInfo::NewMemberCommit) => {
                    if !g.has_account(account) || caller_leaf.is_some() {
                        return Err(MessagingError::NotMember);
                    }
                }
                _ => return Err(MessagingError::mls("commit", "unsupported sender")),
            }
            if g.epoch != r.epoch {
                return Err(MessagingError::StaleEpoch { current: g.epoch });
            }
            // Verified against the epoch's public state before anything is accepted: a forged
            // commit must not win the compare-and-set below.
            let Some(bulk) = self.load_bulk(&r.group, &loaded).await? else {
                continue;
            };
            let mut ds = load_public(&bulk)?;
            let verified = ds
                .process_commit(&r.commit)
                .map_err(|e| MessagingError::commit("commit", e))?;
            ds.check_group_info(&r.group_info)
                .map_err(|e| MessagingError::commit("group_info", e))?;
            let added: BTreeSet<(AccountId, DeviceId)> = self
                .check_commit_binding(&verified, (account, device))
                .await?
                .iter()
                .map(|m| (m.account, m.device))
                .collect();
            let added_refs: BTreeSet<Vec<u8>> = verified
                .added
                .iter()
                .map(|kp| kp.key_package_ref.clone())
                .collect();
            if added != welcome_recipients {
                return Err(MessagingError::invalid(
                    "welcome_recipients",
                    "must equal the devices the commit adds",
                ));
            }
            if added.is_empty() != r.welcome.is_none() {
                return Err(MessagingError::invalid(
                    "welcome",
                    "required exactly when the commit adds members",
                ));
            }
            if added_refs != welcome_refs {
                return Err(MessagingError::mls(
                    "welcome",
                    "must be addressed to exactly the KeyPackages the commit adds",
                ));
            }
            for &(a, d) in &added {
                if g.leaf_of(a, d).is_some() {
                    return Err(MessagingError::invalid(
                        "commit",
                        "adds a device that is already a member",
                    ));
                }
                let known = self
                    .directory
                    .devices(&a.to_string())
                    .await?
                    .is_some_and(|ds| ds.iter().any(|x| x.device_id == d.get()));
                if !known {
                    return Err(MessagingError::invalid(
                        "commit",
                        "adds a device that does not exist",
                    ));
                }
            }
            let now = self.clock.now_ms();
            let mut next = g.clone();
            if next.sync_leaves(&ds.members()).is_none() {
                return Err(MessagingError::identity(
                    "commit",
                    "a member identity is not <account_id>.<device_id>",
                ));
            }
            if next.members().count() > self.cfg.max_group_members {
                return Err(MessagingError::GroupFull {
                    max: self.cfg.max_group_members,
                });
            }
            next.epoch = next_epoch;
            next.updated_ms = now;
            let bulk = BulkState {
                group_info: r.group_info.clone(),
                public: public_bytes(&ds)?,
            };
            let (bulk, mut txn) = g.bulk.replace(&r.group, &bulk, Txn::new());
            next.bulk = bulk;
            if r.welcome.is_some() {
                // Welcomes leave the tree out: the joiners fetch this one (trees).
                let tree = ratchet_tree(&ds)?;
                let retention_ms = self.cfg.retention_secs.saturating_mul(1000);
                txn = trees::keep(
                    &r.group,
                    &mut next.welcome_trees,
                    (next_epoch, &tree),
                    (now, retention_ms),
                    txn,
                );
            }
            let record = encode(&next);
            check_record_size(&record)?;
            // The commit goes to the group log, read by every member of the previous epoch
            // (removed ones included); a Welcome is charged to the added devices' queues
            // (crate::quota).
            if let Some(w) = &r.welcome {
                let to: Vec<_> = added.iter().copied().collect();
                self.check_queues(account, &to, w.len(), Policy::Full)
                    .await?;
            }
            let sender = (account, device);
            // Removed members read the log up to this epoch; added ones from the next.
            let (removed, joined) = membership_changes(g, &next);
            // A lower bound of the new epoch's first log entry: new members start there.
            let log_from = self.log.stats(&store::group_log(&r.group)).await?.next_seq;
            let mut fan_outs = Vec::new();
            // Read by the previous epoch's members: none but the committer in a new group.
            if g.members().any(|m| !m.is(account, device)) {
                fan_outs.push(FanOut {
                    kind: Kind::Commit,
                    group_id: r.group.clone(),
                    epoch: g.epoch,
                    accepted_ms: now,
                    sender,
                    message: r.commit.clone(),
                    recipients: Vec::new(),
                    urgent: false,
                    tag: Vec::new(),
                    // Not theirs (their epoch starts after it), nor to wake them for.
                    skip: joined.clone(),
                    log_from,
                });
            }
            if let Some(w) = &r.welcome {
                fan_outs.push(FanOut {
                    kind: Kind::Welcome,
                    group_id: r.group.clone(),
                    epoch: g.epoch,
                    accepted_ms: now,
                    sender,
                    message: w.clone(),
                    recipients: added.iter().cloned().collect(),
                    // A new member's first message: worth waking the device for.
                    urgent: true,
                    tag: Vec::new(),
                    skip: Vec::new(),
                    log_from,
                });
            }
            // The outbox records commit with the epoch change, so a crash after this point
            // still delivers the commit (crate::outbox).
            let key = store::group_key(&r.group);
            let txn = fan_outs.iter().fold(
                txn.require_equals(key.clone(), loaded.raw.clone())
                    .put(key, record),
                |t, f| t.put(f.key(), encode(f)),
            );
            // A member that joined by external commit (no Welcome to wait for) reads the log
            // from the next epoch on.
            let txn = self
                .end_memberships(txn, &r.group, &removed, g.epoch)
                .await?;
            let external: Vec<_> = joined.iter().filter(|d| !added.contains(d)).collect();
            let txn = external.iter().fold(txn, |t, &&(a, d)| {
                let m = Membership::new(r.group.clone(), log_from, next_epoch);
                t.put(store::membership_key(a, d, &r.group), encode(&m))
            });
            if !self.kv.commit(txn).await?.is_committed() {
                // Someone else changed the group: re-read; a new epoch then answers STALE_EPOCH.
                continue;
            }
            // Their streams stop reading at this epoch, or start at the next.
            for &(a, d) in removed.iter().chain(external) {
                self.notify_memberships(a, d).await;
            }
            self.complete_pending_proposals(&r.group, g.epoch).await;
            self.deliver_or_defer(&fan_outs, &next).await;
            return Ok((next.epoch, now));
        }
    }
}

pub(crate) fn check_record_size(record: &[u8]) -> Result<(), MessagingError> {
    if record.len() > MAX_GROUP_RECORD_BYTES {
        return Err(MessagingError::GroupStateLimit {
            what: format!("the group record would be over {MAX_GROUP_RECORD_BYTES} bytes"),
        });
    }
    Ok(())
}
