//! The messaging service through its gRPC API, on a real in-process server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/common.rs"]
mod common;
#[path = "api/cursors.rs"]
mod cursors;
#[path = "api/direct.rs"]
mod direct;
#[path = "api/durability.rs"]
mod durability;
#[path = "api/events.rs"]
mod events;
#[path = "api/groups.rs"]
mod groups;
#[path = "api/idempotency.rs"]
mod idempotency;
#[path = "api/libsignal.rs"]
mod libsignal;
#[path = "api/limits.rs"]
mod limits;
#[path = "api/listen_room.rs"]
mod listen_room;
#[path = "api/outbox.rs"]
mod outbox;
#[path = "api/proposals.rs"]
mod proposals;
#[path = "api/stream_auth.rs"]
mod stream_auth;
#[path = "api/sweeper.rs"]
mod sweeper;
#[path = "api/verification.rs"]
mod verification;
#[path = "api/wake.rs"]
mod wake;
