//! A group's bulky state: its latest GroupInfo and its verified public MLS state, both of which
//! hold the whole ratchet tree (about 200 bytes per member).
//!
//! Every group message reads the group record twice and conditions its commit on the record's
//! bytes, so the record carries only what routing needs (epoch, leaves, marks). The bulky state
//! travels in the record while it is small ([`INLINE_MAX`]) and otherwise lives beside it in
//! KV values of at most [`CHUNK`] bytes (`msg/v1/gs/<group>/<generation u64>/<chunk u32>`),
//! which also lifts the one-value limit off the group size.
//!
//! Invariant: the record names the generation of its bulky state, and a new generation is
//! written (and the previous one deleted) in the same transaction as the record that names it,
//! a transaction conditioned on the previous record. So a record read names chunks that either
//! exist complete or were replaced together with that record; [`Core::load_bulk`] tells the
//! two apart by reading the record again.

use guardyn_common::GroupId;
use guardyn_crypto::mls::DsGroup;
use guardyn_storage::record::{decode, encode};
use guardyn_storage::{Direction, KeyRange, StorageError, Txn};

use super::state::{Bulk, BulkState, Loaded};
use crate::core::Core;
use crate::error::MessagingError;
use crate::store;

/// Bulky states up to this size stay in the group record (small groups: about 35 members).
pub(crate) const INLINE_MAX: usize = 16 * 1024;

/// Largest stored chunk, well below the store's value limit.
pub(crate) const CHUNK: usize = 1024 * 1024;

impl Bulk {
    /// Writes a new group's first bulky state into `txn`.
    pub(crate) fn first(group: &GroupId, state: &BulkState, txn: Txn) -> (Bulk, Txn) {
        let none = Bulk::Inline(BulkState {
            group_info: Vec::new(),
            public: Vec::new(),
        });
        none.replace(group, state, txn)
    }

    /// Writes `state` as the successor of `self` into `txn`: inline when small, else as the
    /// next generation of chunks, deleting the previous generation's.
    pub(crate) fn replace(&self, group: &GroupId, state: &BulkState, txn: Txn) -> (Bulk, Txn) {
        Self::replace_in(self, group, state, txn, INLINE_MAX, CHUNK)
    }

    fn replace_in(
        &self,
        group: &GroupId,
        state: &BulkState,
        mut txn: Txn,
        inline_max: usize,
        chunk: usize,
    ) -> (Bulk, Txn) {
        let (generation, old) = match self {
            Bulk::Inline(_) => (1, None),
            Bulk::Stored {
                generation, chunks, ..
            } => (generation + 1, Some((*generation, *chunks))),
        };
        if let Some((g, chunks)) = old {
            for i in 0..chunks {
                txn = txn.delete(store::chunk_key(store::group_bulk_prefix(group, g), i));
            }
        }
        let bytes = encode(state);
        if bytes.len() <= inline_max {
            return (Bulk::Inline(state.clone()), txn);
        }
        let (chunks, txn) = put_chunks(txn, &bytes, chunk, |i| {
            store::chunk_key(store::group_bulk_prefix(group, generation), i)
        });
        let len = bytes.len() as u64;
        (
            Bulk::Stored {
                generation,
                chunks,
                len,
            },
            txn,
        )
    }
}

/// Puts `bytes` into `txn` as values of at most `chunk` bytes at `key(0)`, `key(1)`, ...;
/// returns how many.
pub(crate) fn put_chunks(
    mut txn: Txn,
    bytes: &[u8],
    chunk: usize,
    key: impl Fn(u32) -> Vec<u8>,
) -> (u32, Txn) {
    let mut chunks = 0u32;
    for part in bytes.chunks(chunk) {
        txn = txn.put(key(chunks), part.to_vec());
        // At most len / chunk + 1 chunks: a u32 would need petabytes to overflow.
        chunks = chunks.saturating_add(1);
    }
    (chunks, txn)
}

/// The group's public state.
pub(crate) fn load_public(bulk: &BulkState) -> Result<DsGroup, MessagingError> {
    DsGroup::from_bytes(&bulk.public).map_err(corrupt)
}

pub(crate) fn public_bytes(ds: &DsGroup) -> Result<Vec<u8>, MessagingError> {
    ds.to_bytes().map_err(corrupt)
}

/// The current epoch's ratchet tree, as joiners take it.
pub(crate) fn ratchet_tree(ds: &DsGroup) -> Result<Vec<u8>, MessagingError> {
    ds.ratchet_tree().map_err(corrupt)
}

/// The public state was verified before it was stored: failing to read it back is corruption.
fn corrupt(e: guardyn_crypto::mls::MlsError) -> MessagingError {
    StorageError::Corrupt(format!("group public state: {e}")).into()
}

impl Core {
    /// The bulky state the loaded record names; `None` when a write replaced it (and the
    /// record) since the record was read: the caller reads the record again.
    pub(crate) async fn load_bulk(
        &self,
        group: &GroupId,
        loaded: &Loaded,
    ) -> Result<Option<BulkState>, MessagingError> {
        let (generation, chunks, len) = match &loaded.state.bulk {
            Bulk::Inline(state) => return Ok(Some(state.clone())),
            Bulk::Stored {
                generation,
                chunks,
                len,
            } => (*generation, *chunks, *len),
        };
        let prefix = store::group_bulk_prefix(group, generation);
        if let Some(bytes) = self.read_chunks(&prefix, chunks, len).await? {
            return Ok(Some(decode::<BulkState>(&bytes)?));
        }
        let now = self.kv.get(&store::group_key(group)).await?;
        if now.as_deref() == Some(loaded.raw.as_slice()) {
            return Err(StorageError::Corrupt(format!(
                "group state generation {generation}: not {chunks} chunks of {len} bytes"
            ))
            .into());
        }
        Ok(None)
    }

    /// The `chunks` values under `prefix`, joined, if they are all there and `len` bytes long.
    pub(crate) async fn read_chunks(
        &self,
        prefix: &[u8],
        chunks: u32,
        len: u64,
    ) -> Result<Option<Vec<u8>>, MessagingError> {
        let pairs = self
            .kv
            .scan(
                KeyRange::prefix(prefix),
                Direction::Forward,
                chunks as usize + 1,
            )
            .await?;
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        for p in &pairs {
            bytes.extend_from_slice(&p.value);
        }
        Ok((pairs.len() == chunks as usize && bytes.len() as u64 == len).then_some(bytes))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use guardyn_storage::Mutation;

    use super::*;

    fn group() -> GroupId {
        GroupId::new(b"bulk-test-group-0001").unwrap()
    }

    fn state(n: usize) -> BulkState {
        BulkState {
            group_info: vec![1; n],
            public: (0..n).map(|i| i as u8).collect(),
        }
    }

    fn puts(txn: &Txn) -> Vec<(Vec<u8>, usize)> {
        txn.mutations
            .iter()
            .filter_map(|m| match m {
                Mutation::Put(k, v) => Some((k.clone(), v.len())),
                Mutation::Delete(_) => None,
            })
            .collect()
    }

    fn deletes(txn: &Txn) -> Vec<Vec<u8>> {
        txn.mutations
            .iter()
            .filter_map(|m| match m {
                Mutation::Delete(k) => Some(k.clone()),
                Mutation::Put(..) => None,
            })
            .collect()
    }

    #[test]
    fn small_states_stay_inline_and_large_ones_are_chunked_per_generation() {
        let g = group();
        let (b, txn) = Bulk::Inline(state(1)).replace_in(&g, &state(10), Txn::new(), 64, 16);
        assert_eq!(b, Bulk::Inline(state(10)));
        assert!(txn.is_empty());

        let (b, txn) = b.replace_in(&g, &state(40), Txn::new(), 64, 16);
        let encoded = encode(&state(40)).len();
        assert_eq!(
            b,
            Bulk::Stored {
                generation: 1,
                chunks: encoded.div_ceil(16) as u32,
                len: encoded as u64
            }
        );
        let written = puts(&txn);
        assert_eq!(written.len(), encoded.div_ceil(16));
        assert!(
            written
                .iter()
                .all(|(k, n)| { k.starts_with(&store::group_bulk_prefix(&g, 1)) && *n <= 16 })
        );
        assert!(deletes(&txn).is_empty());

        // The next generation deletes exactly the previous one's chunks.
        let (b2, txn) = b.replace_in(&g, &state(50), Txn::new(), 64, 16);
        assert!(matches!(b2, Bulk::Stored { generation: 2, .. }));
        let old: Vec<_> = written.into_iter().map(|(k, _)| k).collect();
        assert_eq!(deletes(&txn), old);
        assert!(
            puts(&txn)
                .iter()
                .all(|(k, _)| k.starts_with(&store::group_bulk_prefix(&g, 2)))
        );

        // Shrinking back below the threshold goes inline and still deletes the chunks.
        let (b3, txn) = b2.replace_in(&g, &state(5), Txn::new(), 64, 16);
        assert_eq!(b3, Bulk::Inline(state(5)));
        assert_eq!(deletes(&txn).len(), encode(&state(50)).len().div_ceil(16));
    }
}
