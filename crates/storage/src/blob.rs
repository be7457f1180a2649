//! [`BlobStore`]: immutable objects by key (media chunks, avatars). The shape of an object
//! store (S3 and compatibles, a local directory): whole-object puts, ranged reads, deletes and
//! prefix listings; no appends, no renames, so every backend can implement it without
//! emulation.

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

use crate::StorageResult;

/// Largest object any backend must accept in one [`BlobStore::put`]. Callers split larger
/// content into objects of at most this size (media uploads use 1 MiB chunks), which keeps
/// server memory bounded by the object size.
pub const MAX_OBJECT_LEN: usize = 8 * 1024 * 1024;

/// Longest blob key, in bytes.
pub const MAX_BLOB_KEY_LEN: usize = 512;

/// Longest segment of a blob key, in bytes: a file name on common file systems is at most
/// 255 bytes, and a local engine needs room for a staging suffix.
pub const MAX_BLOB_SEGMENT_LEN: usize = 240;

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

/// Contract (checked by the blob conformance suite):
/// - keys are `/`-separated relative paths of non-empty `[A-Za-z0-9._-]` segments (not `.`
///   or `..`, each at most [`MAX_BLOB_SEGMENT_LEN`] bytes), at most [`MAX_BLOB_KEY_LEN`] bytes
///   in all; anything else is `InvalidRequest` (and so is a `list` prefix that no valid key
///   can start with);
/// - `put` replaces the object atomically (readers see the old or the new bytes, never a
///   mix) and is durable when it returns `Ok`;
/// - `get_range` of a missing object is `Ok(None)`; a range past the end is truncated to the
///   end (an empty range at or past the end reads empty);
/// - `delete` is idempotent;
/// - `list` returns every object under the prefix (a key prefix, not only whole segments),
///   in key order.
#[async_trait]
pub trait BlobStore: Send + Sync + fmt::Debug + 'static {
    async fn put(&self, key: &str, data: Bytes) -> StorageResult<()>;

    async fn get_range(&self, key: &str, range: Range<u64>) -> StorageResult<Option<Bytes>>;

    /// The object's size, `None` when missing.
    async fn size(&self, key: &str) -> StorageResult<Option<u64>>;

    async fn delete(&self, key: &str) -> StorageResult<()>;

    async fn list(&self, prefix: &str) -> StorageResult<Vec<ObjectMeta>>;
}
