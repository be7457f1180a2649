//! Key directory: libsignal prekeys per device.
//!
//! One-time keys are handed out exactly once: a fetch scans the first key under the device's
//! pool prefix and deletes it in a transaction that requires the value to be unchanged; a
//! fetcher that loses the race retries with the next key.

use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_crypto::{IdentityKey, KemPublicKey, PublicKey};
use guardyn_storage::record::{decode, encode};
use guardyn_storage::{KvStore, Txn, TxnOutcome};

use crate::core::Core;
use crate::error::{AuthError, AuthResult};
use crate::events::PreKeysLow;
use crate::limits::take;
use crate::model::{Device, StoredPreKey};
use crate::store;
use guardyn_audit::AuditKind;

pub const MAX_BATCH: usize = 100;
pub const MAX_KEY_ID: u32 = 0xFF_FFFF;

/// Prekeys to store for one device (validated by [`validate_upload`]).
#[derive(Clone, Debug, Default)]
pub struct PreKeyUpload {
    pub signed: Option<StoredPreKey>,
    pub last_resort_kem: Option<StoredPreKey>,
    pub kem: Vec<StoredPreKey>,
    pub ec: Vec<StoredPreKey>,
}

/// Remaining keys of a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub ec: u32,
    pub kem: u32,
    pub has_last_resort: bool,
    pub signed_id: Option<u32>,
}

/// One device's bundle.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub device_id: DeviceId,
    pub registration_id: u32,
    pub identity_key: Vec<u8>,
    pub signed: StoredPreKey,
    pub kem: StoredPreKey,
    pub kem_is_last_resort: bool,
    pub ec: Option<StoredPreKey>,
}

fn crypto_err(field: String, e: guardyn_crypto::Error) -> AuthError {
    match e {
        guardyn_crypto::Error::BadSignature => AuthError::InvalidSignature { field },
        guardyn_crypto::Error::Malformed {
            what: "signature", ..
        } => AuthError::InvalidSignature { field },
        other => AuthError::InvalidKey {
            field,
            reason: other.to_string(),
        },
    }
}

/// Check an identity key's format.
pub fn check_identity_key(bytes: &[u8], field: &str) -> AuthResult<()> {
    IdentityKey::from_bytes(bytes)
        .map(drop)
        .map_err(|e| crypto_err(field.to_owned(), e))
}

/// Check formats, ids, batch sizes and every signature against `identity_key`. `prefix` is
/// the request path of the upload (e.g. `device.` inside Register).
pub fn validate_upload(identity_key: &[u8], u: &PreKeyUpload, prefix: &str) -> AuthResult<()> {
    let f = |name: &str| format!("{prefix}{name}");
    let check_id = |id: u32, field: String| {
        if (1..=MAX_KEY_ID).contains(&id) {
            Ok(())
        } else {
            Err(AuthError::field(field, "key_id must be 1..16777215"))
        }
    };
    let check_signed =
        |k: &StoredPreKey, field: String, kem: bool| -> AuthResult<()> {
            check_id(k.key_id, format!("{field}.key_id"))?;
            if kem {
                KemPublicKey::from_bytes(&k.public_key)
                    .map_err(|e| crypto_err(format!("{field}.public_key"), e))?;
            } else {
                PublicKey::from_bytes(&k.public_key)
                    .map_err(|e| crypto_err(format!("{field}.public_key"), e))?;
            }
            guardyn_crypto::verify_prekey_signature(identity_key, &k.public_key, &k.signature)
                .map_err(|e| match e {
                    guardyn_crypto::Error::BadSignature
                    | guardyn_crypto::Error::Malformed { .. } => AuthError::InvalidSignature {
                        field: format!("{field}.signature"),
                    },
                    other => crypto_err(format!("{field}.public_key"), other),
                })
        };
    if let Some(k) = &u.signed {
        check_signed(k, f("signed_prekey"), false)?;
    }
    if let Some(k) = &u.last_resort_kem {
        check_signed(k, f("last_resort_kem_prekey"), true)?;
    }
    for (name, list, kem) in [
        ("one_time_kem_prekeys", &u.kem, true),
        ("one_time_prekeys", &u.ec, false),
    ] {
        if list.len() > MAX_BATCH {
            return Err(AuthError::PayloadTooLarge {
                field: f(name),
                limit: MAX_BATCH,
            });
        }
        let mut seen = std::collections::HashSet::new();
        for (i, k) in list.iter().enumerate() {
            let field = format!("{}[{i}]", f(name));
            if !seen.insert(k.key_id) {
                return Err(AuthError::field(
                    format!("{field}.key_id"),
                    "duplicate key id in the request",
                ));
            }
            if kem {
                check_signed(k, field, true)?;
            } else {
                check_id(k.key_id, format!("{field}.key_id"))?;
                PublicKey::from_bytes(&k.public_key)
                    .map_err(|e| crypto_err(format!("{field}.public_key"), e))?;
            }
        }
    }
    Ok(())
}

/// Add the upload's writes to `txn`; one-time keys must not exist yet. Returns the txn and
/// the index of the first one-time-key condition (for telling ALREADY_EXISTS apart).
pub fn add_upload(mut txn: Txn, acc: AccountId, dev: DeviceId, u: &PreKeyUpload) -> (Txn, usize) {
    let first = txn.conditions.len();
    if let Some(k) = &u.signed {
        txn = txn.put(store::signed_prekey(acc, dev), encode(k));
    }
    if let Some(k) = &u.last_resort_kem {
        txn = txn.put(store::last_resort_kem(acc, dev), encode(k));
    }
    for k in &u.kem {
        let key = store::kem_prekey(acc, dev, k.key_id);
        txn = txn.require_absent(key.clone()).put(key, encode(k));
    }
    for k in &u.ec {
        let key = store::ec_prekey(acc, dev, k.key_id);
        txn = txn.require_absent(key.clone()).put(key, encode(k));
    }
    (txn, first)
}

/// Atomically take the first value under `prefix`.
pub async fn claim_first(kv: &dyn KvStore, prefix: &[u8]) -> AuthResult<Option<Vec<u8>>> {
    for _ in 0..store::MAX_ATTEMPTS * 4 {
        let Some(pair) = store::scan_prefix(kv, prefix, 1).await?.into_iter().next() else {
            return Ok(None);
        };
        let txn = Txn::new()
            .require_equals(pair.key.clone(), pair.value.clone())
            .delete(pair.key);
        if let TxnOutcome::Committed = kv.commit(txn).await? {
            return Ok(Some(pair.value));
        }
    }
    Err(AuthError::Contention)
}

pub async fn count(kv: &dyn KvStore, prefix: &[u8], cap: u32) -> AuthResult<u32> {
    let n = store::scan_prefix(kv, prefix, cap as usize + 1)
        .await?
        .len();
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

impl Core {
    pub async fn prekey_counts(&self, acc: AccountId, dev: DeviceId) -> AuthResult<Counts> {
        let cap = self.config.max_stored_prekeys;
        let signed = store::get::<StoredPreKey>(&*self.kv, &store::signed_prekey(acc, dev)).await?;
        Ok(Counts {
            ec: count(&*self.kv, &store::ec_prekeys(acc, dev), cap).await?,
            kem: count(&*self.kv, &store::kem_prekeys(acc, dev), cap).await?,
            has_last_resort: self
                .kv
                .get(&store::last_resort_kem(acc, dev))
                .await?
                .is_some(),
            signed_id: signed.map(|(k, _)| k.key_id),
        })
    }

    /// UploadPreKeys for the calling device.
    pub async fn upload_prekeys(
        &self,
        acc: AccountId,
        dev: DeviceId,
        u: PreKeyUpload,
    ) -> AuthResult<Counts> {
        // Rated because each upload appends to the audit log.
        take(&self.limits.prekey_upload_per_device, &(acc, dev))?;
        let dkey = store::device(acc, dev);
        let Some((device, _)) = store::get::<Device>(&*self.kv, &dkey).await? else {
            return Err(AuthError::DeviceRemoved);
        };
        validate_upload(&device.identity_key, &u, "")?;
        let before = self.prekey_counts(acc, dev).await?;
        let max = self.config.max_stored_prekeys;
        if before.ec as usize + u.ec.len() > max as usize {
            return Err(AuthError::QuotaExceeded {
                quota: "one_time_prekeys",
            });
        }
        if before.kem as usize + u.kem.len() > max as usize {
            return Err(AuthError::QuotaExceeded {
                quota: "one_time_kem_prekeys",
            });
        }
        let (txn, first) = add_upload(Txn::new().require_exists(dkey), acc, dev, &u);
        match self.kv.commit(txn).await? {
            TxnOutcome::Committed => {}
            TxnOutcome::Conflict { condition } if condition >= first => {
                return Err(AuthError::AlreadyExists {
                    resource: "prekey_id",
                });
            }
            TxnOutcome::Conflict { .. } => return Err(AuthError::DeviceRemoved),
        }
        self.audit(
            AuditKind::PreKeysUploaded,
            acc,
            Some(dev),
            format!(
                "signed={} last_resort_kem={} kem={} ec={}",
                u.signed.is_some(),
                u.last_resort_kem.is_some(),
                u.kem.len(),
                u.ec.len()
            ),
        )
        .await?;
        self.prekey_counts(acc, dev).await
    }

    /// GetPreKeyBundle: one device, or (`None`) every device except the caller's.
    pub async fn fetch_bundles(
        &self,
        caller_acc: AccountId,
        caller_dev: DeviceId,
        acc: AccountId,
        target: Option<DeviceId>,
    ) -> AuthResult<(Vec<Bundle>, Vec<DeviceId>)> {
        take(&self.limits.prekey_fetch_per_target, &(caller_acc, acc))?;
        if self.kv.get(&store::account(acc)).await?.is_none() {
            return Err(AuthError::NotFound {
                resource: "account",
            });
        }
        let devices = self.devices(acc).await?;
        let own = |id: DeviceId| acc == caller_acc && id == caller_dev;
        let targets: Vec<(DeviceId, Device)> = match target {
            None => devices.into_iter().filter(|(id, _)| !own(*id)).collect(),
            Some(target) => {
                let d = devices
                    .into_iter()
                    .find(|(id, _)| *id == target && !own(*id))
                    .ok_or(AuthError::NotFound { resource: "device" })?;
                vec![d]
            }
        };
        let mut bundles = Vec::new();
        let mut unavailable = Vec::new();
        for (id, device) in targets {
            match self.bundle_for(acc, id, device).await? {
                Some(b) => bundles.push(b),
                None if target.is_some() => return Err(AuthError::PrekeysExhausted),
                None => unavailable.push(id),
            }
        }
        Ok((bundles, unavailable))
    }

    async fn bundle_for(
        &self,
        acc: AccountId,
        dev: DeviceId,
        device: Device,
    ) -> AuthResult<Option<Bundle>> {
        let kv = &*self.kv;
        let Some((signed, _)) =
            store::get::<StoredPreKey>(kv, &store::signed_prekey(acc, dev)).await?
        else {
            return Ok(None);
        };
        let (kem, kem_is_last_resort) = match claim_first(kv, &store::kem_prekeys(acc, dev)).await?
        {
            Some(raw) => (decode::<StoredPreKey>(&raw)?, false),
            None => {
                match store::get::<StoredPreKey>(kv, &store::last_resort_kem(acc, dev)).await? {
                    Some((k, _)) => (k, true),
                    None => return Ok(None),
                }
            }
        };
        let ec = match claim_first(kv, &store::ec_prekeys(acc, dev)).await? {
            Some(raw) => Some(decode::<StoredPreKey>(&raw)?),
            None => None,
        };
        self.check_low(acc, dev).await?;
        Ok(Some(Bundle {
            device_id: dev,
            registration_id: device.registration_id,
            identity_key: device.identity_key,
            signed,
            kem,
            kem_is_last_resort,
            ec,
        }))
    }

    /// Publish `auth.prekeys.low` when a pool is below the threshold.
    pub async fn check_low(&self, acc: AccountId, dev: DeviceId) -> AuthResult<()> {
        let threshold = self.config.prekey_low_threshold;
        let c = self.prekey_counts(acc, dev).await?;
        let kps = count(
            &*self.kv,
            &store::one_time_kps(acc, dev),
            self.config.max_stored_prekeys,
        )
        .await?;
        if c.ec < threshold || c.kem < threshold || kps < threshold {
            self.events
                .publish(&PreKeysLow {
                    account: acc,
                    device: dev,
                    one_time_prekeys: c.ec,
                    one_time_kem_prekeys: c.kem,
                    key_packages: kps,
                    has_last_resort_kem_prekey: c.has_last_resort,
                })
                .await;
        }
        Ok(())
    }
}
