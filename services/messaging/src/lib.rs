//! Guardyn messaging: the server side of end-to-end-encrypted delivery.
//!
//! Owns the per-device message queues (1:1 Signal-protocol envelopes and MLS group traffic),
//! the Listen delivery stream with acknowledgements and flow control, and the MLS delivery
//! service (group membership by device, epoch ordering by compare-and-set, GroupInfo for
//! external joins). The server stores and forwards ciphertext and never decrypts it. Mail for a
//! device with no open Listen stream anywhere in the cluster enqueues a wake-up job for the
//! notification service (`wake`).
//!
//! Must not depend on any other service crate: the destination's current devices come from
//! the [`DeviceDirectory`] seam (implemented by auth), session/device/account changes arrive as
//! auth's bus events.

mod announce;
mod config;
mod core;
mod devices;
mod error;
mod events;
mod groups;
mod grpc;
mod hold;
mod idempotency;
mod limits;
mod listen;
mod messaging;
mod outbox;
mod policy;
mod quota;
mod remote;
mod store;
mod streams;
mod sweeper;
mod wake;

use std::sync::Arc;

use guardyn_common::server::ServiceSet;
use guardyn_service::{Handles, RegisterError, Seams, Service};

use crate::core::Core;

pub use config::{MessagingConfig, MessagingLimits};
pub use error::{MessagingError, QueueLimit};
pub use grpc::{GroupApi, MessagingApi};

/// The messaging service's registration. Needs the device directory seam (auth).
#[derive(Clone, Debug)]
pub struct Messaging {
    config: MessagingConfig,
}

impl Messaging {
    pub fn new(config: MessagingConfig) -> Self {
        Self { config }
    }
}

#[async_trait::async_trait]
impl Service for Messaging {
    fn name(&self) -> &'static str {
        "messaging"
    }

    /// Build MessagingService and GroupService, start their event subscriptions and the
    /// outbox recovery (which completes fan-outs a previous process left unfinished), the
    /// idempotency record sweeper and the announcement of this instance's Listen streams, and
    /// add them to `set`.
    async fn register(
        &self,
        handles: &Handles,
        seams: &mut Seams,
        set: &mut ServiceSet,
    ) -> Result<(), RegisterError> {
        let directory = seams
            .device_directory
            .clone()
            .ok_or(RegisterError::MissingSeam {
                service: "messaging",
                seam: "the auth service's device directory",
                config_key: "mesh.directory_addresses",
            })?;
        let registry = streams::Registry::new();
        let remote = remote::RemoteStreams::new(
            registry.instance,
            announce::lease(self.config.stream_announce_secs),
        );
        let wake = wake::gate::WakeGate::new(self.config.wake_coalesce_ms);
        handles
            .ctx
            .metrics
            .with_service_registry("messaging", |r| wake.register(r));
        let policy = guardyn_service::policy::watch("messaging", handles).await?;
        let core = Arc::new(Core {
            cfg: self.config.clone(),
            kv: handles.stores.kv.clone(),
            log: handles.stores.log.clone(),
            joint: handles.stores.joint.clone(),
            bus: handles.bus.clone(),
            clock: handles.clock.clone(),
            directory,
            registry,
            remote,
            wake,
            verifier: handles.ctx.verifier.clone(),
            stats: handles.ctx.stats.clone(),
            limits: limits::Limits::new(&self.config.limits),
            outbox_busy: outbox::busy::Busy::default(),
            outbox_backoff: outbox::backoff::Backoff::default(),
            shutdown: handles.ctx.shutdown.clone(),
            policy: policy.cache(),
            ack_scans: tokio::sync::Semaphore::new(groups::cursors::ACK_SCANS),
            listen_buffer: Arc::new(tokio::sync::Semaphore::new(listen::listen_buffer_permits(
                self.config.listen_buffer_mib,
            ))),
        });
        events::spawn(core.clone())
            .await
            .map_err(|e| RegisterError::failed("messaging", e))?;
        policy.follow();
        outbox::spawn_recovery(core.clone());
        tokio::spawn(sweeper::run(core.clone()));
        tokio::spawn(announce::run(core.clone()));
        let max = handles.server.max_request_bytes;
        set.add(grpc::messaging_server(core.clone()).max_decoding_message_size(max));
        set.add(grpc::group_server(core).max_decoding_message_size(max));
        Ok(())
    }
}

/// Test support: records in the exact formats the service persists, so that integration tests
/// can reproduce a crash between two writes. Not part of the service's API.
#[doc(hidden)]
pub mod testing {
    pub use crate::groups::state::record_before_cursors as group_record_before_cursors;
    pub use crate::idempotency::pending_send_record;
    pub use crate::outbox::record::testing::{
        before_cursors, commit_record, group_message_record, proposal_record,
    };
}
