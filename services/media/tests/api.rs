//! The media service through its gRPC API, on a real in-process server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/avatars.rs"]
mod avatars;
#[path = "api/common.rs"]
mod common;
#[path = "api/durability.rs"]
mod durability;
#[path = "api/lifecycle.rs"]
mod lifecycle;
#[path = "api/rejections.rs"]
mod rejections;
#[path = "api/transfer.rs"]
mod transfer;
#[path = "api/web.rs"]
mod web;
