//! API credentials for bots and integrations: `authorization: Bearer gdc_<id>.<secret>`.
//!
//! The layer cannot check one itself (the hash lives in storage under a pepper only auth
//! holds), so the service that owns them installs a [`CredentialVerifier`] into the process's
//! [`CredentialHook`]. A process without one refuses every credential like a wrong one.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use super::context::AuthContext;
use crate::error::ApiError;

/// How a bearer value that is a credential (not a JWT) starts.
pub const CREDENTIAL_PREFIX: &str = "gdc_";

/// The role a credential's context carries: the scope list (not the role) decides which
/// methods it reaches. Every scope but `notices.send` admits only methods that need no more
/// than read access; the notice handler admits that scope itself in place of a role.
pub const CREDENTIAL_ROLE: &str = "auditor";

/// The one answer to a credential that does not verify (unknown, wrong secret, revoked,
/// expired), so that none of these can be told apart.
pub fn invalid_credential() -> ApiError {
    ApiError::unauthenticated("invalid credential")
}

/// Checks a presented credential for the call to `path` from `remote`; answers the caller's
/// context (scope [`super::TokenScope::Credential`]) or the refusal to send.
#[async_trait::async_trait]
pub trait CredentialVerifier: Send + Sync + fmt::Debug {
    async fn verify(
        &self,
        credential: &str,
        path: &str,
        remote: Option<IpAddr>,
    ) -> Result<AuthContext, ApiError>;
}

/// Where the hosting service installs its verifier; shared by every clone of the server
/// context, read by the auth layer on each credential call.
#[derive(Clone, Default)]
pub struct CredentialHook(Arc<RwLock<Option<Arc<dyn CredentialVerifier>>>>);

impl fmt::Debug for CredentialHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialHook")
            .field("installed", &self.get().is_some())
            .finish()
    }
}

impl CredentialHook {
    pub fn install(&self, verifier: Arc<dyn CredentialVerifier>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Some(verifier);
    }

    pub fn get(&self) -> Option<Arc<dyn CredentialVerifier>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
