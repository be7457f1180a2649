//! The auth service through its gRPC API, on the real server (testkit).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api {
    pub mod accounts;
    pub mod audit;
    pub mod credentials;
    pub mod devices;
    pub mod events;
    pub mod hashing;
    pub mod helpers;
    pub mod keys;
    pub mod libsignal;
    pub mod lifecycle;
    pub mod lockouts;
    pub mod lookup;
    pub mod mfa;
    pub mod revocation;
    pub mod secrets_at_rest;
    pub mod sessions;
    pub mod signing_keys;
    pub mod stepup;
    pub mod sweeper;
}
