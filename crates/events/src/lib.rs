//! Guardyn's event bus: live fan-out of events between server instances, and durable job
//! queues.
//!
//! Two implementations sit behind the [`EventBus`] trait:
//!
//! - [`InProcessBus`] for a single node: live events stay inside the process, jobs are stored
//!   in a [`guardyn_storage::AppendLog`] so they survive a restart.
//! - [`NatsBus`] for several nodes: live events use core NATS, jobs use JetStream (one
//!   work-queue stream, one durable pull consumer per queue).
//!
//! Both follow the same contract, checked by one behavioural test suite run against each:
//!
//! - **Live events** (`publish`/`subscribe`) are at-most-once. Subjects and patterns follow NATS
//!   syntax (see [`subject`]). Each subscriber has a bounded buffer; a slow subscriber never
//!   slows the publisher or other subscribers, it loses its oldest buffered events instead and
//!   is told so with [`Delivery::Lagged`].
//! - **Jobs** (`enqueue`/`consume`) are at-least-once: once `enqueue` returned `Ok` the job is
//!   durable; it is handed to one consumer at a time and redelivered if not settled within
//!   `ack_wait`. Consumers must therefore be idempotent.
//!
//! Events and jobs carry the trace context of the span that published them
//! ([`Event::trace_context`], [`Job::trace_context`]; see [`TraceContext`]).
//!
//! This crate depends on the storage traits only, never on a storage engine, on gRPC or on a
//! Guardyn service. Feature `testing` adds [`testing::NatsServer`], a throwaway `nats-server`
//! for tests.

mod bus;
mod config;
mod error;
mod inprocess;
mod lane;
mod nats;
pub mod subject;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
mod trace;
mod types;

use std::sync::Arc;

use guardyn_storage::AppendLog;

pub use bus::EventBus;
pub use config::{Backend, EventsConfig, NatsAuth, NatsConfig};
pub use error::EventError;
pub use inprocess::InProcessBus;
pub use nats::NatsBus;
pub use trace::TraceContext;
pub use types::{Delivery, Event, Job, JobStream, Subscription};

/// Build the bus selected by `config.backend`. `log` backs the in-process job queues and is
/// not used by the NATS backend.
pub async fn connect(
    config: &EventsConfig,
    log: Arc<dyn AppendLog>,
) -> Result<Arc<dyn EventBus>, EventError> {
    match &config.backend {
        Backend::InProcess => Ok(Arc::new(InProcessBus::new(log, config.clone()))),
        Backend::Nats(nats) => Ok(Arc::new(
            NatsBus::connect(config.clone(), nats.clone()).await?,
        )),
    }
}
