//! Wire ↔ domain: each request is validated once here, with `INVALID_ARGUMENT` naming the
//! field, and becomes a plain Rust value the core trusts.

use guardyn_common::ApiError;
use guardyn_common::wire::timestamp;
use guardyn_proto::guardyn::media::v1 as pb;

use crate::error::MediaError;
use crate::model::{MediaInfo, NewUpload, Range, UploadStatus};

/// Longest content-type hint, in characters.
pub(super) const MAX_CONTENT_TYPE_CHARS: usize = 128;

/// `max_blob_bytes`: the stricter of `media.max_blob_bytes` and the policy's attachment limit.
pub(super) fn create_upload(
    r: pb::CreateUploadRequest,
    max_blob_bytes: u64,
) -> Result<NewUpload, ApiError> {
    if r.total_size == 0 {
        return Err(ApiError::invalid_field("total_size", "must be at least 1"));
    }
    if r.total_size > max_blob_bytes {
        return Err(
            MediaError::too_large("total_size", format!("at most {max_blob_bytes} bytes")).into(),
        );
    }
    let sha256: [u8; 32] = r
        .sha256
        .as_slice()
        .try_into()
        .map_err(|_| ApiError::invalid_field("sha256", "must be exactly 32 bytes"))?;
    if r.content_type.chars().count() > MAX_CONTENT_TYPE_CHARS {
        return Err(ApiError::invalid_field(
            "content_type",
            format!("at most {MAX_CONTENT_TYPE_CHARS} characters"),
        ));
    }
    if r.content_type.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "content_type",
            "must not contain control characters",
        ));
    }
    Ok(NewUpload {
        total_size: r.total_size,
        sha256,
        content_type: r.content_type,
    })
}

pub(super) fn created(s: UploadStatus) -> pb::CreateUploadResponse {
    pb::CreateUploadResponse {
        upload_id: s.upload_id.to_string(),
        chunk_size: s.chunk_size,
        expires_at: Some(timestamp(s.expires_at_ms)),
    }
}

pub(super) fn upload_status(s: UploadStatus) -> pb::GetUploadResponse {
    pb::GetUploadResponse {
        committed_offset: s.committed_offset,
        total_size: s.total_size,
        chunk_size: s.chunk_size,
        expires_at: Some(timestamp(s.expires_at_ms)),
    }
}

pub(super) fn media_info(m: MediaInfo) -> pb::MediaInfo {
    pb::MediaInfo {
        media_id: m.media_id.to_string(),
        size: m.size,
        sha256: m.sha256.to_vec(),
        content_type: m.content_type,
        created_at: Some(timestamp(m.created_at_ms)),
        expires_at: Some(timestamp(m.expires_at_ms)),
    }
}

pub(super) fn range(r: &pb::DownloadRequest) -> Range {
    Range {
        offset: r.offset,
        length: (r.length > 0).then_some(r.length),
    }
}
