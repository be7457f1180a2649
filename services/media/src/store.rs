//! Key layout and the versioned records of everything media persists. Every KV value is a
//! [`Record`] (`[version] ++ postcard`, the one encoding of all services); blob bytes live in
//! the `BlobStore`.
//!
//! Layout (accounts in canonical UUID form, upload and media ids in lowercase hex, integers
//! fixed-width big-endian):
//! - KV `media/v1/u/<upload>`: [`UploadRecord`] (owner, declared size and SHA-256, chunk size,
//!   committed offset, state: open, completed (with its media id) or discarded).
//! - KV `media/v1/m/<media>`: [`MediaRecord`] (owner, size, SHA-256, the upload whose chunks
//!   hold the bytes).
//! - KV `media/v1/a/<account>/<upload>`: empty; every upload record of an account (account
//!   deletion).
//! - KV `media/v1/q/<account>`: [`Usage`], the bytes the account holds (quota).
//! - KV `media/v1/x/<expires ms u64>/<u|m>/<id>`: empty; when an open or discarded upload
//!   (`u`) or a blob (`m`) is due for the sweeper, so a pass reads only what is due.
//! - Blob `media/<upload>/<chunk index, 8 digits>`: one object per chunk.
//! - KV `media/v1/avatar/<account>`: [`AvatarRecord`]; blobs `avatars/<account>/full.png` and
//!   `avatars/<account>/thumb.png`, the server's re-encoded PNGs.

use guardyn_common::{AccountId, MediaId};
use guardyn_storage::Record;
use serde::{Deserialize, Serialize};

use crate::model::{MediaInfo, UploadId};

pub(crate) fn upload_key(id: UploadId) -> Vec<u8> {
    format!("media/v1/u/{id}").into_bytes()
}

pub(crate) fn media_key(id: MediaId) -> Vec<u8> {
    format!("media/v1/m/{id}").into_bytes()
}

pub(crate) fn account_prefix(account: AccountId) -> Vec<u8> {
    format!("media/v1/a/{account}/").into_bytes()
}

pub(crate) fn account_upload_key(account: AccountId, id: UploadId) -> Vec<u8> {
    let mut k = account_prefix(account);
    k.extend_from_slice(id.to_string().as_bytes());
    k
}

/// The upload id of an account index key.
pub(crate) fn parse_account_upload_key(account: AccountId, key: &[u8]) -> Option<UploadId> {
    let rest = key.strip_prefix(account_prefix(account).as_slice())?;
    UploadId::parse(std::str::from_utf8(rest).ok()?)
}

pub(crate) fn usage_key(account: AccountId) -> Vec<u8> {
    format!("media/v1/q/{account}").into_bytes()
}

pub(crate) fn avatar_key(account: AccountId) -> Vec<u8> {
    format!("media/v1/avatar/{account}").into_bytes()
}

pub(crate) fn avatar_object(account: AccountId, thumbnail: bool) -> String {
    let name = if thumbnail { "thumb" } else { "full" };
    format!("avatars/{account}/{name}.png")
}

/// An account's avatar: when it was set (the bytes are blobs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AvatarRecord {
    pub updated_ms: u64,
}

impl Record for AvatarRecord {
    const VERSION: u8 = 1;
}

pub(crate) const EXPIRY_PREFIX: &[u8] = b"media/v1/x/";

/// What an expiry index entry points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    Upload(UploadId),
    Media(MediaId),
}

pub(crate) fn expiry_key(at_ms: u64, due: Due) -> Vec<u8> {
    let mut k = expiry_bound(at_ms);
    match due {
        Due::Upload(id) => k.extend_from_slice(format!("/u/{id}").as_bytes()),
        Due::Media(id) => k.extend_from_slice(format!("/m/{id}").as_bytes()),
    }
    k
}

/// Every expiry entry due before `at_ms` sorts before this key.
pub(crate) fn expiry_bound(at_ms: u64) -> Vec<u8> {
    let mut k = EXPIRY_PREFIX.to_vec();
    k.extend_from_slice(&at_ms.to_be_bytes());
    k
}

pub(crate) fn parse_expiry_key(key: &[u8]) -> Option<Due> {
    let rest = key.strip_prefix(EXPIRY_PREFIX)?.get(8..)?;
    let rest = std::str::from_utf8(rest).ok()?;
    if let Some(id) = rest.strip_prefix("/u/") {
        return UploadId::parse(id).map(Due::Upload);
    }
    MediaId::parse(rest.strip_prefix("/m/")?).map(Due::Media)
}

/// The object prefix of an upload's chunks.
pub(crate) fn chunk_prefix(id: UploadId) -> String {
    format!("media/{id}/")
}

/// The object holding chunk `index` of an upload.
pub(crate) fn chunk_key(id: UploadId, index: u64) -> String {
    format!("media/{id}/{index:08}")
}

/// Where an upload stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum UploadState {
    /// Accepting chunks; its bytes count against the owner's quota.
    Open,
    /// Published as this blob (the bytes still count, now as the blob's).
    Completed(MediaId),
    /// Given up (expired, checksum mismatch, blob deleted or expired): quota already returned,
    /// its chunk objects and records are being removed (an expiry entry makes the sweeper
    /// finish the job after a crash).
    Discarded,
}

/// `media/v1/u/<upload>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UploadRecord {
    pub owner: AccountId,
    pub total_size: u64,
    pub sha256: [u8; 32],
    pub content_type: String,
    pub chunk_size: u32,
    /// Bytes durably stored as chunk objects; always a multiple of `chunk_size` or
    /// `total_size`.
    pub committed_offset: u64,
    pub created_at_ms: u64,
    /// For an open upload, when it is discarded; for a discarded one, its expiry entry.
    pub expires_at_ms: u64,
    pub state: UploadState,
}

impl Record for UploadRecord {
    const VERSION: u8 = 1;
}

impl UploadRecord {
    /// Number of chunk objects the whole blob takes.
    pub fn chunk_count(&self) -> u64 {
        self.total_size.div_ceil(u64::from(self.chunk_size))
    }
}

/// `media/v1/m/<media>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MediaRecord {
    pub owner: AccountId,
    /// The upload whose chunk objects hold the bytes.
    pub upload: UploadId,
    pub size: u64,
    pub sha256: [u8; 32],
    pub content_type: String,
    pub chunk_size: u32,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

impl Record for MediaRecord {
    const VERSION: u8 = 1;
}

impl MediaRecord {
    pub fn info(&self, media_id: MediaId) -> MediaInfo {
        MediaInfo {
            media_id,
            size: self.size,
            sha256: self.sha256,
            content_type: self.content_type.clone(),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
        }
    }
}

/// `media/v1/q/<account>`: bytes held in open and completed uploads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Usage {
    pub bytes: u64,
}

impl Record for Usage {
    const VERSION: u8 = 1;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use guardyn_storage::record::{decode, encode};

    use super::*;

    #[test]
    fn records_round_trip_and_keys_parse() {
        let u = UploadRecord {
            owner: AccountId::random(),
            total_size: 10,
            sha256: [7; 32],
            content_type: "image/png".into(),
            chunk_size: 4096,
            committed_offset: 0,
            created_at_ms: 1,
            expires_at_ms: 2,
            state: UploadState::Completed(MediaId::random()),
        };
        assert_eq!(decode::<UploadRecord>(&encode(&u)).unwrap(), u);
        assert!(decode::<UploadRecord>(&[9, 0]).is_err());
        let m = MediaRecord {
            owner: u.owner,
            upload: UploadId::random(),
            size: 10,
            sha256: [1; 32],
            content_type: String::new(),
            chunk_size: 4096,
            created_at_ms: 3,
            expires_at_ms: 4,
        };
        assert_eq!(decode::<MediaRecord>(&encode(&m)).unwrap(), m);
        let q = Usage { bytes: 5 };
        assert_eq!(decode::<Usage>(&encode(&q)).unwrap(), q);

        let id = UploadId::random();
        assert_eq!(
            parse_expiry_key(&expiry_key(9, Due::Upload(id))),
            Some(Due::Upload(id))
        );
        let mid = MediaId::random();
        assert_eq!(
            parse_expiry_key(&expiry_key(9, Due::Media(mid))),
            Some(Due::Media(mid))
        );
        assert!(expiry_key(9, Due::Media(mid)) < expiry_bound(10));
        assert_eq!(
            parse_account_upload_key(u.owner, &account_upload_key(u.owner, id)),
            Some(id)
        );
        assert_eq!(chunk_key(id, 3), format!("media/{id}/00000003"));
    }
}
