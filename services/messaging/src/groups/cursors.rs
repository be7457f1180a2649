//! Group-log cursors: a group message is stored once, in the group log, and every member device
//! reads it from its own [`Membership`]. A send therefore writes O(1) records whatever the
//! member count; what grows with the members is only the reading (each connected device's
//! Listen pass) and the acknowledgements (each device's own cursor).
//!
//! Invariants:
//! - a member's record exists from the moment its Welcome is queued (so the Welcome is read
//!   first: the Listen pass lists memberships before it reads the queue) until its device is
//!   purged; a commit that removes it sets `last_epoch` in the same transaction as the epoch
//!   change;
//! - entries are filtered by epoch, not only by position, so a message of an epoch appended late
//!   (its outbox record completed after the commit's) reaches exactly that epoch's members;
//! - acknowledgements only move a cursor forward, by compare-and-set.

use std::collections::BTreeSet;

use guardyn_common::{AccountId, DeviceId, GroupId};
use guardyn_storage::record::{decode, encode};
use guardyn_storage::{Direction, KeyRange, Txn};

use super::state::GroupState;
use crate::core::Core;
use crate::error::MessagingError;
use crate::store::{self, GroupMessage, Membership};

/// Acknowledged ids kept above a cursor at most: a client acknowledges what it was sent, and a
/// stream never has more than `max_in_flight` unacknowledged; more are dropped (they are
/// delivered again, never lost).
const MAX_ACKED_AHEAD: usize = 4096;
/// Log entries read per step while an acknowledgement moves a cursor, at most.
const ACK_SCAN: usize = 256;
/// Payload bytes a step aims at: entries the size of the last step's largest, at least one.
/// Large entries (commits adding hundreds of devices) are then read a few at a time.
const ACK_SCAN_BYTES: usize = 256 * 1024;
/// Acknowledgements scanning the log at once, process-wide: with [`ACK_SCAN_BYTES`] this
/// bounds what they hold, however many members acknowledge together (10,000 members reading
/// a log of 175 KB commits held gigabytes before).
pub(crate) const ACK_SCANS: usize = 32;
type Devices = Vec<(AccountId, DeviceId)>;

/// Memberships read per page.
const MEMBERSHIP_PAGE: usize = 256;

impl Core {
    /// Give every member of a group stored before cursors its membership, starting after the
    /// group log's current end (what is already in the log was queued by reference). Once per
    /// group; the compare-and-set on the group record makes concurrent callers agree.
    pub(crate) async fn ensure_indexed(&self, group: &GroupId) -> Result<(), MessagingError> {
        loop {
            let loaded = self.load_group(group).await?;
            if loaded.state.indexed {
                return Ok(());
            }
            let next = self.log.stats(&store::group_log(group)).await?.next_seq;
            let mut state = loaded.state.clone();
            state.indexed = true;
            let key = store::group_key(group);
            let txn = state.members().fold(
                Txn::new()
                    .require_equals(key.clone(), loaded.raw.clone())
                    .put(key, encode(&state)),
                |t, m| {
                    let k = store::membership_key(m.account, m.device, group);
                    t.put(k, encode(&Membership::new(group.clone(), next, 0)))
                },
            );
            if self.kv.commit(txn).await?.is_committed() {
                tracing::info!(
                    members = state.members().count(),
                    "group given member cursors"
                );
                for m in state.members() {
                    self.notify_memberships(m.account, m.device).await;
                }
                return Ok(());
            }
        }
    }

    /// The device's group memberships.
    pub(crate) async fn memberships(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<Vec<Membership>, MessagingError> {
        let mut range = KeyRange::prefix(&store::membership_prefix(account, device));
        let mut out = Vec::new();
        loop {
            let page = self
                .kv
                .scan(range.clone(), Direction::Forward, MEMBERSHIP_PAGE)
                .await?;
            for pair in &page {
                out.push(decode::<Membership>(&pair.value)?);
            }
            match page.last() {
                Some(last) if page.len() == MEMBERSHIP_PAGE => {
                    range.start = std::ops::Bound::Excluded(last.key.clone());
                }
                _ => return Ok(out),
            }
        }
    }

    /// Put the memberships of devices that joined in `join_epoch`, reading from `from_seq`.
    pub(crate) async fn join_members(
        &self,
        group: &GroupId,
        devices: &[(AccountId, DeviceId)],
        from_seq: u64,
        join_epoch: u64,
    ) -> Result<(), MessagingError> {
        if devices.is_empty() {
            return Ok(());
        }
        let fresh = encode(&Membership::new(group.clone(), from_seq, join_epoch));
        loop {
            let mut txn = Txn::new();
            for &(a, d) in devices {
                let key = store::membership_key(a, d, group);
                txn = match self.kv.get(&key).await? {
                    // Already joined in this epoch (a repeated fan-out) or removed before this
                    // Welcome was fanned out: left as it is.
                    Some(raw) if decode::<Membership>(&raw)?.join_epoch >= join_epoch => continue,
                    Some(raw) => txn.require_equals(key.clone(), raw),
                    None => txn.require_absent(key.clone()),
                }
                .put(key, fresh.clone());
            }
            if self.kv.commit(txn).await?.is_committed() {
                break;
            }
        }
        for &(a, d) in devices {
            self.notify_memberships(a, d).await;
        }
        Ok(())
    }

    /// Add to `txn` the end of the memberships of `removed` after `epoch`, conditioned on the
    /// records as read (a concurrent acknowledgement makes the caller retry).
    pub(crate) async fn end_memberships(
        &self,
        txn: Txn,
        group: &GroupId,
        removed: &[(AccountId, DeviceId)],
        epoch: u64,
    ) -> Result<Txn, MessagingError> {
        let mut txn = txn;
        for &(a, d) in removed {
            let key = store::membership_key(a, d, group);
            let (raw, mut m) = match self.kv.get(&key).await? {
                Some(raw) => {
                    let m = decode::<Membership>(&raw)?;
                    (Some(raw), m)
                }
                // Not given yet (its Welcome's fan-out is still pending): it gets none of the
                // log.
                None => (None, Membership::new(group.clone(), u64::MAX, u64::MAX)),
            };
            m.last_epoch = Some(epoch);
            txn = match raw {
                Some(raw) => txn.require_equals(key.clone(), raw),
                None => txn.require_absent(key.clone()),
            }
            .put(key, encode(&m));
        }
        Ok(txn)
    }

    /// Acknowledge group-log entries `ids` for the device; returns how many were new.
    pub(crate) async fn ack_group(
        &self,
        account: AccountId,
        device: DeviceId,
        group: &GroupId,
        ids: &[u64],
    ) -> Result<u32, MessagingError> {
        let key = store::membership_key(account, device, group);
        let partition = store::group_log(group);
        let me = (account, device);
        loop {
            // Acknowledging a group the device is not in changes nothing.
            let Some(raw) = self.kv.get(&key).await? else {
                return Ok(0);
            };
            let mut m = decode::<Membership>(&raw)?;
            let mut set: BTreeSet<u64> = m.acked.iter().copied().collect();
            let mut new = 0u32;
            for &id in ids {
                if id >= m.acked_below && set.insert(id) {
                    new += 1;
                }
            }
            if new == 0 {
                return Ok(0);
            }
            // In order (the usual case), the cursor moves without reading the log: an id at the
            // cursor is the device's next entry, and one below the log's next sequence was
            // appended. Only a gap needs the entries, to tell what is not for the device.
            if set.first() == Some(&m.acked_below) {
                let next_seq = self.log.stats(&partition).await?.next_seq;
                while let Some(&first) = set.first()
                    && first == m.acked_below
                    && first < next_seq
                {
                    set.pop_first();
                    m.acked_below = first + 1;
                }
            }
            // Move the cursor over what is acknowledged or not for the device.
            let mut step = 8;
            'scan: while !set.is_empty() {
                // Held while this step's entries are: only the read is awaited meanwhile. The
                // semaphore is never closed.
                let _scan = self.ack_scans.acquire().await.ok();
                let entries = self.log.read(&partition, m.acked_below, step).await?;
                let largest = entries.iter().map(|e| e.payload.len()).max().unwrap_or(0);
                let asked = step;
                step = (ACK_SCAN_BYTES / largest.max(1)).clamp(1, ACK_SCAN);
                let Some(last) = entries.last().map(|e| e.seq) else {
                    // Past the log's end (or expired): nothing left to wait for.
                    set.clear();
                    break;
                };
                for e in &entries {
                    let for_me = match decode::<GroupMessage>(&e.payload) {
                        Ok(GroupMessage {
                            audience: Some(a), ..
                        }) => m.wants(e.seq, &a, me),
                        _ => false,
                    };
                    if set.remove(&e.seq) || !for_me {
                        m.acked_below = e.seq + 1;
                    } else {
                        break 'scan;
                    }
                }
                if entries.len() < asked {
                    // Ids beyond the last stored entry name nothing.
                    set.retain(|&s| s <= last);
                }
            }
            set.retain(|&s| s >= m.acked_below);
            m.acked = set.into_iter().take(MAX_ACKED_AHEAD).collect();
            let txn = Txn::new()
                .require_equals(key.clone(), raw)
                .put(key.clone(), encode(&m));
            if self.kv.commit(txn).await?.is_committed() {
                return Ok(new);
            }
        }
    }
}

/// Members of `prev` that are not in `next` (a commit removed them), and members of `next` not in
/// `prev` (it added them).
pub(crate) fn membership_changes(prev: &GroupState, next: &GroupState) -> (Devices, Devices) {
    let set = |g: &GroupState| -> BTreeSet<(AccountId, DeviceId)> {
        g.members().map(|m| (m.account, m.device)).collect()
    };
    let (p, n) = (set(prev), set(next));
    (
        p.difference(&n).copied().collect(),
        n.difference(&p).copied().collect(),
    )
}
