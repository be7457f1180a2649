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
//! whoever owns that subscription, and loaded from storage at start and after a lagged
//! subscription: [`load_revocations`]) and the verifier consults it on every request. Streams
//! outlive that check: each takes a [`StreamAuth`], which ends it at its token's expiry and on
//! its session's revocation.

mod config;
mod context;
mod credential;
mod layer;
mod revocation;
mod scopes;
mod stream;
mod token;
mod verified;

pub use config::{StaticKey, TokenConfig};
pub use context::{AuthContext, MFA_ENROLLMENT_METHODS, Role, TokenScope, caller};
pub use credential::{
    CREDENTIAL_PREFIX, CREDENTIAL_ROLE, CredentialHook, CredentialVerifier, invalid_credential,
};
pub use layer::{AuthLayer, AuthService, PublicMethods};
pub use revocation::{
    RevocationList, RevokedSession, SessionWatch, load_revocations, persist_revocation,
    sweep_revocations,
};
pub use scopes::{
    ADMIN_READ_METHODS, CredentialScope, CredentialScopes, SEND_SYSTEM_NOTICE_METHOD,
};
pub use stream::StreamAuth;
pub use token::{KeyError, SignError, TokenGrant, TokenSigner, TokenVerifier, VerificationKey};
