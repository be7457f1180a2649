//! Accounts: register, login (with the MFA step), password change, deletion.

use std::net::IpAddr;

use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_storage::Txn;
use guardyn_storage::record::encode;
use zeroize::Zeroizing;

use crate::admin_state;
use crate::core::{Core, IssuedTokens, day};
use crate::deletion;
use crate::error::{AuthError, AuthResult};
use crate::limits::{self, take};
use crate::mfa::SecondFactor;
use crate::model::{Account, Device, MfaTicket, SessionState, UsernameEntry};
use crate::prekeys::{PreKeyUpload, add_upload, check_identity_key, validate_upload};
use crate::secrets;
use crate::store;
use guardyn_audit::{AuditKind, AuditRecord};

/// A device joining an account (Register, LinkDevice), validated at the edge.
#[derive(Clone, Debug)]
pub struct NewDevice {
    pub name: String,
    pub registration_id: u32,
    pub identity_key: Vec<u8>,
    pub prekeys: PreKeyUpload,
}

impl NewDevice {
    /// Key checks that need the identity key; `prefix` is the request path (`device.`).
    pub fn validate(&self, prefix: &str) -> AuthResult<()> {
        check_identity_key(&self.identity_key, &format!("{prefix}identity_key"))?;
        validate_upload(&self.identity_key, &self.prekeys, prefix)
    }

    pub fn record(&self, now_ms: u64) -> Device {
        Device {
            name: self.name.clone(),
            registration_id: self.registration_id,
            identity_key: self.identity_key.clone(),
            created_ms: now_ms,
            last_seen_ms: day(now_ms),
            session_id: None,
        }
    }
}

/// Outcome of the first login factor.
#[derive(Debug)]
pub enum LoginOutcome {
    Tokens(IssuedTokens),
    Mfa {
        ticket: Zeroizing<String>,
        expires_ms: u64,
    },
}

impl Core {
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        device: NewDevice,
        addr: IpAddr,
    ) -> AuthResult<(AccountId, IssuedTokens)> {
        take(&self.limits.register_per_address, &addr)?;
        let name = secrets::normalize_username(username)?;
        self.check_new_password(password)?;
        device.validate("device.")?;
        let hash = self.hash_password(password).await?;
        let acc = AccountId::random();
        let dev = DeviceId::FIRST;
        let now = self.now_ms();
        let account = Account {
            username: name.clone(),
            password: hash,
            created_ms: now,
            next_device_id: 2,
            totp: None,
            pending_totp: None,
            recovery_codes: Vec::new(),
            link_code: None,
            device_set: 0,
        };
        let txn = Txn::new()
            .require_absent(store::username(&name))
            .put(store::username(&name), encode(&UsernameEntry(acc)))
            .put(store::account(acc), encode(&account))
            .put(store::device(acc, dev), encode(&device.record(now)));
        let txn = add_upload(txn, acc, dev, &device.prekeys).0;
        if !store::commit(&*self.kv, txn).await? {
            return Err(AuthError::UsernameTaken);
        }
        self.audit(
            AuditKind::AccountRegistered,
            acc,
            Some(dev),
            format!("from {addr}"),
        )
        .await?;
        let tokens = self.start_session(acc, dev, true).await?;
        Ok((acc, tokens))
    }

    async fn account_by_name(&self, name: &str) -> AuthResult<Option<(AccountId, Account)>> {
        let Some((UsernameEntry(acc), _)) =
            store::get::<UsernameEntry>(&*self.kv, &store::username(name)).await?
        else {
            return Ok(None);
        };
        Ok(store::get::<Account>(&*self.kv, &store::account(acc))
            .await?
            .map(|(a, _)| (acc, a)))
    }

    pub async fn account(&self, acc: AccountId) -> AuthResult<(Account, Vec<u8>)> {
        store::get::<Account>(&*self.kv, &store::account(acc))
            .await?
            .ok_or(AuthError::DeviceRemoved)
    }

    /// `device_id` is the raw request value: an unknown or impossible device fails like a
    /// wrong password, so it is not validated at the edge.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        device_id: u32,
        addr: IpAddr,
    ) -> AuthResult<(AccountId, LoginOutcome)> {
        take(&self.limits.login_per_address, &addr)?;
        // Malformed names are checked like unknown ones: same error, same work.
        let name =
            secrets::normalize_username(username).unwrap_or_else(|_| username.to_lowercase());
        take(&self.limits.login_per_account, &(addr, name.clone()))?;
        take(&self.limits.login_per_username, &name)?;
        let now = self.now_ms();
        limits::check_login_lockout(&*self.kv, &name, addr, now).await?;
        let found = self.account_by_name(&name).await?;
        let dev = DeviceId::new(device_id);
        let (acc, signed_in) = match found {
            Some((acc, account)) => {
                let ok = self
                    .check_password(password, account.password.clone())
                    .await?;
                let has_device = match dev {
                    Some(dev) => self.kv.get(&store::device(acc, dev)).await?.is_some(),
                    None => false,
                };
                let signed_in = dev.filter(|_| ok && has_device).map(|d| (account, d));
                (Some(acc), signed_in)
            }
            None => {
                let _ = self
                    .check_password(password, self.dummy_hash.clone())
                    .await?;
                (None, None)
            }
        };
        let (Some(acc), Some((account, dev))) = (acc, signed_in) else {
            limits::record_login_failure(&*self.kv, &self.config.lockout, &name, addr, now).await?;
            // Unknown accounts are logged with an empty id, known ones with the device asked for.
            // A flood is logged as a count rather than an entry per attempt.
            let logged = take(&self.limits.failed_login_audit, &()).is_ok();
            self.audit
                .append_sampled(
                    logged,
                    AuditRecord::new(
                        AuditKind::LoginFailed,
                        acc.map(|a| a.to_string()).unwrap_or_default(),
                        acc.map(|_| device_id),
                        format!("from {addr}"),
                    ),
                )
                .await?;
            return Err(AuthError::InvalidCredentials {
                authenticated: false,
            });
        };
        limits::clear_login_failures(&*self.kv, &name, addr).await?;
        // Only a caller who knows the password learns of the suspension.
        admin_state::check_active(&admin_state::load(&*self.kv, acc).await?.0)?;
        if account.totp.is_some() {
            let ticket = secrets::random_token();
            let expires_ms = now + self.config.mfa_ticket_ttl_secs * 1000;
            let record = MfaTicket {
                account_id: acc,
                device_id: dev,
                expires_ms,
                attempts_left: 5,
            };
            let key = store::mfa_ticket(&secrets::sha256(ticket.as_bytes()));
            self.kv.put(&key, &encode(&record)).await?;
            return Ok((acc, LoginOutcome::Mfa { ticket, expires_ms }));
        }
        let tokens = self.start_session(acc, dev, true).await?;
        self.audit(
            AuditKind::LoginSucceeded,
            acc,
            Some(dev),
            format!("from {addr}"),
        )
        .await?;
        Ok((acc, LoginOutcome::Tokens(tokens)))
    }

    /// CompleteMfaLogin. Returns the tokens and the recovery codes left.
    pub async fn complete_mfa_login(
        &self,
        ticket: &str,
        factor: SecondFactor,
        addr: IpAddr,
    ) -> AuthResult<(IssuedTokens, u32)> {
        take(&self.limits.login_per_address, &addr)?;
        let key = store::mfa_ticket(&secrets::sha256(ticket.as_bytes()));
        let now = self.now_ms();
        let Some((t, raw)) = store::get::<MfaTicket>(&*self.kv, &key).await? else {
            return Err(AuthError::CodeExpired);
        };
        if t.expires_ms <= now || t.attempts_left == 0 {
            self.kv.delete(&key).await?;
            return Err(AuthError::CodeExpired);
        }
        take(&self.limits.totp_per_account, &t.account_id)?;
        match self.consume_second_factor(t.account_id, &factor).await {
            Ok(()) => {}
            Err(AuthError::InvalidCode { .. }) => {
                let mut left = t.clone();
                left.attempts_left -= 1;
                let txn = if left.attempts_left == 0 {
                    Txn::new()
                        .require_equals(key.clone(), raw)
                        .delete(key.clone())
                } else {
                    Txn::new()
                        .require_equals(key.clone(), raw)
                        .put(key.clone(), encode(&left))
                };
                let _ = store::commit(&*self.kv, txn).await?;
                self.audit(
                    AuditKind::MfaLoginFailed,
                    t.account_id,
                    Some(t.device_id),
                    format!("from {addr}"),
                )
                .await?;
                return Err(AuthError::InvalidCode {
                    code: tonic::Code::Unauthenticated,
                });
            }
            Err(e) => return Err(e),
        }
        // Single use: only the caller that deletes the ticket signs in.
        let txn = Txn::new().require_exists(key.clone()).delete(key);
        if !store::commit(&*self.kv, txn).await? {
            return Err(AuthError::CodeExpired);
        }
        let tokens = self.start_session(t.account_id, t.device_id, true).await?;
        self.audit(
            AuditKind::LoginSucceeded,
            t.account_id,
            Some(t.device_id),
            format!("mfa from {addr}"),
        )
        .await?;
        let (account, _) = self.account(t.account_id).await?;
        Ok((
            tokens,
            u32::try_from(account.recovery_codes.len()).unwrap_or(0),
        ))
    }

    pub async fn logout(&self, acc: AccountId, sid: &str, all: bool) -> AuthResult<u32> {
        if all {
            return self.revoke_account_sessions(acc, None).await;
        }
        Ok(u32::from(
            self.revoke_session(sid, SessionState::Revoked).await?,
        ))
    }

    /// Check the password of an authenticated caller (rate limited per account).
    pub async fn recheck_password(&self, acc: AccountId, password: &str) -> AuthResult<Account> {
        take(&self.limits.password_per_account, &acc)?;
        let (account, _) = self.account(acc).await?;
        if !self
            .check_password(password, account.password.clone())
            .await?
        {
            return Err(AuthError::InvalidCredentials {
                authenticated: true,
            });
        }
        Ok(account)
    }

    pub async fn change_password(
        &self,
        acc: AccountId,
        sid: &str,
        old: &str,
        new: &str,
    ) -> AuthResult<u32> {
        self.recheck_password(acc, old).await?;
        self.check_new_password(new)?;
        let hash = self.hash_password(new).await?;
        let key = store::account(acc);
        loop {
            let (mut account, raw) = self.account(acc).await?;
            account.password = hash.clone();
            let txn = Txn::new()
                .require_equals(key.clone(), raw)
                .put(key.clone(), encode(&account));
            if store::commit(&*self.kv, txn).await? {
                break;
            }
        }
        let n = self.revoke_account_sessions(acc, Some(sid)).await?;
        self.audit(
            AuditKind::PasswordChanged,
            acc,
            None,
            format!("revoked {n} sessions"),
        )
        .await?;
        Ok(n)
    }

    pub async fn delete_account(
        &self,
        acc: AccountId,
        password: &str,
        factor: Option<SecondFactor>,
    ) -> AuthResult<()> {
        self.reauthenticate(acc, password, factor).await?;
        // The account goes first, with a tombstone, in one transaction: from here on nobody
        // can sign in or refresh; the purge after it is finished by the sweeper if this
        // process dies before it does (`deletion.rs`).
        deletion::mark_deleted(&*self.kv, acc, self.now_ms()).await?;
        // The deletion is durable from here; a purge that fails now is retried by the sweeper.
        if let Err(err) = self.purge_deleted_account(acc).await {
            tracing::warn!(account = %acc, error = %err, "account deleted; its purge is left to the sweeper");
        }
        Ok(())
    }

    pub async fn delete_prefix(&self, prefix: &[u8]) -> AuthResult<()> {
        loop {
            let batch = store::scan_prefix(&*self.kv, prefix, 256).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let txn = batch.into_iter().fold(Txn::new(), |t, p| t.delete(p.key));
            let _ = self.kv.commit(txn).await?;
        }
    }
}
