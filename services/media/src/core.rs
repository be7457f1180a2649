//! The state every part of the service shares, and typed record access.

use std::sync::Arc;

use guardyn_common::AccountId;
use guardyn_common::auth::TokenVerifier;
use guardyn_common::clock::SharedClock;
use guardyn_common::ratelimit::KeyedLimiter;
use guardyn_events::EventBus;
use guardyn_storage::record::{Record, decode};
use guardyn_storage::{BlobStore, KvStore, StorageResult};
use tokio_util::sync::CancellationToken;

use crate::config::MediaConfig;

/// State shared by the gRPC service and the background tasks (sweeper, event subscription).
#[derive(Debug)]
pub(crate) struct Core {
    pub cfg: MediaConfig,
    pub kv: Arc<dyn KvStore>,
    pub blob: Arc<dyn BlobStore>,
    pub bus: Arc<dyn EventBus>,
    pub clock: SharedClock,
    /// CreateUpload per account.
    pub upload_limiter: KeyedLimiter<AccountId>,
    pub shutdown: CancellationToken,
    /// The process's token verifier: a Download ends when its caller's token expires or its
    /// session is revoked.
    pub verifier: TokenVerifier,
    /// The admin policy in force (the attachment size limit).
    pub policy: guardyn_common::policy::PolicyCache,
}

/// A record as read, with its stored bytes for a compare-and-set.
#[derive(Debug)]
pub(crate) struct Stored<R> {
    pub value: R,
    pub raw: Vec<u8>,
}

impl Core {
    /// Read and decode the record at `key`.
    pub async fn read<R: Record>(&self, key: &[u8]) -> StorageResult<Option<Stored<R>>> {
        match self.kv.get(key).await? {
            Some(raw) => Ok(Some(Stored {
                value: decode(&raw)?,
                raw,
            })),
            None => Ok(None),
        }
    }
}
