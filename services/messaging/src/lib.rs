//! Guardyn messaging: the server side of end-to-end-encrypted delivery.
//!
//! Owns the per-device message queues (1:1 Signal-protocol envelopes and MLS group traffic),
//! the Listen delivery stream with acknowledgements and flow control, and the MLS delivery
//! service (group membership by device, epoch ordering by compare-and-set, GroupInfo for
//! external joins). The server stores and forwards ciphertext and never decrypts it.
//!
//! Must not depend on any other service crate: the destination's current devices come from
//! the [`DeviceDirectory`] seam (implemented by auth), session/device/account changes arrive as
//! auth's bus events.

mod config;
mod devices;
mod error;
mod events;
mod groups;
mod idempotency;
mod listen;
mod messaging;
mod outbox;
mod store;
mod streams;

use std::sync::Arc;

use guardyn_common::clock::SharedClock;
use guardyn_common::config::ServerConfig;
use guardyn_common::mesh::DeviceDirectory;
use guardyn_common::server::{ServerContext, ServiceSet};
use guardyn_events::EventBus;
use guardyn_proto::guardyn::messaging::v1::group_service_server::GroupServiceServer;
use guardyn_proto::guardyn::messaging::v1::messaging_service_server::MessagingServiceServer;
use guardyn_storage::{AppendLog, KvStore};
use tokio_util::sync::CancellationToken;

pub use config::MessagingConfig;
pub use error::MessagingError;
pub use groups::GroupSvc;
pub use messaging::MessagingSvc;

/// What the messaging service needs from its host process.
#[derive(Debug)]
pub struct Deps {
    pub kv: Arc<dyn KvStore>,
    pub log: Arc<dyn AppendLog>,
    pub bus: Arc<dyn EventBus>,
    pub clock: SharedClock,
    pub ctx: ServerContext,
    /// The accounts' current devices (auth).
    pub directory: Arc<dyn DeviceDirectory>,
}

/// Failure to start the messaging service.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("subscribing to events: {0}")]
    Events(#[from] guardyn_events::EventError),
}

/// State shared by both gRPC services and the background tasks.
#[derive(Debug)]
pub(crate) struct Core {
    pub cfg: MessagingConfig,
    pub kv: Arc<dyn KvStore>,
    pub log: Arc<dyn AppendLog>,
    pub bus: Arc<dyn EventBus>,
    pub clock: SharedClock,
    pub directory: Arc<dyn DeviceDirectory>,
    pub registry: streams::Registry,
    pub outbox_busy: outbox::Busy,
    pub shutdown: CancellationToken,
}

/// Build MessagingService and GroupService, start their event subscriptions and the outbox
/// recovery (which completes fan-outs a previous process left unfinished), and add them
/// to `set`.
pub async fn register(
    config: &MessagingConfig,
    server: &ServerConfig,
    deps: Deps,
    set: &mut ServiceSet,
) -> Result<(), RegisterError> {
    let core = Arc::new(Core {
        cfg: config.clone(),
        kv: deps.kv,
        log: deps.log,
        bus: deps.bus,
        clock: deps.clock,
        directory: deps.directory,
        registry: streams::Registry::new(),
        outbox_busy: outbox::Busy::default(),
        shutdown: deps.ctx.shutdown.clone(),
    });
    events::spawn(core.clone()).await?;
    outbox::spawn_recovery(core.clone());
    set.add(
        MessagingServiceServer::new(MessagingSvc { core: core.clone() })
            .max_decoding_message_size(server.max_request_bytes),
    );
    set.add(
        GroupServiceServer::new(GroupSvc { core })
            .max_decoding_message_size(server.max_request_bytes),
    );
    Ok(())
}

/// Test support: records in the exact formats the service persists, so that integration tests
/// can reproduce a crash between two writes. Not part of the service's API.
#[doc(hidden)]
pub mod testing {
    pub use crate::idempotency::pending_send_record;
    pub use crate::outbox::record::testing::{
        commit_record, group_message_record, proposal_record,
    };
}
