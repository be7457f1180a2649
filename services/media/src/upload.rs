//! Chunked, resumable uploads: CreateUpload, UploadChunk, GetUpload, CompleteUpload.
//!
//! Each chunk is put as its own object (durable when the put returns), then the committed
//! offset advances with a compare-and-set on the upload record, so an acknowledged offset
//! always has its bytes stored and memory stays bounded by one chunk. Quota is reserved at
//! CreateUpload in the same transaction that writes the upload.

use bytes::Bytes;
use guardyn_common::{AccountId, MediaId};
use guardyn_storage::record::encode;
use guardyn_storage::{StorageError, Txn, TxnOutcome};
use sha2::{Digest as _, Sha256};

use crate::core::Core;
use crate::error::MediaError;
use crate::model::{MediaInfo, NewUpload, UploadId, UploadStatus};
use crate::store::{self, Due, MediaRecord, UploadRecord, UploadState, Usage};

/// Compare-and-set retries before giving up (each conflict means another writer progressed).
pub(crate) const MAX_ATTEMPTS: usize = 64;

pub(crate) fn contention() -> MediaError {
    MediaError::Storage(StorageError::Unavailable(
        "too many concurrent changes to one media record".into(),
    ))
}

/// Whether an upload can still be used (discarded and timed-out open uploads are gone).
pub(crate) fn live(u: &UploadRecord, now_ms: u64) -> bool {
    match u.state {
        UploadState::Open => now_ms < u.expires_at_ms,
        UploadState::Completed(_) => true,
        UploadState::Discarded => false,
    }
}

fn status(id: UploadId, u: &UploadRecord) -> UploadStatus {
    UploadStatus {
        upload_id: id,
        committed_offset: u.committed_offset,
        total_size: u.total_size,
        chunk_size: u.chunk_size,
        expires_at_ms: u.expires_at_ms,
    }
}

/// Length of the chunk that starts at `offset` (chunk-aligned).
fn chunk_len(u: &UploadRecord, offset: u64) -> u64 {
    u64::from(u.chunk_size).min(u.total_size.saturating_sub(offset))
}

impl Core {
    /// Reserve quota and start an upload.
    pub async fn create_upload(
        &self,
        owner: AccountId,
        new: NewUpload,
    ) -> Result<UploadStatus, MediaError> {
        let now = self.clock.now_ms();
        let id = UploadId::random();
        let record = UploadRecord {
            owner,
            total_size: new.total_size,
            sha256: new.sha256,
            content_type: new.content_type,
            chunk_size: self.cfg.chunk_size,
            committed_offset: 0,
            created_at_ms: now,
            expires_at_ms: now.saturating_add(self.cfg.upload_ttl_secs.saturating_mul(1000)),
            state: UploadState::Open,
        };
        let usage_key = store::usage_key(owner);
        for _ in 0..MAX_ATTEMPTS {
            let usage = self.read::<Usage>(&usage_key).await?;
            let used = usage.as_ref().map_or(0, |u| u.value.bytes);
            let bytes = used.saturating_add(record.total_size);
            if bytes > self.cfg.quota_bytes {
                return Err(MediaError::QuotaExceeded {
                    quota: self.cfg.quota_bytes,
                });
            }
            let txn = Txn::new()
                .require_absent(store::upload_key(id))
                .require_unchanged(usage_key.clone(), usage.as_ref().map(|u| &u.raw[..]))
                .put(store::upload_key(id), encode(&record))
                .put(store::account_upload_key(owner, id), Vec::new())
                .put(
                    store::expiry_key(record.expires_at_ms, Due::Upload(id)),
                    Vec::new(),
                )
                .put(usage_key.clone(), encode(&Usage { bytes }));
            if self.kv.commit(txn).await? == TxnOutcome::Committed {
                return Ok(status(id, &record));
            }
        }
        Err(contention())
    }

    /// The upload of `caller` (NOT_FOUND when gone, PERMISSION_DENIED for another account).
    async fn own_upload(
        &self,
        caller: AccountId,
        id: UploadId,
    ) -> Result<crate::core::Stored<UploadRecord>, MediaError> {
        let now = self.clock.now_ms();
        let st = self
            .read::<UploadRecord>(&store::upload_key(id))
            .await?
            .filter(|st| live(&st.value, now))
            .ok_or(MediaError::UploadNotFound)?;
        if st.value.owner != caller {
            return Err(MediaError::NotOwner);
        }
        Ok(st)
    }

    pub async fn get_upload(
        &self,
        caller: AccountId,
        id: UploadId,
    ) -> Result<UploadStatus, MediaError> {
        let st = self.own_upload(caller, id).await?;
        Ok(status(id, &st.value))
    }

    /// Store one chunk at the committed offset; returns the new committed offset.
    pub async fn upload_chunk(
        &self,
        caller: AccountId,
        id: UploadId,
        offset: u64,
        data: Bytes,
    ) -> Result<u64, MediaError> {
        let key = store::upload_key(id);
        let len = data.len() as u64;
        let mut stored = false;
        for _ in 0..MAX_ATTEMPTS {
            let st = self.own_upload(caller, id).await?;
            let u = &st.value;
            let chunk = u64::from(u.chunk_size);
            if len == 0 {
                return Err(MediaError::invalid("data", "must not be empty"));
            }
            if len > chunk {
                return Err(MediaError::too_large(
                    "data",
                    format!("at most chunk_size ({chunk}) bytes"),
                ));
            }
            if offset.checked_add(len).is_none_or(|end| end > u.total_size) {
                return Err(MediaError::too_large(
                    "data",
                    format!("the chunk ends past total_size ({})", u.total_size),
                ));
            }
            if offset < u.committed_offset {
                // A resend of a chunk already committed whole (e.g. its answer was lost).
                if offset.is_multiple_of(chunk) && len == chunk_len(u, offset) {
                    return Ok(u.committed_offset);
                }
                return Err(MediaError::OffsetMismatch {
                    committed: u.committed_offset,
                });
            }
            if offset != u.committed_offset || u.state != UploadState::Open {
                return Err(MediaError::OffsetMismatch {
                    committed: u.committed_offset,
                });
            }
            if len != chunk_len(u, offset) {
                return Err(MediaError::invalid(
                    "data",
                    format!(
                        "must be exactly chunk_size ({chunk}) bytes, except the final chunk, \
                         which ends at total_size ({})",
                        u.total_size
                    ),
                ));
            }
            if !stored {
                self.blob
                    .put(&store::chunk_key(id, offset / chunk), data.clone())
                    .await?;
                stored = true;
            }
            let mut next = u.clone();
            next.committed_offset = offset + len;
            let txn = Txn::new()
                .require_equals(key.clone(), st.raw.clone())
                .put(key.clone(), encode(&next));
            if self.kv.commit(txn).await? == TxnOutcome::Committed {
                return Ok(next.committed_offset);
            }
            // Changed meanwhile (a concurrent resend, a discard): decide again on what is
            // stored now.
        }
        Err(contention())
    }

    /// Verify size and SHA-256 and publish the blob; a completed upload answers its blob again.
    pub async fn complete_upload(
        &self,
        caller: AccountId,
        id: UploadId,
    ) -> Result<MediaInfo, MediaError> {
        let key = store::upload_key(id);
        let mut verified = false;
        for _ in 0..MAX_ATTEMPTS {
            let st = self.own_upload(caller, id).await?;
            let u = &st.value;
            if let UploadState::Completed(media_id) = u.state {
                let media = self
                    .read::<MediaRecord>(&store::media_key(media_id))
                    .await?
                    .ok_or(MediaError::UploadNotFound)?;
                return Ok(media.value.info(media_id));
            }
            if u.committed_offset < u.total_size {
                return Err(MediaError::Incomplete {
                    committed: u.committed_offset,
                    total: u.total_size,
                });
            }
            if !verified {
                if self.hash_chunks(id, u).await? != u.sha256 {
                    self.discard_upload(id).await?;
                    self.finish_discard(id).await;
                    return Err(MediaError::ChecksumMismatch);
                }
                verified = true;
            }
            let now = self.clock.now_ms();
            let media_id = MediaId::random();
            let media = MediaRecord {
                owner: u.owner,
                upload: id,
                size: u.total_size,
                sha256: u.sha256,
                content_type: u.content_type.clone(),
                chunk_size: u.chunk_size,
                created_at_ms: now,
                expires_at_ms: now.saturating_add(self.cfg.retention_secs.saturating_mul(1000)),
            };
            let mut next = u.clone();
            next.state = UploadState::Completed(media_id);
            let txn = Txn::new()
                .require_equals(key.clone(), st.raw.clone())
                .require_absent(store::media_key(media_id))
                .put(key.clone(), encode(&next))
                .put(store::media_key(media_id), encode(&media))
                .delete(store::expiry_key(u.expires_at_ms, Due::Upload(id)))
                .put(
                    store::expiry_key(media.expires_at_ms, Due::Media(media_id)),
                    Vec::new(),
                );
            if self.kv.commit(txn).await? == TxnOutcome::Committed {
                return Ok(media.info(media_id));
            }
        }
        Err(contention())
    }

    /// SHA-256 of the committed chunks, read one object at a time.
    async fn hash_chunks(&self, id: UploadId, u: &UploadRecord) -> Result<[u8; 32], MediaError> {
        let mut hasher = Sha256::new();
        let chunk = u64::from(u.chunk_size);
        for index in 0..u.chunk_count() {
            let key = store::chunk_key(id, index);
            let want = chunk_len(u, index * chunk);
            match self.blob.get_range(&key, 0..want).await? {
                Some(data) if data.len() as u64 == want => hasher.update(&data),
                _ => return Err(MediaError::MissingChunk(key)),
            }
        }
        Ok(hasher.finalize().into())
    }
}
