//! The in-process [`DeviceDirectory`] seam: messaging checks envelope sets against the
//! accounts' current devices.

use std::sync::Arc;

use async_trait::async_trait;
use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_common::mesh::{DeviceDirectory, DeviceEntry, MeshError};

use crate::core::Core;
use crate::error::AuthError;
use crate::store;

/// Auth's device list, served in-process.
#[derive(Clone, Debug)]
pub struct AuthDirectory(pub(crate) Arc<Core>);

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
        if self
            .0
            .kv
            .get(&store::account(acc))
            .await
            .map_err(|e| unavailable(e.into()))?
            .is_none()
        {
            return Ok(None);
        }
        let devices = self.0.devices(acc).await.map_err(unavailable)?;
        Ok(Some(
            devices
                .into_iter()
                .map(|(device_id, d)| DeviceEntry {
                    device_id: device_id.get(),
                    registration_id: d.registration_id,
                })
                .collect(),
        ))
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
            self.0.mls_signature_key(acc, dev).await.map_err(|e| {
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
        self.0
            .key_package_claimed(acc, dev, key_package_ref)
            .await
            .map_err(|e| MeshError::Call(tonic::Status::unavailable(format!("directory: {e}"))))
    }
}
