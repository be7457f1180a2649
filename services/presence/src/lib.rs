//! The presence service: online state, chosen status, last seen with its visibility setting,
//! and typing indicators (`guardyn.presence.v1.PresenceService`).
//!
//! Owns the `presence/v1/...` keys of the [`KvStore`] (see [`store`]) and the `presence.*`
//! subjects of the event bus (see [`events`]). Depends on the shared crates (common, proto,
//! storage traits, events trait) only: never on another service or a storage engine.
//!
//! # Design: cheap at scale
//!
//! - **Per-instance state in memory.** Each instance keeps the devices connected to it in a
//!   hash map ([`local`]). A heartbeat of an online device updates one deadline in that map:
//!   no I/O, no event, no timer operation. Only transitions cost more.
//! - **Timers, not scans.** Device and typing expiry run on a hashed timing wheel
//!   ([`wheel`]) read against the injected clock; the driver sleeps until the wheel's next
//!   occupied tick, or wakes when the clock jumps (manual clocks) or an earlier timer is
//!   added. Refreshed entries are re-filed lazily when their old slot comes up.
//! - **Push, never poll.** Transitions are written durably (device entry, last seen) and
//!   published on `presence.<account_id>`. Each instance subscribes on the bus only to the
//!   accounts its own Subscribe streams watch ([`views`]), aggregates per account the
//!   devices of every instance (keyed by instance and device, with an online-period
//!   generation so reordered online/offline events resolve correctly), and pushes to each
//!   stream only what that viewer sees change.
//! - **Aggregation across instances.** An account is online while any instance holds one of
//!   its devices. Instance A's offline event removes only A's device; the account goes
//!   offline (and last seen is recorded) when the last device anywhere leaves. The initial
//!   state of a newly watched account comes from storage (the account record plus one entry
//!   per online device and instance), which in a cluster is the shared store.
//! - **Failure modes.** A dying instance publishes nothing more: its peers notice that its
//!   beacons (`presence.instance.<id>`, every `instance_beacon_secs`, real time) stopped and
//!   after 3 intervals take its devices offline in their views and delete its device entries
//!   of the affected accounts (others are cleaned when next read). Until then its devices
//!   still show online (bounded staleness: 3 beacon intervals). Live events are
//!   at-most-once: a view told it lagged reloads from storage; a stream that cannot keep up
//!   ends with UNAVAILABLE and the client resubscribes. With per-node storage (the embedded
//!   engine) plus NATS, live updates cross instances but a new subscription only sees the
//!   devices its own node stored until their next transition.
//! - **Auth's events** ([`auth_events`]): every instance subscribes to `auth.device.removed`
//!   and `auth.account.deleted`. A removed device goes offline at once everywhere (local table,
//!   streams, views, its stored entries on every instance; last seen as usual when it was the
//!   last online device). A deleted account's record and device entries are deleted and its
//!   watchers see it offline with no last seen; its id may remain in other accounts' allow
//!   lists (no reverse index; ids are never reused, so it grants nothing).
//! - **Typing** is never stored: a typing indicator lives in the sender instance's wheel; a
//!   peer indicator goes to `presence.<peer>.typing` (every stream of the peer), a group
//!   indicator on `presence.<sender>` to streams that watch the sender and may see it
//!   (no group-membership check until a group service exists). On expiry or stop,
//!   receivers get `typing = false`.

pub mod auth_events;
pub mod config;
pub mod engine;
pub mod error;
pub mod events;
pub mod local;
pub mod model;
mod peers;
pub mod service;
pub mod store;
mod tasks;
pub mod views;
pub mod wheel;

use guardyn_common::server::ServiceSet;
use guardyn_proto::guardyn::presence::v1::presence_service_server::PresenceServiceServer;
use guardyn_service::{Handles, RegisterError, Seams, Service};

pub use config::PresenceConfig;
pub use engine::Engine;
pub use error::PresenceError;
pub use service::PresenceApi;

/// The presence service's registration.
#[derive(Clone, Debug)]
pub struct Presence {
    config: PresenceConfig,
}

impl Presence {
    pub fn new(config: PresenceConfig) -> Self {
        Self { config }
    }
}

#[async_trait::async_trait]
impl Service for Presence {
    fn name(&self) -> &'static str {
        "presence"
    }

    /// Build the engine, start its background tasks (they stop at shutdown) and add the gRPC
    /// service to `set`.
    async fn register(
        &self,
        handles: &Handles,
        _seams: &mut Seams,
        set: &mut ServiceSet,
    ) -> Result<(), RegisterError> {
        let failed = |e: PresenceError| RegisterError::failed("presence", e);
        let auth_events = auth_events::subscribe(&*handles.bus)
            .await
            .map_err(|e| failed(e.into()))?;
        let engine = Engine::new(
            self.config.clone(),
            store::Store::new(handles.stores.kv.clone()),
            handles.bus.clone(),
            handles.clock.clone(),
            handles.ctx.shutdown.clone(),
        );
        tokio::spawn(tasks::run_expiry(engine.clone()));
        tokio::spawn(tasks::run_beacons(engine.clone()));
        tokio::spawn(auth_events::run(engine.clone(), auth_events));
        set.add(
            PresenceServiceServer::new(PresenceApi::new(engine))
                .max_decoding_message_size(handles.server.max_request_bytes),
        );
        Ok(())
    }
}
