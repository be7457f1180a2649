//! The group record (KV `msg/v1/group/<hex id>`) and how accepted commits change it.
//!
//! Leaves mirror the MLS ratchet tree's leaf indices so that Remove proposals (by leaf index)
//! map to devices.

use guardyn_common::{AccountId, DeviceId};
use guardyn_storage::Record;
use serde::{Deserialize, Serialize};

/// One member device (leaf).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Member {
    pub account: AccountId,
    pub device: DeviceId,
    /// Sent LeaveGroup: no more application messages; the leaf stays until a commit removes it.
    pub left: bool,
}

impl Member {
    pub(crate) fn new(account: AccountId, device: DeviceId) -> Self {
        Self {
            account,
            device,
            left: false,
        }
    }

    pub(crate) fn is(&self, account: AccountId, device: DeviceId) -> bool {
        self.account == account && self.device == device
    }

    /// Parse an MLS BasicCredential identity `<account_id>.<device_id>`.
    pub(crate) fn from_identity(identity: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(identity).ok()?;
        let (account, device) = s.rsplit_once('.')?;
        Some(Self::new(
            AccountId::parse(account)?,
            DeviceId::new(device.parse().ok()?)?,
        ))
    }
}

/// A membership change taken from an accepted commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Effect {
    Add(Member),
    Remove(u32),
    /// No membership change (update, other proposal types).
    None,
}

/// The delivery service's view of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupState {
    pub epoch: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub leaves: Vec<Option<Member>>,
    pub group_info: Vec<u8>,
}

impl Record for GroupState {
    // v1 was hand-written; no deployment has data in it.
    const VERSION: u8 = 2;
}

/// The stored effect of a relayed proposal.
impl Record for Effect {
    // v1 was hand-written; no deployment has data in it.
    const VERSION: u8 = 2;
}

impl GroupState {
    pub(crate) fn leaf_of(&self, account: AccountId, device: DeviceId) -> Option<u32> {
        self.leaves
            .iter()
            .position(|l| l.as_ref().is_some_and(|m| m.is(account, device)))
            .and_then(|i| u32::try_from(i).ok())
    }

    pub(crate) fn members(&self) -> impl Iterator<Item = &Member> {
        self.leaves.iter().flatten()
    }

    pub(crate) fn has_account(&self, account: AccountId) -> bool {
        self.members().any(|m| m.account == account)
    }

    /// Apply a commit's effects in RFC 9420 §12.3 order: removes, then adds into the leftmost
    /// blank leaf (or a new one at the right).
    pub(crate) fn apply(&mut self, effects: &[Effect]) {
        for e in effects {
            if let Effect::Remove(leaf) = e
                && let Some(slot) = self.leaves.get_mut(*leaf as usize)
            {
                *slot = None;
            }
        }
        for e in effects {
            if let Effect::Add(m) = e {
                match self.leaves.iter().position(Option::is_none) {
                    Some(i) => self.leaves[i] = Some(m.clone()),
                    None => self.leaves.push(Some(m.clone())),
                }
            }
        }
        while matches!(self.leaves.last(), Some(None)) {
            self.leaves.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use guardyn_storage::record::{decode, encode};

    use super::*;

    fn m(n: u128, d: u32) -> Member {
        Member::new(
            AccountId::from_uuid(uuid::Uuid::from_u128(n)),
            DeviceId::new(d).unwrap(),
        )
    }

    #[test]
    fn removes_blank_leaves_and_adds_fill_the_leftmost_blank() {
        let mut g = GroupState {
            epoch: 3,
            created_ms: 1,
            updated_ms: 2,
            leaves: vec![Some(m(1, 1)), Some(m(2, 1)), Some(m(3, 1))],
            group_info: vec![9; 3],
        };
        let d = m(4, 2);
        g.apply(&[Effect::Add(d.clone()), Effect::Remove(1)]);
        assert_eq!(g.leaf_of(d.account, d.device), Some(1));
        g.apply(&[Effect::Remove(2)]);
        assert_eq!(g.leaves.len(), 2);
        assert_eq!(decode::<GroupState>(&encode(&g)).unwrap(), g);
        for e in [Effect::None, Effect::Remove(4), Effect::Add(m(5, 3))] {
            assert_eq!(decode::<Effect>(&encode(&e)).unwrap(), e);
        }
        let id = "0b0c5c8e-7c4b-4c1e-9a34-1d5b0d3b8f11";
        assert_eq!(
            Member::from_identity(format!("{id}.2").as_bytes()),
            Some(Member::new(
                AccountId::parse(id).unwrap(),
                DeviceId::new(2).unwrap()
            ))
        );
        assert_eq!(Member::from_identity(b"acct:2"), None);
        assert_eq!(Member::from_identity(format!("{id}.128").as_bytes()), None);
    }
}
