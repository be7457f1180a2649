//! Key layout and stored formats of the chain.
//!
//! Keys (kept from when the log lived in auth, so existing chains stay readable):
//! `auth/v1/audit/<seq, u64 BE>` an entry, `auth/v1/audithead` the last seq and hash,
//! `auth/v1/auditcheckpoint` the last pruned seq and its hash (where verification starts).
//!
//! Entries are `[version] ++ postcard(Stored)`. Version 1 (no actor, no reason) is still read;
//! new entries are version 2. An entry's hash covers the encoding of its entry part under the
//! version it was written with, so old entries verify unchanged.

use guardyn_storage::StorageError;
use guardyn_storage::record::{Record, decode, encode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AuditKind;

const ROOT: &[u8] = b"auth/v1/";

fn key(name: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ROOT.len() + name.len() + suffix.len());
    out.extend_from_slice(ROOT);
    out.extend_from_slice(name);
    out.extend_from_slice(suffix);
    out
}

/// Key of entry `seq`.
pub fn entry_key(seq: u64) -> Vec<u8> {
    key(b"audit/", &seq.to_be_bytes())
}

/// Prefix of every entry key (the sequence number follows as 8 bytes).
pub fn entry_prefix() -> Vec<u8> {
    key(b"audit/", b"")
}

pub(crate) fn head_key() -> Vec<u8> {
    key(b"audithead", b"")
}

pub(crate) fn checkpoint_key() -> Vec<u8> {
    key(b"auditcheckpoint", b"")
}

/// The sequence number of an entry key.
pub(crate) fn seq_of(key: &[u8]) -> Option<u64> {
    key.strip_prefix(entry_prefix().as_slice())
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
}

/// One audit record as read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub time_ms: u64,
    pub kind: AuditKind,
    /// Empty when the event has no known account (e.g. a failed login for an unknown name).
    pub account_id: String,
    pub device_id: Option<u32>,
    /// The admin account that did it; `None` for what a user or the system did.
    pub actor: Option<String>,
    /// Why, as the actor gave it (empty when none was asked for).
    pub reason: String,
    /// Non-secret context (a client address, a session id, a count).
    pub detail: String,
    pub prev_hash: [u8; 32],
}

impl Record for AuditEntry {
    const VERSION: u8 = 2;
}

/// The entry layout of version 1, before actors and reasons.
#[derive(Serialize, Deserialize)]
struct EntryV1 {
    seq: u64,
    time_ms: u64,
    kind: AuditKind,
    account_id: String,
    device_id: Option<u32>,
    detail: String,
    prev_hash: [u8; 32],
}

impl Record for EntryV1 {
    const VERSION: u8 = 1;
}

#[derive(Serialize, Deserialize)]
struct StoredV1 {
    entry: EntryV1,
    hash: [u8; 32],
}

impl Record for StoredV1 {
    const VERSION: u8 = 1;
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Stored {
    pub entry: AuditEntry,
    pub hash: [u8; 32],
}

impl Record for Stored {
    const VERSION: u8 = 2;
}

impl Stored {
    pub fn new(entry: AuditEntry) -> Self {
        let hash = sha256(&encode(&entry));
        Self { entry, hash }
    }
}

/// A decoded entry with the hash it claims and the hash its content has.
pub(crate) struct Read {
    pub entry: AuditEntry,
    pub stored_hash: [u8; 32],
    pub actual_hash: [u8; 32],
}

/// Decode a stored entry of any version.
pub(crate) fn read(bytes: &[u8]) -> Result<Read, StorageError> {
    match bytes.first() {
        Some(1) => {
            let StoredV1 { entry, hash } = decode::<StoredV1>(bytes)?;
            let actual_hash = sha256(&encode(&entry));
            Ok(Read {
                entry: AuditEntry {
                    seq: entry.seq,
                    time_ms: entry.time_ms,
                    kind: entry.kind,
                    account_id: entry.account_id,
                    device_id: entry.device_id,
                    actor: None,
                    reason: String::new(),
                    detail: entry.detail,
                    prev_hash: entry.prev_hash,
                },
                stored_hash: hash,
                actual_hash,
            })
        }
        _ => {
            let Stored { entry, hash } = decode::<Stored>(bytes)?;
            let actual_hash = sha256(&encode(&entry));
            Ok(Read {
                entry,
                stored_hash: hash,
                actual_hash,
            })
        }
    }
}

/// The chain's end (`audithead`) and its pruned start (`auditcheckpoint`): a sequence number
/// and the hash of that entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Link {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Record for Link {
    const VERSION: u8 = 1;
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_version_1_entry_reads_and_its_hash_is_the_one_it_was_written_with() {
        let v1 = EntryV1 {
            seq: 1,
            time_ms: 5,
            kind: AuditKind::LoginFailed,
            account_id: "a".into(),
            device_id: Some(2),
            detail: "from 127.0.0.1".into(),
            prev_hash: [0; 32],
        };
        // The writer of version 1 hashed `encode(&entry)` with version byte 1.
        let hash = sha256(&encode(&v1));
        let bytes = encode(&StoredV1 { entry: v1, hash });
        let read = read(&bytes).unwrap();
        assert_eq!(read.stored_hash, read.actual_hash);
        assert_eq!(read.entry.kind, AuditKind::LoginFailed);
        assert_eq!(read.entry.actor, None);
        assert_eq!(read.entry.detail, "from 127.0.0.1");
    }

    #[test]
    fn keys_keep_the_layout_auth_wrote() {
        assert_eq!(entry_key(1), b"auth/v1/audit/\0\0\0\0\0\0\0\x01");
        assert_eq!(head_key(), b"auth/v1/audithead");
        assert_eq!(seq_of(&entry_key(300)), Some(300));
    }
}
