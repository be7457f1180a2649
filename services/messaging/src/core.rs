//! The state every part of the service shares.

use std::sync::Arc;

use guardyn_common::auth::TokenVerifier;
use guardyn_common::clock::SharedClock;
use guardyn_common::mesh::DeviceDirectory;
use guardyn_events::EventBus;
use guardyn_storage::{AppendLog, JointStore, KvStore};
use tokio_util::sync::CancellationToken;

use crate::config::MessagingConfig;
use crate::limits::Limits;
use crate::outbox::backoff::Backoff;
use crate::outbox::busy::Busy;
use crate::remote::RemoteStreams;
use crate::streams::Registry;
use crate::wake::gate::WakeGate;

/// State shared by both gRPC services and the background tasks.
#[derive(Debug)]
pub(crate) struct Core {
    pub cfg: MessagingConfig,
    pub kv: Arc<dyn KvStore>,
    pub log: Arc<dyn AppendLog>,
    /// The KV store and the log committing together, when the engine offers it: a 1:1 send
    /// is then one write instead of a reservation, appends and a completion.
    pub joint: Option<Arc<dyn JointStore>>,
    pub bus: Arc<dyn EventBus>,
    pub clock: SharedClock,
    pub directory: Arc<dyn DeviceDirectory>,
    pub registry: Registry,
    /// Devices streaming on other instances.
    pub remote: RemoteStreams,
    /// Coalescing and counters of wake-up jobs.
    pub wake: WakeGate,
    /// The process's token verifier: every stream takes its guard (expiry, revocation).
    pub verifier: TokenVerifier,
    /// The process's live counters: each Listen stream counts its device as connected.
    pub stats: guardyn_common::stats::ProcessStats,
    pub limits: Limits,
    pub outbox_busy: Busy,
    pub outbox_backoff: Backoff,
    pub shutdown: CancellationToken,
    /// The admin policy in force (message size, retention).
    pub policy: guardyn_common::policy::PolicyCache,
    /// Bytes of envelopes Listen streams may hold, all together (`listen_buffer_mib`): a queue
    /// envelope until the transport takes it, a group-log envelope until it is acknowledged
    /// ([`crate::hold`]).
    pub listen_buffer: Arc<tokio::sync::Semaphore>,
    /// Group acknowledgements reading the log at once ([`crate::groups::cursors::ACK_SCANS`]).
    pub ack_scans: tokio::sync::Semaphore,
}
