//! The gRPC edge: authenticate the caller, check its role, convert wire requests into
//! validated domain values, call the core, convert the results back. Nothing else lives here.

mod audit;
mod client_config;
mod monitoring;
mod notices;
mod policy;
mod security;
mod users;

pub(crate) use audit::audit_server;
pub(crate) use client_config::client_config_server;
pub(crate) use monitoring::monitoring_server;
pub(crate) use notices::system_notice_server;
pub(crate) use policy::policy_server;
pub(crate) use security::security_event_server;
pub(crate) use users::{bootstrap_server, users_server};
