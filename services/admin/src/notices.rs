//! System notices: an operator's message to every account or to a list of accounts, stored
//! until it expires, shown at once on the addressed accounts' open Listen streams (through
//! messaging, [`SYSTEM_NOTICE_SENT`]) and listed to devices that reconnect.
//!
//! Key layout ([`crate::notices_store`]): the notice itself, one inbox entry per audience
//! (`all`, or each addressed account) ordered by sending time so a device's list is two
//! reverse scans, and one expiry entry the sweeper walks in time order.

use guardyn_audit::{AuditKind, AuditRecord};
use guardyn_common::AccountId;
use guardyn_common::events::Payload as _;
use guardyn_common::events::notices::{
    NoticeSeverity, SYSTEM_NOTICE_SENT, SystemNotice, SystemNoticeSent,
};

use crate::core::Core;
use crate::error::AdminError;
use crate::notices_store::{Cursor, StoredNotice};

/// Most addressed accounts of one notice.
pub(crate) const MAX_ACCOUNTS: usize = 1000;
/// Longest text (characters).
pub(crate) const MAX_TEXT_CHARS: usize = 1000;
/// Longest reason (characters).
pub(crate) const MAX_REASON_CHARS: usize = 500;
/// The longest a notice is kept (and its expiry when none is given): a notice is news, and
/// what stays true belongs in the client configuration.
pub(crate) const MAX_LIFETIME_MS: u64 = 30 * 24 * 3600 * 1000;
/// Accounts named in the audit entry's detail (the stored notice keeps the whole list).
const AUDITED_ACCOUNTS: usize = 10;

/// Who is addressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Audience {
    All,
    /// 1..=[`MAX_ACCOUNTS`] accounts, without duplicates.
    Accounts(Vec<AccountId>),
}

/// A send request, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewNotice {
    pub audience: Audience,
    pub severity: NoticeSeverity,
    pub text: String,
    pub reason: String,
    /// Unix ms; `None`: [`MAX_LIFETIME_MS`] after sending.
    pub expires_at_ms: Option<u64>,
}

fn invalid(field: &'static str, why: impl Into<String>) -> AdminError {
    AdminError::NoticeInvalid {
        field,
        why: why.into(),
    }
}

impl NewNotice {
    /// Check every field against its bounds; `now_ms` bounds the expiry. Account ids are
    /// parsed at the edge (each violation names its index).
    pub(crate) fn parse(
        all_accounts: bool,
        accounts: Vec<AccountId>,
        severity: Option<NoticeSeverity>,
        text: &str,
        reason: &str,
        expires_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<Self, AdminError> {
        let audience = match (all_accounts, accounts.is_empty()) {
            (true, true) => Audience::All,
            (false, false) => {
                let mut unique = accounts;
                unique.sort_unstable();
                unique.dedup();
                if unique.len() > MAX_ACCOUNTS {
                    return Err(invalid(
                        "account_ids",
                        format!("at most {MAX_ACCOUNTS} accounts"),
                    ));
                }
                Audience::Accounts(unique)
            }
            (true, false) => {
                return Err(invalid(
                    "account_ids",
                    "must be empty when all_accounts is set",
                ));
            }
            (false, true) => {
                return Err(invalid(
                    "account_ids",
                    "name at least one account, or set all_accounts",
                ));
            }
        };
        let severity = severity.ok_or_else(|| invalid("severity", "info, warning or critical"))?;
        let text = text.trim();
        let chars = text.chars().count();
        // Line breaks are the only layout a notice has; other control characters could hide
        // or reorder what users are shown.
        if chars == 0 || chars > MAX_TEXT_CHARS || text.chars().any(|c| c.is_control() && c != '\n')
        {
            return Err(invalid(
                "text",
                format!("1 to {MAX_TEXT_CHARS} characters, no control characters but line breaks"),
            ));
        }
        let reason = reason.trim();
        if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
            return Err(invalid(
                "reason",
                format!("required, at most {MAX_REASON_CHARS} characters"),
            ));
        }
        if let Some(at) = expires_at_ms
            && (at <= now_ms || at > now_ms.saturating_add(MAX_LIFETIME_MS))
        {
            return Err(invalid(
                "expires_at",
                "must be in the future and at most 30 days ahead",
            ));
        }
        Ok(Self {
            audience,
            severity,
            text: text.to_owned(),
            reason: reason.to_owned(),
            expires_at_ms,
        })
    }
}

impl Core {
    /// Store `new`, record who sent it (`sender`: an admin account id or `credential:<id>`)
    /// in the audit log, and tell messaging to show it on the audience's open streams.
    pub(crate) async fn send_system_notice(
        &self,
        sender: String,
        new: NewNotice,
    ) -> Result<SystemNotice, AdminError> {
        let now = self.clock.now_ms();
        let stored = StoredNotice {
            id: uuid::Uuid::new_v4().to_string(),
            severity: new.severity,
            text: new.text,
            sent_at_ms: now,
            expires_at_ms: new
                .expires_at_ms
                .unwrap_or(now.saturating_add(MAX_LIFETIME_MS)),
            sent_by: sender.clone(),
            reason: new.reason.clone(),
            accounts: match &new.audience {
                Audience::All => None,
                Audience::Accounts(a) => Some(a.iter().map(ToString::to_string).collect()),
            },
        };
        self.store_notice(&stored).await?;
        self.audit
            .append(
                AuditRecord::new(
                    AuditKind::SystemNoticeSent,
                    "",
                    None,
                    audit_detail(&stored, &new.audience),
                )
                .by(sender, new.reason),
            )
            .await?;
        let notice = stored.notice();
        let event = SystemNoticeSent {
            notice: notice.clone(),
            accounts: match new.audience {
                Audience::All => Vec::new(),
                Audience::Accounts(a) => a,
            },
        };
        // Stored first, so a lost event only means the device sees it on its next list.
        if let Err(e) = self.bus.publish(SYSTEM_NOTICE_SENT, event.encode()).await {
            tracing::warn!(error = %e, notice = %notice.id, "could not announce a system notice");
        }
        Ok(notice)
    }

    /// The notices in force for `account` (addressed to it or to all) below `cursor`, newest
    /// first, at most `limit`, and the cursor of the next page when more may remain.
    pub(crate) async fn system_notices_for(
        &self,
        account: AccountId,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<SystemNotice>, Option<Cursor>), AdminError> {
        let (entries, next) = self
            .inbox_page(account, cursor, limit, self.clock.now_ms())
            .await?;
        let mut notices = Vec::with_capacity(entries.len());
        for c in entries {
            // Gone meanwhile: the sweeper deleted it as it expired.
            if let Some(n) = self.load_notice(&c.id).await? {
                notices.push(n.notice());
            }
        }
        Ok((notices, next))
    }
}

fn audit_detail(n: &StoredNotice, audience: &Audience) -> String {
    let to = match audience {
        Audience::All => "all accounts".to_owned(),
        Audience::Accounts(a) => {
            let shown: Vec<String> = a
                .iter()
                .take(AUDITED_ACCOUNTS)
                .map(ToString::to_string)
                .collect();
            let more = a.len().saturating_sub(AUDITED_ACCOUNTS);
            let tail = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("{} accounts: {}{tail}", a.len(), shown.join(","))
        }
    };
    format!(
        "notice={} severity={:?} expires_ms={} to {to}",
        n.id, n.severity, n.expires_at_ms
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const NOW: u64 = 1_000_000;

    fn parse(all: bool, accounts: Vec<AccountId>, text: &str) -> Result<NewNotice, AdminError> {
        NewNotice::parse(
            all,
            accounts,
            Some(NoticeSeverity::Info),
            text,
            "maintenance",
            None,
            NOW,
        )
    }

    fn field(r: Result<NewNotice, AdminError>) -> &'static str {
        match r {
            Err(AdminError::NoticeInvalid { field, .. }) => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_notice_needs_one_audience_bounded_text_a_reason_and_a_future_expiry() {
        let a = AccountId::random();
        let ok = parse(false, vec![a, a], "  hello\nworld ").unwrap();
        assert_eq!(ok.audience, Audience::Accounts(vec![a]));
        assert_eq!(ok.text, "hello\nworld");
        assert_eq!(parse(true, vec![], "x").unwrap().audience, Audience::All);
        assert_eq!(field(parse(false, vec![], "x")), "account_ids");
        assert_eq!(field(parse(true, vec![a], "x")), "account_ids");
        let many = (0..=MAX_ACCOUNTS).map(|_| AccountId::random()).collect();
        assert_eq!(field(parse(false, many, "x")), "account_ids");
        for bad in [
            "",
            "  ",
            "a\u{202e}b\u{0007}",
            &"x".repeat(MAX_TEXT_CHARS + 1),
        ] {
            assert_eq!(field(parse(true, vec![], bad)), "text", "{bad:?}");
        }
        assert!(parse(true, vec![], &"é".repeat(MAX_TEXT_CHARS)).is_ok());
        let with = |severity, reason: &str, expires| {
            NewNotice::parse(true, vec![], severity, "x", reason, expires, NOW)
        };
        assert_eq!(field(with(None, "r", None)), "severity");
        assert_eq!(field(with(Some(NoticeSeverity::Info), " ", None)), "reason");
        for past in [NOW, NOW - 1, NOW + MAX_LIFETIME_MS + 1] {
            assert_eq!(
                field(with(Some(NoticeSeverity::Info), "r", Some(past))),
                "expires_at"
            );
        }
        assert!(with(Some(NoticeSeverity::Info), "r", Some(NOW + MAX_LIFETIME_MS)).is_ok());
    }
}
