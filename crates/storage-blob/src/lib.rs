//! Blob storage engines: implementations of [`guardyn_storage::BlobStore`] on the
//! [`object_store`] crate.
//!
//! - [`FsBlobStore`]: a local directory (single node). Every `put` writes a staging file,
//!   fsyncs it, renames it over the key and fsyncs the parent directory (and any directory it
//!   had to create), so a put is atomic and durable when it returns.
//! - [`S3BlobStore`]: a bucket of an S3-compatible service, built from [`S3Config`].
//!
//! Owns: key validation, the mapping from `object_store` errors to
//! [`guardyn_storage::StorageError`], and the contract details `object_store` does not give
//! (prefix listing by key rather than by path segment, key order, ranges past the end).
//!
//! Must not depend on gRPC, the event bus or any Guardyn service: services see only
//! `Arc<dyn BlobStore>` in `guardyn_storage::Stores`, and `guardyn::stores::open` is the only
//! place that names an engine. TLS for remote stores uses rustls with the process-wide ring
//! provider (never aws-lc-rs, never OpenSSL).

mod fs;
mod object;
mod s3;

pub use fs::FsBlobStore;
pub use s3::{S3BlobStore, S3Config};

#[cfg(test)]
mod tests;
