//! The group record (KV `msg/v1/group/<hex id>`) and how accepted commits change it.
//!
//! Format: `[1][epoch u64][created_ms u64][updated_ms u64][leaf count u32]` then per leaf
//! `[0]` (blank) or `[1][left u8][device u32][account bytes]`, then `[group_info bytes]`.
//! Leaves mirror the MLS ratchet tree's leaf indices so that Remove proposals (by leaf index)
//! map to devices.

use guardyn_proto::guardyn::common::v1::DeviceAddress;

use crate::store::{CorruptRecord, Reader, put_bytes};

const VERSION: u8 = 1;

/// One member device (leaf).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    pub account: String,
    pub device: u32,
    /// Sent LeaveGroup: no more application messages; the leaf stays until a commit removes it.
    pub left: bool,
}

impl Member {
    pub(crate) fn new(account: &str, device: u32) -> Self {
        Self {
            account: account.to_owned(),
            device,
            left: false,
        }
    }

    pub(crate) fn is(&self, account: &str, device: u32) -> bool {
        self.account == account && self.device == device
    }

    pub(crate) fn address(&self) -> DeviceAddress {
        DeviceAddress {
            account_id: self.account.clone(),
            device_id: self.device,
        }
    }

    /// Parse an MLS BasicCredential identity `<account_id>.<device_id>`.
    pub(crate) fn from_identity(identity: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(identity).ok()?;
        let (account, device) = s.rsplit_once('.')?;
        let device: u32 = device.parse().ok()?;
        let account_ok = !account.is_empty()
            && account.len() <= 64
            && account
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        (account_ok && (1..=127).contains(&device)).then(|| Self::new(account, device))
    }
}

/// A membership change taken from an accepted commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    Add(Member),
    Remove(u32),
    /// No membership change (update, other proposal types).
    None,
}

/// The delivery service's view of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GroupState {
    pub epoch: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub leaves: Vec<Option<Member>>,
    pub group_info: Vec<u8>,
}

impl GroupState {
    pub(crate) fn leaf_of(&self, account: &str, device: u32) -> Option<u32> {
        self.leaves
            .iter()
            .position(|l| l.as_ref().is_some_and(|m| m.is(account, device)))
            .and_then(|i| u32::try_from(i).ok())
    }

    pub(crate) fn members(&self) -> impl Iterator<Item = &Member> {
        self.leaves.iter().flatten()
    }

    pub(crate) fn has_account(&self, account: &str) -> bool {
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

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.created_ms.to_be_bytes());
        out.extend_from_slice(&self.updated_ms.to_be_bytes());
        // At most `max_group_members` (validated) leaves.
        out.extend_from_slice(
            &u32::try_from(self.leaves.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for l in &self.leaves {
            match l {
                None => out.push(0),
                Some(m) => {
                    out.push(1);
                    out.push(u8::from(m.left));
                    out.extend_from_slice(&m.device.to_be_bytes());
                    put_bytes(&mut out, m.account.as_bytes());
                }
            }
        }
        put_bytes(&mut out, &self.group_info);
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        let mut r = Reader(bytes);
        if r.u8()? != VERSION {
            return Err(CorruptRecord("group record version"));
        }
        let epoch = r.u64()?;
        let created_ms = r.u64()?;
        let updated_ms = r.u64()?;
        let n = r.u32()? as usize;
        let mut leaves = Vec::with_capacity(n.min(100_000));
        for _ in 0..n {
            leaves.push(match r.u8()? {
                0 => None,
                _ => {
                    let left = r.u8()? != 0;
                    let device = r.u32()?;
                    let account = String::from_utf8(r.bytes()?.to_vec())
                        .map_err(|_| CorruptRecord("group member"))?;
                    Some(Member {
                        account,
                        device,
                        left,
                    })
                }
            });
        }
        let group_info = r.bytes()?.to_vec();
        Ok(Self {
            epoch,
            created_ms,
            updated_ms,
            leaves,
            group_info,
        })
    }
}

/// Stored effect of a relayed proposal: `[1][0]` none, `[1][1][leaf u32]` remove,
/// `[1][2][device u32][account]` add.
pub(crate) fn encode_effect(e: &Effect) -> Vec<u8> {
    match e {
        Effect::None => vec![VERSION, 0],
        Effect::Remove(leaf) => {
            let mut v = vec![VERSION, 1];
            v.extend_from_slice(&leaf.to_be_bytes());
            v
        }
        Effect::Add(m) => {
            let mut v = vec![VERSION, 2];
            v.extend_from_slice(&m.device.to_be_bytes());
            v.extend_from_slice(m.account.as_bytes());
            v
        }
    }
}

pub(crate) fn decode_effect(bytes: &[u8]) -> Result<Effect, CorruptRecord> {
    let mut r = Reader(bytes);
    if r.u8()? != VERSION {
        return Err(CorruptRecord("proposal effect version"));
    }
    Ok(match r.u8()? {
        0 => Effect::None,
        1 => Effect::Remove(r.u32()?),
        2 => {
            let device = r.u32()?;
            let account =
                String::from_utf8(r.0.to_vec()).map_err(|_| CorruptRecord("proposal effect"))?;
            Effect::Add(Member::new(&account, device))
        }
        _ => return Err(CorruptRecord("proposal effect kind")),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn removes_blank_leaves_and_adds_fill_the_leftmost_blank() {
        let mut g = GroupState {
            epoch: 3,
            created_ms: 1,
            updated_ms: 2,
            leaves: vec![
                Some(Member::new("a", 1)),
                Some(Member::new("b", 1)),
                Some(Member::new("c", 1)),
            ],
            group_info: vec![9; 3],
        };
        g.apply(&[Effect::Add(Member::new("d", 2)), Effect::Remove(1)]);
        assert_eq!(g.leaf_of("d", 2), Some(1));
        g.apply(&[Effect::Remove(2)]);
        assert_eq!(g.leaves.len(), 2);
        assert_eq!(GroupState::decode(&g.encode()).unwrap(), g);
        for e in [
            Effect::None,
            Effect::Remove(4),
            Effect::Add(Member::new("x", 3)),
        ] {
            assert_eq!(decode_effect(&encode_effect(&e)).unwrap(), e);
        }
        assert_eq!(
            Member::from_identity(b"0b0c5c8e-7c4b-4c1e-9a34-1d5b0d3b8f11.2"),
            Some(Member::new("0b0c5c8e-7c4b-4c1e-9a34-1d5b0d3b8f11", 2))
        );
        assert_eq!(Member::from_identity(b"acct:2"), None);
    }
}
