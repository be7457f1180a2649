//! `GroupService`: the MLS delivery service (RFC 9420 / RFC 9750).
//!
//! Invariants: the group record changes only by compare-and-set on its stored bytes, so exactly
//! one commit per epoch wins; membership changes come only from accepted commits (plus the
//! `left` mark of LeaveGroup); every fanned-out MLS message is stored once in the group log and
//! referenced from each recipient device's queue; an accepted commit's or relayed proposal's
//! fan-out is written to the outbox in the same transaction as the compare-and-set, an
//! application message's with the completion of its client message id ([`crate::outbox`]).

pub(crate) mod mls;
pub(crate) mod relay;
pub(crate) mod state;

use std::collections::BTreeSet;

use guardyn_common::{AccountId, DeviceId, GroupId};
use guardyn_crypto::mls::{ContentKind, MessageKind, ParsedBody, SenderInfo};
use guardyn_storage::record::{decode, encode};
use guardyn_storage::{Direction, KeyRange, Txn};

use self::state::{Effect, GroupState, Member};
use crate::core::Core;
use crate::error::MessagingError;
use crate::outbox::{FanOut, Kind};
use crate::store;

/// Largest LeaveGroup proposal.
pub(crate) const MAX_LEAVE_PROPOSAL: usize = 64 * 1024;

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

/// A loaded group with the exact bytes it was read as (the compare-and-set witness).
pub(crate) struct Loaded {
    raw: Vec<u8>,
    pub state: GroupState,
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

    pub(crate) async fn create_group(
        &self,
        account: AccountId,
        device: DeviceId,
        group: &GroupId,
        group_info: Vec<u8>,
    ) -> Result<GroupState, MessagingError> {
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
        let now = self.clock.now_ms();
        let state = GroupState {
            epoch: 0,
            created_ms: now,
            updated_ms: now,
            leaves: vec![Some(Member::new(account, device))],
            group_info,
        };
        let key = store::group_key(group);
        let outcome = self
            .kv
            .commit(
                Txn::new()
                    .require_absent(key.clone())
                    .put(key, encode(&state)),
            )
            .await?;
        if !outcome.is_committed() {
            return Err(MessagingError::GroupExists);
        }
        Ok(state)
    }

    /// Effects of a commit's proposals (by value and by reference).
    async fn commit_effects(
        &self,
        group: &GroupId,
        epoch: u64,
        committer_leaf: Option<u32>,
        body: &ParsedBody,
    ) -> Result<Vec<Effect>, MessagingError> {
        let ParsedBody::Commit(info) = body else {
            return Err(MessagingError::mls("commit", "not a commit"));
        };
        let mut effects = Vec::new();
        for p in &info.proposals {
            effects.push(mls::effect("commit", p, committer_leaf)?);
        }
        for r in &info.proposal_refs {
            let stored = self
                .kv
                .get(&store::proposal_key(group, epoch, r))
                .await?
                .ok_or_else(|| {
                    MessagingError::mls("commit", "references a proposal the server did not relay")
                })?;
            effects.push(decode::<Effect>(&stored)?);
        }
        Ok(effects)
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
        }
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
        if gi.epoch != Some(r.epoch + 1) {
            return Err(MessagingError::mls(
                "group_info",
                "must be for the commit's new epoch",
            ));
        }
        let welcome_recipients: BTreeSet<(AccountId, DeviceId)> =
            r.welcome_recipients.iter().copied().collect();
        if let Some(w) = &r.welcome {
            mls::parse("welcome", w, r.group.as_bytes(), MessageKind::Welcome, None)?;
        }

        loop {
            let loaded = self.load_group(&r.group).await?;
            let g = &loaded.state;
            let caller_leaf = g.leaf_of(account, device);
            let (committer_leaf, external) = match commit.sender {
                Some(SenderInfo::Member(leaf)) => {
                    if caller_leaf != Some(leaf) {
                        return Err(MessagingError::NotMember);
                    }
                    (Some(leaf), false)
                }
                Some(SenderInfo::NewMemberCommit) => {
                    if !g.has_account(account) || caller_leaf.is_some() {
                        return Err(MessagingError::NotMember);
                    }
                    (None, true)
                }
                _ => return Err(MessagingError::mls("commit", "unsupported sender")),
            };
            if g.epoch != r.epoch {
                return Err(MessagingError::StaleEpoch { current: g.epoch });
            }
            let mut effects = self
                .commit_effects(&r.group, g.epoch, committer_leaf, &commit.body)
                .await?;
            let added: BTreeSet<(AccountId, DeviceId)> = effects
                .iter()
                .filter_map(|e| match e {
                    Effect::Add(m) => Some((m.account, m.device)),
                    _ => None,
                })
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
            if external {
                effects.push(Effect::Add(Member::new(account, device)));
            }
            let now = self.clock.now_ms();
            let mut next = g.clone();
            next.apply(&effects);
            if next.members().count() > self.cfg.max_group_members {
                return Err(MessagingError::GroupFull {
                    max: self.cfg.max_group_members,
                });
            }
            next.epoch = g.epoch + 1;
            next.updated_ms = now;
            next.group_info = r.group_info.clone();
            // Every member of the previous epoch except the committer, removed ones included.
            let recipients: Vec<(AccountId, DeviceId)> = g
                .members()
                .filter(|m| !m.is(account, device))
                .map(|m| (m.account, m.device))
                .collect();
            let sender = (account, device);
            let mut fan_outs = vec![FanOut {
                kind: Kind::Commit,
                group_id: r.group.clone(),
                epoch: g.epoch,
                accepted_ms: now,
                sender,
                message: r.commit.clone(),
                recipients,
                urgent: false,
                tag: Vec::new(),
            }];
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
                });
            }
            // The outbox records commit with the epoch change, so a crash after this point
            // still delivers the commit (crate::outbox).
            let key = store::group_key(&r.group);
            let txn = fan_outs.iter().fold(
                Txn::new()
                    .require_equals(key.clone(), loaded.raw.clone())
                    .put(key, encode(&next)),
                |t, f| t.put(f.key(), encode(f)),
            );
            if !self.kv.commit(txn).await?.is_committed() {
                // Someone else changed the group: re-read; a new epoch then answers STALE_EPOCH.
                continue;
            }
            self.complete_pending_proposals(&r.group, g.epoch).await;
            self.deliver_or_defer(&fan_outs).await;
            self.forget_proposals(&r.group, g.epoch).await;
            return Ok((next.epoch, now));
        }
    }

    async fn forget_proposals(&self, group: &GroupId, epoch: u64) {
        let prefix = store::proposal_prefix(group, epoch);
        match self
            .kv
            .scan(KeyRange::prefix(&prefix), Direction::Forward, 1000)
            .await
        {
            Ok(pairs) if !pairs.is_empty() => {
                let txn = pairs
                    .iter()
                    .fold(Txn::new(), |t, p| t.delete(p.key.clone()));
                if let Err(e) = self.kv.commit(txn).await {
                    tracing::warn!(error = %e, "could not delete old proposals");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not list old proposals"),
        }
    }
}
