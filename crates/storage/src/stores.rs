//! The storage handle every service is built from.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::{AppendLog, BlobStore, JointStore, KvStore};

/// Release an engine's resources at shutdown (flush, stop background threads).
#[async_trait]
pub trait Close: Send + Sync {
    async fn close(&self);
}

/// The process's stores, chosen once from configuration (`storage.engine`, `storage.blob`) and
/// handed to every service, the event bus and the testkit: nothing above this handle names a
/// concrete engine.
#[derive(Clone)]
pub struct Stores {
    /// Accounts, devices, keys, sessions, group state.
    pub kv: Arc<dyn KvStore>,
    /// Device queues, group logs, single-node job queues.
    pub log: Arc<dyn AppendLog>,
    /// Immutable objects by key (media chunks, avatars): `storage.blob`.
    pub blob: Arc<dyn BlobStore>,
    /// The KV store and the log committing together, when the engine keeps them in one
    /// database (embedded): one write instead of a stepwise protocol.
    pub joint: Option<Arc<dyn JointStore>>,
    closers: Vec<Arc<dyn Close>>,
}

impl Stores {
    pub fn new(kv: Arc<dyn KvStore>, log: Arc<dyn AppendLog>, blob: Arc<dyn BlobStore>) -> Self {
        Self {
            kv,
            log,
            blob,
            joint: None,
            closers: Vec::new(),
        }
    }

    /// Offer `joint`, a handle on the same engine as the KV store and the log.
    pub fn with_joint(mut self, joint: Arc<dyn JointStore>) -> Self {
        self.joint = Some(joint);
        self
    }

    /// Also close `engine` when [`Self::close`] runs.
    pub fn closing(mut self, engine: Arc<dyn Close>) -> Self {
        self.closers.push(engine);
        self
    }

    /// The same stores with the KV, log and joint handles wrapped by decorators (such as
    /// [`crate::count_writes`]); the blob store and the closers stay.
    pub fn wrapped(
        self,
        kv: impl FnOnce(Arc<dyn KvStore>) -> Arc<dyn KvStore>,
        log: impl FnOnce(Arc<dyn AppendLog>) -> Arc<dyn AppendLog>,
        joint: impl FnOnce(Arc<dyn JointStore>) -> Arc<dyn JointStore>,
    ) -> Self {
        Self {
            kv: kv(self.kv),
            log: log(self.log),
            blob: self.blob,
            joint: self.joint.map(joint),
            closers: self.closers,
        }
    }

    /// Close every engine behind the handle (once the server stopped using it).
    pub async fn close(&self) {
        for c in &self.closers {
            c.close().await;
        }
    }
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stores")
            .field("kv", &self.kv)
            .field("log", &self.log)
            .field("blob", &self.blob)
            .field("joint", &self.joint)
            .finish_non_exhaustive()
    }
}
