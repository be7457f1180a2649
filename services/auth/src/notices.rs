//! Device notices: every link and removal is written, in the same transaction as the change,
//! as a notice for each other device of the account. A device that was offline when the live
//! `DeviceLinked` event went out still learns of the new device when it next lists its
//! notices; it deletes them by acknowledging.
//!
//! Notice ids increase per receiving device (the clock, or one past the newest notice when the
//! clock stepped back), so "acknowledge up to N" never deletes a notice the device has not
//! been shown. A device's notices are bounded by the account's link and removal rate and go
//! with the device.

use std::ops::Bound;

use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_storage::record::{decode, encode};
use guardyn_storage::{Direction, KeyRange, Txn};

use crate::core::Core;
use crate::error::AuthResult;
use crate::model::DeviceNotice;
use crate::store;

/// At most this many notices are listed at once.
pub const LIST_LIMIT: usize = 256;

impl Core {
    /// Add `notice` for each of `receivers` to `txn` (each conditioned on the receiver still
    /// existing, so a concurrent removal cannot leave an orphan).
    pub(crate) async fn with_notices(
        &self,
        mut txn: Txn,
        acc: AccountId,
        receivers: &[DeviceId],
        notice: &DeviceNotice,
    ) -> AuthResult<Txn> {
        let value = encode(notice);
        for &dev in receivers {
            let newest = self
                .kv
                .scan(
                    KeyRange::prefix(&store::notices(acc, dev)),
                    Direction::Reverse,
                    1,
                )
                .await?
                .first()
                .and_then(|p| store::notice_id_of_key(&p.key));
            let id = newest.map_or(notice.at_ms, |n| notice.at_ms.max(n + 1));
            let key = store::notice(acc, dev, id);
            txn = txn
                .require_exists(store::device(acc, dev))
                .require_absent(key.clone())
                .put(key, value.clone());
        }
        Ok(txn)
    }

    /// ListDeviceNotices: the device's unacknowledged notices, oldest first.
    pub async fn device_notices(
        &self,
        acc: AccountId,
        dev: DeviceId,
    ) -> AuthResult<Vec<(u64, DeviceNotice)>> {
        let pairs = store::scan_prefix(&*self.kv, &store::notices(acc, dev), LIST_LIMIT).await?;
        let mut out = Vec::with_capacity(pairs.len());
        for p in pairs {
            if let Some(id) = store::notice_id_of_key(&p.key) {
                out.push((id, decode::<DeviceNotice>(&p.value)?));
            }
        }
        Ok(out)
    }

    /// AckDeviceNotices: delete the device's notices with ids up to `up_to`.
    pub async fn ack_device_notices(
        &self,
        acc: AccountId,
        dev: DeviceId,
        up_to: u64,
    ) -> AuthResult<()> {
        let prefix = store::notices(acc, dev);
        loop {
            let range = KeyRange {
                start: Bound::Included(prefix.clone()),
                end: Bound::Included(store::notice(acc, dev, up_to)),
            };
            let batch = self.kv.scan(range, Direction::Forward, LIST_LIMIT).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let txn = batch
                .into_iter()
                .fold(Txn::new(), |txn, p| txn.delete(p.key));
            // Unconditional deletes cannot conflict.
            let _ = self.kv.commit(txn).await?;
        }
    }
}
