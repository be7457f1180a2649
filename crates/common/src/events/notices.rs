//! The admin service's system notices (`proto/guardyn/admin/v1/notices.proto`): the notice as
//! devices see it, and the event that tells messaging to show it on the addressed accounts'
//! open Listen streams.

use guardyn_proto::guardyn::admin::v1 as pb;

use super::{DecodeError, Payload, bad};
use crate::ids::AccountId;
use crate::wire::{millis, timestamp};

/// A notice was stored; messaging tells the open Listen streams of its audience.
pub const SYSTEM_NOTICE_SENT: &str = "admin.system_notice.sent";

/// How urgent a notice is. Stored by variant index (the admin service's records), so new
/// severities go at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum NoticeSeverity {
    Info,
    Warning,
    Critical,
}

impl NoticeSeverity {
    /// The wire value; `None` for UNSPECIFIED and values this version does not know.
    pub fn from_wire(value: i32) -> Option<Self> {
        match pb::SystemNoticeSeverity::try_from(value).ok()? {
            pb::SystemNoticeSeverity::Unspecified => None,
            pb::SystemNoticeSeverity::Info => Some(Self::Info),
            pb::SystemNoticeSeverity::Warning => Some(Self::Warning),
            pb::SystemNoticeSeverity::Critical => Some(Self::Critical),
        }
    }

    pub fn to_wire(self) -> pb::SystemNoticeSeverity {
        match self {
            Self::Info => pb::SystemNoticeSeverity::Info,
            Self::Warning => pb::SystemNoticeSeverity::Warning,
            Self::Critical => pb::SystemNoticeSeverity::Critical,
        }
    }
}

/// A notice as devices see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemNotice {
    /// A UUID.
    pub id: String,
    pub severity: NoticeSeverity,
    pub text: String,
    /// Unix ms.
    pub sent_at_ms: u64,
    /// Unix ms; not shown from then on.
    pub expires_at_ms: u64,
    /// Sent to every account rather than to a list.
    pub all_accounts: bool,
}

impl SystemNotice {
    pub fn to_wire(&self) -> pb::SystemNotice {
        pb::SystemNotice {
            notice_id: self.id.clone(),
            severity: self.severity.to_wire().into(),
            text: self.text.clone(),
            sent_at: Some(timestamp(self.sent_at_ms)),
            expires_at: Some(timestamp(self.expires_at_ms)),
            all_accounts: self.all_accounts,
        }
    }

    fn from_wire(w: pb::SystemNotice) -> Result<Self, DecodeError> {
        let severity =
            NoticeSeverity::from_wire(w.severity).ok_or(bad(SYSTEM_NOTICE_SENT, "severity"))?;
        if w.notice_id.is_empty() {
            return Err(bad(SYSTEM_NOTICE_SENT, "notice_id"));
        }
        Ok(Self {
            id: w.notice_id,
            severity,
            text: w.text,
            sent_at_ms: millis(w.sent_at.as_ref()),
            expires_at_ms: millis(w.expires_at.as_ref()),
            all_accounts: w.all_accounts,
        })
    }
}

/// [`SYSTEM_NOTICE_SENT`]. `accounts` is empty exactly when the notice is for every account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemNoticeSent {
    pub notice: SystemNotice,
    pub accounts: Vec<AccountId>,
}

impl Payload for SystemNoticeSent {
    type Wire = pb::SystemNoticeSentEvent;
    const WHAT: &'static str = SYSTEM_NOTICE_SENT;
    fn to_wire(&self) -> Self::Wire {
        pb::SystemNoticeSentEvent {
            notice: Some(self.notice.to_wire()),
            account_ids: self.accounts.iter().map(ToString::to_string).collect(),
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        let notice = SystemNotice::from_wire(w.notice.ok_or(bad(Self::WHAT, "notice"))?)?;
        let accounts = w
            .account_ids
            .iter()
            .map(|a| AccountId::parse(a).ok_or(bad(Self::WHAT, "account_ids")))
            .collect::<Result<Vec<_>, _>>()?;
        // An audience that is neither "all" nor a list would reach nobody, or everybody by
        // mistake.
        if notice.all_accounts != accounts.is_empty() {
            return Err(bad(Self::WHAT, "audience"));
        }
        Ok(Self { notice, accounts })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn notice(all_accounts: bool) -> SystemNotice {
        SystemNotice {
            id: "0b0e4d3c-1d7a-4b0e-9a53-2f1c5b7e8d90".into(),
            severity: NoticeSeverity::Warning,
            text: "maintenance at 02:00".into(),
            sent_at_ms: 1_000,
            expires_at_ms: 9_000,
            all_accounts,
        }
    }

    #[test]
    fn sent_events_round_trip_and_an_ambiguous_audience_is_refused() {
        let to_one = SystemNoticeSent {
            notice: notice(false),
            accounts: vec![AccountId::random()],
        };
        assert_eq!(SystemNoticeSent::decode(&to_one.encode()).unwrap(), to_one);
        let to_all = SystemNoticeSent {
            notice: notice(true),
            accounts: vec![],
        };
        assert_eq!(SystemNoticeSent::decode(&to_all.encode()).unwrap(), to_all);
        let nobody = SystemNoticeSent {
            notice: notice(false),
            accounts: vec![],
        };
        assert!(SystemNoticeSent::decode(&nobody.encode()).is_err());
        let both = SystemNoticeSent {
            notice: notice(true),
            accounts: vec![AccountId::random()],
        };
        assert!(SystemNoticeSent::decode(&both.encode()).is_err());
        assert_eq!(NoticeSeverity::from_wire(0), None);
        assert_eq!(NoticeSeverity::from_wire(3), Some(NoticeSeverity::Critical));
    }
}
