//! Guardyn admin (`guardyn.admin.v1`): roles and user lifecycle, versioned policies, signed
//! client configuration, system notices, client security events, the audit log's read side
//! and monitoring.
//! Every RPC admits callers by role ([`guardyn_common::auth::Role`]) and records what it
//! changes in the audit log.
//!
//! Must not depend on any other service crate: what it needs of auth's accounts comes through
//! a seam ([`guardyn_service::Seams`]), shared records through `guardyn_common`.

mod audit_read;
mod audit_settings;
mod client_config;
mod client_config_key;
mod config;
mod core;
mod error;
mod grpc;
mod monitoring;
mod monitoring_events;
mod monitoring_metrics;
mod notices;
mod notices_store;
mod policy;
mod retention;
mod security_events;
mod security_events_json;
mod security_events_store;
mod users;
pub mod users_bootstrap;

use std::sync::Arc;

use guardyn_common::server::ServiceSet;
use guardyn_service::{Handles, RegisterError, Seams, Service};

use crate::core::Core;

pub use config::AdminConfig;
pub use error::AdminError;

/// The admin service's registration.
#[derive(Clone, Debug)]
pub struct Admin {
    config: AdminConfig,
}

impl Admin {
    pub fn new(config: AdminConfig) -> Self {
        Self { config }
    }
}

#[async_trait::async_trait]
impl Service for Admin {
    fn name(&self) -> &'static str {
        "admin"
    }

    async fn register(
        &self,
        handles: &Handles,
        seams: &mut Seams,
        set: &mut ServiceSet,
    ) -> Result<(), RegisterError> {
        let core = Arc::new(Core::new(self.config.clone(), handles));
        let signer = client_config_key::ConfigSigner::load_or_create(
            &self.config.client_config.signing_key_path,
            &handles.data_dir,
        )
        .map_err(|e| RegisterError::failed("admin", e))?;
        set.add(grpc::client_config_server(core.clone(), Arc::new(signer)));
        let monitor = Arc::new(monitoring::Monitor::new(self.config.monitoring.clone()));
        let metrics = monitoring_metrics::MonitoringMetrics::register(&handles.ctx.metrics);
        monitoring_events::spawn(core.clone(), monitor.clone(), metrics)
            .await
            .map_err(|e| RegisterError::failed("admin", e))?;
        set.add(grpc::monitoring_server(core.clone(), monitor));
        set.add(grpc::policy_server(core.clone()));
        set.add(grpc::audit_server(core.clone()));
        set.add(grpc::security_event_server(core.clone()));
        tokio::spawn(retention::run_audit(core.clone()));
        tokio::spawn(retention::run_security_events(core.clone()));
        set.add(grpc::system_notice_server(core.clone()));
        tokio::spawn(retention::run_system_notices(core.clone()));
        let accounts = seams
            .account_admin
            .clone()
            .ok_or(RegisterError::MissingSeam {
                service: "admin",
                seam: "account administration (auth)",
                config_key: "mesh.account_admin_addresses",
            })?;
        let users = Arc::new(users::Users::new(
            core.clone(),
            accounts,
            handles.data_dir.clone(),
        ));
        set.add(grpc::users_server(users.clone()));
        set.add(grpc::bootstrap_server(users));
        Ok(())
    }
}
