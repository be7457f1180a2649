//! Bearer-token authentication shared by every service.
//!
//! The auth service issues short-lived access tokens: JWTs signed with Ed25519 (`alg: EdDSA`)
//! with a `kid` header so signing keys can rotate. Every other service verifies them locally
//! with the published public keys ([`TokenVerifier`]) and never calls auth per request.
//! [`AuthLayer`] runs the check in front of every handler and hands the caller's
//! [`AuthContext`] to it through the request extensions.
//!
//! Revocation: a revoked session's tokens must stop working everywhere within seconds, long
//! before they expire. [`RevocationList`] holds revoked session ids (fed from the event bus by
//! whoever owns that subscription) and the verifier consults it on every request.

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Validate, key};
use crate::error::ApiError;

mod layer;
mod token;

pub use layer::{AuthLayer, AuthService, PublicMethods};
pub use token::{
    KeyError, RevocationList, SignError, TokenGrant, TokenSigner, TokenVerifier, VerificationKey,
};

/// Who is calling: the verified claims of the access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthContext {
    pub account_id: crate::ids::AccountId,
    pub device_id: crate::ids::DeviceId,
    pub session_id: String,
    pub roles: Vec<String>,
    /// Unix seconds.
    pub expires_at: u64,
}

impl AuthContext {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The handler-side accessor: the caller of an authenticated RPC.
///
/// [`AuthLayer`] guarantees the context is present on every non-public method; its absence
/// means the method was declared public, so callers of this on such a method get
/// `UNAUTHENTICATED`.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&AuthContext, ApiError> {
    request
        .extensions()
        .get::<AuthContext>()
        .ok_or_else(|| ApiError::unauthenticated("missing bearer token"))
}

/// Token settings shared by issuer and verifiers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    pub issuer: String,
    pub audience: String,
    /// Clock skew tolerated when checking `exp`.
    pub leeway_secs: u64,
    /// Public keys accepted in addition to those the auth service publishes (for verifiers in
    /// processes that cannot reach auth at start-up, and for key rotation by hand).
    pub static_keys: Vec<StaticKey>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            issuer: "guardyn".to_owned(),
            audience: "guardyn".to_owned(),
            leeway_secs: 5,
            static_keys: Vec::new(),
        }
    }
}

/// A verification key written in the config file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticKey {
    pub kid: String,
    /// Base64url (no padding) Ed25519 public key, as in a JWK's `x`.
    pub x: String,
}

impl Validate for TokenConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.issuer.is_empty() {
            return Err(ConfigError::new(key(prefix, "issuer"), "must not be empty"));
        }
        if self.audience.is_empty() {
            return Err(ConfigError::new(
                key(prefix, "audience"),
                "must not be empty",
            ));
        }
        if self.leeway_secs > 300 {
            return Err(ConfigError::new(
                key(prefix, "leeway_secs"),
                "must be at most 300",
            ));
        }
        for k in &self.static_keys {
            VerificationKey::from_jwk_x(&k.kid, &k.x)
                .map_err(|e| ConfigError::new(key(prefix, "static_keys"), e.to_string()))?;
        }
        Ok(())
    }
}

pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
