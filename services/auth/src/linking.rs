//! Linking a new device, approved by an existing one: the new device files a request with its
//! public keys and shows the code; a signed-in device of the account that recently stepped up
//! approves it; the new device then collects its session with the code and a secret it kept.
//! A stolen access token cannot add a device (no step-up), and a glimpsed code cannot collect
//! the session (no secret).

use std::net::IpAddr;
use std::time::Duration;

use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_storage::Txn;
use guardyn_storage::record::encode;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::accounts::NewDevice;
use crate::core::{Core, IssuedTokens};
use crate::error::{AuthError, AuthResult};
use crate::events::DeviceLinked;
use crate::limits::take;
use crate::model::{Device, DeviceNotice, LinkApproval, LinkRequest, NoticeKind, PendingDevice};
use crate::prekeys::{PreKeyUpload, add_upload};
use crate::secrets;
use crate::store;
use guardyn_audit::AuditKind;

impl From<NewDevice> for PendingDevice {
    fn from(d: NewDevice) -> Self {
        Self {
            name: d.name,
            registration_id: d.registration_id,
            identity_key: d.identity_key,
            signed: d.prekeys.signed,
            last_resort_kem: d.prekeys.last_resort_kem,
            kem: d.prekeys.kem,
            ec: d.prekeys.ec,
        }
    }
}

impl From<PendingDevice> for NewDevice {
    fn from(d: PendingDevice) -> Self {
        Self {
            name: d.name,
            registration_id: d.registration_id,
            identity_key: d.identity_key,
            prekeys: PreKeyUpload {
                signed: d.signed,
                last_resort_kem: d.last_resort_kem,
                kem: d.kem,
                ec: d.ec,
            },
        }
    }
}

/// How soon a new device should ask again while its request waits.
const POLL_AFTER: Duration = Duration::from_secs(1);

/// RequestLink's answer: both secrets go to the new device only.
#[derive(Debug)]
pub struct LinkTicket {
    pub code: Zeroizing<String>,
    pub secret: Zeroizing<String>,
    pub expires_ms: u64,
}

/// ApproveLink's answer: the device now on the account.
#[derive(Debug)]
pub struct Approved {
    pub device_id: DeviceId,
    pub device: Device,
}

impl Core {
    /// RequestLink: store the new device's keys under a fresh code.
    pub async fn request_link(&self, device: NewDevice, addr: IpAddr) -> AuthResult<LinkTicket> {
        take(&self.limits.login_per_address, &addr)?;
        device.validate("device.")?;
        let code = secrets::random_token();
        let secret = secrets::random_token();
        let expires_ms = self.now_ms() + self.config.link_code_ttl_secs * 1000;
        let request = LinkRequest {
            device: device.into(),
            secret_hash: secrets::sha256(secret.as_bytes()),
            expires_ms,
            approved: None,
        };
        let key = store::link_code(&secrets::sha256(code.as_bytes()));
        // 256 random bits: a collision means a broken RNG, and refusing beats overwriting.
        let txn = Txn::new()
            .require_absent(key.clone())
            .put(key, encode(&request));
        if !store::commit(&*self.kv, txn).await? {
            return Err(AuthError::Contention);
        }
        Ok(LinkTicket {
            code,
            secret,
            expires_ms,
        })
    }

    /// ApproveLink by device `by` of `acc` (the caller checked the step-up): register the
    /// requesting device on the account and tell every other device.
    pub async fn approve_link(
        &self,
        acc: AccountId,
        by: DeviceId,
        code: &str,
    ) -> AuthResult<Approved> {
        take(&self.limits.link_code_per_account, &acc)?;
        let lkey = store::link_code(&secrets::sha256(code.as_bytes()));
        let akey = store::account(acc);
        for _ in 0..store::MAX_ATTEMPTS {
            let Some((mut req, lraw)) = store::get::<LinkRequest>(&*self.kv, &lkey).await? else {
                return Err(AuthError::LinkCodeUnknown);
            };
            let now = self.now_ms();
            if req.approved.is_some() || req.expires_ms <= now {
                return Err(AuthError::LinkCodeUnknown);
            }
            let (mut account, araw) = self.account(acc).await?;
            let devices = self.devices(acc).await?;
            if devices.len() >= self.max_devices() {
                return Err(AuthError::DeviceLimit);
            }
            let taken: Vec<DeviceId> = devices.iter().map(|(id, _)| *id).collect();
            let Some(free) = self
                .free_device_id(
                    acc,
                    &taken,
                    req.device.registration_id,
                    account.next_device_id,
                )
                .await?
            else {
                return Err(AuthError::DeviceLimit);
            };
            let dev = free.id;
            account.next_device_id = account.next_device_id.max(dev.get() + 1);
            account.device_set = account.device_set.wrapping_add(1);
            let new = NewDevice::from(req.device.clone());
            let device = new.record(now);
            req.approved = Some(LinkApproval {
                account_id: acc,
                device_id: dev,
                approved_by: by,
            });
            // The new device gets a full code lifetime to collect, however late the approval.
            req.expires_ms = now + self.config.link_code_ttl_secs * 1000;
            let dkey = store::device(acc, dev);
            let txn = Txn::new()
                .require_equals(lkey.clone(), lraw)
                .require_equals(akey.clone(), araw)
                .put(lkey.clone(), encode(&req))
                .put(akey.clone(), encode(&account))
                .put(dkey, encode(&device));
            let txn = free.claim(txn, acc);
            let txn = add_upload(txn, acc, dev, &new.prekeys).0;
            let notice = DeviceNotice {
                kind: NoticeKind::Linked,
                device_id: dev,
                device_name: device.name.clone(),
                identity_key: device.identity_key.clone(),
                by,
                at_ms: now,
            };
            let receivers: Vec<DeviceId> = devices.iter().map(|(id, _)| *id).collect();
            let txn = self.with_notices(txn, acc, &receivers, &notice).await?;
            if !store::commit(&*self.kv, txn).await? {
                continue;
            }
            self.events
                .publish(&DeviceLinked {
                    account: acc,
                    device: dev,
                    linked_by: by,
                    device_name: device.name.clone(),
                })
                .await;
            self.audit(
                AuditKind::DeviceLinked,
                acc,
                Some(dev),
                format!("approved by device {by}"),
            )
            .await?;
            return Ok(Approved {
                device_id: dev,
                device,
            });
        }
        Err(AuthError::Contention)
    }

    /// LinkDevice: once approved, the new device's first session (exactly once).
    pub async fn link_device(
        &self,
        code: &str,
        secret: &str,
        addr: IpAddr,
    ) -> AuthResult<(AccountId, DeviceId, IssuedTokens)> {
        take(&self.limits.login_per_address, &addr)?;
        let lkey = store::link_code(&secrets::sha256(code.as_bytes()));
        let Some((req, lraw)) = store::get::<LinkRequest>(&*self.kv, &lkey).await? else {
            return Err(AuthError::CodeExpired);
        };
        let presented = secrets::sha256(secret.as_bytes());
        if req.expires_ms <= self.now_ms() || !bool::from(req.secret_hash.ct_eq(&presented)) {
            return Err(AuthError::CodeExpired);
        }
        let Some(approval) = req.approved else {
            return Err(AuthError::LinkPending {
                retry_after: POLL_AFTER,
            });
        };
        // Single use: only the caller that deletes the request gets the session.
        let txn = Txn::new().require_equals(lkey.clone(), lraw).delete(lkey);
        if !store::commit(&*self.kv, txn).await? {
            return Err(AuthError::CodeExpired);
        }
        let tokens = self
            .start_session(approval.account_id, approval.device_id, false)
            .await?;
        Ok((approval.account_id, approval.device_id, tokens))
    }
}
