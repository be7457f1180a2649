//! Ratchet trees of the epochs that added members, served to devices joining from a Welcome.
//!
//! Clients leave the ratchet tree out of Welcomes and GroupInfos: it grows with the group
//! (about 200 bytes per member, 2 MB at 10,000 devices), which would make every Welcome and
//! every commit's GroupInfo that large. The delivery service has the tree anyway (it verifies
//! each commit against it), so it keeps the tree of every epoch a Welcome is for, in chunks at
//! `msg/v1/gt/<group>/<epoch u64>/<chunk u32>`, and the joiner fetches it
//! (`GroupService.GetRatchetTree`) and verifies it against the tree hash in its Welcome.
//!
//! The group record lists the kept trees ([`WelcomeTree`]). A commit that adds members writes
//! its new epoch's tree in its own compare-and-set and drops the trees past
//! [`MAX_WELCOME_TREES`] or older than the queue retention (a Welcome is not kept longer
//! either); a joiner whose tree is gone joins by external commit instead.

use guardyn_common::{AccountId, DeviceId, GroupId};
use guardyn_storage::Txn;

use super::bulk::{CHUNK, load_public, put_chunks, ratchet_tree};
use super::state::WelcomeTree;
use crate::core::Core;
use crate::error::MessagingError;
use crate::store;

/// Welcome trees kept per group, at most.
pub(crate) const MAX_WELCOME_TREES: usize = 16;

fn delete(txn: Txn, group: &GroupId, t: &WelcomeTree) -> Txn {
    (0..t.chunks).fold(txn, |txn, i| {
        txn.delete(store::chunk_key(
            store::welcome_tree_prefix(group, t.epoch),
            i,
        ))
    })
}

/// Keeps `tree` as `epoch`'s in `trees` and `txn`, and forgets (and deletes) the trees older
/// than `retention_ms` or beyond [`MAX_WELCOME_TREES`].
pub(crate) fn keep(
    group: &GroupId,
    trees: &mut Vec<WelcomeTree>,
    (epoch, tree): (u64, &[u8]),
    (now_ms, retention_ms): (u64, u64),
    txn: Txn,
) -> Txn {
    let (chunks, mut txn) = put_chunks(txn, tree, CHUNK, |i| {
        store::chunk_key(store::welcome_tree_prefix(group, epoch), i)
    });
    trees.push(WelcomeTree {
        epoch,
        at_ms: now_ms,
        chunks,
        len: tree.len() as u64,
    });
    let expired = |t: &WelcomeTree| t.at_ms.saturating_add(retention_ms) < now_ms;
    let excess = trees.len().saturating_sub(MAX_WELCOME_TREES);
    let mut i = 0;
    trees.retain(|t| {
        let keep = i >= excess && !expired(t);
        i += 1;
        if !keep {
            txn = delete(std::mem::take(&mut txn), group, t);
        }
        keep
    });
    txn
}

impl Core {
    /// The latest GroupInfo with its epoch and that epoch's ratchet tree, for a device of an
    /// account with a member device: a newly linked device joins its account's groups by
    /// external commit.
    pub(crate) async fn published_group_info(
        &self,
        account: AccountId,
        group: &GroupId,
    ) -> Result<(u64, Vec<u8>, Vec<u8>), MessagingError> {
        self.limits.tree_fetch(account)?;
        loop {
            let loaded = self.load_group(group).await?;
            if !loaded.state.has_account(account) {
                return Err(MessagingError::NotMember);
            }
            if let Some(bulk) = self.load_bulk(group, &loaded).await? {
                let tree = ratchet_tree(&load_public(&bulk)?)?;
                return Ok((loaded.state.epoch, bulk.group_info, tree));
            }
        }
    }

    /// The ratchet tree of `epoch`, for a member device joining from its Welcome.
    pub(crate) async fn welcome_tree(
        &self,
        account: AccountId,
        device: DeviceId,
        group: &GroupId,
        epoch: u64,
    ) -> Result<Vec<u8>, MessagingError> {
        self.limits.tree_fetch(account)?;
        loop {
            let loaded = self.load_group(group).await?;
            let g = &loaded.state;
            if g.leaf_of(account, device).is_none() {
                return Err(MessagingError::NotMember);
            }
            let Some(t) = g.welcome_trees.iter().find(|t| t.epoch == epoch) else {
                return Err(MessagingError::TreeNotKept { epoch });
            };
            let prefix = store::welcome_tree_prefix(group, epoch);
            if let Some(tree) = self.read_chunks(&prefix, t.chunks, t.len).await? {
                return Ok(tree);
            }
            // Dropped since the record was read: read it again, which no longer lists it.
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use guardyn_storage::Mutation;

    use super::*;

    #[test]
    fn trees_are_kept_for_the_retention_and_at_most_sixteen() {
        let group = GroupId::new(b"tree-test-group-0001").unwrap();
        let mut trees = Vec::new();
        let day = 86_400_000;
        for epoch in 1..=MAX_WELCOME_TREES as u64 {
            let txn = keep(
                &group,
                &mut trees,
                (epoch, &[7; 10]),
                (epoch, day),
                Txn::new(),
            );
            assert_eq!(txn.mutations.len(), 1, "one chunk, nothing dropped");
        }
        // The seventeenth drops the first.
        let txn = keep(&group, &mut trees, (17, &[7; 10]), (17, day), Txn::new());
        assert_eq!(trees.len(), MAX_WELCOME_TREES);
        assert_eq!(trees[0].epoch, 2);
        assert!(txn.mutations.contains(&Mutation::Delete(store::chunk_key(
            store::welcome_tree_prefix(&group, 1),
            0
        ))));
        // A day later, every older tree is past the retention.
        let txn = keep(
            &group,
            &mut trees,
            (18, &[]),
            (18 + day + 1, day),
            Txn::new(),
        );
        assert_eq!(trees.iter().map(|t| t.epoch).collect::<Vec<_>>(), vec![18]);
        assert_eq!(trees[0].chunks, 0);
        let deleted = txn
            .mutations
            .iter()
            .filter(|m| matches!(m, Mutation::Delete(_)))
            .count();
        assert_eq!(deleted, MAX_WELCOME_TREES);
    }
}
