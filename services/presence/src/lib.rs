//! The presence service: online state, chosen status, last seen with its visibility setting,
//! and typing indicators (`guardyn.presence.v1.PresenceService`).
//!
//! Owns the `presence/v1/...` keys of the KV store (see `store`) and the `presence.*` subjects
//! of the event bus (subjects and payloads in `guardyn_common::events::presence`; publishing
//! and subscribing in `events`). Depends on the shared crates (common, proto, storage traits,
//! events trait) only: never on another service or a storage engine.
//!
//! Layout: this file registers the service; `grpc` is the tonic edge (`grpc::convert`: wire
//! to domain and back, the only place besides this file that sees `guardyn_proto`); `core`
//! holds the shared state ([`Core`]) and the operations; `local`, `wheel`, `views`, `peers`
//! and `model` are the domain in plain Rust types; `store`, `events`, `auth_events` and
//! `tasks` are its storage, bus, auth reactions and background drivers.
//!
//! # Design: cheap at scale
//!
//! - **Per-instance state in memory.** Each instance keeps the devices connected to it in a
//!   hash map (`local`). A heartbeat of an online device updates one deadline in that map:
//!   no I/O, no event, no timer operation. Only transitions cost more.
//! - **Timers, not scans.** Device and typing expiry run on a hashed timing wheel
//!   (`wheel`) read against the injected clock; the driver sleeps until the wheel's next
//!   occupied tick, or wakes when the clock jumps (manual clocks) or an earlier timer is
//!   added. Refreshed entries are re-filed lazily when their old slot comes up.
//! - **Push, never poll.** Transitions are written durably (device entry, last seen) and
//!   published on `presence.<account_id>`. Each instance subscribes on the bus only to the
//!   accounts its own Subscribe streams watch (`views`), aggregates per account the
//!   devices of every instance (keyed by instance and device, with an online-period
//!   generation so reordered online/offline events resolve correctly), and pushes to each
//!   stream only what that viewer sees change.
//! - **Aggregation across instances.** An account is online while any instance holds one of
//!   its devices. Instance A's offline event removes only A's device; the account goes
//!   offline (and last seen is recorded) when the last device anywhere leaves. The bus orders
//!   one instance's events, not those of different instances, so an instance's own devices
//!   do not wait for their echo: before another instance's change takes a device away, the
//!   devices this instance holds (and announced) are put in its view. The initial
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
//! - **Auth's events** (`auth_events`): every instance subscribes to `auth.device.removed`
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
//! - **Retention** (`retention`): a last seen older than the policy's
//!   `retention.realtime_secs` is never shown and is deleted by a periodic sweep.

mod auth_events;
mod config;
mod core;
mod error;
mod events;
mod grpc;
mod local;
mod model;
mod peers;
mod policy;
mod retention;
mod store;
mod tasks;
mod views;
mod wheel;

use guardyn_common::server::ServiceSet;
use guardyn_proto::guardyn::presence::v1::presence_service_server::PresenceServiceServer;
use guardyn_service::{Handles, RegisterError, Seams, Service};

pub use crate::config::PresenceConfig;
pub use crate::core::Core;
pub use crate::error::PresenceError;
pub use crate::grpc::PresenceApi;

/// The domain core, driven directly by the benchmark (`benches/heartbeats.rs`). Not an API.
#[doc(hidden)]
pub mod testing {
    pub use crate::local::LocalTable;
    pub use crate::model::AccountView;
    pub use crate::store::Store;
    pub use crate::views::{TopicKey, Views, Watcher};
}

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

    /// Build the core, start its background tasks (they stop at shutdown) and add the gRPC
    /// service to `set`.
    async fn register(
        &self,
        handles: &Handles,
        _seams: &mut Seams,
        set: &mut ServiceSet,
    ) -> Result<(), RegisterError> {
        let failed = |e: PresenceError| RegisterError::failed("presence", e);
        let auth_events = events::subscribe_auth(&*handles.bus)
            .await
            .map_err(|e| failed(e.into()))?;
        let policy = guardyn_service::policy::watch("presence", handles).await?;
        let core = Core::new(
            self.config.clone(),
            store::Store::new(handles.stores.kv.clone()),
            handles.bus.clone(),
            handles.clock.clone(),
            handles.ctx.shutdown.clone(),
            policy.follow(),
        );
        tokio::spawn(tasks::run_expiry(core.clone()));
        tokio::spawn(tasks::run_beacons(core.clone()));
        tokio::spawn(retention::run(core.clone()));
        tokio::spawn(auth_events::run(core.clone(), auth_events));
        set.add(
            PresenceServiceServer::new(PresenceApi::new(core, handles.ctx.verifier.clone()))
                .max_decoding_message_size(handles.server.max_request_bytes),
        );
        Ok(())
    }
}
