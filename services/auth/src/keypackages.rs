//! Key directory: MLS KeyPackages per device.
//!
//! Every upload is fully validated (`guardyn_crypto::mls::server::validate_key_package`:
//! encoding, ciphersuite, signatures, lifetime) and its BasicCredential identity must be the
//! uploader's device address `<account_id>.<device_id>` (guardyn.common.v1.DeviceAddress).
//! One-time packages are stored under their KeyPackageRef and consumed on claim; the
//! last-resort package is handed out (and kept) only when none remain.
//!
//! Binding (what the delivery service relies on, through the device directory seam): the first
//! accepted upload pins the device's MLS signature key (`kp/<acc>/<dev>/s`); later packages
//! must carry the same key. Every package ClaimKeyPackages hands out is recorded by its
//! KeyPackageRef (`kp/<acc>/<dev>/c<ref>`, for [`CLAIM_TTL_MS`]), so a group Add is accepted
//! only for a package the directory gave out. Both live under the device's KeyPackage prefix,
//! so device removal and account deletion delete them. Expired claim records are pruned on the
//! device's next claims, a bounded number per claim.

use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_crypto::mls::{KeyPackagePolicy, key_package_ref, validate_key_package};
use guardyn_storage::record::{Record, decode, encode};
use guardyn_storage::{Direction, KeyRange, Txn};
use serde::{Deserialize, Serialize};

use crate::core::{Core, token_now_s};
use crate::error::{AuthError, AuthResult};
use crate::limits::take;
use crate::model::StoredKeyPackage;
use crate::prekeys::{MAX_BATCH, claim_first, count};
use crate::store;
use guardyn_audit::AuditKind;

pub const MAX_KEY_PACKAGE_BYTES: usize = 64 * 1024;

/// How long a handed-out KeyPackage may be used for a group Add: long enough for a client to
/// retry its commit after STALE_EPOCH, short enough that the records stay few.
pub const CLAIM_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// Expired claim records deleted per claim, at most.
const CLAIM_PRUNE_BATCH: usize = 16;

/// `kp/<acc>/<dev>/s`: the device's pinned MLS signature public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PinnedMlsKey {
    #[serde(with = "serde_bytes")]
    signature_key: Vec<u8>,
}

impl Record for PinnedMlsKey {
    const VERSION: u8 = 1;
}

/// `kp/<acc>/<dev>/c<ref>`: the KeyPackage with that ref was handed out, usable until then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ClaimRecord {
    expires_ms: u64,
}

impl Record for ClaimRecord {
    const VERSION: u8 = 1;
}

fn pin_key(acc: AccountId, dev: DeviceId) -> Vec<u8> {
    [store::key_packages(acc, dev), b"s".to_vec()].concat()
}

fn claims_prefix(acc: AccountId, dev: DeviceId) -> Vec<u8> {
    [store::key_packages(acc, dev), b"c".to_vec()].concat()
}

fn claim_key(acc: AccountId, dev: DeviceId, kp_ref: &[u8]) -> Vec<u8> {
    [claims_prefix(acc, dev), kp_ref.to_vec()].concat()
}

/// A claimed KeyPackage.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub device_id: DeviceId,
    pub bytes: Vec<u8>,
    pub last_resort: bool,
    /// The device's pinned MLS signature key (the package carries the same one).
    pub signature_key: Vec<u8>,
}

impl Core {
    pub async fn key_package_counts(
        &self,
        acc: AccountId,
        dev: DeviceId,
    ) -> AuthResult<(u32, bool)> {
        let n = count(
            &*self.kv,
            &store::one_time_kps(acc, dev),
            self.config.max_stored_prekeys,
        )
        .await?;
        let lr = self
            .kv
            .get(&store::last_resort_kp(acc, dev))
            .await?
            .is_some();
        Ok((n, lr))
    }

    pub async fn upload_key_packages(
        &self,
        acc: AccountId,
        dev: DeviceId,
        packages: Vec<Vec<u8>>,
        last_resort: bool,
    ) -> AuthResult<(u32, bool)> {
        // Rated because each upload appends to the audit log.
        take(&self.limits.prekey_upload_per_device, &(acc, dev))?;
        let dkey = store::device(acc, dev);
        if self.kv.get(&dkey).await?.is_none() {
            return Err(AuthError::DeviceRemoved);
        }
        if packages.len() > MAX_BATCH {
            return Err(AuthError::PayloadTooLarge {
                field: "key_packages".into(),
                limit: MAX_BATCH,
            });
        }
        if packages.is_empty() || (last_resort && packages.len() != 1) {
            return Err(AuthError::field(
                "key_packages",
                if last_resort {
                    "must hold exactly one KeyPackage when last_resort is set"
                } else {
                    "must not be empty"
                },
            ));
        }
        let policy = KeyPackagePolicy {
            require_last_resort: Some(last_resort),
            ..self.kp_policy.clone()
        };
        let identity = format!("{acc}.{dev}");
        let pinned = store::get::<PinnedMlsKey>(&*self.kv, &pin_key(acc, dev)).await?;
        let mut signature_key = pinned.as_ref().map(|(p, _)| p.signature_key.clone());
        let mut txn = Txn::new().require_exists(dkey);
        for (i, bytes) in packages.iter().enumerate() {
            let field = format!("key_packages[{i}]");
            if bytes.len() > MAX_KEY_PACKAGE_BYTES {
                return Err(AuthError::PayloadTooLarge {
                    field,
                    limit: MAX_KEY_PACKAGE_BYTES,
                });
            }
            let summary =
                validate_key_package(bytes, &policy).map_err(|e| AuthError::InvalidMls {
                    field: field.clone(),
                    reason: e.to_string(),
                })?;
            if summary.identity != identity.as_bytes() {
                return Err(AuthError::MlsIdentityMismatch {
                    field,
                    reason: "credential identity must be the uploading device's address <account_id>.<device_id>".into(),
                });
            }
            match &signature_key {
                Some(k) if *k != summary.signature_key => {
                    return Err(AuthError::MlsIdentityMismatch {
                        field,
                        reason: if pinned.is_some() {
                            "signature key differs from the device's pinned MLS signature key"
                        } else {
                            "every KeyPackage of an upload must carry the same signature key"
                        }
                        .into(),
                    });
                }
                Some(_) => {}
                None => signature_key = Some(summary.signature_key.clone()),
            }
            let stored = encode(&StoredKeyPackage {
                bytes: bytes.clone(),
                not_after: summary.not_after,
            });
            let key = if last_resort {
                store::last_resort_kp(acc, dev)
            } else {
                store::one_time_kp(acc, dev, &summary.key_package_ref)
            };
            txn = txn.put(key, stored);
        }
        // The first upload pins the key; a concurrent first upload with another key loses.
        txn = match (&pinned, signature_key) {
            (Some((_, raw)), _) => txn.require_equals(pin_key(acc, dev), raw.clone()),
            (None, Some(k)) => txn.require_absent(pin_key(acc, dev)).put(
                pin_key(acc, dev),
                encode(&PinnedMlsKey { signature_key: k }),
            ),
            (None, None) => txn,
        };
        let (n, _) = self.key_package_counts(acc, dev).await?;
        if !last_resort && n as usize + packages.len() > self.config.max_stored_prekeys as usize {
            return Err(AuthError::QuotaExceeded {
                quota: "key_packages",
            });
        }
        if !store::commit(&*self.kv, txn).await? {
            if self.kv.get(&store::device(acc, dev)).await?.is_some() {
                return Err(AuthError::MlsIdentityMismatch {
                    field: "key_packages".into(),
                    reason: "another upload pinned a different MLS signature key first".into(),
                });
            }
            return Err(AuthError::DeviceRemoved);
        }
        self.audit(
            AuditKind::KeyPackagesUploaded,
            acc,
            Some(dev),
            format!("count={} last_resort={last_resort}", packages.len()),
        )
        .await?;
        self.key_package_counts(acc, dev).await
    }

    /// ClaimKeyPackages: one per listed device (every device when `device_ids` is empty),
    /// never the caller's own.
    pub async fn claim_key_packages(
        &self,
        caller_acc: AccountId,
        caller_dev: DeviceId,
        acc: AccountId,
        device_ids: &[DeviceId],
    ) -> AuthResult<(Vec<Claimed>, Vec<DeviceId>)> {
        take(&self.limits.prekey_fetch_per_target, &(caller_acc, acc))?;
        if self.kv.get(&store::account(acc)).await?.is_none() {
            return Err(AuthError::NotFound {
                resource: "account",
            });
        }
        let devices = self.devices(acc).await?;
        let mut claimed = Vec::new();
        let mut unavailable = Vec::new();
        for (id, _) in devices {
            if (acc == caller_acc && id == caller_dev)
                || (!device_ids.is_empty() && !device_ids.contains(&id))
            {
                continue;
            }
            match self.claim_one_kp(acc, id).await? {
                Some((bytes, last_resort)) => {
                    let signature_key = self.mls_signature_key(acc, id).await?.unwrap_or_default();
                    claimed.push(Claimed {
                        device_id: id,
                        bytes,
                        last_resort,
                        signature_key,
                    });
                }
                None => unavailable.push(id),
            }
            self.check_low(acc, id).await?;
        }
        Ok((claimed, unavailable))
    }

    async fn claim_one_kp(
        &self,
        acc: AccountId,
        dev: DeviceId,
    ) -> AuthResult<Option<(Vec<u8>, bool)>> {
        let now_s = token_now_s();
        // Expired one-time packages are discarded on the way.
        let mut found = None;
        while let Some(raw) = claim_first(&*self.kv, &store::one_time_kps(acc, dev)).await? {
            let kp: StoredKeyPackage = decode(&raw)?;
            if kp.not_after > now_s {
                found = Some((kp.bytes, false));
                break;
            }
        }
        if found.is_none() {
            found = store::get::<StoredKeyPackage>(&*self.kv, &store::last_resort_kp(acc, dev))
                .await?
                .map(|(kp, _)| (kp.bytes, true));
        }
        if let Some((bytes, _)) = &found {
            self.record_claim(acc, dev, bytes).await?;
        }
        Ok(found)
    }

    /// Records that the package was handed out (see the module docs) and prunes a few expired
    /// records of the device.
    async fn record_claim(&self, acc: AccountId, dev: DeviceId, bytes: &[u8]) -> AuthResult<()> {
        let kp_ref = key_package_ref(bytes).map_err(|e| AuthError::InvalidMls {
            field: "key_package".into(),
            reason: e.to_string(),
        })?;
        let now = self.now_ms();
        let record = ClaimRecord {
            expires_ms: now.saturating_add(CLAIM_TTL_MS),
        };
        let expired = self
            .kv
            .scan(
                KeyRange::prefix(&claims_prefix(acc, dev)),
                Direction::Forward,
                CLAIM_PRUNE_BATCH * 4,
            )
            .await?
            .into_iter()
            .filter(|p| p.key != claim_key(acc, dev, &kp_ref))
            .filter(|p| decode::<ClaimRecord>(&p.value).is_ok_and(|c| c.expires_ms <= now))
            .take(CLAIM_PRUNE_BATCH);
        let txn = expired.fold(
            Txn::new().put(claim_key(acc, dev, &kp_ref), encode(&record)),
            |t, p| t.require_equals(p.key.clone(), p.value).delete(p.key),
        );
        if !store::commit(&*self.kv, txn).await? {
            // A concurrent claim pruned the same records: the claim itself must still be kept.
            let txn = Txn::new().put(claim_key(acc, dev, &kp_ref), encode(&record));
            store::commit(&*self.kv, txn).await?;
        }
        Ok(())
    }

    /// GetMlsSignatureKeys: the pinned keys of every device of `acc`.
    pub async fn mls_signature_keys(
        &self,
        caller_acc: AccountId,
        acc: AccountId,
    ) -> AuthResult<Vec<(DeviceId, Vec<u8>)>> {
        take(&self.limits.prekey_fetch_per_target, &(caller_acc, acc))?;
        if self.kv.get(&store::account(acc)).await?.is_none() {
            return Err(AuthError::NotFound {
                resource: "account",
            });
        }
        let mut keys = Vec::new();
        for (id, _) in self.devices(acc).await? {
            if let Some(k) = self.mls_signature_key(acc, id).await? {
                keys.push((id, k));
            }
        }
        Ok(keys)
    }

    /// The device's pinned MLS signature key.
    pub async fn mls_signature_key(
        &self,
        acc: AccountId,
        dev: DeviceId,
    ) -> AuthResult<Option<Vec<u8>>> {
        Ok(store::get::<PinnedMlsKey>(&*self.kv, &pin_key(acc, dev))
            .await?
            .map(|(p, _)| p.signature_key))
    }

    /// Whether the device's KeyPackage with this ref was handed out and its record is current.
    pub async fn key_package_claimed(
        &self,
        acc: AccountId,
        dev: DeviceId,
        kp_ref: &[u8],
    ) -> AuthResult<bool> {
        let now = self.now_ms();
        Ok(
            store::get::<ClaimRecord>(&*self.kv, &claim_key(acc, dev, kp_ref))
                .await?
                .is_some_and(|(c, _)| c.expires_ms > now),
        )
    }
}
