//! Revoked sessions: the in-memory list every verifier consults, per-session watches that end
//! streams, and the persisted form that a restart reloads.
//!
//! Persisted entries live under `revoked/v1/<tokens valid until, u64 BE seconds>/<session id>`
//! (value: [`RevokedSession`], a versioned record). Keying by expiry first makes the load at
//! start one range scan of the entries still in force (bounded by the revocations of one
//! access-token lifetime), and the sweep one range scan of those past it. The auth service
//! writes an entry in the transaction that marks the session revoked; every process that
//! verifies tokens loads them at start and again when its event subscription lagged.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockWriteGuard};

use guardyn_storage::record::{Record, decode, encode};
use guardyn_storage::{Direction, KeyRange, KvStore, StorageError, Txn};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock as _;

/// Size under which the in-memory list is never pruned.
const PRUNE_FLOOR: usize = 1024;
/// Entries read per scan while loading.
const LOAD_PAGE: usize = 1024;

/// Session ids whose tokens must be refused before they expire.
#[derive(Clone, Debug, Default)]
pub struct RevocationList {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    // session id -> unix seconds after which no token of the session can be valid anyway.
    revoked: HashMap<String, u64>,
    watchers: HashMap<String, Watchers>,
    // Pruning runs when the list reaches this size, so inserts stay amortised O(1).
    prune_at: usize,
}

#[derive(Debug)]
struct Watchers {
    revoked: CancellationToken,
    count: usize,
}

impl RevocationList {
    pub fn new() -> Self {
        Self::default()
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuse every token of `session_id` and end its watched streams. `until` is the latest
    /// expiry any of its tokens can have; the entry is forgotten after it.
    pub fn revoke(&self, session_id: &str, until: u64) {
        let mut inner = self.write();
        if inner.revoked.len() >= inner.prune_at.max(PRUNE_FLOOR) {
            let now = unix_now();
            inner.revoked.retain(|_, exp| *exp >= now);
            inner.prune_at = inner.revoked.len().saturating_mul(2);
        }
        let entry = inner.revoked.entry(session_id.to_owned()).or_insert(until);
        *entry = (*entry).max(until);
        if let Some(w) = inner.watchers.get(session_id) {
            w.revoked.cancel();
        }
    }

    pub fn is_revoked(&self, session_id: &str) -> bool {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner.revoked.contains_key(session_id)
    }

    /// Watch a session for revocation. Registering and checking happen under one lock, so a
    /// revocation that arrived before the watch (between the auth layer and a stream's start)
    /// is seen as surely as one that arrives after.
    pub fn watch(&self, session_id: &str) -> SessionWatch {
        let mut inner = self.write();
        let already = inner.revoked.contains_key(session_id);
        let w = inner
            .watchers
            .entry(session_id.to_owned())
            .or_insert_with(|| Watchers {
                revoked: CancellationToken::new(),
                count: 0,
            });
        w.count += 1;
        if already {
            w.revoked.cancel();
        }
        SessionWatch {
            list: self.clone(),
            session_id: session_id.to_owned(),
            revoked: w.revoked.clone(),
        }
    }
}

/// A registered interest in one session's revocation (see [`RevocationList::watch`]).
#[derive(Debug)]
pub struct SessionWatch {
    list: RevocationList,
    session_id: String,
    revoked: CancellationToken,
}

impl SessionWatch {
    /// Resolves once the session is revoked (at once if it already was).
    pub async fn revoked(&self) {
        self.revoked.cancelled().await;
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.is_cancelled()
    }
}

impl Drop for SessionWatch {
    fn drop(&mut self) {
        let mut inner = self.list.write();
        if let Some(w) = inner.watchers.get_mut(&self.session_id) {
            w.count = w.count.saturating_sub(1);
            if w.count == 0 {
                inner.watchers.remove(&self.session_id);
            }
        }
    }
}

/// The persisted form of one revocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedSession {
    pub session_id: String,
    /// Unix seconds: the latest expiry of any access token of the session.
    pub tokens_valid_until: u64,
}

impl Record for RevokedSession {
    const VERSION: u8 = 1;
}

const PREFIX: &[u8] = b"revoked/v1/";

fn entry_key(until: u64, session_id: &str) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&until.to_be_bytes());
    k.push(b'/');
    k.extend_from_slice(session_id.as_bytes());
    k
}

fn bound(until: u64) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(&until.to_be_bytes());
    k
}

/// Add the persisted entry of a revocation to `txn`, the transaction that revokes the session,
/// so that the revocation and its entry are durable together.
pub fn persist_revocation(txn: Txn, session_id: &str, tokens_valid_until: u64) -> Txn {
    let record = RevokedSession {
        session_id: session_id.to_owned(),
        tokens_valid_until,
    };
    txn.put(entry_key(tokens_valid_until, session_id), encode(&record))
}

/// Apply every persisted revocation still in force to `list`; returns how many. Reads only
/// the entries whose tokens may still be valid.
pub async fn load_revocations(
    kv: &dyn KvStore,
    list: &RevocationList,
) -> Result<usize, StorageError> {
    let end = KeyRange::prefix(PREFIX).end;
    let mut start = std::ops::Bound::Included(bound(unix_now()));
    let mut n = 0;
    loop {
        let range = KeyRange {
            start: start.clone(),
            end: end.clone(),
        };
        let page = kv.scan(range, Direction::Forward, LOAD_PAGE).await?;
        for pair in &page {
            let r = decode::<RevokedSession>(&pair.value)?;
            list.revoke(&r.session_id, r.tokens_valid_until);
            n += 1;
        }
        match page.last() {
            Some(last) if page.len() == LOAD_PAGE => {
                start = std::ops::Bound::Excluded(last.key.clone());
            }
            _ => return Ok(n),
        }
    }
}

/// Delete at most `batch` persisted revocations whose tokens have all expired by `now_s`
/// (each conditioned on its unchanged value). `true` when the batch was full (more are due).
pub async fn sweep_revocations(
    kv: &dyn KvStore,
    now_s: u64,
    batch: usize,
) -> Result<bool, StorageError> {
    let due = kv
        .scan(
            KeyRange::between(PREFIX, &bound(now_s)),
            Direction::Forward,
            batch,
        )
        .await?;
    if due.is_empty() {
        return Ok(false);
    }
    let txn = due.iter().fold(Txn::new(), |t, p| {
        t.require_equals(p.key.clone(), p.value.clone())
            .delete(p.key.clone())
    });
    // A conflict means another sweeper got there first: the next pass rescans.
    let _ = kv.commit(txn).await?;
    Ok(due.len() >= batch)
}

/// Unix seconds on the clock tokens are stamped with (the system clock).
pub(crate) fn unix_now() -> u64 {
    crate::clock::SystemClock.now_ms() / 1000
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn a_watch_sees_revocations_from_before_and_after_it_started() {
        let list = RevocationList::new();
        list.revoke("early", unix_now() + 60);
        let early = list.watch("early");
        assert!(early.is_revoked());
        let late = list.watch("late");
        let other = list.watch("other");
        assert!(!late.is_revoked());
        list.revoke("late", unix_now() + 60);
        tokio::time::timeout(std::time::Duration::from_secs(1), late.revoked())
            .await
            .expect("the watch fires");
        assert!(!other.is_revoked());
        drop((early, late, other));
        assert!(list.inner.read().unwrap().watchers.is_empty());
    }
}
