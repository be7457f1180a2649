//! On-disk layout: table definitions and the byte encodings of keys and values.
//!
//! Tables (all `&[u8] -> &[u8]`):
//! - `kv`: the [`guardyn_storage::KvStore`] keyspace; keys and values stored exactly as given.
//! - `log_entries`: key `partition_len: u16 BE | partition | seq: u64 BE` (so one partition's
//!   entries are contiguous and seq-ordered, and no partition name can be a prefix of another's
//!   key range), value [`encode_entry`].
//! - `log_meta`: key `partition`, value [`encode_meta`]: the durable sequence counter (never
//!   deleted, so sequences are never reused) and the stored-entry count.
//! - `log_expiry`: key `expires_at_ms: u64 BE | entry key`, empty value: the sweeper's index,
//!   ordered by expiry so each tick reads only what is due.
//! - `store_meta`: `format -> [FORMAT_VERSION]`, checked at open.

use guardyn_storage::{StorageError, StorageResult};
use redb::TableDefinition;

pub(crate) type Bytes = &'static [u8];

pub(crate) const KV: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("kv");
pub(crate) const LOG_ENTRIES: TableDefinition<'_, &[u8], &[u8]> =
    TableDefinition::new("log_entries");
pub(crate) const LOG_META: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("log_meta");
pub(crate) const LOG_EXPIRY: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("log_expiry");
pub(crate) const STORE_META: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("store_meta");

pub(crate) const FORMAT_KEY: Bytes = b"format";
/// Version of the whole on-disk layout described above.
pub(crate) const FORMAT_VERSION: u8 = 1;
/// Leading byte of every `log_entries` value.
const ENTRY_VERSION: u8 = 1;
/// Leading byte of every `log_meta` value.
const META_VERSION: u8 = 1;

/// Key of entry `seq` in `partition` (partition length is at most `MAX_KEY_LEN`, checked by
/// the caller, so it fits the u16 prefix).
pub(crate) fn entry_key(partition: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + partition.len() + 8);
    key.extend_from_slice(&partition_len(partition).to_be_bytes());
    key.extend_from_slice(partition);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn partition_len(partition: &[u8]) -> u16 {
    u16::try_from(partition.len()).unwrap_or(u16::MAX)
}

/// The partition an entry key belongs to.
pub(crate) fn entry_key_partition(key: &[u8]) -> StorageResult<&[u8]> {
    let corrupt = || StorageError::Corrupt("log entry key too short".into());
    let (len, rest) = key.split_first_chunk::<2>().ok_or_else(corrupt)?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() != len + 8 {
        return Err(corrupt());
    }
    Ok(&rest[..len])
}

pub(crate) fn expiry_key(expires_at_ms: u64, entry_key: &[u8]) -> Vec<u8> {
    [&expires_at_ms.to_be_bytes()[..], entry_key].concat()
}

/// The entry key inside an expiry-index key.
pub(crate) fn expiry_key_entry(key: &[u8]) -> StorageResult<&[u8]> {
    key.get(8..)
        .ok_or_else(|| StorageError::Corrupt("log expiry key too short".into()))
}

/// A decoded `log_entries` value.
#[derive(Debug)]
pub(crate) struct StoredEntry<'a> {
    pub appended_at_ms: u64,
    pub expires_at_ms: u64,
    pub payload: &'a [u8],
}

const ENTRY_HEADER: usize = 1 + 8 + 8;

pub(crate) fn encode_entry(appended_at_ms: u64, expires_at_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(ENTRY_HEADER + payload.len());
    v.push(ENTRY_VERSION);
    v.extend_from_slice(&appended_at_ms.to_be_bytes());
    v.extend_from_slice(&expires_at_ms.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

pub(crate) fn decode_entry(value: &[u8]) -> StorageResult<StoredEntry<'_>> {
    let (&version, rest) = value
        .split_first()
        .ok_or_else(|| StorageError::Corrupt("empty log entry".into()))?;
    if version != ENTRY_VERSION {
        return Err(StorageError::Corrupt(format!(
            "log entry version {version}, expected {ENTRY_VERSION}"
        )));
    }
    let truncated = || StorageError::Corrupt("truncated log entry".into());
    let (appended, rest) = rest.split_first_chunk::<8>().ok_or_else(truncated)?;
    let (expires, payload) = rest.split_first_chunk::<8>().ok_or_else(truncated)?;
    Ok(StoredEntry {
        appended_at_ms: u64::from_be_bytes(*appended),
        expires_at_ms: u64::from_be_bytes(*expires),
        payload,
    })
}

/// Per-partition counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub next_seq: u64,
    pub len: u64,
}

impl Default for Meta {
    fn default() -> Self {
        Self {
            next_seq: 1,
            len: 0,
        }
    }
}

pub(crate) fn encode_meta(meta: Meta) -> [u8; 17] {
    let mut v = [0u8; 17];
    v[0] = META_VERSION;
    v[1..9].copy_from_slice(&meta.next_seq.to_be_bytes());
    v[9..17].copy_from_slice(&meta.len.to_be_bytes());
    v
}

pub(crate) fn decode_meta(value: &[u8]) -> StorageResult<Meta> {
    match value.split_first() {
        Some((&META_VERSION, rest)) if rest.len() == 16 => {
            let (next, len) = rest.split_at(8);
            let mut a = [0u8; 8];
            let mut b = [0u8; 8];
            a.copy_from_slice(next);
            b.copy_from_slice(len);
            Ok(Meta {
                next_seq: u64::from_be_bytes(a),
                len: u64::from_be_bytes(b),
            })
        }
        _ => Err(StorageError::Corrupt(
            "unknown or truncated log partition metadata".into(),
        )),
    }
}

/// Maps any engine error to the trait's error type; the message carries no user data.
pub(crate) fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(e.to_string())
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn encodings_round_trip_and_reject_unknown_versions() {
        let key = entry_key(b"dev", 7);
        assert_eq!(entry_key_partition(&key).unwrap(), b"dev");
        assert_eq!(expiry_key_entry(&expiry_key(9, &key)).unwrap(), key);
        assert!(entry_key(b"a", u64::MAX) < entry_key(b"aa", 1));

        let v = encode_entry(1, 2, b"payload");
        let e = decode_entry(&v).unwrap();
        assert_eq!(
            (e.appended_at_ms, e.expires_at_ms, e.payload),
            (1, 2, &b"payload"[..])
        );
        let mut bad = v.clone();
        bad[0] = 2;
        assert!(matches!(decode_entry(&bad), Err(StorageError::Corrupt(_))));
        assert!(matches!(
            decode_entry(&v[..10]),
            Err(StorageError::Corrupt(_))
        ));

        let m = Meta {
            next_seq: 5,
            len: 3,
        };
        assert_eq!(decode_meta(&encode_meta(m)).unwrap(), m);
        assert!(decode_meta(&[9; 17]).is_err());
    }
}
