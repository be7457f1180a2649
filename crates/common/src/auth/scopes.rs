//! What an API credential may be used for: its scopes and the methods each admits.

use std::fmt;

/// The administrative reads an `admin.read` credential reaches (the Role::READ methods).
pub const ADMIN_READ_METHODS: &[&str] = &[
    "/guardyn.admin.v1.AdminUserService/ListAccounts",
    "/guardyn.admin.v1.AdminUserService/GetAccount",
    "/guardyn.admin.v1.AdminUserService/ListSessions",
    "/guardyn.admin.v1.AuditService/ListAuditEntries",
    "/guardyn.admin.v1.AuditService/VerifyAuditLog",
    "/guardyn.admin.v1.SecurityEventService/ListSecurityEvents",
    "/guardyn.admin.v1.SecurityEventService/ExportSecurityEvents",
    "/guardyn.admin.v1.PolicyService/GetPolicy",
    "/guardyn.admin.v1.PolicyService/ListPolicyVersions",
    "/guardyn.admin.v1.ClientConfigService/ListClientConfigVersions",
];

/// Every method of the monitoring service.
const MONITORING_SERVICE: &str = "/guardyn.admin.v1.MonitoringService/";

/// The one method a `notices.send` credential reaches.
pub const SEND_SYSTEM_NOTICE_METHOD: &str =
    "/guardyn.admin.v1.SystemNoticeService/SendSystemNotice";

/// What a credential may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialScope {
    /// The read-only administrative views ([`ADMIN_READ_METHODS`]).
    AdminRead,
    /// `guardyn.admin.v1.MonitoringService`.
    Monitoring,
    /// Sending system notices ([`SEND_SYSTEM_NOTICE_METHOD`]), the one scope that changes
    /// something: the handler admits it in place of the owner/admin role.
    NoticesSend,
}

impl CredentialScope {
    pub const ALL: [CredentialScope; 3] = [
        CredentialScope::AdminRead,
        CredentialScope::Monitoring,
        CredentialScope::NoticesSend,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdminRead => "admin.read",
            Self::Monitoring => "monitoring",
            Self::NoticesSend => "notices.send",
        }
    }

    /// Every scope name, comma-separated (for error messages).
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn allows(self, path: &str) -> bool {
        match self {
            Self::AdminRead => ADMIN_READ_METHODS.contains(&path),
            Self::Monitoring => path.starts_with(MONITORING_SERVICE),
            Self::NoticesSend => path == SEND_SYSTEM_NOTICE_METHOD,
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::AdminRead => 1,
            Self::Monitoring => 2,
            Self::NoticesSend => 4,
        }
    }
}

impl fmt::Display for CredentialScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of scopes (small and `Copy`, so [`super::TokenScope`] stays `Copy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CredentialScopes(u8);

impl CredentialScopes {
    pub fn contains(self, scope: CredentialScope) -> bool {
        self.0 & scope.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = CredentialScope> {
        CredentialScope::ALL
            .into_iter()
            .filter(move |s| self.contains(*s))
    }

    /// The scope that admits `path`, if any.
    pub fn admitting(self, path: &str) -> Option<CredentialScope> {
        self.iter().find(|s| s.allows(path))
    }
}

impl FromIterator<CredentialScope> for CredentialScopes {
    fn from_iter<I: IntoIterator<Item = CredentialScope>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |acc, s| acc | s.bit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_admit_only_their_methods() {
        let read: CredentialScopes = [CredentialScope::AdminRead].into_iter().collect();
        assert_eq!(
            read.admitting("/guardyn.admin.v1.AuditService/VerifyAuditLog"),
            Some(CredentialScope::AdminRead)
        );
        assert_eq!(
            read.admitting("/guardyn.admin.v1.AdminUserService/SuspendAccount"),
            None
        );
        assert_eq!(
            read.admitting("/guardyn.admin.v1.MonitoringService/GetMonitoringData"),
            None
        );
        let both: CredentialScopes = CredentialScope::ALL.into_iter().collect();
        assert_eq!(
            both.admitting("/guardyn.admin.v1.MonitoringService/WatchMonitoring"),
            Some(CredentialScope::Monitoring)
        );
        assert_eq!(
            CredentialScope::parse("admin.read"),
            Some(CredentialScope::AdminRead)
        );
        assert_eq!(CredentialScope::parse("admin.write"), None);
        let notices: CredentialScopes = [CredentialScope::NoticesSend].into_iter().collect();
        assert_eq!(
            notices.admitting(SEND_SYSTEM_NOTICE_METHOD),
            Some(CredentialScope::NoticesSend)
        );
        for other in [
            "/guardyn.admin.v1.SystemNoticeService/ListSystemNotices",
            "/guardyn.admin.v1.AdminUserService/ListAccounts",
            "/guardyn.admin.v1.MonitoringService/GetMonitoringData",
        ] {
            assert_eq!(notices.admitting(other), None, "{other}");
        }
        assert_eq!(
            read.admitting(SEND_SYSTEM_NOTICE_METHOD),
            None,
            "admin.read does not send"
        );
        assert_eq!(
            CredentialScope::parse("notices.send"),
            Some(CredentialScope::NoticesSend)
        );
    }
}
