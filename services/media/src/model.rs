//! The service's plain domain values: upload ids and what the API reports about uploads and
//! blobs (no prost, no tonic).

use std::fmt;

use guardyn_common::{ApiError, MediaId};
use serde::{Deserialize, Serialize};

/// An upload: 128 random bits, written as 32 lowercase hex characters (in keys, object names
/// and on the wire). Unguessable, but the owner is still checked on every call.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct UploadId([u8; 16]);

impl UploadId {
    pub fn random() -> Self {
        Self(rand::random())
    }

    /// Same spelling rules as a media id (32 lowercase hex characters).
    pub fn parse(s: &str) -> Option<Self> {
        MediaId::parse(s).map(|m| Self(*m.as_bytes()))
    }

    /// [`Self::parse`] for a request field: `INVALID_ARGUMENT` naming `field` otherwise.
    pub fn parse_field(field: &str, s: &str) -> Result<Self, ApiError> {
        Self::parse(s).ok_or_else(|| ApiError::invalid_field(field, "must be an upload id"))
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&guardyn_common::ids::hex(&self.0))
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UploadId({self})")
    }
}

/// A validated CreateUpload.
#[derive(Clone, Debug)]
pub(crate) struct NewUpload {
    pub total_size: u64,
    pub sha256: [u8; 32],
    pub content_type: String,
}

/// Where an upload stands (GetUpload, CreateUpload).
#[derive(Clone, Debug)]
pub(crate) struct UploadStatus {
    pub upload_id: UploadId,
    pub committed_offset: u64,
    pub total_size: u64,
    pub chunk_size: u32,
    pub expires_at_ms: u64,
}

/// A stored blob's metadata.
#[derive(Clone, Debug)]
pub(crate) struct MediaInfo {
    pub media_id: MediaId,
    pub size: u64,
    pub sha256: [u8; 32],
    pub content_type: String,
    pub created_at_ms: u64,
    pub expires_at_ms: u64,
}

/// A validated Download range: `offset..end` (end exclusive; `None` = to the end).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Range {
    pub offset: u64,
    pub length: Option<u64>,
}

/// One piece of a Download stream.
#[derive(Clone, Debug)]
pub(crate) struct Piece {
    pub offset: u64,
    pub data: bytes::Bytes,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn upload_ids_round_trip() {
        let id = UploadId::random();
        assert_eq!(id.to_string().len(), 32);
        assert_eq!(UploadId::parse(&id.to_string()), Some(id));
        assert_eq!(UploadId::parse("xyz"), None);
    }
}
