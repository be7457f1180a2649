//! Guardyn notification: wakes devices that have no open Listen stream through APNs, FCM,
//! Web Push and UnifiedPush (`guardyn.notification.v1.NotificationService`).
//!
//! Must not depend on any other service crate.

mod config;
mod core;
mod error;
mod events;
mod grpc;
mod jobs;
mod metrics;
mod model;
pub mod providers;
mod settings;
mod store;
mod tokens;

use std::sync::Arc;

use guardyn_common::clock::SharedClock;
use guardyn_common::ratelimit::KeyedLimiter;
use guardyn_common::server::ServiceSet;
use guardyn_service::{Handles, RegisterError, Seams, Service};

use crate::core::Core;
use crate::metrics::PushMetrics;
use crate::providers::Providers;

pub use config::NotificationConfig;
pub use error::NotificationError;
pub use grpc::NotificationApi;

/// The notification service's registration.
#[derive(Clone, Debug)]
pub struct Notification {
    config: NotificationConfig,
}

impl Notification {
    pub fn new(config: NotificationConfig) -> Self {
        Self { config }
    }
}

/// The senders of the configured platforms (reading their key files now), on the service
/// clock.
fn build_providers(
    cfg: &NotificationConfig,
    clock: &SharedClock,
) -> Result<Providers, RegisterError> {
    Providers::from_config_with_clock(&cfg.providers(), clock.clone())
        .map_err(|e| RegisterError::failed("notification", e))
}

#[async_trait::async_trait]
impl Service for Notification {
    fn name(&self) -> &'static str {
        "notification"
    }

    /// Build NotificationService, subscribe to device removals and account deletions, start
    /// the wake-up job runner and the dead-letter sweeper, and add the service to `set`.
    async fn register(
        &self,
        handles: &Handles,
        _seams: &mut Seams,
        set: &mut ServiceSet,
    ) -> Result<(), RegisterError> {
        let core = Arc::new(Core {
            cfg: self.config.clone(),
            kv: handles.stores.kv.clone(),
            bus: handles.bus.clone(),
            clock: handles.clock.clone(),
            providers: build_providers(&self.config, &handles.clock)?,
            metrics: PushMetrics::register(&handles.ctx.metrics),
            write_limiter: KeyedLimiter::new(
                "notification_write_per_device",
                self.config.write_rate,
            ),
            shutdown: handles.ctx.shutdown.clone(),
        });
        events::spawn(core.clone())
            .await
            .map_err(|e| RegisterError::failed("notification", e))?;
        jobs::spawn(core.clone())
            .await
            .map_err(|e| RegisterError::failed("notification", e))?;
        tokio::spawn(jobs::run_sweeper(core.clone()));
        tokio::spawn(jobs::sample_queue_depth(core.clone()));
        set.add(grpc::notification_server(core));
        Ok(())
    }
}
