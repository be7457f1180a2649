//! The contract on top of any `object_store` backend: key validation, error mapping, ranges
//! and prefix listings.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt as _;
use guardyn_storage::{
    MAX_BLOB_KEY_LEN, MAX_BLOB_SEGMENT_LEN, MAX_OBJECT_LEN, ObjectMeta, StorageError, StorageResult,
};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

/// Where the objects live: decides how generic failures are reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// A local directory: an I/O failure is a backend error.
    Local,
    /// A remote service: a failure (network, timeout, 5xx after retries) may be retried.
    Remote,
}

#[derive(Clone, Debug)]
pub(crate) struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
    flavour: Flavour,
}

impl ObjectBlobStore {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, flavour: Flavour) -> Self {
        Self { store, flavour }
    }

    pub(crate) async fn put(&self, key: &str, data: Bytes) -> StorageResult<()> {
        let path = key_path(key)?;
        if data.len() > MAX_OBJECT_LEN {
            return Err(StorageError::InvalidRequest(format!(
                "blob object of {} bytes exceeds {MAX_OBJECT_LEN}",
                data.len()
            )));
        }
        self.store
            .put(&path, PutPayload::from_bytes(data))
            .await
            .map_err(|e| self.error("put", key, e))?;
        Ok(())
    }

    pub(crate) async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
    ) -> StorageResult<Option<Bytes>> {
        let path = key_path(key)?;
        if range.start > range.end {
            return Err(StorageError::InvalidRequest(format!(
                "blob range {}..{} is reversed",
                range.start, range.end
            )));
        }
        if range.start == range.end {
            // object_store rejects empty ranges: an empty read only needs to know the object
            // exists.
            return Ok(self.size(key).await?.map(|_| Bytes::new()));
        }
        let start = range.start;
        match self.store.get_range(&path, range).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            // A range starting at or past the end is an error in object_store (416 on S3);
            // the contract truncates it to the end, i.e. an empty read.
            Err(e) => match self.size(key).await? {
                None => Ok(None),
                Some(size) if start >= size => Ok(Some(Bytes::new())),
                Some(_) => Err(self.error("get", key, e)),
            },
        }
    }

    pub(crate) async fn size(&self, key: &str) -> StorageResult<Option<u64>> {
        let path = key_path(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("head", key, e)),
        }
    }

    pub(crate) async fn delete(&self, key: &str) -> StorageResult<()> {
        let path = key_path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", key, e)),
        }
    }

    pub(crate) async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>> {
        validate_prefix(prefix)?;
        // object_store lists whole path segments; the contract lists by key prefix, so list
        // the directory holding the prefix and filter.
        let dir = prefix.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
        let dir = (!dir.is_empty()).then(|| Path::from(dir));
        let mut out: Vec<ObjectMeta> = self
            .store
            .list(dir.as_ref())
            .try_filter_map(|meta| async move {
                let key = meta.location.as_ref();
                Ok(key.starts_with(prefix).then(|| ObjectMeta {
                    key: key.to_owned(),
                    size: meta.size,
                }))
            })
            .try_collect()
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(Vec::new()),
                e => Err(self.error("list", prefix, e)),
            })?;
        out.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn error(&self, op: &str, key: &str, e: object_store::Error) -> StorageError {
        let msg = format!("blob {op} {key:?}: {e}");
        match e {
            object_store::Error::InvalidPath { .. } => StorageError::InvalidRequest(msg),
            object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
                if self.flavour == Flavour::Remote =>
            {
                StorageError::Unavailable(msg)
            }
            _ => StorageError::Backend(msg),
        }
    }
}

fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')
}

/// Checks `key` against the contract and converts it.
pub(crate) fn key_path(key: &str) -> StorageResult<Path> {
    validate_key(key)?;
    Path::parse(key).map_err(|e| StorageError::InvalidRequest(format!("blob key {key:?}: {e}")))
}

/// Keys are `/`-separated relative paths of non-empty `[A-Za-z0-9._-]` segments (not `.` or
/// `..`, at most [`MAX_BLOB_SEGMENT_LEN`] bytes each), at most [`MAX_BLOB_KEY_LEN`] bytes.
pub(crate) fn validate_key(key: &str) -> StorageResult<()> {
    let bad = |why: &str| {
        Err(StorageError::InvalidRequest(format!(
            "blob key {key:?}: {why}"
        )))
    };
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > MAX_BLOB_KEY_LEN {
        return bad("longer than 512 bytes");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return bad("empty path segment");
        }
        if segment == "." || segment == ".." {
            return bad("relative path segment");
        }
        if segment.len() > MAX_BLOB_SEGMENT_LEN {
            return bad("path segment longer than 240 bytes");
        }
        if !segment.bytes().all(is_key_char) {
            return bad("characters outside [A-Za-z0-9._-/]");
        }
    }
    Ok(())
}

/// A list prefix: empty, or the start of a valid key (it may end with `/`).
pub(crate) fn validate_prefix(prefix: &str) -> StorageResult<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    let bad = |why: &str| {
        Err(StorageError::InvalidRequest(format!(
            "blob prefix {prefix:?}: {why}"
        )))
    };
    if prefix.len() > MAX_BLOB_KEY_LEN {
        return bad("longer than 512 bytes");
    }
    if !prefix.bytes().all(|c| c == b'/' || is_key_char(c)) {
        return bad("characters outside [A-Za-z0-9._-/]");
    }
    let segments: Vec<&str> = prefix.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        if i < last && (segment.is_empty() || *segment == "." || *segment == "..") {
            return bad("empty or relative path segment");
        }
    }
    Ok(())
}
