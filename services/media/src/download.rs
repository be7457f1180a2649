//! Reading blobs: GetMediaInfo and ranged Download. Any authenticated account that knows a
//! media id may read it (the id is the capability).
//!
//! A download streams one chunk object at a time through a bounded channel, so memory stays
//! bounded by the chunk size whatever the range.

use std::sync::Arc;

use guardyn_common::MediaId;
use tokio::sync::mpsc;

use crate::core::Core;
use crate::error::MediaError;
use crate::model::{MediaInfo, Piece, Range};
use crate::store::{self, MediaRecord};

/// Pieces buffered ahead of a slow reader.
const DOWNLOAD_BUFFER: usize = 2;

impl Core {
    /// The blob's record, unless it is unknown, deleted or expired.
    pub async fn live_media(&self, id: MediaId) -> Result<MediaRecord, MediaError> {
        let now = self.clock.now_ms();
        self.read::<MediaRecord>(&store::media_key(id))
            .await?
            .map(|st| st.value)
            .filter(|m| now < m.expires_at_ms)
            .ok_or(MediaError::MediaNotFound)
    }

    pub async fn media_info(&self, id: MediaId) -> Result<MediaInfo, MediaError> {
        Ok(self.live_media(id).await?.info(id))
    }

    /// Check the range and start streaming it: pieces of at most one chunk, in order.
    pub async fn download(
        self: &Arc<Self>,
        id: MediaId,
        range: Range,
    ) -> Result<mpsc::Receiver<Result<Piece, MediaError>>, MediaError> {
        let media = self.live_media(id).await?;
        if range.offset >= media.size {
            return Err(MediaError::OutOfRange {
                offset: range.offset,
                size: media.size,
            });
        }
        let end = match range.length {
            Some(len) => range.offset.saturating_add(len).min(media.size),
            None => media.size,
        };
        let (tx, rx) = mpsc::channel(DOWNLOAD_BUFFER);
        let core = self.clone();
        tokio::spawn(async move {
            let chunk = u64::from(media.chunk_size);
            let mut pos = range.offset;
            while pos < end {
                let index = pos / chunk;
                let start = index * chunk;
                let stop = end.min(start + chunk);
                let key = store::chunk_key(media.upload, index);
                let piece = match core.blob.get_range(&key, pos - start..stop - start).await {
                    Ok(Some(data)) if data.len() as u64 == stop - pos => {
                        Ok(Piece { offset: pos, data })
                    }
                    // Deleted meanwhile, or a lost object.
                    Ok(_) => Err(match core.live_media(id).await {
                        Ok(_) => MediaError::MissingChunk(key),
                        Err(e) => e,
                    }),
                    Err(e) => Err(e.into()),
                };
                let failed = piece.is_err();
                tokio::select! {
                    () = core.shutdown.cancelled() => return,
                    sent = tx.send(piece) => if sent.is_err() || failed { return },
                }
                pos = stop;
            }
        });
        Ok(rx)
    }
}
