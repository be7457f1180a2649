//! What every Guardyn service shares: configuration loading, telemetry, the error-to-status
//! table, server assembly (health, reflection, gRPC-web, TLS, request ids, metrics, limits,
//! graceful shutdown), bearer-token authentication and service-to-service calls.
//!
//! This crate must not depend on any service crate, storage engine or event bus
//! implementation: services depend on it, never the reverse.

pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod mesh;
pub mod metrics;
pub mod middleware;
pub mod ratelimit;
pub mod server;
pub mod telemetry;

pub use auth::{AuthContext, caller};
pub use error::{ApiError, Reason};
