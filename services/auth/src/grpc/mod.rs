//! The gRPC edge: prost in, domain calls, prost out.

mod auth;
mod convert;
mod devices;
mod keys;
mod mfa;

pub use auth::AuthApi;
pub use devices::DeviceApi;
pub use keys::KeysApi;
pub use mfa::MfaApi;
