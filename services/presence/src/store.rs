//! Durable presence data in the [`KvStore`].
//!
//! Keys (fixed-width binary ids); values are [`guardyn_storage::record`] encoded (version byte
//! + postcard):
//! - `presence/v1/acct/<account:16>/r`: the account record ([`AccountRecord`]: status, custom
//!   text, last-seen visibility and allow list, last seen).
//! - `presence/v1/acct/<account:16>/d/<instance:16><device:u32 BE>`: one device online on one
//!   instance ([`DeviceEntry`]: the online period's generation). Written when a device comes
//!   online and deleted when it goes offline (transitions only, never per heartbeat); in a
//!   cluster on a shared store this is what lets any instance build the current state of an
//!   account whose devices are connected elsewhere.
//!
//! Both values are at version 2. Version 1 (a protobuf record, a raw big-endian generation) is
//! not read: no deployment has presence data yet.
//!
//! One prefix scan per account yields the record and every device entry.

use std::sync::Arc;

use guardyn_storage::record::{self, Record};
use guardyn_storage::{Direction, KeyRange, KvStore, StorageError, Txn, TxnOutcome};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::PresenceError;
use crate::model::{AccountId, AccountView, DeviceId, InstanceId, Settings, Status, Visibility};

const MAX_ATTEMPTS: usize = 8;

/// Stored form of [`Settings`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct AccountRecord {
    status: StoredStatus,
    custom_text: String,
    visibility: StoredVisibility,
    /// Kept while another visibility is selected.
    allow_list: Vec<AccountId>,
    last_seen_ms: Option<u64>,
}

impl Record for AccountRecord {
    const VERSION: u8 = 2;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum StoredStatus {
    Online,
    Away,
    DoNotDisturb,
    Invisible,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum StoredVisibility {
    Everyone,
    Nobody,
    AllowList,
}

/// Stored form of one device online on one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct DeviceEntry {
    generation: u64,
}

impl Record for DeviceEntry {
    const VERSION: u8 = 2;
}

const ACCOUNTS_PREFIX: &[u8] = b"presence/v1/acct/";

fn account_prefix(account: AccountId) -> Vec<u8> {
    let mut k = ACCOUNTS_PREFIX.to_vec();
    k.extend_from_slice(account.as_bytes());
    k.push(b'/');
    k
}

fn record_key(account: AccountId) -> Vec<u8> {
    let mut k = account_prefix(account);
    k.push(b'r');
    k
}

fn device_key(account: AccountId, instance: InstanceId, device: u32) -> Vec<u8> {
    let mut k = account_prefix(account);
    k.extend_from_slice(b"d/");
    k.extend_from_slice(instance.as_bytes());
    k.extend_from_slice(&device.to_be_bytes());
    k
}

fn device_value(generation: u64) -> Vec<u8> {
    record::encode(&DeviceEntry { generation })
}

fn encode_settings(s: &Settings) -> Vec<u8> {
    record::encode(&AccountRecord {
        status: match s.status {
            Status::Online => StoredStatus::Online,
            Status::Away => StoredStatus::Away,
            Status::DoNotDisturb => StoredStatus::DoNotDisturb,
            Status::Invisible => StoredStatus::Invisible,
        },
        custom_text: s.custom_text.clone(),
        visibility: match s.visibility {
            Visibility::Everyone => StoredVisibility::Everyone,
            Visibility::Nobody => StoredVisibility::Nobody,
            Visibility::AllowList(_) => StoredVisibility::AllowList,
        },
        allow_list: s.allow_list.clone(),
        last_seen_ms: s.last_seen_ms,
    })
}

fn decode_settings(bytes: &[u8]) -> Result<Settings, StorageError> {
    let rec: AccountRecord = record::decode(bytes)?;
    Ok(Settings {
        status: match rec.status {
            StoredStatus::Online => Status::Online,
            StoredStatus::Away => Status::Away,
            StoredStatus::DoNotDisturb => Status::DoNotDisturb,
            StoredStatus::Invisible => Status::Invisible,
        },
        custom_text: rec.custom_text,
        visibility: match rec.visibility {
            StoredVisibility::Everyone => Visibility::Everyone,
            StoredVisibility::Nobody => Visibility::Nobody,
            StoredVisibility::AllowList => {
                Visibility::AllowList(rec.allow_list.iter().copied().collect())
            }
        },
        allow_list: rec.allow_list,
        last_seen_ms: rec.last_seen_ms,
    })
}

/// A device entry as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredDevice {
    pub instance: InstanceId,
    pub device: u32,
    pub generation: u64,
}

/// The outcome of one [`Store::forget_last_seen`] batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepBatch {
    /// Where the next batch starts; `None` when the key space was read to its end.
    pub next: Option<Vec<u8>>,
    /// Last-seen values deleted.
    pub forgotten: usize,
}

/// What one scan of an account returns.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    record: Option<Vec<u8>>,
    settings: Settings,
    devices: Vec<StoredDevice>,
}

/// Presence persistence; see the module docs.
#[derive(Clone, Debug)]
pub struct Store {
    kv: Arc<dyn KvStore>,
}

impl Store {
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Self { kv }
    }

    async fn scan(&self, account: AccountId) -> Result<Snapshot, PresenceError> {
        let prefix = account_prefix(account);
        // Record + at most 127 devices per instance; a few instances fit easily.
        let pairs = self
            .kv
            .scan(KeyRange::prefix(&prefix), Direction::Forward, 4096)
            .await?;
        let mut snap = Snapshot::default();
        for pair in pairs {
            let rest = &pair.key[prefix.len()..];
            if rest == b"r" {
                snap.settings = decode_settings(&pair.value)?;
                snap.record = Some(pair.value);
            } else if let Some(id) = rest.strip_prefix(b"d/")
                && let Some((inst, dev)) = id.split_first_chunk::<16>()
                && let Ok(dev) = <[u8; 4]>::try_from(dev)
            {
                let entry: DeviceEntry = record::decode(&pair.value)?;
                snap.devices.push(StoredDevice {
                    instance: Uuid::from_bytes(*inst),
                    device: u32::from_be_bytes(dev),
                    generation: entry.generation,
                });
            } else {
                return Err(StorageError::Corrupt("unexpected presence key".into()).into());
            }
        }
        Ok(snap)
    }

    /// The account's settings and the devices of live instances. Entries of instances that
    /// `alive` rejects are left for [`Store::drop_instance`].
    pub async fn load(
        &self,
        account: AccountId,
        alive: impl Fn(InstanceId) -> bool,
    ) -> Result<(AccountView, Vec<StoredDevice>), PresenceError> {
        let snap = self.scan(account).await?;
        let (live, dead): (Vec<_>, Vec<_>) =
            snap.devices.into_iter().partition(|d| alive(d.instance));
        let view = AccountView {
            settings: snap.settings,
            devices: live
                .iter()
                .map(|d| ((d.instance, d.device), d.generation))
                .collect(),
        };
        Ok((view, dead))
    }

    pub async fn device_online(
        &self,
        account: AccountId,
        instance: InstanceId,
        device: DeviceId,
        generation: u64,
    ) -> Result<(), PresenceError> {
        self.kv
            .put(
                &device_key(account, instance, device.get()),
                &device_value(generation),
            )
            .await?;
        Ok(())
    }

    /// End one online period: delete its device entry (unless a newer period replaced it)
    /// and, when no device of a live instance remains, record last seen (not for INVISIBLE).
    pub async fn device_offline(
        &self,
        account: AccountId,
        instance: InstanceId,
        device: DeviceId,
        generation: u64,
        now_ms: u64,
        alive: impl Fn(InstanceId) -> bool,
    ) -> Result<(), PresenceError> {
        self.end_online(account, now_ms, alive, |d| {
            d.instance == instance && d.device == device.get() && d.generation <= generation
        })
        .await
    }

    /// Remove every device entry of a dead instance for one account (and record last seen).
    pub async fn drop_instance(
        &self,
        account: AccountId,
        instance: InstanceId,
        now_ms: u64,
        alive: impl Fn(InstanceId) -> bool,
    ) -> Result<(), PresenceError> {
        self.end_online(account, now_ms, alive, |d| d.instance == instance)
            .await
    }

    /// A device was removed from its account: delete its entries of every instance (also of
    /// dead instances and of instances that missed the event) and record last seen when no
    /// device of a live instance remains. Device ids are never reused within an account, so
    /// no later online period can be hit.
    pub async fn remove_device(
        &self,
        account: AccountId,
        device: DeviceId,
        now_ms: u64,
        alive: impl Fn(InstanceId) -> bool,
    ) -> Result<(), PresenceError> {
        self.end_online(account, now_ms, alive, |d| d.device == device.get())
            .await
    }

    /// Delete everything stored under the account (record and device entries). Another
    /// account's allow list may still name it: there is no reverse index, the id is never
    /// reused, and such an entry grants nothing.
    pub async fn purge_account(&self, account: AccountId) -> Result<(), PresenceError> {
        let prefix = account_prefix(account);
        loop {
            let pairs = self
                .kv
                .scan(KeyRange::prefix(&prefix), Direction::Forward, 1024)
                .await?;
            if pairs.is_empty() {
                return Ok(());
            }
            let txn = pairs
                .into_iter()
                .fold(Txn::new(), |txn, pair| txn.delete(pair.key));
            // Unconditional: cannot conflict.
            let _ = self.kv.commit(txn).await?;
        }
    }

    async fn end_online(
        &self,
        account: AccountId,
        now_ms: u64,
        alive: impl Fn(InstanceId) -> bool,
        remove: impl Fn(&StoredDevice) -> bool,
    ) -> Result<(), PresenceError> {
        for _ in 0..MAX_ATTEMPTS {
            let snap = self.scan(account).await?;
            let (gone, kept): (Vec<&StoredDevice>, Vec<&StoredDevice>) =
                snap.devices.iter().partition(|d| remove(d));
            if gone.is_empty() {
                return Ok(());
            }
            let mut txn = Txn::new();
            for d in &gone {
                let key = device_key(account, d.instance, d.device);
                txn = txn
                    .require_equals(key.clone(), device_value(d.generation))
                    .delete(key);
            }
            let still_online = kept.iter().any(|d| alive(d.instance));
            if !still_online && snap.settings.status != Status::Invisible {
                let mut settings = snap.settings.clone();
                settings.last_seen_ms = Some(now_ms.max(settings.last_seen_ms.unwrap_or(0)));
                txn = txn
                    .require_unchanged(record_key(account), snap.record.as_deref())
                    .put(record_key(account), encode_settings(&settings));
            }
            if self.kv.commit(txn).await? == TxnOutcome::Committed {
                return Ok(());
            }
        }
        Err(PresenceError::Contention(account))
    }

    /// Read-modify-write of the account's settings; returns the new settings.
    pub async fn update_settings(
        &self,
        account: AccountId,
        change: impl Fn(&mut Settings),
    ) -> Result<Settings, PresenceError> {
        let key = record_key(account);
        for _ in 0..MAX_ATTEMPTS {
            let old = self.kv.get(&key).await?;
            let mut settings = match &old {
                Some(bytes) => decode_settings(bytes)?,
                None => Settings::default(),
            };
            change(&mut settings);
            let txn = Txn::new()
                .require_unchanged(key.clone(), old.as_deref())
                .put(key.clone(), encode_settings(&settings));
            if self.kv.commit(txn).await? == TxnOutcome::Committed {
                return Ok(settings);
            }
        }
        Err(PresenceError::Contention(account))
    }

    /// One batch of the real-time retention sweep: read up to `limit` presence keys after
    /// `after` (from the first when `None`) and drop every last seen before `cutoff_ms`. Each
    /// record changes only if it still holds the value read (compare-and-set), so a last seen
    /// written meanwhile by a device going offline is kept; a record left with nothing but
    /// defaults is deleted, which reads the same.
    pub async fn forget_last_seen(
        &self,
        after: Option<&[u8]>,
        limit: usize,
        cutoff_ms: u64,
    ) -> Result<SweepBatch, PresenceError> {
        let mut range = KeyRange::prefix(ACCOUNTS_PREFIX);
        if let Some(after) = after {
            range.start = std::ops::Bound::Excluded(after.to_vec());
        }
        let pairs = self.kv.scan(range, Direction::Forward, limit).await?;
        let mut forgotten = 0;
        for pair in &pairs {
            if !pair.key.ends_with(b"/r") || pair.key.len() != ACCOUNTS_PREFIX.len() + 18 {
                continue;
            }
            let mut settings = match decode_settings(&pair.value) {
                Ok(s) => s,
                Err(err) => {
                    tracing::warn!(error = %err, "retention sweep skips an unreadable presence record");
                    continue;
                }
            };
            if settings.last_seen_ms.is_none_or(|ms| ms >= cutoff_ms) {
                continue;
            }
            settings.last_seen_ms = None;
            let txn = Txn::new().require_equals(pair.key.clone(), pair.value.clone());
            let txn = if settings == Settings::default() {
                txn.delete(pair.key.clone())
            } else {
                txn.put(pair.key.clone(), encode_settings(&settings))
            };
            // A lost race means the record changed: its new last seen is recent.
            if self.kv.commit(txn).await? == TxnOutcome::Committed {
                forgotten += 1;
            }
        }
        let next = (pairs.len() >= limit)
            .then(|| pairs.last().map(|p| p.key.clone()))
            .flatten();
        Ok(SweepBatch { next, forgotten })
    }

    pub async fn settings(&self, account: AccountId) -> Result<Settings, PresenceError> {
        match self.kv.get(&record_key(account)).await? {
            Some(bytes) => Ok(decode_settings(&bytes)?),
            None => Ok(Settings::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn settings_round_trip_with_a_version_byte() {
        let friend = AccountId::from_uuid(Uuid::from_u128(5));
        let s = Settings {
            status: Status::DoNotDisturb,
            custom_text: "in a meeting".into(),
            visibility: Visibility::AllowList([friend].into_iter().collect()),
            allow_list: vec![friend],
            last_seen_ms: Some(42),
        };
        let bytes = encode_settings(&s);
        assert_eq!(bytes[0], AccountRecord::VERSION);
        assert_eq!(decode_settings(&bytes).unwrap(), s);
        assert!(decode_settings(&[9, 1, 2]).is_err());
        let device = device_value(7);
        assert_eq!(device[0], DeviceEntry::VERSION);
        assert_eq!(
            record::decode::<DeviceEntry>(&device).unwrap(),
            DeviceEntry { generation: 7 }
        );
    }
}
