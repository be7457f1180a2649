//! What an audit entry records.

use serde::{Deserialize, Serialize};

macro_rules! kinds {
    ($($kind:ident => $name:literal,)*) => {
        /// What happened. Stored by variant index (postcard), so new kinds go at the end and
        /// none is ever removed or reordered: old entries must keep decoding to the same kind.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum AuditKind {
            $($kind,)*
        }

        impl AuditKind {
            /// Every kind, in stored order.
            pub const ALL: &'static [AuditKind] = &[$(AuditKind::$kind,)*];

            /// The stable name operators filter by (`ROLE_CHANGED`).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuditKind::$kind => $name,)*
                }
            }
        }
    };
}

kinds! {
    AccountRegistered => "ACCOUNT_REGISTERED",
    LoginSucceeded => "LOGIN_SUCCEEDED",
    LoginFailed => "LOGIN_FAILED",
    MfaLoginFailed => "MFA_LOGIN_FAILED",
    DeviceLinked => "DEVICE_LINKED",
    DeviceRemoved => "DEVICE_REMOVED",
    MfaEnabled => "MFA_ENABLED",
    MfaDisabled => "MFA_DISABLED",
    RecoveryCodesRegenerated => "RECOVERY_CODES_REGENERATED",
    RecoveryCodeUsed => "RECOVERY_CODE_USED",
    SessionRevoked => "SESSION_REVOKED",
    RefreshTokenReused => "REFRESH_TOKEN_REUSED",
    PasswordChanged => "PASSWORD_CHANGED",
    AccountDeleted => "ACCOUNT_DELETED",
    PreKeysUploaded => "PRE_KEYS_UPLOADED",
    KeyPackagesUploaded => "KEY_PACKAGES_UPLOADED",
    SteppedUp => "STEPPED_UP",
    RoleChanged => "ROLE_CHANGED",
    AccountSuspended => "ACCOUNT_SUSPENDED",
    AccountUnsuspended => "ACCOUNT_UNSUSPENDED",
    AccountDeletedByAdmin => "ACCOUNT_DELETED_BY_ADMIN",
    MfaReset => "MFA_RESET",
    SessionsTerminated => "SESSIONS_TERMINATED",
    DeviceRemovedByAdmin => "DEVICE_REMOVED_BY_ADMIN",
    OwnerClaimed => "OWNER_CLAIMED",
    PolicyChanged => "POLICY_CHANGED",
    ClientConfigPublished => "CLIENT_CONFIG_PUBLISHED",
    SecurityEventReported => "SECURITY_EVENT_REPORTED",
    MonitoringAlert => "MONITORING_ALERT",
    AuditPruned => "AUDIT_PRUNED",
    CredentialIssued => "CREDENTIAL_ISSUED",
    CredentialRotated => "CREDENTIAL_ROTATED",
    CredentialRevoked => "CREDENTIAL_REVOKED",
    CredentialUsed => "CREDENTIAL_USED",
    CredentialRefused => "CREDENTIAL_REFUSED",
    SystemNoticeSent => "SYSTEM_NOTICE_SENT",
}

impl AuditKind {
    /// The kind named `name` ([`AuditKind::as_str`]), case-insensitively.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
    }
}

impl std::fmt::Display for AuditKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn stored_indices_of_existing_kinds_never_move() {
        // Entries written before the admin kinds existed name these indices.
        let index = |k: AuditKind| postcard::to_stdvec(&k).unwrap();
        assert_eq!(index(AuditKind::AccountRegistered), [0]);
        assert_eq!(index(AuditKind::SteppedUp), [16]);
        assert_eq!(index(AuditKind::RoleChanged), [17]);
    }

    #[test]
    fn names_round_trip_and_are_unique() {
        for k in AuditKind::ALL {
            assert_eq!(AuditKind::parse(k.as_str()), Some(*k));
            assert_eq!(AuditKind::parse(&k.as_str().to_lowercase()), Some(*k));
        }
        assert_eq!(AuditKind::parse("NOPE"), None);
    }
}
