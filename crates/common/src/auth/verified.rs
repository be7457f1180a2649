//! Access tokens whose signature was already checked, so a device's next RPC with the same
//! token skips the Ed25519 verification (11 % of the server's CPU under 1:1 load before).
//!
//! Only the signature and claim parsing are cached. Every use still checks, against the
//! current state: that the signing key is still accepted (key retirement and emergency
//! revocation), expiry, and session revocation. Entries are keyed by the whole token string,
//! so a token differing in any byte is verified afresh.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::context::AuthContext;

/// Most tokens remembered; about 0.5 KiB each. A full cache first drops expired entries and,
/// if that frees nothing, starts over: the bound matters more than the hit rate.
const MAX_ENTRIES: usize = 16_384;

#[derive(Clone)]
pub(crate) struct Verified {
    pub kid: String,
    pub context: AuthContext,
}

#[derive(Default)]
pub(crate) struct VerifiedTokens {
    entries: Mutex<HashMap<Box<str>, Verified>>,
}

impl VerifiedTokens {
    pub(crate) fn get(&self, token: &str) -> Option<Verified> {
        self.lock().get(token).cloned()
    }

    pub(crate) fn insert(&self, token: &str, verified: Verified, now_secs: u64) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, v| v.context.expires_at > now_secs);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(token.into(), verified);
    }

    /// Forget every token (a signing key was revoked or the published set replaced).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Verified>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
