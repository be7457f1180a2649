//! The parts of the admin policy ([`guardyn_common::policy`]) auth enforces: password rules on
//! registration and password changes, the second-factor requirement on every token it issues,
//! and the device limit on linking. Where `[auth]` limits the same thing, the stricter wins.

use std::collections::HashSet;
use std::sync::LazyLock;

use guardyn_common::auth::TokenScope;
use guardyn_common::ids::AccountId;

use crate::core::Core;
use crate::error::{AuthError, AuthResult};
use crate::secrets;

/// The most common passwords long enough to pass any allowed minimum length (8), lowercase.
static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../data/common-passwords.txt")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
});

/// Whether `password` is on the common-password list (case-insensitively).
pub fn is_common(password: &str) -> bool {
    COMMON.contains(password.to_lowercase().as_str())
}

impl Core {
    /// Check a new password against `auth.password_min_length`, the policy's minimum and,
    /// when the policy asks for it, the common-password list.
    pub fn check_new_password(&self, password: &str) -> AuthResult<()> {
        let policy = self.policy.current();
        let min = self
            .config
            .password_min_length
            .max(policy.password.min_length as usize);
        secrets::check_password_policy(password, min)?;
        if policy.password.check_breached && is_common(password) {
            return Err(AuthError::CommonPassword);
        }
        Ok(())
    }

    /// Most devices of one account: `auth.max_devices` or the policy's, whichever is lower.
    pub fn max_devices(&self) -> usize {
        self.config
            .max_devices
            .min(self.policy.current().max_devices) as usize
    }

    /// The scope of a token about to be issued to `acc`: enrolment only while the policy
    /// requires a second factor the account has not set up.
    pub async fn token_scope(&self, acc: AccountId) -> AuthResult<TokenScope> {
        if !self.policy.current().mfa_required {
            return Ok(TokenScope::Full);
        }
        let (account, _) = self.account(acc).await?;
        Ok(if account.totp.is_some() {
            TokenScope::Full
        } else {
            TokenScope::MfaEnrollment
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_passwords_are_found_in_any_case() {
        assert!(is_common("password1"));
        assert!(is_common("PassWord1"));
        assert!(is_common("iloveyou"));
        assert!(!is_common("correct horse battery staple"));
        assert!(COMMON.len() >= 9_000, "{}", COMMON.len());
    }
}
