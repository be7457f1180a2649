//! The one selector from `storage.engine` and `storage.blob` to a storage handle.

use std::sync::Arc;

use anyhow::Context as _;
use guardyn_storage::{BlobStore, Stores};
use guardyn_storage_blob::{FsBlobStore, S3BlobStore, S3Config};
use guardyn_storage_embedded::{EmbeddedConfig, EmbeddedStore};
use guardyn_storage_postgres::PostgresStore;
use guardyn_storage_tikv::TikvStore;

use crate::config::{BlobEngine, StorageConfig, StorageEngine};

/// Open the configured engines. Everything above this function sees only [`Stores`].
pub async fn open(config: &StorageConfig) -> anyhow::Result<Stores> {
    let blob = open_blob(config).await?;
    match config.engine {
        StorageEngine::Embedded => {
            let store = EmbeddedStore::open(
                &config.data_dir,
                EmbeddedConfig {
                    cache_size_bytes: Some(config.cache_mib as usize * 1024 * 1024),
                    ..EmbeddedConfig::default()
                },
            )
            .await
            .with_context(|| {
                format!("opening embedded storage in {}", config.data_dir.display())
            })?;
            Ok(Stores::new(store.clone(), store.clone(), blob)
                .with_joint(store.clone())
                .closing(store))
        }
        StorageEngine::Postgres => {
            let pg = config
                .postgres
                .as_ref()
                .context("storage.postgres is required when storage.engine = \"postgres\"")?;
            let store = PostgresStore::open(pg)
                .await
                .with_context(|| format!("opening PostgreSQL storage ({pg:?})"))?;
            Ok(Stores::new(store.clone(), store.clone(), blob).closing(store))
        }
        StorageEngine::TikvScylla => {
            let (Some(tikv), Some(scylla)) = (&config.tikv, &config.scylla) else {
                anyhow::bail!(
                    "storage.tikv and storage.scylla are required when storage.engine = \"tikv+scylla\""
                );
            };
            let kv = TikvStore::open(tikv)
                .await
                .with_context(|| format!("opening TiKV (PD {:?})", tikv.pd_endpoints))?;
            let log = guardyn_storage_scylla::open_shared(scylla)
                .await
                .with_context(|| format!("opening ScyllaDB (nodes {:?})", scylla.nodes))?;
            Ok(Stores::new(Arc::new(kv), log, blob))
        }
    }
}

async fn open_blob(config: &StorageConfig) -> anyhow::Result<Arc<dyn BlobStore>> {
    match config.blob.engine {
        BlobEngine::Fs => {
            let dir = config.blob_dir();
            let store = FsBlobStore::open(&dir)
                .await
                .with_context(|| format!("opening blob storage in {}", dir.display()))?;
            Ok(Arc::new(store))
        }
        BlobEngine::S3 => {
            let b = &config.blob;
            let store = S3BlobStore::open(&S3Config {
                endpoint: b.endpoint.clone(),
                bucket: b.bucket.clone(),
                region: b.region.clone(),
                access_key_id: b.access_key_id.clone(),
                secret_access_key: b.secret_access_key.clone(),
                allow_http: b.allow_http,
            })
            .with_context(|| format!("opening S3 blob storage (bucket {})", b.bucket))?;
            Ok(Arc::new(store))
        }
    }
}
