//! The in-process [`DeviceDirectory`] seam: messaging checks envelope sets against the
//! accounts' current devices.
//!
//! Every send asks for the destination's devices. Reading them is a scan of the account's
//! device records and a decode of each (identity key, name, session), about 5 % of the
//! server's instructions per 1:1 message, for a set that changes a few times in an account's
//! life. So the answer is cached, keyed by a fingerprint of the account record, which is read
//! on every call anyway (it says whether the account exists). Invariant: every change of the
//! set (a link, a removal) commits together with a change of the account record
//! (`Account::device_set`), and creation and deletion make or remove the record itself; so a
//! cached set whose fingerprint matches the record read now is the set stored now, on every
//! backend and across processes, with no invalidation to miss.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_common::mesh::{DeviceDirectory, DeviceEntry, MeshError};

use crate::core::Core;
use crate::error::AuthError;
use crate::store;

/// Auth's device list, served in-process.
#[derive(Clone, Debug)]
pub struct AuthDirectory {
    core: Arc<Core>,
    rosters: Arc<Rosters>,
}

impl AuthDirectory {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self {
            core,
            rosters: Arc::new(Rosters::default()),
        }
    }
}

/// Accounts whose device sets are cached at most; past it the cache starts over, which costs
/// one scan per account asked about again.
const MAX_ROSTERS: usize = 65_536;

/// An account's devices, with the fingerprint of the account record they were read after.
type Roster = (u64, Arc<[DeviceEntry]>);

/// The cached device sets.
#[derive(Default)]
struct Rosters {
    // Keyed per process, so nobody can choose records that collide.
    hasher: RandomState,
    sets: Mutex<HashMap<AccountId, Roster>>,
}

impl std::fmt::Debug for Rosters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rosters").finish_non_exhaustive()
    }
}

impl Rosters {
    fn fingerprint(&self, record: &[u8]) -> u64 {
        self.hasher.hash_one(record)
    }

    fn get(&self, acc: AccountId, fingerprint: u64) -> Option<Arc<[DeviceEntry]>> {
        let sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        sets.get(&acc)
            .filter(|(f, _)| *f == fingerprint)
            .map(|(_, d)| d.clone())
    }

    fn put(&self, acc: AccountId, fingerprint: u64, devices: Arc<[DeviceEntry]>) {
        let mut sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        if sets.len() >= MAX_ROSTERS && !sets.contains_key(&acc) {
            sets.clear();
        }
        sets.insert(acc, (fingerprint, devices));
    }
}

#[async_trait]
impl DeviceDirectory for AuthDirectory {
    async fn devices(&self, account_id: &str) -> Result<Option<Vec<DeviceEntry>>, MeshError> {
        let unavailable = |e: AuthError| {
            MeshError::Call(tonic::Status::unavailable(format!("device directory: {e}")))
        };
        // A malformed id names no account.
        let Some(acc) = AccountId::parse(account_id) else {
            return Ok(None);
        };
        // The record first, then the devices: a set read after the record is at least as new.
        let Some(record) = self
            .core
            .kv
            .get(&store::account(acc))
            .await
            .map_err(|e| unavailable(e.into()))?
        else {
            return Ok(None);
        };
        let fingerprint = self.rosters.fingerprint(&record);
        if let Some(devices) = self.rosters.get(acc, fingerprint) {
            return Ok(Some(devices.to_vec()));
        }
        let devices: Arc<[DeviceEntry]> = self
            .core
            .devices(acc)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|(device_id, d)| DeviceEntry {
                device_id: device_id.get(),
                registration_id: d.registration_id,
            })
            .collect();
        self.rosters.put(acc, fingerprint, devices.clone());
        Ok(Some(devices.to_vec()))
    }

    async fn mls_key_pinned(
        &self,
        account_id: &str,
        device_id: u32,
        signature_key: &[u8],
    ) -> Result<bool, MeshError> {
        let (Some(acc), Some(dev)) = (AccountId::parse(account_id), DeviceId::new(device_id))
        else {
            return Ok(false);
        };
        let pinned =
            self.core.mls_signature_key(acc, dev).await.map_err(|e| {
                MeshError::Call(tonic::Status::unavailable(format!("directory: {e}")))
            })?;
        Ok(pinned.as_deref() == Some(signature_key))
    }

    async fn key_package_claimed(
        &self,
        account_id: &str,
        device_id: u32,
        key_package_ref: &[u8],
    ) -> Result<bool, MeshError> {
        let (Some(acc), Some(dev)) = (AccountId::parse(account_id), DeviceId::new(device_id))
        else {
            return Ok(false);
        };
        self.core
            .key_package_claimed(acc, dev, key_package_ref)
            .await
            .map_err(|e| MeshError::Call(tonic::Status::unavailable(format!("directory: {e}"))))
    }
}
