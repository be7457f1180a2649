//! The admin policy's attachment size limit ([`guardyn_common::policy`]), applied as the
//! stricter of it and `media.max_blob_bytes`.

use crate::core::Core;

impl Core {
    /// Largest blob a new upload may declare, in bytes.
    pub fn max_blob_bytes(&self) -> u64 {
        self.cfg
            .max_blob_bytes
            .min(self.policy.current().max_attachment_bytes)
    }
}
