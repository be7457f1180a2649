//! Relayed proposals (SendProposal, LeaveGroup) and application messages (SendGroupMessage).
//! Both are accepted together with their outbox record ([`crate::outbox`]), so a crash after
//! acceptance still delivers them.

use guardyn_common::{AccountId, DeviceId, GroupId};
use guardyn_crypto::mls::{ContentKind, MessageKind, ProposalSummary, SenderInfo};
use guardyn_storage::Txn;
use guardyn_storage::record::encode;

use super::bulk::{load_public, public_bytes};
use super::state::{BulkState, GroupState, Loaded};
use super::{MAX_QUEUED_PROPOSALS, check_record_size, check_size, mls};
use crate::core::Core;
use crate::error::MessagingError;
use crate::idempotency::Claim;
use crate::outbox::{FanOut, Kind, application_tag};
use crate::store;

/// A validated SendGroupMessage.
#[derive(Debug)]
pub(crate) struct GroupMessage {
    pub group: GroupId,
    pub epoch: u64,
    pub client_message_id: String,
    pub message: Vec<u8>,
    pub urgent: bool,
}

/// The members that left (other than the sender): application messages are not for them.
fn left_members(g: &GroupState, sender: (AccountId, DeviceId)) -> Vec<(AccountId, DeviceId)> {
    g.members()
        .filter(|m| m.left && !m.is(sender.0, sender.1))
        .map(|m| (m.account, m.device))
        .collect()
}

impl Core {
    /// Relay a proposal; with `leaving`, also mark the caller's leaf as left (it must be a
    /// proposal removing the caller). The proposal is verified against the group's public state
    /// and queued there; the new public state, the outbox record and the `left` mark commit
    /// together, conditioned on the group record being unchanged.
    #[allow(clippy::too_many_arguments)] // The request's fields, each a plain value.
    pub(crate) async fn relay_proposal(
        &self,
        account: AccountId,
        device: DeviceId,
        group: &GroupId,
        epoch: u64,
        field: &str,
        proposal: &[u8],
        leaving: bool,
    ) -> Result<u64, MessagingError> {
        self.require_member(group, account, device, false).await?;
        let parsed = mls::parse(
            field,
            proposal,
            group.as_bytes(),
            MessageKind::PublicMessage,
            Some(ContentKind::Proposal),
        )?;
        if parsed.epoch != Some(epoch) {
            return Err(MessagingError::mls(
                field,
                "epoch differs from the request's epoch",
            ));
        }
        loop {
            let loaded = self.load_group(group).await?;
            let g = &loaded.state;
            let caller_leaf = g
                .leaf_of(account, device)
                .ok_or(MessagingError::NotMember)?;
            if parsed.sender != Some(SenderInfo::Member(caller_leaf)) {
                return Err(MessagingError::mls(
                    field,
                    "sender is not the calling device's leaf",
                ));
            }
            if g.epoch != epoch {
                return Err(MessagingError::StaleEpoch { current: g.epoch });
            }
            let Some(bulk) = self.load_bulk(group, &loaded).await? else {
                continue;
            };
            let mut ds = load_public(&bulk)?;
            if ds.queued_proposals() >= MAX_QUEUED_PROPOSALS {
                return Err(MessagingError::GroupStateLimit {
                    what: format!("at most {MAX_QUEUED_PROPOSALS} proposals per epoch"),
                });
            }
            let verified = ds
                .process_proposal(proposal)
                .map_err(|e| MessagingError::commit(field, e))?;
            if let Some(kp) = &verified.added {
                self.bound_key_package(field, kp).await?;
            }
            if let Some(leaf) = &verified.update {
                let m = self.bound_leaf(field, leaf).await?;
                if !m.is(account, device) {
                    return Err(MessagingError::identity(
                        field,
                        "a member may not change the identity of its leaf",
                    ));
                }
            }
            let removes_caller = match verified.summary {
                ProposalSummary::SelfRemove => true,
                ProposalSummary::Remove { leaf_index } => leaf_index == caller_leaf,
                _ => false,
            };
            if leaving && !removes_caller {
                return Err(MessagingError::mls(
                    field,
                    "must remove the calling device's own leaf",
                ));
            }
            // Every member reads it from the group log (crate::groups::cursors).
            let now = self.clock.now_ms();
            let fan_out = FanOut {
                kind: Kind::Proposal,
                group_id: group.clone(),
                epoch,
                accepted_ms: now,
                sender: (account, device),
                message: proposal.to_vec(),
                recipients: Vec::new(),
                urgent: false,
                tag: verified.proposal_ref.clone(),
                skip: Vec::new(),
                log_from: 0,
            };
            let mut next = g.clone();
            let bulk = BulkState {
                group_info: bulk.group_info,
                public: public_bytes(&ds)?,
            };
            let (bulk, txn) = g.bulk.replace(group, &bulk, Txn::new());
            next.bulk = bulk;
            if leaving && let Some(Some(m)) = next.leaves.get_mut(caller_leaf as usize) {
                m.left = true;
            }
            let record = encode(&next);
            check_record_size(&record)?;
            let txn = txn
                .require_equals(store::group_key(group), loaded.raw.clone())
                .put(store::group_key(group), record)
                .put(fan_out.key(), encode(&fan_out));
            if !self.kv.commit(txn).await?.is_committed() {
                continue;
            }
            self.deliver_or_defer(std::slice::from_ref(&fan_out), &next)
                .await;
            return Ok(now);
        }
    }

    /// Accept an application message once per client message id: reserve the id, check the
    /// sender, then complete the id and write the outbox record in one transaction. Returns
    /// the accept time and whether this was a duplicate.
    pub(crate) async fn send_group_message(
        &self,
        account: AccountId,
        device: DeviceId,
        r: GroupMessage,
    ) -> Result<(u64, bool), MessagingError> {
        self.limits.send(account)?;
        check_size("message", &r.message, self.max_mls_message_bytes())?;
        self.require_member(&r.group, account, device, false)
            .await?;
        let parsed = mls::parse(
            "message",
            &r.message,
            r.group.as_bytes(),
            MessageKind::PrivateMessage,
            Some(ContentKind::Application),
        )?;
        if parsed.epoch != Some(r.epoch) {
            return Err(MessagingError::mls(
                "message",
                "epoch differs from the request's epoch",
            ));
        }
        let idem_key =
            store::group_idempotency_key(account, device, &r.group, &r.client_message_id);
        'reserve: loop {
            let reservation = match self.reserve(&idem_key).await? {
                Claim::Replay(rec) => return Ok((rec.server_timestamp_ms, true)),
                Claim::Reserved(bytes) => bytes,
            };
            loop {
                let now = self.clock.now_ms();
                let (fan_out, group) = match self
                    .group_message_fan_out(account, device, &r, &idem_key, now)
                    .await
                {
                    Ok(f) => f,
                    Err(e) => {
                        self.release(idem_key, reservation).await?;
                        return Err(e);
                    }
                };
                // Conditioned on the group record the checks read: a commit accepted meanwhile
                // (new epoch, sender removed) makes this attempt re-check.
                let txn = Txn::new()
                    .require_equals(idem_key.clone(), reservation.clone())
                    .require_equals(store::group_key(&r.group), group.raw.clone())
                    .put(idem_key.clone(), encode(&self.completed(now, Vec::new())))
                    .put(fan_out.key(), encode(&fan_out));
                if self.kv.commit(txn).await?.is_committed() {
                    self.deliver_or_defer(std::slice::from_ref(&fan_out), &group.state)
                        .await;
                    return Ok((now, false));
                }
                if self.kv.get(&idem_key).await?.as_deref() != Some(reservation.as_slice()) {
                    // Our lease ran out and another send took the id over before we stored
                    // anything: its result (or a fresh reservation) decides.
                    continue 'reserve;
                }
            }
        }
    }

    /// Check that the caller may send `r` now and build its fan-out to the members that have
    /// not left; with the group record the checks read.
    async fn group_message_fan_out(
        &self,
        account: AccountId,
        device: DeviceId,
        r: &GroupMessage,
        idem_key: &[u8],
        now: u64,
    ) -> Result<(FanOut, Loaded), MessagingError> {
        let loaded = self.load_group(&r.group).await?;
        let g = &loaded.state;
        let leaf = g
            .leaf_of(account, device)
            .ok_or(MessagingError::NotMember)?;
        if g.leaves
            .get(leaf as usize)
            .and_then(Option::as_ref)
            .is_some_and(|m| m.left)
        {
            return Err(MessagingError::NotMember);
        }
        if g.epoch != r.epoch {
            return Err(MessagingError::StaleEpoch { current: g.epoch });
        }
        // One log entry for every member, whatever their number: nothing is charged to member
        // queues (the sender's rate limit and the retention time bound the log).
        let fan_out = FanOut {
            kind: Kind::Application,
            group_id: r.group.clone(),
            epoch: r.epoch,
            accepted_ms: now,
            sender: (account, device),
            message: r.message.clone(),
            recipients: Vec::new(),
            urgent: r.urgent,
            tag: application_tag(idem_key, now),
            skip: left_members(g, (account, device)),
            log_from: 0,
        };
        Ok((fan_out, loaded))
    }
}
