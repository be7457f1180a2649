//! The admin service through its public API, against a real server on port 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api {
    pub mod audit;
    pub mod client_config;
    pub mod monitoring;
    pub mod notices;
    pub mod policy;
    pub mod roles;
    pub mod security_events;
    pub mod users;
}
