//! Step-up: sensitive operations need a recent proof of the password (and of the second factor
//! when TOTP is enabled), not just a bearer token. A sign-in counts as one; `StepUp` renews it
//! for the calling session. The proof is kept in the session record, so revoking the session
//! ends it and every instance sees it.

use guardyn_common::ids::AccountId;
use guardyn_storage::Txn;
use guardyn_storage::record::encode;

use crate::core::Core;
use crate::error::{AuthError, AuthResult};
use crate::limits::take;
use crate::mfa::{SecondFactor, permission};
use crate::model::{Session, SessionState};
use crate::store;
use guardyn_audit::AuditKind;

impl Core {
    /// The password, plus the second factor when TOTP is enabled, of an authenticated caller
    /// (StepUp, DeleteAccount). A wrong code is PERMISSION_DENIED: the caller holds a token.
    pub async fn reauthenticate(
        &self,
        acc: AccountId,
        password: &str,
        factor: Option<SecondFactor>,
    ) -> AuthResult<()> {
        let account = self.recheck_password(acc, password).await?;
        if account.totp.is_some() {
            let factor = factor.ok_or(AuthError::MfaRequired)?;
            take(&self.limits.totp_per_account, &acc)?;
            self.consume_second_factor(acc, &factor)
                .await
                .map_err(permission)?;
        }
        Ok(())
    }

    /// StepUp: check the password and second factor, then mark the calling session. Returns
    /// until when (ms) sensitive operations are allowed.
    pub async fn step_up(
        &self,
        acc: AccountId,
        sid: &str,
        password: &str,
        factor: Option<SecondFactor>,
    ) -> AuthResult<u64> {
        self.reauthenticate(acc, password, factor).await?;
        let key = store::session(sid);
        for _ in 0..store::MAX_ATTEMPTS {
            let Some((mut s, raw)) = store::get::<Session>(&*self.kv, &key).await? else {
                return Err(AuthError::SessionRevoked);
            };
            if s.account_id != acc || s.state != SessionState::Live {
                return Err(AuthError::SessionRevoked);
            }
            let now = self.now_ms();
            s.stepped_up_ms = now;
            let txn = Txn::new()
                .require_equals(key.clone(), raw)
                .put(key.clone(), encode(&s));
            if store::commit(&*self.kv, txn).await? {
                self.audit(AuditKind::SteppedUp, acc, Some(s.device_id), "")
                    .await?;
                return Ok(now + self.config.step_up_window_secs * 1000);
            }
        }
        Err(AuthError::Contention)
    }

    /// Refuse with `StepUpRequired` unless session `sid` proved the password recently.
    pub async fn require_step_up(&self, sid: &str) -> AuthResult<()> {
        let window_secs = self.config.step_up_window_secs;
        let fresh = store::get::<Session>(&*self.kv, &store::session(sid))
            .await?
            .is_some_and(|(s, _)| {
                s.state == SessionState::Live
                    && s.stepped_up_ms > 0
                    && s.stepped_up_ms.saturating_add(window_secs * 1000) > self.now_ms()
            });
        if fresh {
            Ok(())
        } else {
            Err(AuthError::StepUpRequired { window_secs })
        }
    }
}
