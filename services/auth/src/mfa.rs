//! TOTP (RFC 6238 via `totp-rs`: SHA-1, 6 digits, 30 s, one step of skew) and recovery codes.
//!
//! Time comes from the injected clock. Each accepted code raises the account's `last_step`, so
//! a code (and any older one) is accepted at most once. Recovery codes are stored as SHA-256
//! hashes (they carry 80 random bits, so a fast hash suffices) and removed on use. Every
//! consumption is a compare-and-set on the account record, so two racing uses of one code
//! cannot both succeed.
//!
//! The server must compute codes, so it keeps the TOTP secret itself, but only sealed with the
//! master key ([`crate::sealing`], AAD `totp:<account id>`), pending enrolments included. A
//! secret that does not open (wrong master key) fails the check with an internal error; it is
//! never treated as a wrong or a right code.

use guardyn_common::ids::AccountId;
use guardyn_storage::Txn;
use guardyn_storage::record::encode;
use tonic::Code;
use zeroize::Zeroizing;

use crate::core::Core;
use crate::error::{AuthError, AuthResult};
use crate::limits::{self, LockPolicy, take};
use crate::model::{Account, PendingTotp, Totp};
use crate::sealing::Purpose;
use crate::secrets;
use crate::store;
use guardyn_audit::AuditKind;

pub const RECOVERY_CODES: usize = 10;
const STEP: u64 = 30;

fn totp(secret: &[u8]) -> totp_rs::Totp {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(STEP)
        .with_secret(secret.to_vec())
        .build_noncompliant()
}

/// The time step a code matches (within one step of skew), if any and newer than `after`.
pub fn check_totp(secret: &[u8], code: &str, now_s: u64, after: Option<u64>) -> Option<u64> {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = totp(secret).check(code, now_s)?;
    after.is_none_or(|a| step > a).then_some(step)
}

/// The current code for a secret (clients and tests).
pub fn totp_code(secret: &[u8], now_s: u64) -> String {
    totp(secret).generate(now_s).to_string()
}

fn base32(secret: &[u8]) -> String {
    totp_rs::Secret::from(secret.to_vec()).to_base32()
}

/// The second factor of an RPC.
#[derive(Clone)]
pub enum SecondFactor {
    Totp(Zeroizing<String>),
    Recovery(Zeroizing<String>),
}

impl std::fmt::Debug for SecondFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Totp(_) => f.write_str("Totp(..)"),
            Self::Recovery(_) => f.write_str("Recovery(..)"),
        }
    }
}

/// Enrolment material for the authenticator app.
pub struct Enrollment {
    pub uri: Zeroizing<String>,
    pub secret_b32: Zeroizing<String>,
    pub expires_ms: u64,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrollment(..)")
    }
}

impl Core {
    fn now_s(&self) -> u64 {
        self.now_ms() / 1000
    }

    /// Apply `change` to the account with compare-and-set, retrying on conflict.
    async fn update_account<T>(
        &self,
        acc: AccountId,
        mut change: impl FnMut(&mut Account) -> AuthResult<T>,
    ) -> AuthResult<T> {
        let key = store::account(acc);
        for _ in 0..store::MAX_ATTEMPTS {
            let (mut account, raw) = self.account(acc).await?;
            let out = change(&mut account)?;
            let txn = Txn::new()
                .require_equals(key.clone(), raw)
                .put(key.clone(), encode(&account));
            if store::commit(&*self.kv, txn).await? {
                return Ok(out);
            }
        }
        Err(AuthError::Contention)
    }

    /// Check and consume a TOTP or recovery code. Errors: `InvalidCode` (code to be chosen by
    /// the caller), `MfaNotEnabled`, `LockedOut` (the account's persisted second-factor
    /// lockout, which every wrong code feeds, whichever RPC or ticket carried it).
    pub async fn consume_second_factor(
        &self,
        acc: AccountId,
        factor: &SecondFactor,
    ) -> AuthResult<()> {
        let policy = LockPolicy::second_factor(&self.config.second_factor_lockout);
        let key = store::mfa_lockout(acc);
        let attempt =
            limits::begin_attempt(&*self.kv, &key, &policy, self.now_ms(), "mfa_lockout").await?;
        let now_s = self.now_s();
        let owner = acc.to_string();
        let checked = self
            .update_account(acc, |a| {
                let invalid = AuthError::InvalidCode {
                    code: Code::Unauthenticated,
                };
                let totp = a.totp.as_mut().ok_or(AuthError::MfaNotEnabled)?;
                match factor {
                    SecondFactor::Totp(code) => {
                        let secret = self
                            .master
                            .open(Purpose::Totp(&owner), &totp.sealed_secret)?;
                        let step = check_totp(&secret, code, now_s, Some(totp.last_step))
                            .ok_or(invalid)?;
                        totp.last_step = step;
                        Ok(false)
                    }
                    SecondFactor::Recovery(code) => {
                        let h = secrets::recovery_code_hash(code);
                        let i = a
                            .recovery_codes
                            .iter()
                            .position(|c| *c == h)
                            .ok_or(invalid)?;
                        a.recovery_codes.remove(i);
                        Ok(true)
                    }
                }
            })
            .await;
        // Only a wrong code stays counted.
        if !matches!(checked, Err(AuthError::InvalidCode { .. })) {
            limits::release(&*self.kv, &attempt).await?;
        }
        let used_recovery = checked?;
        if used_recovery {
            self.audit(AuditKind::RecoveryCodeUsed, acc, None, "")
                .await?;
        }
        Ok(())
    }

    pub async fn begin_totp(&self, acc: AccountId) -> AuthResult<Enrollment> {
        let secret = Zeroizing::new(rand::random::<[u8; 20]>().to_vec());
        let owner = acc.to_string();
        let sealed_secret = self.master.seal(Purpose::Totp(&owner), &secret)?;
        let expires_ms = self.now_ms() + self.config.totp_enrollment_ttl_secs * 1000;
        let username = self
            .update_account(acc, |a| {
                if a.totp.is_some() {
                    return Err(AuthError::MfaAlreadyEnabled);
                }
                a.pending_totp = Some(PendingTotp {
                    sealed_secret: sealed_secret.clone(),
                    expires_ms,
                });
                Ok(a.username.clone())
            })
            .await?;
        let b32 = Zeroizing::new(base32(&secret));
        let uri = Zeroizing::new(format!(
            "otpauth://totp/Guardyn:{username}?secret={}&issuer=Guardyn&algorithm=SHA1&digits=6&period=30",
            b32.as_str()
        ));
        Ok(Enrollment {
            uri,
            secret_b32: b32,
            expires_ms,
        })
    }

    pub async fn confirm_totp(
        &self,
        acc: AccountId,
        code: &str,
    ) -> AuthResult<Vec<Zeroizing<String>>> {
        take(&self.limits.totp_per_account, &acc)?;
        let now_ms = self.now_ms();
        let now_s = self.now_s();
        let owner = acc.to_string();
        let codes: Vec<Zeroizing<String>> = (0..RECOVERY_CODES)
            .map(|_| secrets::recovery_code())
            .collect();
        let hashes: Vec<[u8; 32]> = codes
            .iter()
            .map(|c| secrets::recovery_code_hash(c))
            .collect();
        self.update_account(acc, |a| {
            if a.totp.is_some() {
                return Err(AuthError::MfaAlreadyEnabled);
            }
            let pending = a
                .pending_totp
                .as_ref()
                .filter(|p| p.expires_ms > now_ms)
                .ok_or(AuthError::MfaNotEnabled)?;
            let secret = self
                .master
                .open(Purpose::Totp(&owner), &pending.sealed_secret)?;
            let step = check_totp(&secret, code, now_s, None).ok_or(AuthError::InvalidCode {
                code: Code::InvalidArgument,
            })?;
            a.totp = Some(Totp {
                sealed_secret: pending.sealed_secret.clone(),
                enabled_ms: now_ms,
                last_step: step,
            });
            a.pending_totp = None;
            a.recovery_codes = hashes.clone();
            Ok(())
        })
        .await?;
        self.audit(AuditKind::MfaEnabled, acc, None, "").await?;
        Ok(codes)
    }

    pub async fn disable_totp(
        &self,
        acc: AccountId,
        password: &str,
        factor: SecondFactor,
    ) -> AuthResult<()> {
        let account = self.recheck_password(acc, password).await?;
        if account.totp.is_none() {
            return Err(AuthError::MfaNotEnabled);
        }
        take(&self.limits.totp_per_account, &acc)?;
        self.consume_second_factor(acc, &factor)
            .await
            .map_err(permission)?;
        self.update_account(acc, |a| {
            a.totp = None;
            a.recovery_codes.clear();
            Ok(())
        })
        .await?;
        self.audit(AuditKind::MfaDisabled, acc, None, "").await
    }

    pub async fn regenerate_recovery_codes(
        &self,
        acc: AccountId,
        code: &str,
    ) -> AuthResult<Vec<Zeroizing<String>>> {
        take(&self.limits.totp_per_account, &acc)?;
        self.consume_second_factor(acc, &SecondFactor::Totp(Zeroizing::new(code.to_owned())))
            .await
            .map_err(permission)?;
        let codes: Vec<Zeroizing<String>> = (0..RECOVERY_CODES)
            .map(|_| secrets::recovery_code())
            .collect();
        let hashes: Vec<[u8; 32]> = codes
            .iter()
            .map(|c| secrets::recovery_code_hash(c))
            .collect();
        self.update_account(acc, |a| {
            a.recovery_codes = hashes.clone();
            Ok(())
        })
        .await?;
        self.audit(AuditKind::RecoveryCodesRegenerated, acc, None, "")
            .await?;
        Ok(codes)
    }

    /// `(enabled at ms, recovery codes left)`.
    pub async fn mfa_status(&self, acc: AccountId) -> AuthResult<(Option<u64>, u32)> {
        let (a, _) = self.account(acc).await?;
        Ok((
            a.totp.map(|t| t.enabled_ms),
            u32::try_from(a.recovery_codes.len()).unwrap_or(0),
        ))
    }
}

/// A wrong code from a caller that holds a token: PERMISSION_DENIED.
pub(crate) fn permission(e: AuthError) -> AuthError {
    match e {
        AuthError::InvalidCode { .. } => AuthError::InvalidCode {
            code: Code::PermissionDenied,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn rfc6238_sha1_vector_and_single_use_by_step() {
        // RFC 6238 appendix B, SHA-1, T = 59 s -> 94287082 (8 digits); the 6-digit code is
        // its last six digits.
        let secret = b"12345678901234567890";
        assert_eq!(totp_code(secret, 59), "287082");
        let step = check_totp(secret, "287082", 59, None).unwrap();
        assert_eq!(check_totp(secret, "287082", 59, Some(step)), None);
        // One step of skew either way.
        assert!(check_totp(secret, "287082", 59 + 30, None).is_some());
        assert!(check_totp(secret, "287082", 59 + 90, None).is_none());
        assert!(check_totp(secret, "28708x", 59, None).is_none());
    }
}
