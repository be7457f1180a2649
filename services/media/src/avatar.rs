//! Public avatars: stored as the server's own re-encoding ([`crate::avatar_image`]), one per
//! account, readable by any authenticated account, removed with the account.

use bytes::Bytes;
use guardyn_common::AccountId;
use guardyn_storage::record::encode;

use crate::avatar_image::{self, AvatarError, AvatarLimits};
use crate::core::Core;
use crate::error::MediaError;
use crate::store::{self, AvatarRecord};

/// The stored avatar, as read.
#[derive(Debug)]
pub(crate) struct StoredAvatar {
    pub png: Bytes,
    pub updated_ms: u64,
}

impl Core {
    /// Decode, re-encode and store `image` as `account`'s avatar; returns the store time.
    pub async fn set_avatar(&self, account: AccountId, image: Vec<u8>) -> Result<u64, MediaError> {
        let limits = AvatarLimits::default();
        // Decoding is CPU-bound and bounded by the limits; keep it off the async workers.
        let avatar = tokio::task::spawn_blocking(move || avatar_image::process(&image, limits))
            .await
            .map_err(|_| MediaError::invalid("image", "the image does not decode"))?
            .map_err(|e| match e {
                AvatarError::TooLarge { max } => {
                    MediaError::too_large("image", format!("at most {max} bytes"))
                }
                other => MediaError::invalid("image", other.to_string()),
            })?;
        let now = self.clock.now_ms();
        self.blob
            .put(&store::avatar_object(account, false), avatar.png.into())
            .await?;
        self.blob
            .put(
                &store::avatar_object(account, true),
                avatar.thumbnail_png.into(),
            )
            .await?;
        self.kv
            .put(
                &store::avatar_key(account),
                &encode(&AvatarRecord { updated_ms: now }),
            )
            .await?;
        Ok(now)
    }

    pub async fn get_avatar(
        &self,
        account: AccountId,
        thumbnail: bool,
    ) -> Result<StoredAvatar, MediaError> {
        let record = self
            .read::<AvatarRecord>(&store::avatar_key(account))
            .await?
            .ok_or(MediaError::AvatarNotFound)?;
        let png = self
            .blob
            .get_range(&store::avatar_object(account, thumbnail), 0..u64::MAX)
            .await?
            .ok_or(MediaError::AvatarNotFound)?;
        Ok(StoredAvatar {
            png,
            updated_ms: record.value.updated_ms,
        })
    }

    /// Remove the avatar (record first, so a crash in between leaves no visible avatar).
    pub async fn delete_avatar(&self, account: AccountId) -> Result<(), MediaError> {
        self.kv.delete(&store::avatar_key(account)).await?;
        for thumbnail in [false, true] {
            self.blob
                .delete(&store::avatar_object(account, thumbnail))
                .await?;
        }
        Ok(())
    }
}
