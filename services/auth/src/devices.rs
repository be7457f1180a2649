//! Devices: list, rename, remove (linking is in [`crate::linking`]).

use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_storage::Txn;
use guardyn_storage::record::encode;

use crate::core::Core;
use crate::device_ids;
use crate::error::{AuthError, AuthResult};
use crate::events::DeviceRemoved;
use crate::model::{Device, DeviceNotice, NoticeKind, SessionState};
use crate::store;
use guardyn_audit::AuditKind;

/// Check a device name: 1..64 characters.
pub fn check_name(name: &str, field: &str) -> AuthResult<String> {
    let name = name.trim();
    let n = name.chars().count();
    if !(1..=64).contains(&n) || name.chars().any(char::is_control) {
        return Err(AuthError::field(
            field,
            "must be 1 to 64 characters without control characters",
        ));
    }
    Ok(name.to_owned())
}

impl Core {
    pub async fn rename_device(
        &self,
        acc: AccountId,
        dev: DeviceId,
        name: String,
    ) -> AuthResult<Device> {
        let key = store::device(acc, dev);
        for _ in 0..store::MAX_ATTEMPTS {
            let Some((mut d, raw)) = store::get::<Device>(&*self.kv, &key).await? else {
                return Err(AuthError::NotFound { resource: "device" });
            };
            d.name = name.clone();
            let txn = Txn::new()
                .require_equals(key.clone(), raw)
                .put(key.clone(), encode(&d));
            if store::commit(&*self.kv, txn).await? {
                return Ok(d);
            }
        }
        Err(AuthError::Contention)
    }

    /// RemoveDevice `dev` of `acc`, by device `by` (the caller checked the step-up).
    pub async fn remove_device(
        &self,
        acc: AccountId,
        dev: DeviceId,
        by: DeviceId,
    ) -> AuthResult<()> {
        let key = store::device(acc, dev);
        let akey = store::account(acc);
        loop {
            // Read before the devices: a removal between the two then fails the condition.
            let (mut account, araw) = self.account(acc).await?;
            account.device_set = account.device_set.wrapping_add(1);
            let devices = self.devices(acc).await?;
            let Some((_, d)) = devices.iter().find(|(id, _)| *id == dev) else {
                return Err(AuthError::NotFound { resource: "device" });
            };
            if devices.len() == 1 {
                return Err(AuthError::LastDevice);
            }
            // Conditioned on another device still existing, so two concurrent removals cannot
            // take the account to zero devices.
            let Some((other, _)) = devices.iter().find(|(id, _)| *id != dev) else {
                return Err(AuthError::LastDevice);
            };
            let txn = Txn::new()
                .require_equals(key.clone(), encode(d))
                .require_exists(store::device(acc, *other))
                .require_equals(akey.clone(), araw)
                .put(akey.clone(), encode(&account))
                .delete(key.clone());
            let txn = device_ids::retire(txn, acc, dev, self.now_ms(), d.registration_id);
            let notice = DeviceNotice {
                kind: NoticeKind::Removed,
                device_id: dev,
                device_name: d.name.clone(),
                identity_key: Vec::new(),
                by,
                at_ms: self.now_ms(),
            };
            let others: Vec<DeviceId> = devices
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| *id != dev)
                .collect();
            let txn = self.with_notices(txn, acc, &others, &notice).await?;
            if store::commit(&*self.kv, txn).await? {
                break;
            }
        }
        for (sid, s) in self.account_sessions(acc).await? {
            if s.device_id == dev && s.state == SessionState::Live {
                self.revoke_session(&sid, SessionState::DeviceRemoved)
                    .await?;
            }
        }
        self.delete_prefix(&store::prekeys(acc, dev)).await?;
        self.delete_prefix(&store::key_packages(acc, dev)).await?;
        self.delete_prefix(&store::notices(acc, dev)).await?;
        self.events
            .publish(&DeviceRemoved {
                account: acc,
                device: dev,
            })
            .await;
        self.audit(AuditKind::DeviceRemoved, acc, Some(dev), "")
            .await
    }
}
