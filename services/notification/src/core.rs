//! The state every part of the service shares, and typed record access.

use std::sync::Arc;

use guardyn_common::clock::SharedClock;
use guardyn_common::ratelimit::KeyedLimiter;
use guardyn_common::{AccountId, DeviceId};
use guardyn_events::EventBus;
use guardyn_storage::record::{Record, decode};
use guardyn_storage::{KvStore, StorageResult};
use tokio_util::sync::CancellationToken;

use crate::config::NotificationConfig;
use crate::metrics::PushMetrics;
use crate::providers::Providers;

/// State shared by the gRPC service and the background tasks (job runner, sweeper, event
/// subscriptions).
#[derive(Debug)]
pub(crate) struct Core {
    pub cfg: NotificationConfig,
    pub kv: Arc<dyn KvStore>,
    pub bus: Arc<dyn EventBus>,
    pub clock: SharedClock,
    /// The senders of the configured platforms.
    pub providers: Providers,
    pub metrics: PushMetrics,
    /// Token and settings changes per device.
    pub write_limiter: KeyedLimiter<(AccountId, DeviceId)>,
    pub shutdown: CancellationToken,
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
