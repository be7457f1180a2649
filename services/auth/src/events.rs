//! Publishing auth's events (`guardyn_common::events::auth`): the subjects and payloads are
//! shared with their subscribers; this is the one place auth puts them on the bus.

use std::sync::Arc;

use guardyn_common::events::Payload;
use guardyn_events::EventBus;

pub use guardyn_common::events::auth::{
    AccountDeleted, DeviceLinked, DeviceRemoved, PreKeysLow, SessionRevoked,
};

/// Puts auth's events on the bus.
#[derive(Clone, Debug)]
pub struct Publisher {
    bus: Arc<dyn EventBus>,
}

impl Publisher {
    pub fn new(bus: Arc<dyn EventBus>) -> Self {
        Self { bus }
    }

    /// Publish a live event on its subject; failures are logged (live events are
    /// at-most-once anyway).
    pub async fn publish<P: Payload + Sync>(&self, event: &P) {
        if let Err(e) = self.bus.publish(P::WHAT, event.encode()).await {
            tracing::warn!(subject = P::WHAT, error = %e, "could not publish event");
        }
    }
}
