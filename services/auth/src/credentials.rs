//! API credentials for bots and integrations: issued by an admin with scopes and an expiry,
//! presented as `gdc_<id>.<secret>`.
//!
//! Auth owns them because it owns the master key: the stored hash is
//! HMAC-SHA256(pepper, secret) with the pepper derived from the master key (HKDF, its own
//! label), so the pepper exists only in the processes that host auth and a database copy alone
//! cannot test guesses. The secret itself is never stored or logged.
//!
//! Record: `auth/v1/credential/<id>` (`CredentialRecord`); rotation and revocation are
//! compare-and-set rewrites of it, and every verification reads it, so both take effect on
//! every instance sharing the store at once (no cache to invalidate).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use guardyn_common::auth::persist_revocation;
use guardyn_common::auth::{CREDENTIAL_PREFIX, CredentialScope, CredentialScopes};
use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_storage::Txn;
use guardyn_storage::record::{Record, decode, encode};
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::core::{Core, token_now_s};
use crate::error::{AuthError, AuthResult};
use crate::events::SessionRevoked;
use crate::store;
use guardyn_audit::{AuditKind, AuditRecord};

/// HKDF label of the pepper: no other use of the master key derives the same bytes.
const PEPPER_LABEL: &[u8] = b"guardyn/v1/api-credential-pepper";
const SECRET_LEN: usize = 32;
const MAX_NAME_CHARS: usize = 64;
/// Longest validity an admin may give: two years.
const MAX_VALID_SECS: u64 = 2 * 366 * 24 * 3600;
const MAX_LISTED: usize = 10_000;

/// A stored credential: its hash, never its secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CredentialRecord {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub issued_by: String,
    /// Unix seconds (the token clock, like access-token expiries).
    pub created_s: u64,
    pub expires_s: u64,
    pub revoked_s: Option<u64>,
    pub secret_set_s: u64,
    pub hash: [u8; 32],
}

impl Record for CredentialRecord {
    const VERSION: u8 = 1;
}

impl CredentialRecord {
    /// The scopes it was issued with (names written by this module, so all known).
    pub fn scope_set(&self) -> CredentialScopes {
        self.scopes
            .iter()
            .filter_map(|s| CredentialScope::parse(s))
            .collect()
    }

    pub fn in_force(&self, now_s: u64) -> bool {
        self.revoked_s.is_none() && now_s < self.expires_s
    }
}

/// Issuance and management of credentials, holding the pepper.
pub struct Credentials {
    pub core: Arc<Core>,
    pepper: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(..)")
    }
}

/// The bearer value of a credential.
fn bearer(id: &str, secret: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "{CREDENTIAL_PREFIX}{id}.{}",
        URL_SAFE_NO_PAD.encode(secret)
    ))
}

/// The session id of a credential's contexts (what revocation of its streams names).
pub fn session_id(id: &str) -> String {
    format!("credential:{id}")
}

/// `gdc_<id>.<secret>` → (id, secret). Only the shape is checked here.
pub fn split(bearer: &str) -> Option<(&str, &str)> {
    bearer.strip_prefix(CREDENTIAL_PREFIX)?.split_once('.')
}

impl Credentials {
    pub fn new(core: Arc<Core>) -> Self {
        let pepper = core.master.derive(PEPPER_LABEL);
        Self { core, pepper }
    }

    /// HMAC-SHA256 of the presented secret under the pepper.
    pub fn hash(&self, secret: &[u8]) -> [u8; 32] {
        let Ok(mut mac) = <Hmac<Sha256>>::new_from_slice(self.pepper.as_ref()) else {
            // HMAC takes keys of any length; this branch cannot run.
            return [0; 32];
        };
        mac.update(secret);
        mac.finalize().into_bytes().into()
    }

    fn fresh_secret(&self) -> (Zeroizing<[u8; SECRET_LEN]>, [u8; 32]) {
        let secret = Zeroizing::new(rand::random::<[u8; SECRET_LEN]>());
        // The hash is over the bearer's text form, which is what verification sees.
        let text = Zeroizing::new(URL_SAFE_NO_PAD.encode(secret.as_ref()));
        let hash = self.hash(text.as_bytes());
        (secret, hash)
    }

    pub async fn get(&self, id: &str) -> AuthResult<Option<(CredentialRecord, Vec<u8>)>> {
        store::get(&*self.core.kv, &store::credential(id)).await
    }

    pub async fn issue(
        &self,
        actor: AccountId,
        name: &str,
        scopes: &[String],
        valid_for_secs: u64,
    ) -> AuthResult<(CredentialRecord, Zeroizing<String>)> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(AuthError::field("name", "must be 1 to 64 characters"));
        }
        if scopes.is_empty() {
            return Err(AuthError::field("scopes", "at least one scope is required"));
        }
        let mut parsed = Vec::new();
        for s in scopes {
            let scope = CredentialScope::parse(s).ok_or_else(|| {
                AuthError::field(
                    "scopes",
                    format!("unknown scope {s:?} ({})", CredentialScope::names()),
                )
            })?;
            if !parsed.contains(&scope) {
                parsed.push(scope);
            }
        }
        if valid_for_secs == 0 || valid_for_secs > MAX_VALID_SECS {
            return Err(AuthError::field(
                "valid_for_secs",
                format!("must be 1 to {MAX_VALID_SECS}"),
            ));
        }
        let id = AccountId::random().to_string();
        let (secret, hash) = self.fresh_secret();
        let now = token_now_s();
        let record = CredentialRecord {
            id: id.clone(),
            name: name.to_owned(),
            scopes: parsed.iter().map(|s| s.as_str().to_owned()).collect(),
            issued_by: actor.to_string(),
            created_s: now,
            expires_s: now.saturating_add(valid_for_secs),
            revoked_s: None,
            secret_set_s: now,
            hash,
        };
        let key = store::credential(&id);
        let txn = Txn::new()
            .require_absent(key.clone())
            .put(key, encode(&record));
        if !store::commit(&*self.core.kv, txn).await? {
            return Err(AuthError::Contention);
        }
        self.audit(AuditKind::CredentialIssued, actor, &record)
            .await?;
        Ok((record, bearer(&id, secret.as_ref())))
    }

    pub async fn list(&self) -> AuthResult<Vec<CredentialRecord>> {
        let pairs =
            store::scan_prefix(&*self.core.kv, &store::credentials_prefix(), MAX_LISTED).await?;
        pairs
            .iter()
            .map(|p| decode(&p.value).map_err(AuthError::from))
            .collect()
    }

    /// A new secret; the old hash is gone in the same write, so the old secret fails at once.
    pub async fn rotate(
        &self,
        actor: AccountId,
        id: &str,
    ) -> AuthResult<(CredentialRecord, Zeroizing<String>)> {
        let (secret, hash) = self.fresh_secret();
        let record = self
            .update(id, |r, txn| {
                if r.revoked_s.is_some() {
                    return Err(AuthError::NotFound {
                        resource: "credential",
                    });
                }
                r.hash = hash;
                r.secret_set_s = token_now_s();
                Ok(txn)
            })
            .await?;
        self.audit(AuditKind::CredentialRotated, actor, &record)
            .await?;
        Ok((record, bearer(id, secret.as_ref())))
    }

    /// Calls are refused at once because every verification reads the record; streams opened
    /// with the credential end through the session revocation path (a revocation entry in the
    /// same transaction, `auth.session.revoked` for the other processes), its session id being
    /// `credential:<id>`.
    pub async fn revoke(&self, actor: AccountId, id: &str) -> AuthResult<CredentialRecord> {
        let mut first = false;
        let session = session_id(id);
        let record = self
            .update(id, |r, txn| {
                first = r.revoked_s.is_none();
                r.revoked_s.get_or_insert_with(token_now_s);
                if first {
                    return Ok(persist_revocation(txn, &session, r.expires_s + 60));
                }
                Ok(txn)
            })
            .await?;
        if first {
            let until = record.expires_s + 60;
            self.core.verifier.revocations().revoke(&session, until);
            if let (Some(account), Some(device)) = (AccountId::parse(id), DeviceId::new(1)) {
                self.core
                    .events
                    .publish(&SessionRevoked {
                        session_id: session,
                        account,
                        device,
                        tokens_valid_until: until,
                    })
                    .await;
            }
            self.audit(AuditKind::CredentialRevoked, actor, &record)
                .await?;
        }
        Ok(record)
    }

    /// Read-modify-write of one record, conditioned on it being unchanged; `change` may add
    /// to the transaction.
    async fn update(
        &self,
        id: &str,
        mut change: impl FnMut(&mut CredentialRecord, Txn) -> AuthResult<Txn>,
    ) -> AuthResult<CredentialRecord> {
        let key = store::credential(id);
        for _ in 0..store::MAX_ATTEMPTS {
            let Some((mut record, raw)) = self.get(id).await? else {
                return Err(AuthError::NotFound {
                    resource: "credential",
                });
            };
            let txn = change(&mut record, Txn::new().require_equals(key.clone(), raw))?;
            let txn = txn.put(key.clone(), encode(&record));
            if store::commit(&*self.core.kv, txn).await? {
                return Ok(record);
            }
        }
        Err(AuthError::Contention)
    }

    async fn audit(
        &self,
        kind: AuditKind,
        actor: AccountId,
        record: &CredentialRecord,
    ) -> AuthResult<()> {
        let detail = format!(
            "credential={} name={:?} scopes={} expires_s={}",
            record.id,
            record.name,
            record.scopes.join(","),
            record.expires_s
        );
        self.core
            .audit
            .append(AuditRecord::new(kind, "", None, detail).by(actor.to_string(), ""))
            .await?;
        Ok(())
    }
}
