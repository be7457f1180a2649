//! Token settings shared by issuer and verifiers.

use serde::{Deserialize, Serialize};

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
