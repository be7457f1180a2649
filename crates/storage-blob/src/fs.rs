//! [`FsBlobStore`]: objects as files under one root directory.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use guardyn_storage::{BlobStore, ObjectMeta, StorageError, StorageResult};
use object_store::local::LocalFileSystem;

use crate::object::{Flavour, ObjectBlobStore};

/// A [`BlobStore`] in a local directory: key `a/b/c` is the file `<root>/a/b/c`.
///
/// Durability: `object_store` writes the bytes to a staging file next to the target
/// (`<key>#<n>`), `fsync`s it, renames it over the target and `fsync`s the parent directory
/// (and every directory it created on the way), so a `put` that returned `Ok` survives a
/// crash and readers see the old or the new file, never a mix. Staging files a crash left
/// behind are never listed or read (`#` is not a key character).
///
/// Because a key is a file, a key cannot also be a directory: with an object at `a/b`, a put
/// to `a/b/c` fails (and the reverse). Guardyn's key layouts never do this.
#[derive(Clone)]
pub struct FsBlobStore {
    root: PathBuf,
    inner: ObjectBlobStore,
}

impl FsBlobStore {
    /// Opens (creating it when missing) the directory `root`.
    pub async fn open(root: impl AsRef<Path>) -> StorageResult<Self> {
        let root = root.as_ref().to_path_buf();
        let dir = root.clone();
        let store = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| {
                StorageError::Backend(format!("creating blob directory {}: {e}", dir.display()))
            })?;
            LocalFileSystem::new_with_prefix(&dir)
                .map(|fs| fs.with_fsync(true))
                .map_err(|e| {
                    StorageError::Backend(format!("opening blob directory {}: {e}", dir.display()))
                })
        })
        .await
        .map_err(|e| StorageError::Backend(format!("blob open task failed: {e}")))??;
        Ok(Self {
            root,
            inner: ObjectBlobStore::new(Arc::new(store), Flavour::Local),
        })
    }

    /// The directory the objects live in.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl std::fmt::Debug for FsBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsBlobStore")
            .field("root", &self.root)
            .finish()
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        self.inner.put(key, data).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> StorageResult<Option<Bytes>> {
        self.inner.get_range(key, range).await
    }

    async fn size(&self, key: &str) -> StorageResult<Option<u64>> {
        self.inner.size(key).await
    }

    async fn delete(&self, key: &str) -> StorageResult<()> {
        self.inner.delete(key).await
    }

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
}
