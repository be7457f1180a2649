//! Handing out device ids (1..=127) again once a removed device left nothing behind.
//!
//! A new device takes the lowest never-used id (at or above the account's high-water mark),
//! so ids come back only once all 127 were handed out; then the lowest id that has no device
//! record and whose former holder is fully gone: every session of that id is dead (no access token it issued can still verify,
//! so a token of the old device can never act as the new one), its prekeys, KeyPackages and
//! pending notices are deleted, and `auth.device_id_reuse_secs` passed since the removal
//! (`retired/<acc>/<dev>`, written with the removal). That delay covers what auth cannot see:
//! messaging purges the removed device's queue when `auth.device.removed` reaches it, and
//! that purge must not hit the new device's queue.
//!
//! Peers that still hold a Signal session with the old device: their next send names the
//! old registration id, which messaging refuses as a stale device (DEVICE_MISMATCH), so the
//! SDK drops that session and fetches the new device's bundle (a new identity key, announced
//! by the durable DeviceLinked notice). An id is never given to a device with the same
//! registration id as its former holder, so that check cannot be fooled by a collision.
//! Ids whose leftovers a crash kept (keys of a removal that died midway) are skipped.

use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_storage::Txn;
use guardyn_storage::record::{Record, encode};
use serde::{Deserialize, Serialize};

use crate::core::Core;
use crate::error::AuthResult;
use crate::store;

/// `retired/<acc>/<dev>`: when the device holding this id was removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredDevice {
    pub removed_ms: u64,
    pub registration_id: u32,
}

impl Record for RetiredDevice {
    const VERSION: u8 = 1;
}

/// Add the retirement of `dev` to the transaction that removes it.
pub fn retire(
    txn: Txn,
    acc: AccountId,
    dev: DeviceId,
    removed_ms: u64,
    registration_id: u32,
) -> Txn {
    let record = RetiredDevice {
        removed_ms,
        registration_id,
    };
    txn.put(store::retired_device(acc, dev), encode(&record))
}

/// An id chosen for a new device.
#[derive(Debug)]
pub struct FreeId {
    pub id: DeviceId,
    /// The retirement record read, consumed by the claim.
    retired: Option<Vec<u8>>,
}

impl FreeId {
    /// Conditions (and the clean-up) that make the transaction creating the device fail if
    /// the id was taken or retired again meanwhile.
    pub fn claim(&self, txn: Txn, acc: AccountId) -> Txn {
        let rkey = store::retired_device(acc, self.id);
        let txn = txn.require_absent(store::device(acc, self.id));
        match &self.retired {
            Some(raw) => txn.require_equals(rkey.clone(), raw.clone()).delete(rkey),
            None => txn.require_absent(rkey),
        }
    }
}

impl Core {
    /// The id a new device of `acc` (with `registration_id`) may take, besides the `taken`
    /// ones: never-used ids (from `high_water`, the account's next unused id) first, then the
    /// lowest reusable one; `None` when every id is in use or not reusable yet.
    pub async fn free_device_id(
        &self,
        acc: AccountId,
        taken: &[DeviceId],
        registration_id: u32,
        high_water: u32,
    ) -> AuthResult<Option<FreeId>> {
        let now = self.now_ms();
        let sessions = self.account_sessions(acc).await?;
        let delay_ms = self.config.device_id_reuse_secs.saturating_mul(1000);
        // Fresh ids first: peers never met them, so nothing about an old holder can confuse
        // them (sessions, pinned identity keys).
        let (fresh, used): (Vec<DeviceId>, Vec<DeviceId>) =
            DeviceId::all().partition(|id| id.get() >= high_water);
        for id in fresh
            .into_iter()
            .chain(used)
            .filter(|id| !taken.contains(id))
        {
            let retired =
                store::get::<RetiredDevice>(&*self.kv, &store::retired_device(acc, id)).await?;
            if let Some((r, _)) = &retired
                && (r.removed_ms.saturating_add(delay_ms) > now
                    || r.registration_id == registration_id)
            {
                continue;
            }
            if sessions
                .iter()
                .any(|(_, s)| s.device_id == id && !self.session_dead(s, now))
            {
                continue;
            }
            if self.has_leftovers(acc, id).await? {
                continue;
            }
            return Ok(Some(FreeId {
                id,
                retired: retired.map(|(_, raw)| raw),
            }));
        }
        Ok(None)
    }

    async fn has_leftovers(&self, acc: AccountId, id: DeviceId) -> AuthResult<bool> {
        for prefix in [
            store::device(acc, id),
            store::prekeys(acc, id),
            store::key_packages(acc, id),
            store::notices(acc, id),
        ] {
            if !store::scan_prefix(&*self.kv, &prefix, 1).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
