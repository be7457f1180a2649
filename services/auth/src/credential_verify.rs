//! Verification of presented API credentials, installed into the process's auth layer.
//!
//! Every refusal is the same `invalid credential` whatever the cause (unknown id, wrong
//! secret, rotated, revoked, expired), and an unknown id costs what a known one does: the
//! record is read either way, the HMAC is always computed and compared in constant time
//! (against a dummy hash when there is no record). Failures are counted per client address;
//! past `auth.limits.credential_failures_per_address` every credential call from that
//! address is refused until the bucket refills, so guessing gains nothing from a right guess.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use guardyn_audit::{AuditKind, AuditRecord};
use guardyn_common::auth::{
    AuthContext, CREDENTIAL_ROLE, CredentialVerifier, TokenScope, invalid_credential,
};
use guardyn_common::error::{ApiError, Reason};
use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_common::ratelimit::{KeyedLimiter, RateLimit};
use subtle::ConstantTimeEq;

use crate::core::token_now_s;
use crate::credentials::{CredentialRecord, Credentials, session_id, split};

/// Ids are UUIDs; anything longer is not looked up (keys stay small) but still hashed.
const MAX_ID_LEN: usize = 64;
/// Blocked addresses remembered before expired ones are dropped.
const BLOCKED_KEPT: usize = 4096;

/// Counts failures per address and blocks an address that ran out of them.
#[derive(Debug)]
struct FailureGate {
    failures: KeyedLimiter<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    block_for: Duration,
}

impl FailureGate {
    fn new(limit: RateLimit) -> Self {
        Self {
            failures: KeyedLimiter::new("credential_failures_per_address", limit),
            blocked: Mutex::new(HashMap::new()),
            block_for: Duration::from_secs(60) / limit.per_minute.max(1),
        }
    }

    fn admit(&self, addr: IpAddr) -> Result<(), ApiError> {
        let blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        match blocked.get(&addr) {
            Some(until) if *until > Instant::now() => Err(ApiError::new(
                Reason::RateLimited,
                "too many failed credential attempts, retry later",
            )
            .with_metadata("limit", "credential_failures_per_address")
            .with_retry_after(until.saturating_duration_since(Instant::now()))),
            _ => Ok(()),
        }
    }

    fn fail(&self, addr: IpAddr) {
        if self.failures.check(&addr).is_ok() {
            return;
        }
        let now = Instant::now();
        let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        if blocked.len() >= BLOCKED_KEPT {
            blocked.retain(|_, until| *until > now);
        }
        blocked.insert(addr, now + self.block_for);
    }
}

/// The verifier auth installs into `ServerContext::credentials`.
#[derive(Debug)]
pub struct CredentialCheck {
    credentials: Arc<Credentials>,
    gate: FailureGate,
    dummy_hash: [u8; 32],
    instance: String,
}

impl CredentialCheck {
    pub fn new(credentials: Arc<Credentials>, limit: RateLimit, instance: &str) -> Self {
        let dummy_hash = credentials.hash(&rand::random::<[u8; 32]>());
        Self {
            credentials,
            gate: FailureGate::new(limit),
            dummy_hash,
            instance: instance.to_owned(),
        }
    }

    /// Audit without making the call wait for the entry to be durable.
    fn audit(&self, record: AuditRecord) {
        let credentials = self.credentials.clone();
        tokio::spawn(async move {
            if let Err(err) = credentials.core.audit.append(record).await {
                tracing::warn!(error = %err, "auditing a credential use failed");
            }
        });
    }

    fn context(&self, record: &CredentialRecord) -> Result<AuthContext, ApiError> {
        let account_id = AccountId::parse(&record.id)
            .ok_or_else(|| ApiError::new(Reason::Internal, "internal error"))?;
        let device_id =
            DeviceId::new(1).ok_or_else(|| ApiError::new(Reason::Internal, "internal error"))?;
        Ok(AuthContext {
            account_id,
            device_id,
            session_id: session_id(&record.id),
            roles: vec![CREDENTIAL_ROLE.to_owned()],
            expires_at: record.expires_s,
            scope: TokenScope::Credential(record.scope_set()),
        })
    }
}

#[async_trait::async_trait]
impl CredentialVerifier for CredentialCheck {
    async fn verify(
        &self,
        credential: &str,
        path: &str,
        remote: Option<IpAddr>,
    ) -> Result<AuthContext, ApiError> {
        let addr = remote.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        self.gate.admit(addr)?;
        let (id, secret) = split(credential).unwrap_or(("", ""));
        let found = if id.is_empty() || id.len() > MAX_ID_LEN {
            None
        } else {
            self.credentials
                .get(id)
                .await
                .map_err(ApiError::from)?
                .map(|(r, _)| r)
        };
        let presented = self.credentials.hash(secret.as_bytes());
        let expected = found.as_ref().map_or(&self.dummy_hash, |r| &r.hash);
        let matches: bool = presented.ct_eq(expected).into();
        let Some(record) = found.filter(|r| matches && r.in_force(token_now_s())) else {
            self.gate.fail(addr);
            let shown: String = id.chars().take(MAX_ID_LEN).collect();
            self.audit(AuditRecord::new(
                AuditKind::CredentialRefused,
                "",
                None,
                format!(
                    "credential={shown:?} method={path} instance={} address={addr}",
                    self.instance
                ),
            ));
            return Err(invalid_credential());
        };
        let scope = record
            .scope_set()
            .admitting(path)
            .map_or("none (refused)", |s| s.as_str());
        self.audit(
            AuditRecord::new(
                AuditKind::CredentialUsed,
                "",
                None,
                format!(
                    "credential={} name={:?} scope={scope} method={path} instance={}",
                    record.id, record.name, self.instance
                ),
            )
            .by(format!("credential:{}", record.id), ""),
        );
        self.context(&record)
    }
}
