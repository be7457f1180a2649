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

/// Tokens per generation; about 0.5 KiB each, and at most two generations are kept (about
/// 16 MiB). A device uses its token once per heartbeat interval, so every connected device
/// of a server with up to this many stays remembered.
const GENERATION: usize = 16_384;

#[derive(Clone)]
pub(crate) struct Verified {
    pub kid: String,
    pub context: AuthContext,
}

/// Two generations: a full `current` becomes `previous` and the old `previous` is dropped,
/// and a hit in `previous` moves back to `current`. Tokens in use survive a rotation; tokens
/// unused for a whole generation (expired, replaced by a refresh) are dropped with it. A
/// single map cleared when full would make every device re-verify at once.
#[derive(Default)]
struct Generations {
    current: Tokens,
    previous: Tokens,
}

/// foldhash, not SipHash: every call hashes its ~400-byte token here, and only tokens whose
/// signature verified are ever inserted, so a caller cannot choose colliding keys.
type Tokens = HashMap<Box<str>, Verified, foldhash::fast::RandomState>;

/// A dropped generation: freed by the caller once the lock is released, so that no RPC waits
/// for 16,384 entries to be deallocated.
type Dropped = Option<Tokens>;

impl Generations {
    #[must_use = "free the dropped generation after unlocking"]
    fn put(&mut self, token: Box<str>, verified: Verified) -> Dropped {
        let mut dropped = None;
        if self.current.len() >= GENERATION && !self.current.contains_key(&token) {
            let full = std::mem::take(&mut self.current);
            dropped = Some(std::mem::replace(&mut self.previous, full));
        }
        self.current.insert(token, verified);
        dropped
    }
}

#[derive(Default)]
pub(crate) struct VerifiedTokens {
    entries: Mutex<Generations>,
}

impl VerifiedTokens {
    pub(crate) fn get(&self, token: &str) -> Option<Verified> {
        let mut g = self.lock();
        if let Some(hit) = g.current.get(token) {
            return Some(hit.clone());
        }
        let (token, hit) = g.previous.remove_entry(token)?;
        let dropped = g.put(token, hit.clone());
        drop(g);
        drop(dropped);
        Some(hit)
    }

    pub(crate) fn insert(&self, token: &str, verified: Verified) {
        let dropped = self.lock().put(token.into(), verified);
        drop(dropped);
    }

    /// Forget every token (a signing key was revoked or rebound).
    pub(crate) fn clear(&self) {
        *self.lock() = Generations::default();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let g = self.lock();
        g.current.len() + g.previous.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Verified {
        Verified {
            kid: "k1".into(),
            context: AuthContext {
                account_id: crate::ids::AccountId::random(),
                device_id: crate::ids::DeviceId::FIRST,
                session_id: "s".into(),
                roles: Vec::new(),
                expires_at: u64::MAX,
                scope: crate::auth::context::TokenScope::Full,
            },
        }
    }

    #[test]
    fn tokens_in_use_survive_a_full_generation_and_the_size_stays_bounded() {
        let cache = VerifiedTokens::default();
        cache.insert("kept", entry());
        for i in 0..GENERATION {
            cache.insert(&format!("t{i}"), entry());
        }
        // "kept" went to the previous generation; a use brings it back.
        assert!(cache.get("kept").is_some());
        for i in 0..3 * GENERATION {
            cache.insert(&format!("u{i}"), entry());
            if i % 1000 == 0 {
                assert!(cache.get("kept").is_some(), "in use, never dropped");
            }
        }
        assert!(
            cache.get("t0").is_none(),
            "unused for a generation: dropped"
        );
        assert!(cache.len() <= 2 * GENERATION);
    }
}
