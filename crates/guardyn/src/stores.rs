//! The one selector from `storage.engine` to a storage handle.

use anyhow::Context as _;
use guardyn_storage::Stores;
use guardyn_storage_embedded::EmbeddedStore;

use crate::config::{StorageConfig, StorageEngine};

/// Open the configured engine. Everything above this function sees only [`Stores`].
pub async fn open(config: &StorageConfig) -> anyhow::Result<Stores> {
    match config.engine {
        StorageEngine::Embedded => {
            let store = EmbeddedStore::open(&config.data_dir, Default::default())
                .await
                .with_context(|| {
                    format!("opening embedded storage in {}", config.data_dir.display())
                })?;
            Ok(Stores::new(store.clone(), store.clone()).closing(store))
        }
    }
}
