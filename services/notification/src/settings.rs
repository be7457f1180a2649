//! A device's notification settings.

use guardyn_common::{AccountId, DeviceId};
use guardyn_storage::record::encode;

use crate::core::Core;
use crate::error::NotificationError;
use crate::model::Settings;
use crate::store::{self, SettingsRecord};

impl Core {
    /// Replace the device's settings; returns what is stored.
    pub async fn set_settings(
        &self,
        account: AccountId,
        device: DeviceId,
        settings: Settings,
    ) -> Result<Settings, NotificationError> {
        let record = SettingsRecord::from(settings);
        self.kv
            .put(&store::settings_key(account, device), &encode(&record))
            .await?;
        Ok(record.into())
    }

    /// The device's settings; ALERT and not muted when never set.
    pub async fn settings(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<Settings, NotificationError> {
        Ok(self
            .read::<SettingsRecord>(&store::settings_key(account, device))
            .await?
            .map(|s| s.value.into())
            .unwrap_or_default())
    }
}
