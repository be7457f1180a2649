//! The storage sweeper: deletes records that can no longer matter, in bounded passes on the
//! service clock.
//!
//! - `session/<sid>` with its `acctsess/` index entry: a revoked (or device-removed) session
//!   once every access token it issued expired (with the verifier's leeway), any session once
//!   its refresh token expired;
//! - `acctsess/` entries whose session record is gone;
//! - `link/` requests and `mfaticket/` records past their expiry;
//! - lockout records (`lockaddr/`, `lockout/<name>` for any name, known or not, `mfalock/`)
//!   whose lockout ended, that counted no failure for their `max_secs` and, for the decaying
//!   ones, have no failure left to count;
//! - `deleted/<acc>` tombstones: the purge of an account deletion that was interrupted is
//!   finished, then the tombstone goes;
//! - persisted session revocations (`revoked/v1/`, `guardyn_common::auth`) once every token of
//!   their session expired, by the token clock.
//!
//! Each pass reads at most `auth.sweep_batch` keys per prefix, resuming after the last key of
//! the previous pass (a cursor kept in memory; it wraps around at the end). Every delete is
//! conditioned on the bytes read (`require_equals`), so a record changed meanwhile is kept.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use guardyn_common::auth::sweep_revocations;
use guardyn_common::clock::run_passes;
use guardyn_common::ids::AccountId;
use guardyn_common::server::ServerContext;
use guardyn_storage::record::{Record, decode};
use guardyn_storage::{Direction, KeyRange, KvPair, Txn};

use crate::core::{Core, token_now_s};
use crate::error::AuthResult;
use crate::limits::LockPolicy;
use crate::model::{LinkRequest, Lockout, MfaTicket, Session, SessionState};
use crate::store;

/// Leeway the verifier grants to token expiry, in seconds.
const LEEWAY_S: u64 = 60;

/// The kinds of records swept, one cursor each.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Session,
    Index,
    Link,
    Ticket,
    Lockout,
    LockoutFrom,
    MfaLockout,
    Tombstone,
}

const KINDS: [Kind; 8] = [
    Kind::Session,
    Kind::Index,
    Kind::Link,
    Kind::Ticket,
    Kind::Lockout,
    Kind::LockoutFrom,
    Kind::MfaLockout,
    Kind::Tombstone,
];

impl Kind {
    fn prefix(self) -> Vec<u8> {
        match self {
            Self::Session => store::sessions_prefix(),
            Self::Index => store::account_sessions_prefix(),
            Self::Link => store::link_codes_prefix(),
            Self::Ticket => store::mfa_tickets_prefix(),
            Self::Lockout => store::lockouts_prefix(),
            Self::LockoutFrom => store::lockouts_from_prefix(),
            Self::MfaLockout => store::mfa_lockouts_prefix(),
            Self::Tombstone => store::tombstones_prefix(),
        }
    }
}

/// Where each prefix's walk resumes: the last key read, `None` to start over.
#[derive(Debug, Default)]
pub struct Cursors([Option<Vec<u8>>; KINDS.len()]);

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Keys read, over all prefixes.
    pub read: usize,
    /// Records deleted.
    pub deleted: usize,
    /// Some prefix filled its batch (more to read at once).
    pub full: bool,
}

impl Core {
    /// One bounded pass at `now_ms` (service clock).
    pub async fn sweep(&self, cursors: &mut Cursors, now_ms: u64) -> AuthResult<Swept> {
        let mut out = Swept::default();
        let batch = self.config.sweep_batch;
        for (i, kind) in KINDS.into_iter().enumerate() {
            let prefix = kind.prefix();
            let range = match &cursors.0[i] {
                Some(last) => KeyRange {
                    start: Bound::Excluded(last.clone()),
                    ..KeyRange::prefix(&prefix)
                },
                None => KeyRange::prefix(&prefix),
            };
            let pairs = self.kv.scan(range, Direction::Forward, batch).await?;
            out.read += pairs.len();
            if pairs.len() >= batch {
                out.full = true;
                cursors.0[i] = pairs.last().map(|p| p.key.clone());
            } else {
                cursors.0[i] = None;
            }
            for pair in &pairs {
                if self.sweep_one(kind, pair, now_ms).await? {
                    out.deleted += 1;
                }
            }
        }
        // Revocation entries are keyed by token expiry on the token clock, so that clock
        // decides: swept on the service clock, a moved test clock would drop live ones.
        if sweep_revocations(&*self.kv, token_now_s(), batch).await? {
            out.full = true;
        }
        Ok(out)
    }

    /// Delete one record if it is dead. `true` when deleted.
    async fn sweep_one(&self, kind: Kind, pair: &KvPair, now_ms: u64) -> AuthResult<bool> {
        let mut txn = Txn::new()
            .require_equals(pair.key.clone(), pair.value.clone())
            .delete(pair.key.clone());
        let dead = match kind {
            Kind::Session => {
                let Some(s) = readable::<Session>(pair) else {
                    return Ok(false);
                };
                if !self.session_dead(&s, now_ms) {
                    return Ok(false);
                }
                let sid = &pair.key[store::sessions_prefix().len()..];
                let sid = String::from_utf8_lossy(sid);
                txn = txn.delete(store::account_session(s.account_id, &sid));
                true
            }
            Kind::Index => {
                let Some(sid) = index_session(&pair.key) else {
                    return Ok(false);
                };
                self.kv.get(&store::session(&sid)).await?.is_none()
            }
            Kind::Link => readable::<LinkRequest>(pair).is_some_and(|l| l.expires_ms <= now_ms),
            Kind::Ticket => readable::<MfaTicket>(pair).is_some_and(|t| t.expires_ms <= now_ms),
            Kind::Lockout => {
                let policy = LockPolicy::login_global(&self.config.lockout);
                readable::<Lockout>(pair).is_some_and(|l| policy.expired(&l, now_ms))
            }
            Kind::LockoutFrom => {
                let policy = LockPolicy::login(&self.config.lockout);
                readable::<Lockout>(pair).is_some_and(|l| policy.expired(&l, now_ms))
            }
            Kind::MfaLockout => {
                let policy = LockPolicy::second_factor(&self.config.second_factor_lockout);
                readable::<Lockout>(pair).is_some_and(|l| policy.expired(&l, now_ms))
            }
            // An account deletion that did not finish (the process died mid-purge): finish it.
            Kind::Tombstone => {
                let rest = &pair.key[store::tombstones_prefix().len()..];
                let Some(acc) = std::str::from_utf8(rest).ok().and_then(AccountId::parse) else {
                    return Ok(false);
                };
                return self.purge_deleted_account(acc).await;
            }
        };
        Ok(dead && store::commit(&*self.kv, txn).await?)
    }

    /// No token of the session can be valid any more.
    pub(crate) fn session_dead(&self, s: &Session, now_ms: u64) -> bool {
        if s.refresh_expires_ms <= now_ms {
            // Access tokens are issued with refreshes, never outliving the refresh token.
            return true;
        }
        if s.state == SessionState::Live {
            return false;
        }
        // The last access token was issued at the last refresh (service clock); its `exp` is
        // on the token clock, checked too, so that the revocation outlives it on both.
        let ttl_ms = self.config.access_token_ttl_secs.saturating_mul(1000);
        let issued_until = s
            .last_refreshed_ms
            .saturating_add(ttl_ms)
            .saturating_add(LEEWAY_S * 1000);
        issued_until <= now_ms && s.access_exp_max_s + LEEWAY_S <= token_now_s().max(now_ms / 1000)
    }
}

/// Decode a record; an unreadable one is left alone (and logged).
fn readable<R: Record>(pair: &KvPair) -> Option<R> {
    match decode::<R>(&pair.value) {
        Ok(r) => Some(r),
        Err(err) => {
            tracing::warn!(key = %String::from_utf8_lossy(&pair.key), error = %err, "sweeper skips an unreadable record");
            None
        }
    }
}

/// The session id of an `acctsess/<acc>/<sid>` key.
fn index_session(key: &[u8]) -> Option<String> {
    let rest = key.get(store::account_sessions_prefix().len()..)?;
    let rest = std::str::from_utf8(rest).ok()?;
    let (acc, sid) = rest.split_once('/')?;
    AccountId::parse(acc)?;
    (!sid.is_empty()).then(|| sid.to_owned())
}

/// The sweeper task: one pass every `auth.sweep_interval_secs` (and whenever a manual clock
/// jumps); a pass that filled a batch is followed by another at once. Stops at shutdown.
pub fn spawn(core: Arc<Core>, ctx: ServerContext) {
    tokio::spawn(async move {
        let interval = Duration::from_secs(core.config.sweep_interval_secs);
        let cursors = tokio::sync::Mutex::new(Cursors::default());
        run_passes(&core.clock, &ctx.shutdown, interval, || {
            let core = &core;
            let cursors = &cursors;
            async move {
                let mut cursors = cursors.lock().await;
                match core.sweep(&mut cursors, core.now_ms()).await {
                    Ok(s) => {
                        if s.deleted > 0 {
                            tracing::debug!(read = s.read, deleted = s.deleted, "auth sweep");
                        }
                        s.full
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "auth sweep failed");
                        false
                    }
                }
            }
        })
        .await;
    });
}
