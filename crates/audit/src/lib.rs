//! The append-only, hash-chained audit log every service writes to and admin reads.
//!
//! Entry `n` (n = 1, 2, ...) carries the SHA-256 of entry `n-1` (zeros for the first, or the
//! pruning checkpoint's hash); its own hash covers its encoding including that link. The head
//! (last seq and hash) is written in the same transaction as the entries (compare-and-set, so
//! concurrent writers append in one order). Appends are batched by one writer task per
//! [`AuditLog`]: one transaction and one fsync for every entry pending. [`verify`] walks the
//! chain from the checkpoint to the head and detects any altered, inserted or removed entry,
//! including the last one. Entries never hold secrets: only kinds, ids, a reason an admin
//! typed and short non-secret details.

mod kind;
mod model;
mod prune;
mod read;
mod record;
mod writer;

pub use kind::AuditKind;
pub use model::{AuditError, AuditRecord};
pub use prune::Pruned;
pub use read::{AuditViolation, Verified, entries, page, verify};
pub use record::{AuditEntry, entry_key, entry_prefix};
pub use writer::AuditLog;

#[cfg(test)]
mod tests;
