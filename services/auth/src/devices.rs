//! Devices: list, rename, remove, and linking new devices with single-use codes.

use std::net::IpAddr;

use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_storage::record::encode;
use guardyn_storage::{Txn, TxnOutcome};
use zeroize::Zeroizing;

use crate::accounts::NewDevice;
use crate::audit::AuditKind;
use crate::core::{Core, IssuedTokens};
use crate::error::{AuthError, AuthResult};
use crate::events::{DeviceLinked, DeviceRemoved};
use crate::limits::take;
use crate::model::{Device, LinkCode, SessionState};
use crate::prekeys::add_upload;
use crate::secrets;
use crate::store;

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

    pub async fn remove_device(&self, acc: AccountId, dev: DeviceId) -> AuthResult<()> {
        let key = store::device(acc, dev);
        loop {
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
                .delete(key.clone());
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
        self.events
            .publish(&DeviceRemoved {
                account: acc,
                device: dev,
            })
            .await;
        self.audit(AuditKind::DeviceRemoved, acc, Some(dev), "")
            .await
    }

    /// CreateLinkCode: `(code, expires at ms)`.
    pub async fn create_link_code(
        &self,
        acc: AccountId,
        dev: DeviceId,
    ) -> AuthResult<(Zeroizing<String>, u64)> {
        take(&self.limits.link_code_per_account, &acc)?;
        let akey = store::account(acc);
        for _ in 0..store::MAX_ATTEMPTS {
            let (mut account, raw) = self.account(acc).await?;
            let count = self.devices(acc).await?.len();
            if count >= self.config.max_devices as usize
                || DeviceId::new(account.next_device_id).is_none()
            {
                return Err(AuthError::DeviceLimit);
            }
            let code = secrets::random_token();
            let hash = secrets::sha256(code.as_bytes());
            let expires_ms = self.now_ms() + self.config.link_code_ttl_secs * 1000;
            let mut txn = Txn::new().require_equals(akey.clone(), raw);
            if let Some(old) = account.link_code.replace(hash) {
                txn = txn.delete(store::link_code(&old));
            }
            let record = LinkCode {
                account_id: acc,
                created_by: dev,
                expires_ms,
            };
            txn = txn
                .put(akey.clone(), encode(&account))
                .put(store::link_code(&hash), encode(&record));
            if store::commit(&*self.kv, txn).await? {
                return Ok((code, expires_ms));
            }
        }
        Err(AuthError::Contention)
    }

    /// LinkDevice: `(account, new device id, tokens)`.
    pub async fn link_device(
        &self,
        code: &str,
        device: NewDevice,
        addr: IpAddr,
    ) -> AuthResult<(AccountId, DeviceId, IssuedTokens)> {
        take(&self.limits.login_per_address, &addr)?;
        let hash = secrets::sha256(code.as_bytes());
        let lkey = store::link_code(&hash);
        let (acc, created_by, dev) = loop {
            let Some((link, lraw)) = store::get::<LinkCode>(&*self.kv, &lkey).await? else {
                return Err(AuthError::CodeExpired);
            };
            if link.expires_ms <= self.now_ms() {
                self.kv.delete(&lkey).await?;
                return Err(AuthError::CodeExpired);
            }
            device.validate("device.")?;
            let acc = link.account_id;
            let akey = store::account(acc);
            let (mut account, araw) = self
                .account(acc)
                .await
                .map_err(|_| AuthError::CodeExpired)?;
            let count = self.devices(acc).await?.len();
            let Some(dev) = DeviceId::new(account.next_device_id)
                .filter(|_| count < self.config.max_devices as usize)
            else {
                return Err(AuthError::DeviceLimit);
            };
            account.next_device_id += 1;
            account.link_code = None;
            let dkey = store::device(acc, dev);
            let txn = Txn::new()
                .require_equals(lkey.clone(), lraw)
                .require_equals(akey.clone(), araw)
                .require_absent(dkey.clone())
                .delete(lkey.clone())
                .put(akey, encode(&account))
                .put(dkey, encode(&device.record(self.now_ms())));
            let txn = add_upload(txn, acc, dev, &device.prekeys).0;
            match self.kv.commit(txn).await? {
                TxnOutcome::Committed => break (acc, link.created_by, dev),
                TxnOutcome::Conflict { .. } => continue,
            }
        };
        let tokens = self.start_session(acc, dev).await?;
        self.events
            .publish(&DeviceLinked {
                account: acc,
                device: dev,
                linked_by: created_by,
                device_name: device.name.clone(),
            })
            .await;
        self.audit(
            AuditKind::DeviceLinked,
            acc,
            Some(dev),
            format!("by device {created_by} from {addr}"),
        )
        .await?;
        Ok((acc, dev, tokens))
    }
}
