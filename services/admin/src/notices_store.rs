//! Where system notices live.
//!
//! - `system_notice/v1/notice/<id>`: the notice ([`StoredNotice`]);
//! - `system_notice/v1/inbox/<all | account id>/<sent ms, u64 BE><id>`: one entry per audience
//!   ([`InboxEntry`]), so an account's notices are a reverse scan of its inbox merged with one
//!   of `all`;
//! - `system_notice/v1/expiry/<expires ms, u64 BE><id>`: what the sweeper walks, oldest first.
//!
//! A notice and all its entries are written, and deleted, in one transaction.

use guardyn_common::AccountId;
use guardyn_common::events::notices::{NoticeSeverity, SystemNotice};
use guardyn_storage::record::{self, Record};
use guardyn_storage::{Direction, KeyRange, KvPair, Txn};
use serde::{Deserialize, Serialize};

use crate::core::Core;
use crate::error::AdminError;

const NOTICE_PREFIX: &[u8] = b"system_notice/v1/notice/";
const INBOX_PREFIX: &[u8] = b"system_notice/v1/inbox/";
const EXPIRY_PREFIX: &[u8] = b"system_notice/v1/expiry/";
/// The inbox of notices to every account (account ids are UUIDs, never this).
const ALL: &str = "all";
/// Notices one sweeper pass deletes (each in its own transaction: one may hold 1000 accounts'
/// entries).
pub(crate) const SWEEP_BATCH: usize = 32;
/// Inbox entries read beyond a page, so that expired entries the sweeper has not reached yet
/// rarely shorten a page.
const SCAN_SLACK: usize = 32;

/// A stored notice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredNotice {
    pub id: String,
    pub severity: NoticeSeverity,
    pub text: String,
    pub sent_at_ms: u64,
    pub expires_at_ms: u64,
    /// An admin account id, or `credential:<id>`.
    pub sent_by: String,
    pub reason: String,
    /// The addressed accounts; `None`: every account.
    pub accounts: Option<Vec<String>>,
}

impl Record for StoredNotice {
    const VERSION: u8 = 1;
}

impl StoredNotice {
    pub(crate) fn notice(&self) -> SystemNotice {
        SystemNotice {
            id: self.id.clone(),
            severity: self.severity,
            text: self.text.clone(),
            sent_at_ms: self.sent_at_ms,
            expires_at_ms: self.expires_at_ms,
            all_accounts: self.accounts.is_none(),
        }
    }

    fn inboxes(&self) -> Vec<&str> {
        match &self.accounts {
            None => vec![ALL],
            Some(a) => a.iter().map(String::as_str).collect(),
        }
    }
}

/// One audience's entry of a notice: its expiry, so expired entries are skipped unread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct InboxEntry {
    expires_at_ms: u64,
}

impl Record for InboxEntry {
    const VERSION: u8 = 1;
}

/// A position in an inbox: the key suffix of a notice (sending time, then id). The page token
/// is `<sent ms>.<id>`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cursor {
    pub sent_at_ms: u64,
    pub id: String,
}

impl Cursor {
    fn suffix(&self) -> Vec<u8> {
        let mut k = self.sent_at_ms.to_be_bytes().to_vec();
        k.extend_from_slice(self.id.as_bytes());
        k
    }

    fn from_suffix(suffix: &[u8]) -> Option<Self> {
        let (time, id) = suffix.split_first_chunk::<8>()?;
        Some(Self {
            sent_at_ms: u64::from_be_bytes(*time),
            id: String::from_utf8(id.to_vec()).ok()?,
        })
    }

    pub(crate) fn token(&self) -> String {
        format!("{}.{}", self.sent_at_ms, self.id)
    }

    /// A token this server issued, or `None`.
    pub(crate) fn parse_token(token: &str) -> Option<Self> {
        let (time, id) = token.split_once('.')?;
        let id = uuid::Uuid::parse_str(id).ok()?.to_string();
        Some(Self {
            sent_at_ms: time.parse().ok()?,
            id,
        })
    }
}

fn notice_key(id: &str) -> Vec<u8> {
    [NOTICE_PREFIX, id.as_bytes()].concat()
}

fn inbox_prefix(audience: &str) -> Vec<u8> {
    [INBOX_PREFIX, audience.as_bytes(), b"/"].concat()
}

fn at(n: &StoredNotice) -> Cursor {
    Cursor {
        sent_at_ms: n.sent_at_ms,
        id: n.id.clone(),
    }
}

fn expiry_key(n: &StoredNotice) -> Vec<u8> {
    let mut k = EXPIRY_PREFIX.to_vec();
    k.extend_from_slice(&n.expires_at_ms.to_be_bytes());
    k.extend_from_slice(n.id.as_bytes());
    k
}

/// An inbox scan: its entries in force (newest first) and, when it stopped at its limit, the
/// oldest position it read (below which it knows nothing).
struct Scanned {
    live: Vec<Cursor>,
    stopped_at: Option<Cursor>,
}

fn scanned(
    prefix: &[u8],
    pairs: &[KvPair],
    limit: usize,
    now_ms: u64,
) -> Result<Scanned, AdminError> {
    let mut live = Vec::new();
    let mut oldest = None;
    for p in pairs {
        let Some(c) = p.key.strip_prefix(prefix).and_then(Cursor::from_suffix) else {
            continue;
        };
        if record::decode::<InboxEntry>(&p.value)?.expires_at_ms > now_ms {
            live.push(c.clone());
        }
        oldest = Some(c);
    }
    Ok(Scanned {
        live,
        stopped_at: if pairs.len() >= limit { oldest } else { None },
    })
}

impl Core {
    pub(crate) async fn store_notice(&self, n: &StoredNotice) -> Result<(), AdminError> {
        let entry = record::encode(&InboxEntry {
            expires_at_ms: n.expires_at_ms,
        });
        let suffix = at(n).suffix();
        let txn = n.inboxes().into_iter().fold(
            Txn::new()
                .require_absent(notice_key(&n.id))
                .put(notice_key(&n.id), record::encode(n))
                .put(expiry_key(n), entry.clone()),
            |t, audience| {
                t.put(
                    [inbox_prefix(audience), suffix.clone()].concat(),
                    entry.clone(),
                )
            },
        );
        if self.kv.commit(txn).await?.is_committed() {
            Ok(())
        } else {
            // A random 122-bit id collided: not something a retry should paper over.
            Err(guardyn_storage::StorageError::Corrupt(format!("notice id {} exists", n.id)).into())
        }
    }

    pub(crate) async fn load_notice(&self, id: &str) -> Result<Option<StoredNotice>, AdminError> {
        match self.kv.get(&notice_key(id)).await? {
            Some(bytes) => Ok(Some(record::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Positions of the notices in force for `account` below `cursor`, newest first, at most
    /// `limit`, and the cursor of the next page when more may remain.
    pub(crate) async fn inbox_page(
        &self,
        account: AccountId,
        cursor: Option<Cursor>,
        limit: usize,
        now_ms: u64,
    ) -> Result<(Vec<Cursor>, Option<Cursor>), AdminError> {
        let scan_limit = limit + 1 + SCAN_SLACK;
        let mut merged = Vec::new();
        let mut resume: Option<Cursor> = None;
        for audience in [ALL.to_owned(), account.to_string()] {
            let prefix = inbox_prefix(&audience);
            let range = match &cursor {
                Some(c) => KeyRange::between(&prefix, &[prefix.clone(), c.suffix()].concat()),
                None => KeyRange::prefix(&prefix),
            };
            let pairs = self.kv.scan(range, Direction::Reverse, scan_limit).await?;
            let s = scanned(&prefix, &pairs, scan_limit, now_ms)?;
            merged.extend(s.live);
            // Below the higher of the two stopping points one scan knows nothing, so the next
            // page starts there at the latest.
            resume = resume.max(s.stopped_at);
        }
        merged.sort_unstable_by(|a, b| b.cmp(a));
        merged.dedup();
        if let Some(r) = &resume {
            merged.retain(|c| c > r);
        }
        if merged.len() > limit {
            merged.truncate(limit);
            return Ok((merged.clone(), merged.last().cloned()));
        }
        Ok((merged, resume))
    }

    /// Delete up to [`SWEEP_BATCH`] notices expired by `now_ms`, with their entries; the
    /// number deleted.
    pub(crate) async fn sweep_notices(&self, now_ms: u64) -> Result<usize, AdminError> {
        let end = [EXPIRY_PREFIX, &now_ms.saturating_add(1).to_be_bytes()].concat();
        let due = self
            .kv
            .scan(
                KeyRange::between(EXPIRY_PREFIX, &end),
                Direction::Forward,
                SWEEP_BATCH,
            )
            .await?;
        for p in &due {
            let id = p.key.get(EXPIRY_PREFIX.len() + 8..).unwrap_or_default();
            let id = String::from_utf8_lossy(id);
            let mut txn = Txn::new().delete(p.key.clone());
            if let Some(n) = self.load_notice(&id).await? {
                let suffix = at(&n).suffix();
                txn = n
                    .inboxes()
                    .into_iter()
                    .fold(txn, |t, a| {
                        t.delete([inbox_prefix(a), suffix.clone()].concat())
                    })
                    .delete(notice_key(&n.id));
            }
            // Unconditional (a concurrent sweep deletes the same keys), so it always commits.
            if !self.kv.commit(txn).await?.is_committed() {
                tracing::warn!(notice = %id, "deleting an expired notice did not commit");
            }
        }
        Ok(due.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn cursors_order_by_time_then_id_and_round_trip_through_tokens_and_keys() {
        let id = uuid::Uuid::new_v4().to_string();
        let c = Cursor {
            sent_at_ms: 300,
            id: id.clone(),
        };
        assert_eq!(Cursor::parse_token(&c.token()), Some(c.clone()));
        assert_eq!(Cursor::from_suffix(&c.suffix()), Some(c.clone()));
        let later = Cursor {
            sent_at_ms: 256,
            id,
        };
        assert!(later < c && later.suffix() < c.suffix());
        for bad in ["", "12", "x.y", "12.not-a-uuid"] {
            assert_eq!(Cursor::parse_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn stored_notices_round_trip() {
        let n = StoredNotice {
            id: "i".into(),
            severity: NoticeSeverity::Critical,
            text: "t".into(),
            sent_at_ms: 1,
            expires_at_ms: 2,
            sent_by: "credential:c".into(),
            reason: "r".into(),
            accounts: Some(vec!["a".into()]),
        };
        assert_eq!(
            record::decode::<StoredNotice>(&record::encode(&n)).unwrap(),
            n
        );
        assert!(!n.notice().all_accounts);
    }
}
