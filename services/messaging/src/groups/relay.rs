//! Relayed proposals (SendProposal, LeaveGroup) and application messages (SendGroupMessage).
//! Both are accepted together with their outbox record ([`crate::outbox`]), so a crash after
//! acceptance still delivers them.

use guardyn_common::{AccountId, DeviceId, GroupId};
use guardyn_crypto::mls::{ContentKind, MessageKind, SenderInfo};
use guardyn_storage::Txn;
use guardyn_storage::record::encode;

use super::state::{Effect, GroupState};
use super::{check_size, mls};
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

/// Every member except the sender, with or without the ones that left.
fn recipients(
    g: &GroupState,
    sender: (AccountId, DeviceId),
    with_left: bool,
) -> Vec<(AccountId, DeviceId)> {
    g.members()
        .filter(|m| !m.is(sender.0, sender.1) && (with_left || !m.left))
        .map(|m| (m.account, m.device))
        .collect()
}

impl Core {
    /// Relay a proposal; with `leaving`, also mark the caller's leaf as left (it must be a
    /// proposal removing the caller). The proposal's effect, the outbox record and the `left`
    /// mark commit together, conditioned on the group record being unchanged.
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
        let Some(summary) = mls::proposal_of(&parsed) else {
            return Err(MessagingError::mls(field, "not a proposal"));
        };
        let proposal_ref = mls::proposal_ref(proposal)
            .ok_or_else(|| MessagingError::mls(field, "not a member's proposal"))?;
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
            let effect = mls::effect(field, summary, Some(caller_leaf))?;
            if leaving && effect != Effect::Remove(caller_leaf) {
                return Err(MessagingError::mls(
                    field,
                    "must remove the calling device's own leaf",
                ));
            }
            let now = self.clock.now_ms();
            let fan_out = FanOut {
                kind: Kind::Proposal,
                group_id: group.clone(),
                epoch,
                accepted_ms: now,
                sender: (account, device),
                message: proposal.to_vec(),
                recipients: recipients(g, (account, device), true),
                urgent: false,
                tag: proposal_ref.clone(),
            };
            let mut txn = Txn::new()
                .require_equals(store::group_key(group), loaded.raw.clone())
                .put(
                    store::proposal_key(group, epoch, &proposal_ref),
                    encode(&effect),
                )
                .put(fan_out.key(), encode(&fan_out));
            if leaving {
                let mut next = g.clone();
                if let Some(Some(m)) = next.leaves.get_mut(caller_leaf as usize) {
                    m.left = true;
                }
                txn = txn.put(store::group_key(group), encode(&next));
            }
            if !self.kv.commit(txn).await?.is_committed() {
                continue;
            }
            self.deliver_or_defer(std::slice::from_ref(&fan_out)).await;
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
        check_size("message", &r.message, self.cfg.max_mls_message_bytes)?;
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
        loop {
            let reservation = match self.reserve(&idem_key).await? {
                Claim::Replay(rec) => return Ok((rec.server_timestamp_ms, true)),
                Claim::Reserved(bytes) => bytes,
            };
            let now = self.clock.now_ms();
            let fan_out = match self
                .group_message_fan_out(account, device, &r, &idem_key, now)
                .await
            {
                Ok(f) => f,
                Err(e) => {
                    self.release(idem_key, reservation).await?;
                    return Err(e);
                }
            };
            let txn = Txn::new()
                .require_equals(idem_key.clone(), reservation)
                .put(idem_key.clone(), encode(&self.completed(now, Vec::new())))
                .put(fan_out.key(), encode(&fan_out));
            if !self.kv.commit(txn).await?.is_committed() {
                // Our lease ran out and another send took the id over before we stored
                // anything: its result (or a fresh reservation) decides.
                continue;
            }
            self.deliver_or_defer(std::slice::from_ref(&fan_out)).await;
            return Ok((now, false));
        }
    }

    /// Check that the caller may send `r` now and build its fan-out to the members that have
    /// not left.
    async fn group_message_fan_out(
        &self,
        account: AccountId,
        device: DeviceId,
        r: &GroupMessage,
        idem_key: &[u8],
        now: u64,
    ) -> Result<FanOut, MessagingError> {
        let g = self.load_group(&r.group).await?.state;
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
        Ok(FanOut {
            kind: Kind::Application,
            group_id: r.group.clone(),
            epoch: r.epoch,
            accepted_ms: now,
            sender: (account, device),
            message: r.message.clone(),
            recipients: recipients(&g, (account, device), false),
            urgent: r.urgent,
            tag: application_tag(idem_key, now),
        })
    }
}
