//! The state every part of the admin service shares.

use guardyn_audit::AuditLog;
use guardyn_common::clock::SharedClock;
use guardyn_common::server::ServerContext;
use guardyn_events::EventBus;
use guardyn_service::Handles;
use guardyn_storage::KvStore;
use std::sync::Arc;

use crate::config::AdminConfig;

/// State shared by the gRPC services and the background tasks.
#[derive(Debug)]
pub(crate) struct Core {
    pub cfg: AdminConfig,
    pub kv: Arc<dyn KvStore>,
    pub bus: Arc<dyn EventBus>,
    pub clock: SharedClock,
    pub ctx: ServerContext,
    /// Every admin action is recorded here, with its actor and reason.
    pub audit: AuditLog,
}

impl Core {
    pub fn new(cfg: AdminConfig, handles: &Handles) -> Self {
        Self {
            cfg,
            kv: handles.stores.kv.clone(),
            bus: handles.bus.clone(),
            clock: handles.clock.clone(),
            ctx: handles.ctx.clone(),
            audit: AuditLog::new(handles.stores.kv.clone(), handles.clock.clone()),
        }
    }
}
