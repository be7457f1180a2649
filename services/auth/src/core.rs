//! The service core shared by every RPC: handles, time, events, audit, and sessions.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use guardyn_common::auth::{
    TokenConfig, TokenGrant, TokenScope, TokenVerifier, persist_revocation,
};
use guardyn_common::clock::SharedClock;
use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_common::policy::PolicyCache;
use guardyn_crypto::mls::KeyPackagePolicy;
use guardyn_service::Handles;
use guardyn_storage::record::{decode, encode};
use guardyn_storage::{KvStore, StorageError, Txn};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use zeroize::Zeroizing;

use crate::admin_state;
use crate::config::AuthConfig;
use crate::error::{AuthError, AuthResult};
use crate::events::{Publisher, SessionRevoked};
use crate::limits::{Limiters, take};
use crate::model::{Device, PasswordHash, Session, SessionState};
use crate::sealing::MasterKey;
use crate::secrets::{self, HashMemory};
use crate::signing::KeyStore;
use crate::store;
use guardyn_audit::{AuditKind, AuditLog, AuditRecord};

/// Consumed refresh-token hashes remembered per session for theft detection.
const USED_HASHES_KEPT: usize = 32;

/// Retry hint sent with a refusal for want of a hashing slot.
const HASHING_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Tokens of a new or refreshed session.
pub struct IssuedTokens {
    pub access_token: Zeroizing<String>,
    /// Unix seconds (token clock).
    pub access_expires_s: u64,
    pub refresh_token: Zeroizing<String>,
    pub refresh_expires_ms: u64,
    pub session_id: String,
    /// Limited to TOTP enrolment when the policy requires a second factor the account lacks.
    pub scope: TokenScope,
}

impl std::fmt::Debug for IssuedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedTokens")
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// A live session as its account sees it (ListSessions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub session_id: String,
    pub device_id: DeviceId,
    /// The caller's own session.
    pub current: bool,
    pub created_ms: u64,
    /// Coarsened to the hour.
    pub last_refreshed_ms: u64,
    pub expires_ms: u64,
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct Core {
    pub config: AuthConfig,
    pub kv: Arc<dyn KvStore>,
    pub events: Publisher,
    pub clock: SharedClock,
    pub verifier: TokenVerifier,
    pub keys: Arc<KeyStore>,
    /// Seals the secrets the server must read back (TOTP secrets, signing seeds).
    pub master: Arc<MasterKey>,
    pub limits: Limiters,
    pub audit: AuditLog,
    /// Hash of a random password, verified against for unknown usernames so that they take
    /// as long as wrong passwords.
    pub dummy_hash: PasswordHash,
    /// Slots for Argon2id computations (`auth.argon2_concurrency`): every hash and verify,
    /// the dummy one included, holds one while it runs, so a login flood costs at most
    /// `permits * argon2.memory_kib` of memory rather than one blocking thread per request.
    pub hashing: Arc<Semaphore>,
    /// Argon2id working memory, one buffer per slot in use at most, reused.
    pub hash_memory: Arc<Mutex<Vec<HashMemory>>>,
    pub kp_policy: KeyPackagePolicy,
    /// The admin policy in force (password rules, second factor, device limit).
    pub policy: PolicyCache,
}

/// Unix seconds on the clock `TokenSigner` stamps `iat`/`exp` with (the system clock), so that
/// expiries we report and revocation windows match the tokens themselves.
pub fn token_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Run a CPU-heavy closure off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> AuthResult<T> + Send + 'static,
) -> AuthResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AuthError::Hash(e.to_string()))?
}

impl Core {
    /// Load (or on first start create) the master key and open the signing key set (created,
    /// rotated or checked against the master key on the way).
    pub async fn build(
        config: &AuthConfig,
        tokens: &TokenConfig,
        handles: &Handles,
        policy: PolicyCache,
    ) -> AuthResult<Self> {
        let key_file = config.master_key_file.clone();
        let data_dir = handles.data_dir.clone();
        let kv = handles.stores.kv.clone();
        let master =
            Arc::new(blocking(move || MasterKey::load_or_create(&key_file, &data_dir)).await?);
        let keys = Arc::new(
            KeyStore::open(
                kv.clone(),
                handles.clock.clone(),
                master.clone(),
                tokens.clone(),
                config.signing_key_rotation_secs,
                config.access_token_ttl_secs,
            )
            .await?,
        );
        let dummy_params = config.argon2.clone();
        let dummy_hash = blocking(move || {
            let password = secrets::random_token();
            secrets::hash_password(&password, &dummy_params, &mut HashMemory::new())
        })
        .await?;
        Ok(Self {
            config: config.clone(),
            kv: kv.clone(),
            events: Publisher::new(handles.bus.clone()),
            clock: handles.clock.clone(),
            verifier: handles.ctx.verifier.clone(),
            keys,
            master,
            limits: Limiters::new(&config.limits),
            audit: AuditLog::new(kv, handles.clock.clone()),
            dummy_hash,
            hashing: Arc::new(Semaphore::new(config.argon2_permits())),
            hash_memory: Arc::default(),
            kp_policy: KeyPackagePolicy::default(),
            policy,
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Append to the audit log about an account (and one of its devices).
    pub async fn audit(
        &self,
        kind: AuditKind,
        acc: AccountId,
        dev: Option<DeviceId>,
        detail: impl Into<String>,
    ) -> AuthResult<()> {
        Ok(self
            .audit
            .append(AuditRecord::new(
                kind,
                acc.to_string(),
                dev.map(DeviceId::get),
                detail,
            ))
            .await?)
    }

    pub async fn check_password(&self, password: &str, stored: PasswordHash) -> AuthResult<bool> {
        let password = Zeroizing::new(password.to_owned());
        self.hashing(move |memory| secrets::verify_password(&password, &stored, memory))
            .await
    }

    pub async fn hash_password(&self, password: &str) -> AuthResult<PasswordHash> {
        let password = Zeroizing::new(password.to_owned());
        let params = self.config.argon2.clone();
        self.hashing(move |memory| secrets::hash_password(&password, &params, memory))
            .await
    }

    /// Run one Argon2id computation under the hashing bound, in a pooled working buffer.
    async fn hashing<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut HashMemory) -> AuthResult<T> + Send + 'static,
    ) -> AuthResult<T> {
        let permit = self.hashing_slot().await?;
        let pool = self.hash_memory.clone();
        blocking(move || {
            let _permit = permit;
            let take = || pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let mut memory = take().unwrap_or_default();
            let result = f(&mut memory);
            pool.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(memory);
            result
        })
        .await
    }

    /// Wait up to `auth.argon2_queue_ms` for an Argon2id slot. The permit moves into the
    /// blocking closure, so it is held until the computation ends even when the request is
    /// cancelled meanwhile; a request cancelled while waiting just leaves the queue.
    async fn hashing_slot(&self) -> AuthResult<OwnedSemaphorePermit> {
        let wait = Duration::from_millis(self.config.argon2_queue_ms);
        match tokio::time::timeout(wait, self.hashing.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(closed)) => Err(AuthError::Hash(closed.to_string())),
            Err(_) => {
                tracing::debug!(
                    permits = self.config.argon2_permits(),
                    "password hashing is saturated; refusing"
                );
                Err(AuthError::HashingOverloaded {
                    retry_after: HASHING_RETRY_AFTER,
                })
            }
        }
    }

    /// `roles`: the account's current ones (`AdminState::token_roles`).
    fn sign_access(
        &self,
        acc: AccountId,
        dev: DeviceId,
        sid: &str,
        roles: Vec<String>,
        scope: TokenScope,
    ) -> AuthResult<(String, u64)> {
        let ttl = self.config.access_token_ttl_secs;
        let grant = TokenGrant {
            account_id: acc.to_string(),
            device_id: dev.get(),
            session_id: sid.to_owned(),
            roles,
            ttl: Duration::from_secs(ttl),
        };
        let token = self.keys.signer().sign_scoped(&grant, scope)?;
        Ok((token, token_now_s() + ttl))
    }

    fn new_refresh(&self, sid: &str) -> (Zeroizing<String>, [u8; 32]) {
        let token = Zeroizing::new(format!("{sid}.{}", secrets::random_token().as_str()));
        let hash = secrets::sha256(token.as_bytes());
        (token, hash)
    }

    /// Sign a device in: a new session replaces the device's previous one.
    /// A new session for a device. `proved`: the caller just checked the password (and the
    /// second factor when enabled), which counts as a step-up.
    pub async fn start_session(
        &self,
        acc: AccountId,
        dev: DeviceId,
        proved: bool,
    ) -> AuthResult<IssuedTokens> {
        let dkey = store::device(acc, dev);
        for _ in 0..store::MAX_ATTEMPTS {
            let Some((mut device, raw)) = store::get::<Device>(&*self.kv, &dkey).await? else {
                return Err(AuthError::DeviceRemoved);
            };
            // A deleted account starts no session, even before its devices are purged.
            let akey = store::account(acc);
            if self.kv.get(&akey).await?.is_none() {
                return Err(AuthError::DeviceRemoved);
            }
            let (admin, admin_raw) = admin_state::load(&*self.kv, acc).await?;
            admin_state::check_active(&admin)?;
            let now = self.now_ms();
            let sid = uuid::Uuid::new_v4().to_string();
            let (refresh, refresh_hash) = self.new_refresh(&sid);
            let scope = self.token_scope(acc).await?;
            let (access, access_exp) =
                self.sign_access(acc, dev, &sid, admin.token_roles(), scope)?;
            let refresh_expires_ms = now + self.config.refresh_token_ttl_secs * 1000;
            let session = Session {
                account_id: acc,
                device_id: dev,
                created_ms: now,
                last_refreshed_ms: now,
                refresh_hash,
                refresh_expires_ms,
                used_hashes: Vec::new(),
                access_exp_max_s: access_exp,
                state: SessionState::Live,
                stepped_up_ms: if proved { now } else { 0 },
            };
            let previous = device.session_id.replace(sid.clone());
            device.last_seen_ms = day(now);
            let txn = admin_state::unchanged(Txn::new(), acc, admin_raw.as_deref())
                .require_equals(dkey.clone(), raw)
                .require_exists(akey)
                .put(dkey.clone(), encode(&device))
                .put(store::session(&sid), encode(&session))
                .put(
                    store::account_session(acc, &sid),
                    store::INDEX_ENTRY.to_vec(),
                );
            if store::commit(&*self.kv, txn).await? {
                if let Some(prev) = previous {
                    self.revoke_session(&prev, SessionState::Revoked).await?;
                }
                return Ok(IssuedTokens {
                    access_token: Zeroizing::new(access),
                    access_expires_s: access_exp,
                    refresh_token: refresh,
                    refresh_expires_ms,
                    session_id: sid,
                    scope,
                });
            }
        }
        Err(AuthError::Contention)
    }

    /// Exchange a refresh token for a new pair (rotation with reuse detection).
    pub async fn refresh(&self, token: &str) -> AuthResult<IssuedTokens> {
        let sid = token
            .split_once('.')
            .map(|(sid, _)| sid)
            .filter(|sid| sid.len() == 36 && token.len() <= 128)
            .ok_or(AuthError::InvalidRefreshToken)?;
        let presented = secrets::sha256(token.as_bytes());
        let skey = store::session(sid);
        for _ in 0..store::MAX_ATTEMPTS {
            let Some((mut s, raw)) = store::get::<Session>(&*self.kv, &skey).await? else {
                return Err(AuthError::InvalidRefreshToken);
            };
            // A suspended account's sessions were revoked; say why rather than just that.
            let (admin, admin_raw) = admin_state::load(&*self.kv, s.account_id).await?;
            admin_state::check_active(&admin)?;
            match s.state {
                SessionState::Live => {}
                SessionState::Revoked => return Err(AuthError::SessionRevoked),
                SessionState::DeviceRemoved => return Err(AuthError::DeviceRemoved),
            }
            let now = self.now_ms();
            if !bool::from(s.refresh_hash.ct_eq(&presented)) {
                if s.used_hashes
                    .iter()
                    .any(|h| bool::from(h.ct_eq(&presented)))
                {
                    // A consumed token came back: whoever holds it may have stolen it.
                    self.revoke_session(sid, SessionState::Revoked).await?;
                    self.audit(
                        AuditKind::RefreshTokenReused,
                        s.account_id,
                        Some(s.device_id),
                        format!("session {sid}"),
                    )
                    .await?;
                    return Err(AuthError::SessionRevoked);
                }
                return Err(AuthError::InvalidRefreshToken);
            }
            if s.refresh_expires_ms <= now {
                return Err(AuthError::InvalidRefreshToken);
            }
            let dkey = store::device(s.account_id, s.device_id);
            let Some((mut device, draw)) = store::get::<Device>(&*self.kv, &dkey).await? else {
                return Err(AuthError::DeviceRemoved);
            };
            // Deleting an account removes its record first (`deletion.rs`): from then on its
            // sessions refresh no more, even if the purge of the sessions has not run yet.
            let akey = store::account(s.account_id);
            if self.kv.get(&akey).await?.is_none() {
                return Err(AuthError::DeviceRemoved);
            }
            let (refresh, refresh_hash) = self.new_refresh(sid);
            let scope = self.token_scope(s.account_id).await?;
            let (access, access_exp) =
                self.sign_access(s.account_id, s.device_id, sid, admin.token_roles(), scope)?;
            s.used_hashes.push(s.refresh_hash);
            if s.used_hashes.len() > USED_HASHES_KEPT {
                s.used_hashes.remove(0);
            }
            s.refresh_hash = refresh_hash;
            s.refresh_expires_ms = now + self.config.refresh_token_ttl_secs * 1000;
            s.last_refreshed_ms = now;
            s.access_exp_max_s = s.access_exp_max_s.max(access_exp);
            let mut txn = admin_state::unchanged(Txn::new(), s.account_id, admin_raw.as_deref())
                .require_equals(skey.clone(), raw)
                .require_exists(akey)
                .put(skey.clone(), encode(&s));
            if device.last_seen_ms != day(now) {
                device.last_seen_ms = day(now);
                txn = txn
                    .require_equals(dkey.clone(), draw)
                    .put(dkey.clone(), encode(&device));
            }
            if store::commit(&*self.kv, txn).await? {
                return Ok(IssuedTokens {
                    access_token: Zeroizing::new(access),
                    access_expires_s: access_exp,
                    refresh_token: refresh,
                    refresh_expires_ms: s.refresh_expires_ms,
                    session_id: sid.to_owned(),
                    scope,
                });
            }
        }
        Err(AuthError::Contention)
    }

    /// End a live session: mark it, refuse its tokens in this process at once, tell every
    /// other process through `auth.session.revoked`. `false` when it was not live.
    pub async fn revoke_session(&self, sid: &str, state: SessionState) -> AuthResult<bool> {
        let skey = store::session(sid);
        let session = loop {
            let Some((mut s, raw)) = store::get::<Session>(&*self.kv, &skey).await? else {
                return Ok(false);
            };
            if s.state != SessionState::Live {
                return Ok(false);
            }
            s.state = state;
            // Entries outlive every token of the session, with the verifier's leeway.
            let until = s.access_exp_max_s + 60;
            // The revocation entry is written with the state, so a restart reloads it
            // (`guardyn_common::auth::load_revocations`).
            let txn = persist_revocation(
                Txn::new()
                    .require_equals(skey.clone(), raw)
                    .put(skey.clone(), encode(&s)),
                sid,
                until,
            );
            if store::commit(&*self.kv, txn).await? {
                break (s, until);
            }
        };
        let (session, until) = session;
        self.verifier.revocations().revoke(sid, until);
        self.events
            .publish(&SessionRevoked {
                session_id: sid.to_owned(),
                account: session.account_id,
                device: session.device_id,
                tokens_valid_until: until,
            })
            .await;
        self.clear_device_session(session.account_id, session.device_id, sid)
            .await?;
        self.audit(
            AuditKind::SessionRevoked,
            session.account_id,
            Some(session.device_id),
            format!("session {sid} {state:?}"),
        )
        .await?;
        Ok(true)
    }

    async fn clear_device_session(
        &self,
        acc: AccountId,
        dev: DeviceId,
        sid: &str,
    ) -> AuthResult<()> {
        let dkey = store::device(acc, dev);
        for _ in 0..store::MAX_ATTEMPTS {
            let Some((mut d, raw)) = store::get::<Device>(&*self.kv, &dkey).await? else {
                return Ok(());
            };
            if d.session_id.as_deref() != Some(sid) {
                return Ok(());
            }
            d.session_id = None;
            let txn = Txn::new()
                .require_equals(dkey.clone(), raw)
                .put(dkey.clone(), encode(&d));
            if store::commit(&*self.kv, txn).await? {
                return Ok(());
            }
        }
        Err(AuthError::Contention)
    }

    /// Every session (any state) of an account: `(session id, record)`.
    pub async fn account_sessions(&self, acc: AccountId) -> AuthResult<Vec<(String, Session)>> {
        let prefix = store::account_sessions(acc);
        let mut out = Vec::new();
        for pair in store::scan_prefix(&*self.kv, &prefix, usize::MAX).await? {
            let sid = String::from_utf8_lossy(&pair.key[prefix.len()..]).into_owned();
            if let Some((s, _)) = store::get::<Session>(&*self.kv, &store::session(&sid)).await? {
                out.push((sid, s));
            }
        }
        Ok(out)
    }

    /// Revoke every live session of an account except `keep`. Returns how many.
    pub async fn revoke_account_sessions(
        &self,
        acc: AccountId,
        keep: Option<&str>,
    ) -> AuthResult<u32> {
        let mut n = 0;
        for (sid, s) in self.account_sessions(acc).await? {
            if s.state == SessionState::Live
                && Some(sid.as_str()) != keep
                && self.revoke_session(&sid, SessionState::Revoked).await?
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// RevokeSession: revoke one live session of the caller's account. Another account's
    /// session is indistinguishable from a missing one.
    pub async fn revoke_own_session(&self, acc: AccountId, sid: &str) -> AuthResult<()> {
        let owned = self
            .account_sessions(acc)
            .await?
            .into_iter()
            .any(|(s, rec)| s == sid && rec.state == SessionState::Live);
        if !owned || !self.revoke_session(sid, SessionState::Revoked).await? {
            return Err(AuthError::NotFound {
                resource: "session",
            });
        }
        Ok(())
    }

    /// RefreshSession from a client address (rate limited like logins).
    pub async fn refresh_from(&self, token: &str, addr: IpAddr) -> AuthResult<IssuedTokens> {
        take(&self.limits.login_per_address, &addr)?;
        self.refresh(token).await
    }

    /// The account's devices, in id order.
    pub async fn devices(&self, acc: AccountId) -> AuthResult<Vec<(DeviceId, Device)>> {
        let mut out = Vec::new();
        for pair in store::scan_prefix(&*self.kv, &store::devices(acc), 256).await? {
            let id = store::device_of_key(&pair.key)
                .ok_or_else(|| StorageError::Corrupt(format!("device key {:?}", pair.key)))?;
            out.push((id, decode::<Device>(&pair.value)?));
        }
        Ok(out)
    }
}

/// Coarsen a time to the start of its UTC day (privacy of last-seen times).
pub fn day(ms: u64) -> u64 {
    ms - ms % 86_400_000
}
