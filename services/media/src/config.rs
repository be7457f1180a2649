//! `[media]` configuration.

use guardyn_common::config::{ConfigError, Validate, key};
use guardyn_common::ratelimit::RateLimit;
use serde::{Deserialize, Serialize};

/// Largest chunk the contract allows (`CreateUploadResponse.chunk_size`: at most 1 MiB).
pub const MAX_CHUNK_SIZE: u32 = 1024 * 1024;
/// Chunk objects are numbered with 8 decimal digits.
pub const MAX_CHUNKS: u64 = 100_000_000;

/// Limits and lifetimes of the media service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Largest blob (`CreateUploadRequest.total_size`), in bytes.
    pub max_blob_bytes: u64,
    /// Size of every chunk but the last, in bytes (4096..=1 MiB); each chunk is one object.
    pub chunk_size: u32,
    /// Bytes one account may hold in unfinished uploads and stored media together.
    pub quota_bytes: u64,
    /// An unfinished upload is discarded this many seconds after it was created.
    pub upload_ttl_secs: u64,
    /// A completed blob is deleted this many seconds after completion.
    pub retention_secs: u64,
    /// Seconds between two passes of the expiry sweeper.
    pub sweep_interval_secs: u64,
    /// Most expired uploads or blobs one sweeper pass removes.
    pub sweep_batch: usize,
    /// CreateUpload calls per account.
    pub upload_rate: RateLimit,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_blob_bytes: 100 * 1024 * 1024,
            chunk_size: MAX_CHUNK_SIZE,
            quota_bytes: 1024 * 1024 * 1024,
            upload_ttl_secs: 24 * 60 * 60,
            retention_secs: 30 * 24 * 60 * 60,
            sweep_interval_secs: 60,
            sweep_batch: 100,
            upload_rate: RateLimit::new(30, 60),
        }
    }
}

impl Validate for MediaConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let positive: [(&str, u64); 6] = [
            ("max_blob_bytes", self.max_blob_bytes),
            ("quota_bytes", self.quota_bytes),
            ("upload_ttl_secs", self.upload_ttl_secs),
            ("retention_secs", self.retention_secs),
            ("sweep_interval_secs", self.sweep_interval_secs),
            ("sweep_batch", self.sweep_batch as u64),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(key(prefix, field), "must be at least 1"));
            }
        }
        if !(4096..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(ConfigError::new(
                key(prefix, "chunk_size"),
                "must be between 4096 and 1048576 (1 MiB)",
            ));
        }
        if self.max_blob_bytes.div_ceil(u64::from(self.chunk_size)) >= MAX_CHUNKS {
            return Err(ConfigError::new(
                key(prefix, "max_blob_bytes"),
                "must be less than 100000000 chunks",
            ));
        }
        self.upload_rate.validate(&key(prefix, "upload_rate"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        MediaConfig::default().validate("media").unwrap();
        let key_of = |c: MediaConfig| c.validate("media").unwrap_err().key;
        let d = MediaConfig::default;
        assert_eq!(
            key_of(MediaConfig {
                chunk_size: 2 * MAX_CHUNK_SIZE,
                ..d()
            }),
            "media.chunk_size"
        );
        assert_eq!(
            key_of(MediaConfig {
                quota_bytes: 0,
                ..d()
            }),
            "media.quota_bytes"
        );
        assert_eq!(
            key_of(MediaConfig {
                upload_rate: RateLimit::new(0, 1),
                ..d()
            }),
            "media.upload_rate"
        );
    }
}
