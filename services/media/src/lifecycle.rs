//! Removal of bytes: DeleteMedia, checksum failures, expiry (the sweeper) and account
//! deletion all go through two steps.
//!
//! 1. [`Core::discard_upload`]: one transaction marks the upload `Discarded`, returns its bytes
//!    to the owner's quota, removes the blob record (when it was completed) and adds an expiry
//!    entry due now. From here on nobody can read the bytes.
//! 2. [`Core::finish_discard`]: delete the chunk objects, then the upload record and its index
//!    entries. A crash in between leaves the due expiry entry, so the sweeper finishes it.

use std::sync::Arc;
use std::time::Duration;

use guardyn_common::clock::run_passes;
use guardyn_common::{AccountId, MediaId};
use guardyn_storage::record::encode;
use guardyn_storage::{Direction, KeyRange, Txn, TxnOutcome};

use crate::core::Core;
use crate::error::MediaError;
use crate::model::UploadId;
use crate::store::{self, Due, MediaRecord, UploadRecord, UploadState, Usage};
use crate::upload::{MAX_ATTEMPTS, contention};

impl Core {
    /// Step 1: make the upload (and its blob, if completed) unreachable and give back its
    /// quota. Returns whether an upload record is left to finish.
    pub async fn discard_upload(&self, id: UploadId) -> Result<bool, MediaError> {
        let key = store::upload_key(id);
        for _ in 0..MAX_ATTEMPTS {
            let Some(st) = self.read::<UploadRecord>(&key).await? else {
                return Ok(false);
            };
            let u = &st.value;
            let now = self.clock.now_ms();
            let mut txn = Txn::new().require_equals(key.clone(), st.raw.clone());
            match u.state {
                UploadState::Discarded => return Ok(true),
                UploadState::Open => {
                    txn = txn.delete(store::expiry_key(u.expires_at_ms, Due::Upload(id)));
                }
                UploadState::Completed(media_id) => {
                    let mkey = store::media_key(media_id);
                    if let Some(m) = self.read::<MediaRecord>(&mkey).await? {
                        txn = txn.require_equals(mkey.clone(), m.raw).delete(mkey).delete(
                            store::expiry_key(m.value.expires_at_ms, Due::Media(media_id)),
                        );
                    }
                }
            }
            let usage_key = store::usage_key(u.owner);
            let usage = self.read::<Usage>(&usage_key).await?;
            let bytes = usage
                .as_ref()
                .map_or(0, |q| q.value.bytes)
                .saturating_sub(u.total_size);
            let mut next = u.clone();
            next.state = UploadState::Discarded;
            next.expires_at_ms = now;
            let txn = txn
                .require_unchanged(usage_key.clone(), usage.as_ref().map(|q| &q.raw[..]))
                .put(usage_key, encode(&Usage { bytes }))
                .put(key.clone(), encode(&next))
                .put(store::expiry_key(now, Due::Upload(id)), Vec::new());
            if self.kv.commit(txn).await? == TxnOutcome::Committed {
                return Ok(true);
            }
        }
        Err(contention())
    }

    /// Step 2: delete a discarded upload's chunk objects and records. Failures are logged;
    /// the upload's due expiry entry makes the sweeper try again.
    pub async fn finish_discard(&self, id: UploadId) {
        if let Err(err) = self.try_finish_discard(id).await {
            tracing::warn!(upload = %id, error = %err, "discarded upload not removed yet");
        }
    }

    async fn try_finish_discard(&self, id: UploadId) -> Result<(), MediaError> {
        let key = store::upload_key(id);
        let Some(st) = self.read::<UploadRecord>(&key).await? else {
            return Ok(());
        };
        if st.value.state != UploadState::Discarded {
            return Ok(());
        }
        for object in self.blob.list(&store::chunk_prefix(id)).await? {
            self.blob.delete(&object.key).await?;
        }
        let txn = Txn::new()
            .require_equals(key.clone(), st.raw)
            .delete(key)
            .delete(store::account_upload_key(st.value.owner, id))
            .delete(store::expiry_key(st.value.expires_at_ms, Due::Upload(id)));
        let _ = self.kv.commit(txn).await?;
        Ok(())
    }

    /// DeleteMedia: only the uploading account may delete a blob.
    pub async fn delete_media(&self, caller: AccountId, id: MediaId) -> Result<(), MediaError> {
        let media = self.live_media(id).await?;
        if media.owner != caller {
            return Err(MediaError::NotOwner);
        }
        self.discard_upload(media.upload).await?;
        self.finish_discard(media.upload).await;
        Ok(())
    }

    /// One sweeper pass: remove at most `sweep_batch` uploads and blobs that are due at
    /// `now_ms`. Returns how many expiry entries it handled.
    pub async fn sweep(&self, now_ms: u64) -> Result<usize, MediaError> {
        let range = KeyRange::between(
            store::EXPIRY_PREFIX,
            &store::expiry_bound(now_ms.saturating_add(1)),
        );
        let due = self
            .kv
            .scan(range, Direction::Forward, self.cfg.sweep_batch)
            .await?;
        for entry in &due {
            let stale = match store::parse_expiry_key(&entry.key) {
                Some(Due::Upload(id)) => {
                    match self.read::<UploadRecord>(&store::upload_key(id)).await? {
                        Some(u) if u.value.state == UploadState::Discarded => {
                            self.finish_discard(id).await;
                            false
                        }
                        Some(u)
                            if u.value.state == UploadState::Open
                                && u.value.expires_at_ms <= now_ms =>
                        {
                            self.discard_upload(id).await?;
                            self.finish_discard(id).await;
                            false
                        }
                        _ => true,
                    }
                }
                Some(Due::Media(id)) => {
                    match self.read::<MediaRecord>(&store::media_key(id)).await? {
                        Some(m) if m.value.expires_at_ms <= now_ms => {
                            self.discard_upload(m.value.upload).await?;
                            self.finish_discard(m.value.upload).await;
                            false
                        }
                        _ => true,
                    }
                }
                None => true,
            };
            if stale {
                // An entry whose record is gone or moved on (written by an interrupted change).
                self.kv.delete(&entry.key).await?;
            }
        }
        Ok(due.len())
    }

    /// Account deletion: discard every upload and blob of the account.
    pub async fn purge_account(&self, account: AccountId) -> Result<(), MediaError> {
        self.delete_avatar(account).await?;
        let prefix = store::account_prefix(account);
        loop {
            let batch = self
                .kv
                .scan(KeyRange::prefix(&prefix), Direction::Forward, 100)
                .await?;
            if batch.is_empty() {
                break;
            }
            for entry in &batch {
                match store::parse_account_upload_key(account, &entry.key) {
                    Some(id) if self.discard_upload(id).await? => {
                        self.try_finish_discard(id).await?;
                    }
                    // No upload record behind it (or an unknown key): drop the index entry.
                    _ => self.kv.delete(&entry.key).await?,
                }
            }
        }
        let usage_key = store::usage_key(account);
        if let Some(q) = self.read::<Usage>(&usage_key).await?
            && q.value.bytes == 0
        {
            let txn = Txn::new()
                .require_equals(usage_key.clone(), q.raw)
                .delete(usage_key);
            let _ = self.kv.commit(txn).await?;
        }
        Ok(())
    }
}

/// The expiry sweeper: one bounded pass every `sweep_interval_secs` (and whenever a manual
/// clock jumps), on the service clock. A full pass is followed by another at once.
pub(crate) async fn run_sweeper(core: Arc<Core>) {
    let interval = Duration::from_secs(core.cfg.sweep_interval_secs);
    run_passes(&core.clock, &core.shutdown, interval, || {
        let core = &core;
        async move {
            match core.sweep(core.clock.now_ms()).await {
                Ok(n) => n >= core.cfg.sweep_batch,
                Err(err) => {
                    tracing::warn!(error = %err, "media sweep failed");
                    false
                }
            }
        }
    })
    .await;
}
