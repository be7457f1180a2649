//! Guardyn media: encrypted attachments as opaque blobs (`guardyn.media.v1.MediaService`).
//!
//! Clients encrypt every blob end to end before upload; the server sees ciphertext, its size
//! and its SHA-256. Uploads are chunked and resumable with unary calls only (so they work over
//! gRPC-web): CreateUpload reserves quota, each UploadChunk stores one chunk object in the
//! `BlobStore` and then advances the committed offset with a compare-and-set, CompleteUpload
//! hashes the chunks one at a time and publishes the blob under a random 128-bit media id (a
//! capability: any authenticated account that knows it may download). Download streams any
//! byte range one chunk object at a time, so memory is bounded by the chunk size.
//!
//! Metadata (uploads, blobs, per-account usage, expiry and account indexes) lives in the
//! KvStore (`store`); bytes as `media/<upload id>/<chunk index>` objects. A sweeper on the
//! service clock removes unfinished uploads after `media.upload_ttl_secs` and blobs after
//! `media.retention_secs`; `auth.account.deleted` removes an account's uploads and blobs.
//!
//! Must not depend on any other service crate.

mod avatar;
mod avatar_image;
mod config;
mod core;
mod download;
mod error;
mod events;
mod grpc;
mod lifecycle;
mod model;
mod policy;
mod store;
mod upload;

use std::sync::Arc;

use guardyn_common::ratelimit::KeyedLimiter;
use guardyn_common::server::ServiceSet;
use guardyn_service::{Handles, RegisterError, Seams, Service};

use crate::core::Core;

pub use config::MediaConfig;
pub use error::MediaError;
pub use grpc::MediaApi;

/// The media service's registration.
#[derive(Clone, Debug)]
pub struct Media {
    config: MediaConfig,
}

impl Media {
    pub fn new(config: MediaConfig) -> Self {
        Self { config }
    }
}

#[async_trait::async_trait]
impl Service for Media {
    fn name(&self) -> &'static str {
        "media"
    }

    /// Build MediaService, subscribe to account deletions, start the expiry sweeper and add
    /// the service to `set`.
    async fn register(
        &self,
        handles: &Handles,
        _seams: &mut Seams,
        set: &mut ServiceSet,
    ) -> Result<(), RegisterError> {
        let policy = guardyn_service::policy::watch("media", handles).await?;
        let core = Arc::new(Core {
            cfg: self.config.clone(),
            kv: handles.stores.kv.clone(),
            blob: handles.stores.blob.clone(),
            bus: handles.bus.clone(),
            clock: handles.clock.clone(),
            upload_limiter: KeyedLimiter::new("media_upload_per_account", self.config.upload_rate),
            shutdown: handles.ctx.shutdown.clone(),
            verifier: handles.ctx.verifier.clone(),
            policy: policy.cache(),
        });
        events::spawn(core.clone())
            .await
            .map_err(|e| RegisterError::failed("media", e))?;
        policy.follow();
        tokio::spawn(lifecycle::run_sweeper(core.clone()));
        let max = handles.server.max_request_bytes;
        set.add(grpc::media_server(core).max_decoding_message_size(max));
        Ok(())
    }
}
