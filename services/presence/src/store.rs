//! Durable presence data in the [`KvStore`].
//!
//! Keys (fixed-width binary ids):
//! - `presence/v1/acct/<account:16>/r`: the account record (status, custom text, last-seen
//!   visibility and allow list, last seen). Value: version byte `1` + a protobuf-encoded
//!   [`RecordV1`].
//! - `presence/v1/acct/<account:16>/d/<instance:16><device:u32 BE>`: one device online on one
//!   instance. Value: version byte `1` + the online period's generation (u64 BE). Written when
//!   a device comes online and deleted when it goes offline (transitions only, never per
//!   heartbeat); in a cluster on a shared store this is what lets any instance build the
//!   current state of an account whose devices are connected elsewhere.
//!
//! One prefix scan per account yields the record and every device entry.

use std::collections::HashSet;
use std::sync::Arc;

use guardyn_storage::{Direction, KeyRange, KvStore, Txn, TxnOutcome};
use prost::Message;
use uuid::Uuid;

use crate::error::PresenceError;
use crate::model::{AccountId, AccountView, InstanceId, Settings, Status, Visibility};

const VERSION: u8 = 1;
const MAX_ATTEMPTS: usize = 8;

/// Stored form of [`Settings`].
#[derive(Clone, PartialEq, prost::Message)]
struct RecordV1 {
    /// 0 online, 1 away, 2 do not disturb, 3 invisible.
    #[prost(uint32, tag = "1")]
    status: u32,
    #[prost(string, tag = "2")]
    custom_text: String,
    /// 0 everyone, 1 nobody, 2 allow list.
    #[prost(uint32, tag = "3")]
    visibility: u32,
    #[prost(bytes = "vec", repeated, tag = "4")]
    allow_list: Vec<Vec<u8>>,
    #[prost(uint64, optional, tag = "5")]
    last_seen_ms: Option<u64>,
}

fn account_prefix(account: AccountId) -> Vec<u8> {
    let mut k = b"presence/v1/acct/".to_vec();
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
    let mut v = vec![VERSION];
    v.extend_from_slice(&generation.to_be_bytes());
    v
}

fn encode_settings(s: &Settings) -> Vec<u8> {
    let rec = RecordV1 {
        status: match s.status {
            Status::Online => 0,
            Status::Away => 1,
            Status::DoNotDisturb => 2,
            Status::Invisible => 3,
        },
        custom_text: s.custom_text.clone(),
        visibility: match s.visibility {
            Visibility::Everyone => 0,
            Visibility::Nobody => 1,
            Visibility::AllowList(_) => 2,
        },
        allow_list: s.allow_list.iter().map(|a| a.as_bytes().to_vec()).collect(),
        last_seen_ms: s.last_seen_ms,
    };
    let mut v = Vec::with_capacity(1 + rec.encoded_len());
    v.push(VERSION);
    v.extend_from_slice(&rec.encode_to_vec());
    v
}

fn decode_settings(bytes: &[u8]) -> Result<Settings, PresenceError> {
    let Some((&VERSION, body)) = bytes.split_first() else {
        return Err(PresenceError::Corrupt("unknown record version".into()));
    };
    let rec = RecordV1::decode(body).map_err(|e| PresenceError::Corrupt(e.to_string()))?;
    let allow_list: Vec<AccountId> = rec
        .allow_list
        .iter()
        .map(|b| AccountId::from_bytes(b))
        .collect::<Option<_>>()
        .ok_or_else(|| PresenceError::Corrupt("bad allow-list id".into()))?;
    Ok(Settings {
        status: match rec.status {
            1 => Status::Away,
            2 => Status::DoNotDisturb,
            3 => Status::Invisible,
            _ => Status::Online,
        },
        custom_text: rec.custom_text,
        visibility: match rec.visibility {
            1 => Visibility::Nobody,
            2 => Visibility::AllowList(allow_list.iter().copied().collect::<HashSet<_>>()),
            _ => Visibility::Everyone,
        },
        allow_list,
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
                && id.len() == 20
                && pair.value.len() == 9
                && pair.value[0] == VERSION
            {
                let mut inst = [0u8; 16];
                inst.copy_from_slice(&id[..16]);
                let mut dev = [0u8; 4];
                dev.copy_from_slice(&id[16..]);
                let mut generation = [0u8; 8];
                generation.copy_from_slice(&pair.value[1..]);
                snap.devices.push(StoredDevice {
                    instance: Uuid::from_bytes(inst),
                    device: u32::from_be_bytes(dev),
                    generation: u64::from_be_bytes(generation),
                });
            } else {
                return Err(PresenceError::Corrupt("unexpected presence key".into()));
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
        device: u32,
        generation: u64,
    ) -> Result<(), PresenceError> {
        self.kv
            .put(
                &device_key(account, instance, device),
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
        device: u32,
        generation: u64,
        now_ms: u64,
        alive: impl Fn(InstanceId) -> bool,
    ) -> Result<(), PresenceError> {
        self.end_online(account, now_ms, alive, |d| {
            d.instance == instance && d.device == device && d.generation <= generation
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
        device: u32,
        now_ms: u64,
        alive: impl Fn(InstanceId) -> bool,
    ) -> Result<(), PresenceError> {
        self.end_online(account, now_ms, alive, |d| d.device == device)
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
        Err(PresenceError::Contention(account.to_string()))
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
        Err(PresenceError::Contention(account.to_string()))
    }

    pub async fn settings(&self, account: AccountId) -> Result<Settings, PresenceError> {
        match self.kv.get(&record_key(account)).await? {
            Some(bytes) => decode_settings(&bytes),
            None => Ok(Settings::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn settings_round_trip_with_a_version_byte() {
        let friend = AccountId(Uuid::from_u128(5));
        let s = Settings {
            status: Status::DoNotDisturb,
            custom_text: "in a meeting".into(),
            visibility: Visibility::AllowList([friend].into_iter().collect()),
            allow_list: vec![friend],
            last_seen_ms: Some(42),
        };
        let bytes = encode_settings(&s);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode_settings(&bytes).unwrap(), s);
        assert!(decode_settings(&[9, 1, 2]).is_err());
    }
}
