//! Key directory: MLS KeyPackages per device.
//!
//! Every upload is fully validated (`guardyn_crypto::mls::server::validate_key_package`:
//! encoding, ciphersuite, signatures, lifetime) and its BasicCredential identity must be the
//! uploader's device address `<account_id>.<device_id>` (guardyn.common.v1.DeviceAddress).
//! One-time packages are stored under their KeyPackageRef and consumed on claim; the
//! last-resort package is handed out (and kept) only when none remain.

use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_crypto::mls::{KeyPackagePolicy, validate_key_package};
use guardyn_storage::Txn;
use guardyn_storage::record::{decode, encode};

use crate::audit::AuditKind;
use crate::core::{Core, token_now_s};
use crate::error::{AuthError, AuthResult};
use crate::limits::take;
use crate::model::StoredKeyPackage;
use crate::prekeys::{MAX_BATCH, claim_first, count};
use crate::store;

pub const MAX_KEY_PACKAGE_BYTES: usize = 64 * 1024;

/// A claimed KeyPackage.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub device_id: DeviceId,
    pub bytes: Vec<u8>,
    pub last_resort: bool,
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
                return Err(AuthError::InvalidMls {
                    field,
                    reason: "credential identity must be the uploading device's address <account_id>.<device_id>".into(),
                });
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
        let (n, _) = self.key_package_counts(acc, dev).await?;
        if !last_resort && n as usize + packages.len() > self.config.max_stored_prekeys as usize {
            return Err(AuthError::QuotaExceeded {
                quota: "key_packages",
            });
        }
        if !store::commit(&*self.kv, txn).await? {
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
                Some((bytes, last_resort)) => claimed.push(Claimed {
                    device_id: id,
                    bytes,
                    last_resort,
                }),
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
        while let Some(raw) = claim_first(&*self.kv, &store::one_time_kps(acc, dev)).await? {
            let kp: StoredKeyPackage = decode(&raw)?;
            if kp.not_after > now_s {
                return Ok(Some((kp.bytes, false)));
            }
        }
        Ok(
            store::get::<StoredKeyPackage>(&*self.kv, &store::last_resort_kp(acc, dev))
                .await?
                .map(|(kp, _)| (kp.bytes, true)),
        )
    }
}
