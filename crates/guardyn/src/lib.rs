//! The `guardyn` process: the root configuration and the assembly of services, storage and
//! event bus into one server. `main.rs` only parses the command line and calls into here, so
//! tests (through `guardyn-testkit`) start exactly what the binary starts.

pub mod admin;
pub mod app;
pub mod beacon;
pub mod bench;
mod bench_group;
mod bench_group_wire;
mod bench_idle;
pub mod bench_login;
pub mod bench_media;
mod bench_presence;
pub mod bench_proc;
mod bench_stats;
pub mod certs;
pub mod client;
pub mod config;
pub mod console;
pub mod keys;
pub mod startup;
pub mod stores;
pub mod wait;
