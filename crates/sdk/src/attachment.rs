//! The [`Attachment`] a message carries, and the size arithmetic of the encrypted blob format
//! (see [`crate::media`] for the formats). Plain data: no client, no network.

use zeroize::Zeroizing;

use crate::codec::{Reader, Writer};
use crate::error::SdkError;

/// Version byte of the [`Attachment`] encoding.
pub const ATTACHMENT_VERSION: u8 = 1;
/// Version byte of the encrypted blob format.
pub const BLOB_VERSION: u8 = 1;
/// Plaintext bytes per encrypted segment.
pub const SEGMENT_SIZE: usize = 64 * 1024;

pub(crate) const TAG_LEN: usize = 16;
pub(crate) const PREFIX_LEN: usize = 8;
pub(crate) const HEADER_LEN: usize = 1 + PREFIX_LEN;
/// Attachment string fields are capped at this many bytes when decoding.
const MAX_FIELD: usize = 1024;

/// A file uploaded to MediaService, with what a recipient needs to fetch and decrypt it.
/// It is sent inside an end-to-end-encrypted message ([`Client::send_attachment`]); its
/// `Debug` output omits the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Attachment {
    /// MediaService media id.
    pub media_id: String,
    /// The file's AES-256-GCM key.
    pub key: Zeroizing<[u8; 32]>,
    /// SHA-256 of the encrypted blob.
    pub sha256: [u8; 32],
    /// Size of the encrypted blob in bytes.
    pub size: u64,
    /// Size of the file in bytes.
    pub plaintext_size: u64,
    /// The sender's MIME type (not shown to the server).
    pub content_type: String,
    /// The sender's file name. Untrusted: use [`Attachment::safe_file_name`] to save it.
    pub file_name: String,
}

impl std::fmt::Debug for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attachment")
            .field("media_id", &self.media_id)
            .field("key", &"<redacted>")
            .field("size", &self.size)
            .field("plaintext_size", &self.plaintext_size)
            .field("content_type", &self.content_type)
            .field("file_name", &self.file_name)
            .finish_non_exhaustive()
    }
}

pub(crate) fn format_err(reason: &'static str) -> SdkError {
    SdkError::Format {
        what: "attachment",
        reason,
    }
}

impl Attachment {
    /// The versioned encoding carried in a message body (it contains the key).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        w.u8(ATTACHMENT_VERSION)
            .str(&self.media_id)
            .raw(self.key.as_slice())
            .raw(&self.sha256)
            .u64(self.size)
            .u64(self.plaintext_size)
            .str(&self.content_type)
            .str(&self.file_name);
        w.finish()
    }

    /// Decodes [`Attachment::to_bytes`]; rejects other versions and inconsistent sizes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SdkError> {
        let mut r = Reader::new(bytes, "attachment");
        if r.u8()? != ATTACHMENT_VERSION {
            return Err(format_err("unsupported version"));
        }
        let media_id = r.str()?;
        let key = Zeroizing::new(r.array::<32>()?);
        let sha256 = r.array::<32>()?;
        let size = r.u64()?;
        let plaintext_size = r.u64()?;
        let content_type = r.str()?;
        let file_name = r.str()?;
        r.end()?;
        if [&media_id, &content_type, &file_name]
            .iter()
            .any(|s| s.len() > MAX_FIELD)
        {
            return Err(format_err("field too long"));
        }
        if media_id.is_empty() {
            return Err(format_err("empty media id"));
        }
        if blob_size(plaintext_size) != Some(size) {
            return Err(format_err("size does not match the plaintext size"));
        }
        Ok(Self {
            media_id,
            key,
            sha256,
            size,
            plaintext_size,
            content_type,
            file_name,
        })
    }

    /// The sender's file name reduced to a safe single path component: anything up to the
    /// last `/` or `\` is dropped, control characters are removed, and an empty, `.` or `..`
    /// name becomes `attachment`. At most 200 characters.
    pub fn safe_file_name(&self) -> String {
        let last = self
            .file_name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or_default();
        let cleaned: String = last
            .chars()
            .filter(|c| !c.is_control() && *c != ':')
            .take(200)
            .collect();
        let trimmed = cleaned.trim();
        if trimmed.is_empty() || trimmed.chars().all(|c| c == '.') {
            "attachment".to_owned()
        } else {
            trimmed.to_owned()
        }
    }
}

/// Segments of a file of `plaintext` bytes (at least one).
pub(crate) fn segment_count(plaintext: u64) -> u64 {
    plaintext.div_ceil(SEGMENT_SIZE as u64).max(1)
}

/// Encrypted size of a file of `plaintext` bytes; `None` when it cannot be represented.
pub(crate) fn blob_size(plaintext: u64) -> Option<u64> {
    let segments = segment_count(plaintext);
    if segments > u64::from(u32::MAX) {
        return None;
    }
    plaintext
        .checked_add(segments.checked_mul(TAG_LEN as u64)?)?
        .checked_add(HEADER_LEN as u64)
}
