//! ListSessions, a page at a time: the account's live, unexpired sessions in session id order,
//! read from the `acctsess/<acc>/` index after a cursor (the last session id returned).

use std::ops::Bound;

use guardyn_common::ids::AccountId;
use guardyn_storage::{Direction, KeyRange};

use crate::core::{Core, SessionInfo};
use crate::error::AuthResult;
use crate::model::{Session, SessionState};
use crate::store;

/// Default and largest page sizes.
pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 200;

/// One page and the session id to continue after (`None` at the end).
#[derive(Debug)]
pub struct SessionPage {
    pub sessions: Vec<SessionInfo>,
    pub next_after: Option<String>,
}

impl Core {
    /// Up to `size` live sessions of `acc` whose ids sort after `after`. Index entries are
    /// read in chunks of `size`; revoked and expired sessions are skipped.
    pub async fn session_page(
        &self,
        acc: AccountId,
        current: &str,
        size: usize,
        after: Option<&str>,
    ) -> AuthResult<SessionPage> {
        let now = self.now_ms();
        let prefix = store::account_sessions(acc);
        let mut start = match after {
            Some(sid) => Bound::Excluded(store::account_session(acc, sid)),
            None => Bound::Included(prefix.clone()),
        };
        let mut sessions = Vec::new();
        loop {
            let range = KeyRange {
                start: start.clone(),
                ..KeyRange::prefix(&prefix)
            };
            let pairs = self.kv.scan(range, Direction::Forward, size).await?;
            let exhausted = pairs.len() < size;
            for pair in &pairs {
                start = Bound::Excluded(pair.key.clone());
                let sid = String::from_utf8_lossy(&pair.key[prefix.len()..]).into_owned();
                let Some((s, _)) = store::get::<Session>(&*self.kv, &store::session(&sid)).await?
                else {
                    continue;
                };
                if s.state != SessionState::Live || s.refresh_expires_ms <= now {
                    continue;
                }
                sessions.push(info(sid, &s, current));
                if sessions.len() == size {
                    let next_after = sessions.last().map(|s| s.session_id.clone());
                    return Ok(SessionPage {
                        sessions,
                        next_after,
                    });
                }
            }
            if exhausted {
                return Ok(SessionPage {
                    sessions,
                    next_after: None,
                });
            }
        }
    }
}

fn info(sid: String, s: &Session, current: &str) -> SessionInfo {
    SessionInfo {
        current: sid == current,
        session_id: sid,
        device_id: s.device_id,
        created_ms: s.created_ms,
        // Coarsened to the hour.
        last_refreshed_ms: s.last_refreshed_ms - s.last_refreshed_ms % 3_600_000,
        expires_ms: s.refresh_expires_ms,
    }
}
