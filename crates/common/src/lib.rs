//! What every Guardyn service shares: configuration loading, telemetry, the error-to-status
//! table, server assembly (health, reflection, gRPC-web, TLS, request ids, metrics, limits,
//! graceful shutdown), bearer-token authentication and service-to-service calls; and the
//! contract types every service shares: identifiers ([`ids`]), event subjects and payloads
//! ([`events`]), and the one mapping of storage failures to API errors ([`error`]).
//!
//! This crate must not depend on any service crate, storage engine or event bus
//! implementation (the storage traits crate is fine: it maps their errors): services depend on it, never the reverse.

pub mod admin;
pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod ids;
pub mod mesh;
mod methods;
pub mod metrics;
pub mod middleware;
pub mod policy;
pub mod ratelimit;
pub mod server;
pub mod stats;
pub mod telemetry;
pub mod tls_reload;
pub mod wire;

pub use auth::{AuthContext, caller};
pub use error::{ApiError, Reason};
pub use ids::{ACCOUNT_ID_LEN, AccountId, DeviceId, GroupId, MediaId};
