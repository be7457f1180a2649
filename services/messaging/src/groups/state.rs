//! The group record (KV `msg/v1/group/<hex id>`) and what it points to: its bulky state
//! ([`crate::groups::bulk`]) and the trees kept for Welcomes ([`crate::groups::trees`]).
//!
//! Leaves mirror the MLS ratchet tree's leaf indices (taken from the verified public state after
//! each commit), so that MLS senders (by leaf index) map to devices.

use guardyn_common::{AccountId, DeviceId};
use guardyn_crypto::mls::{DsGroup, LeafInfo};
use guardyn_storage::record::postcard_body;
use guardyn_storage::{Record, StorageError, StorageResult};
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

/// The latest GroupInfo and the public state ([`guardyn_crypto::mls::DsGroup::to_bytes`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BulkState {
    #[serde(with = "serde_bytes")]
    pub group_info: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub public: Vec<u8>,
}

impl std::fmt::Debug for BulkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkState")
            .field("group_info", &self.group_info.len())
            .field("public", &self.public.len())
            .finish()
    }
}

impl Record for BulkState {
    const VERSION: u8 = 1;
}

/// Where the group record finds its bulky state ([`crate::groups::bulk`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Bulk {
    /// In the record itself (every record before version 5, and small groups).
    Inline(BulkState),
    /// In `chunks` values, `len` bytes of an encoded [`BulkState`] in all.
    Stored {
        generation: u64,
        chunks: u32,
        len: u64,
    },
}

/// The ratchet tree kept for Welcomes into `epoch` ([`crate::groups::trees`]): `chunks`
/// values, `len` bytes in all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WelcomeTree {
    pub epoch: u64,
    pub at_ms: u64,
    pub chunks: u32,
    pub len: u64,
}

/// A loaded group with the exact bytes it was read as (the compare-and-set witness).
pub(crate) struct Loaded {
    pub raw: Vec<u8>,
    pub state: GroupState,
}

/// The delivery service's view of a group. `leaves` mirrors the member leaves of its public
/// state (the verified openmls public state, [`DsGroup`], in `bulk`), cached so that routing
/// does not decode the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupState {
    pub epoch: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub leaves: Vec<Option<Member>>,
    /// Every member device has a [`crate::store::Membership`]: messages go to the group log
    /// only. A group stored before cursors gets them before its next message
    /// ([`crate::groups::cursors`]).
    pub indexed: bool,
    /// The latest GroupInfo and the public state: inline, or beside the record.
    pub bulk: Bulk,
    /// The ratchet trees kept for Welcomes, oldest first.
    pub welcome_trees: Vec<WelcomeTree>,
}

/// Version 4 of [`GroupState`], with the GroupInfo and public state always inline.
#[derive(Serialize, Deserialize)]
struct GroupStateV4 {
    epoch: u64,
    created_ms: u64,
    updated_ms: u64,
    leaves: Vec<Option<Member>>,
    #[serde(with = "serde_bytes")]
    group_info: Vec<u8>,
    #[serde(with = "serde_bytes")]
    public: Vec<u8>,
    indexed: bool,
}

/// Version 3 of [`GroupState`], before membership cursors.
#[derive(Serialize, Deserialize)]
struct GroupStateV3 {
    epoch: u64,
    created_ms: u64,
    updated_ms: u64,
    leaves: Vec<Option<Member>>,
    #[serde(with = "serde_bytes")]
    group_info: Vec<u8>,
    #[serde(with = "serde_bytes")]
    public: Vec<u8>,
}

/// Version 2 of [`GroupState`], before the public state.
#[derive(Deserialize)]
struct GroupStateV2 {
    epoch: u64,
    created_ms: u64,
    updated_ms: u64,
    leaves: Vec<Option<Member>>,
    #[serde(with = "serde_bytes")]
    group_info: Vec<u8>,
}

impl Record for GroupStateV3 {
    const VERSION: u8 = 3;
}

impl Record for GroupStateV4 {
    const VERSION: u8 = 4;
}

/// Test support: a group record as a process before cursors stored it (`None` for a group whose
/// bulky state is not inline, which such a process could not have stored).
#[doc(hidden)]
pub fn record_before_cursors(raw: &[u8]) -> Option<Vec<u8>> {
    let g = guardyn_storage::record::decode::<GroupState>(raw).ok()?;
    let Bulk::Inline(bulk) = g.bulk else {
        return None;
    };
    Some(guardyn_storage::record::encode(&GroupStateV3 {
        epoch: g.epoch,
        created_ms: g.created_ms,
        updated_ms: g.updated_ms,
        leaves: g.leaves,
        group_info: bulk.group_info,
        public: bulk.public,
    }))
}

impl Record for GroupState {
    const VERSION: u8 = 5;

    /// A version-2 group starts verifying from its latest GroupInfo (which carries the ratchet
    /// tree); proposals relayed before the upgrade are not in it, so a commit referencing them
    /// is refused and its author commits again.
    fn decode_version(version: u8, body: &[u8]) -> StorageResult<Self> {
        match version {
            5 => postcard_body(body),
            4 => {
                let v4: GroupStateV4 = postcard_body(body)?;
                Ok(Self {
                    epoch: v4.epoch,
                    created_ms: v4.created_ms,
                    updated_ms: v4.updated_ms,
                    leaves: v4.leaves,
                    indexed: v4.indexed,
                    bulk: Bulk::Inline(BulkState {
                        group_info: v4.group_info,
                        public: v4.public,
                    }),
                    welcome_trees: Vec::new(),
                })
            }
            3 => {
                let v3: GroupStateV3 = postcard_body(body)?;
                Ok(Self {
                    epoch: v3.epoch,
                    created_ms: v3.created_ms,
                    updated_ms: v3.updated_ms,
                    leaves: v3.leaves,
                    indexed: false,
                    bulk: Bulk::Inline(BulkState {
                        group_info: v3.group_info,
                        public: v3.public,
                    }),
                    welcome_trees: Vec::new(),
                })
            }
            2 => {
                let v2: GroupStateV2 = postcard_body(body)?;
                let public = DsGroup::from_group_info(&v2.group_info)
                    .and_then(|g| g.to_bytes())
                    .map_err(|e| StorageError::Corrupt(format!("group v2 public state: {e}")))?;
                Ok(Self {
                    epoch: v2.epoch,
                    created_ms: v2.created_ms,
                    updated_ms: v2.updated_ms,
                    leaves: v2.leaves,
                    indexed: false,
                    bulk: Bulk::Inline(BulkState {
                        group_info: v2.group_info,
                        public,
                    }),
                    welcome_trees: Vec::new(),
                })
            }
            v => Err(StorageError::Corrupt(format!("group record version {v}"))),
        }
    }
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

    /// Rebuild the leaves from the public tree's members; a leaf keeps its `left` mark while the
    /// same device stays at its index. `None` when a member's identity is not a device address.
    pub(crate) fn sync_leaves(&mut self, members: &[LeafInfo]) -> Option<()> {
        let mut leaves: Vec<Option<Member>> = Vec::new();
        for m in members {
            let mut member = Member::from_identity(&m.identity)?;
            let i = m.leaf_index as usize;
            if let Some(Some(old)) = self.leaves.get(i)
                && old.is(member.account, member.device)
            {
                member.left = old.left;
            }
            if leaves.len() <= i {
                leaves.resize(i + 1, None);
            }
            leaves[i] = Some(member);
        }
        self.leaves = leaves;
        Some(())
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

    fn leaf(i: u32, n: u128, d: u32) -> LeafInfo {
        let m = m(n, d);
        LeafInfo {
            leaf_index: i,
            identity: format!("{}.{}", m.account, m.device).into_bytes(),
            signature_key: vec![i as u8],
        }
    }

    #[test]
    fn leaves_follow_the_tree_and_keep_left_marks() {
        let mut g = GroupState {
            epoch: 3,
            created_ms: 1,
            updated_ms: 2,
            leaves: vec![Some(m(1, 1)), Some(m(2, 1)), Some(m(3, 1))],
            indexed: true,
            bulk: Bulk::Stored {
                generation: 2,
                chunks: 3,
                len: 2_500_000,
            },
            welcome_trees: vec![WelcomeTree {
                epoch: 3,
                at_ms: 2,
                chunks: 1,
                len: 700,
            }],
        };
        g.leaves[2].as_mut().unwrap().left = true;
        let d = m(4, 2);
        g.sync_leaves(&[leaf(0, 1, 1), leaf(1, 4, 2), leaf(2, 3, 1)])
            .unwrap();
        assert_eq!(g.leaf_of(d.account, d.device), Some(1));
        assert!(
            g.leaves[2].as_ref().unwrap().left,
            "same device, still left"
        );
        assert!(!g.leaves[1].as_ref().unwrap().left);
        g.sync_leaves(&[leaf(0, 1, 1), leaf(3, 5, 1)]).unwrap();
        assert_eq!(g.leaves.len(), 4);
        assert_eq!(g.leaves[1], None);
        assert_eq!(decode::<GroupState>(&encode(&g)).unwrap(), g);
        let mut bad = leaf(0, 1, 1);
        bad.identity = b"acct:2".to_vec();
        assert_eq!(g.sync_leaves(&[bad]), None);
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

    #[test]
    fn a_version_4_record_keeps_its_state_inline_and_its_cursor_mark() {
        let v4 = GroupStateV4 {
            epoch: 7,
            created_ms: 1,
            updated_ms: 2,
            leaves: vec![Some(m(1, 1)), None],
            group_info: vec![9; 3],
            public: vec![7; 2],
            indexed: true,
        };
        let g = decode::<GroupState>(&encode(&v4)).unwrap();
        assert_eq!((g.epoch, g.indexed, g.welcome_trees), (7, true, vec![]));
        assert_eq!(g.leaves, vec![Some(m(1, 1)), None]);
        assert_eq!(
            g.bulk,
            Bulk::Inline(BulkState {
                group_info: vec![9; 3],
                public: vec![7; 2],
            })
        );
    }

    #[test]
    fn a_version_2_record_gets_its_public_state_from_its_group_info() {
        #[derive(Serialize, Deserialize)]
        struct V2 {
            epoch: u64,
            created_ms: u64,
            updated_ms: u64,
            leaves: Vec<Option<Member>>,
            // Written as a plain sequence, as before byte fields were serialized as slices.
            group_info: Vec<u8>,
        }
        impl Record for V2 {
            const VERSION: u8 = 2;
        }
        let creator = m(1, 1);
        let client = guardyn_crypto::mls::MlsClient::new(
            format!("{}.{}", creator.account, creator.device).as_bytes(),
        )
        .unwrap();
        let group = guardyn_crypto::mls::Group::create(&client, b"v2-group-0000000001").unwrap();
        let v2 = V2 {
            epoch: 0,
            created_ms: 1,
            updated_ms: 1,
            leaves: vec![Some(creator.clone())],
            group_info: group.export_group_info(&client).unwrap(),
        };
        let g = decode::<GroupState>(&encode(&v2)).unwrap();
        assert_eq!(g.leaves, vec![Some(creator)]);
        let Bulk::Inline(bulk) = &g.bulk else {
            panic!("a version 2 record's state is inline");
        };
        let ds = DsGroup::from_bytes(&bulk.public).unwrap();
        assert_eq!(ds.epoch(), 0);
        assert_eq!(ds.members()[0].signature_key, client.signature_public_key());
    }
}
