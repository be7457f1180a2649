//! Signing and verifying access tokens, and the revocation list.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::config::TokenConfig;
use super::context::{AuthContext, TokenScope};
use super::revocation::RevocationList;
use super::stream::StreamAuth;
use super::verified::{Verified, VerifiedTokens};
use crate::config::{ConfigError, Validate, key};
use crate::error::{ApiError, Reason};

/// JWT claims. Field names follow RFC 7519 where one exists.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Claims {
    iss: String,
    aud: String,
    /// Account id.
    sub: String,
    /// Device id.
    did: u32,
    /// Session id.
    sid: String,
    #[serde(default)]
    roles: Vec<String>,
    /// What the token is limited to (absent: everything its roles allow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    iat: u64,
    exp: u64,
}

/// Why a verification key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid verification key {kid:?}: {reason}")]
pub struct KeyError {
    pub kid: String,
    pub reason: &'static str,
}

/// A public key that verifies access tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct VerificationKey {
    pub kid: String,
    pub public_key: [u8; 32],
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerificationKey({})", self.kid)
    }
}

impl VerificationKey {
    pub fn from_jwk_x(kid: &str, x: &str) -> Result<Self, KeyError> {
        let err = |reason| KeyError {
            kid: kid.to_owned(),
            reason,
        };
        if kid.is_empty() || kid.len() > 64 {
            return Err(err("kid must be 1 to 64 characters"));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(x)
            .map_err(|_| err("x is not base64url"))?;
        let public_key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| err("x must encode 32 bytes"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&public_key)
            .map_err(|_| err("not an Ed25519 point"))?;
        Ok(Self {
            kid: kid.to_owned(),
            public_key,
        })
    }

    /// The JWK `x` member.
    pub fn jwk_x(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public_key)
    }
}

/// The keys a verifier accepts.
#[derive(Default)]
struct KeySet {
    /// Configured static keys and [`TokenVerifier::add_keys`]: kept across refreshes.
    pinned: HashMap<String, DecodingKey>,
    /// The auth service's published set, replaced whole by every refresh so that a key it
    /// stopped publishing stops verifying.
    /// Each with its raw public key, to tell a refresh that changes nothing (the usual case,
    /// once a minute) from one that binds a known kid to another key.
    published: HashMap<String, ([u8; 32], DecodingKey)>,
    /// Keys revoked in an emergency: refused whichever set names them, so a stale refresh
    /// cannot bring one back.
    revoked: HashSet<String>,
}

impl KeySet {
    fn get(&self, kid: &str) -> Option<&DecodingKey> {
        if self.revoked.contains(kid) {
            return None;
        }
        self.published
            .get(kid)
            .map(|(_, key)| key)
            .or_else(|| self.pinned.get(kid))
    }
}

/// Verifies access tokens against the current key set.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Arc<RwLock<KeySet>>,
    validation: Arc<Validation>,
    revoked: RevocationList,
    /// Woken when the key set should be fetched again before the next periodic refresh.
    refresh_wanted: Arc<tokio::sync::Notify>,
    verified: Arc<VerifiedTokens>,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<String> = self
            .keys
            .read()
            .map(|k| k.pinned.keys().chain(k.published.keys()).cloned().collect())
            .unwrap_or_default();
        f.debug_struct("TokenVerifier")
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    pub fn new(config: &TokenConfig, revoked: RevocationList) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.leeway = config.leeway_secs;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let verifier = Self {
            keys: Arc::default(),
            validation: Arc::new(validation),
            revoked,
            refresh_wanted: Arc::default(),
            verified: Arc::default(),
        };
        // Static keys were validated with the config.
        let static_keys = config
            .static_keys
            .iter()
            .filter_map(|k| VerificationKey::from_jwk_x(&k.kid, &k.x).ok());
        verifier.add_keys(static_keys);
        verifier
    }

    fn key_set(&self) -> std::sync::RwLockWriteGuard<'_, KeySet> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Also accept tokens signed by these keys, whatever later refreshes publish (static keys,
    /// tests).
    pub fn add_keys(&self, keys: impl IntoIterator<Item = VerificationKey>) {
        let mut set = self.key_set();
        for k in keys {
            set.pinned
                .insert(k.kid.clone(), DecodingKey::from_ed_der(&k.public_key));
        }
        // A pinned kid may now name another key than the one a remembered token was checked
        // with; this is start-up and test traffic, so forgetting everything costs nothing.
        self.verified.clear();
    }

    /// Replace the published key set with the one the auth service publishes now: keys it
    /// retired or dropped stop verifying.
    ///
    /// Remembered tokens survive a refresh that binds no known kid to another key: every
    /// use of one re-checks that its kid is still accepted, so a dropped key needs no
    /// forgetting. Clearing on every refresh made each connected device pay a signature
    /// check once a minute (a third of the server's CPU under 10,000 heartbeating devices).
    pub fn replace_keys(&self, keys: impl IntoIterator<Item = VerificationKey>) {
        let published: HashMap<String, ([u8; 32], DecodingKey)> = keys
            .into_iter()
            .map(|k| {
                let key = DecodingKey::from_ed_der(&k.public_key);
                (k.kid, (k.public_key, key))
            })
            .collect();
        let rebound = {
            let mut set = self.key_set();
            let rebound = published
                .iter()
                .any(|(kid, (raw, _))| set.published.get(kid).is_some_and(|(old, _)| old != raw));
            set.published = published;
            rebound
        };
        if rebound {
            self.verified.clear();
        }
    }

    /// Emergency revocation of a signing key: its tokens are refused from now on, even if a
    /// set fetched later still lists it. Asks for an early key refresh (the successor).
    pub fn revoke_key(&self, kid: &str) {
        {
            let mut set = self.key_set();
            set.published.remove(kid);
            set.pinned.remove(kid);
            set.revoked.insert(kid.to_owned());
        }
        self.verified.clear();
        self.refresh_wanted.notify_one();
    }

    /// Ask for the key set to be fetched again now (a revocation event may have been missed).
    pub fn request_refresh(&self) {
        self.refresh_wanted.notify_one();
    }

    /// Resolves when the key set should be fetched before the next periodic refresh.
    pub async fn refresh_wanted(&self) {
        self.refresh_wanted.notified().await;
    }

    /// Whether a key with this id is accepted.
    pub fn knows(&self, kid: &str) -> bool {
        let set = self.keys.read().unwrap_or_else(|p| p.into_inner());
        set.get(kid).is_some()
    }

    /// The guard of a server stream opened by `caller`: it ends the stream when the caller's
    /// token expires or its session is revoked (see [`StreamAuth`]).
    pub fn guard_stream(&self, caller: &AuthContext) -> StreamAuth {
        StreamAuth::new(
            self.revoked.watch(&caller.session_id),
            caller.expires_at.saturating_add(self.validation.leeway),
        )
    }

    pub fn revocations(&self) -> &RevocationList {
        &self.revoked
    }

    /// Check signature, issuer, audience, expiry and revocation.
    pub fn verify(&self, token: &str) -> Result<AuthContext, ApiError> {
        let now = unix_now();
        if let Some(hit) = self.verified.get(token) {
            // The signature was checked before; what may have changed since is checked now.
            if self.knows(&hit.kid) {
                return self.still_valid(hit.context, now);
            }
        }
        let (kid, context) = self.verify_signed(token)?;
        self.verified.insert(
            token,
            Verified {
                kid,
                context: context.clone(),
            },
        );
        self.still_valid(context, now)
    }

    /// Expiry and session revocation of a token whose signature and claims are verified.
    fn still_valid(&self, context: AuthContext, now: u64) -> Result<AuthContext, ApiError> {
        if context.expires_at.saturating_add(self.validation.leeway) < now {
            return Err(ApiError::new(Reason::TokenExpired, "access token expired"));
        }
        if self.revoked.is_revoked(&context.session_id) {
            return Err(ApiError::new(Reason::SessionRevoked, "session was revoked"));
        }
        Ok(context)
    }

    /// The signature, issuer, audience and expiry check of a token seen for the first time;
    /// returns its key id and what it says.
    fn verify_signed(&self, token: &str) -> Result<(String, AuthContext), ApiError> {
        let bad = || ApiError::unauthenticated("invalid access token");
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad())?;
        let kid = header.kid.ok_or_else(bad)?;
        let key = {
            let set = self.keys.read().unwrap_or_else(|p| p.into_inner());
            set.get(&kid).cloned()
        };
        let key = key.ok_or_else(|| {
            ApiError::unauthenticated("access token signed by an unknown key")
                .with_metadata("kid", kid.clone())
        })?;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &self.validation).map_err(|e| {
            match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::new(Reason::TokenExpired, "access token expired")
                }
                _ => bad(),
            }
        })?;
        let claims = data.claims;
        // Only auth signs tokens, so malformed ids mean a forged or foreign token.
        let (Some(account_id), Some(device_id)) = (
            crate::ids::AccountId::parse(&claims.sub),
            crate::ids::DeviceId::new(claims.did),
        ) else {
            return Err(bad());
        };
        let context = AuthContext {
            account_id,
            device_id,
            session_id: claims.sid,
            roles: claims.roles,
            expires_at: claims.exp,
            // An unknown scope from a newer auth limits more than this version knows of:
            // treat it as the narrowest one rather than as none.
            scope: match claims.scope.as_deref() {
                None => TokenScope::Full,
                Some(_) => TokenScope::MfaEnrollment,
            },
        };
        Ok((kid, context))
    }
}

/// Issues access tokens. Lives in the auth service; tests use it to mint tokens.
pub struct TokenSigner {
    kid: String,
    // PKCS#8 v1 DER of the Ed25519 seed, the form `jsonwebtoken` signs with.
    pkcs8: Zeroizing<Vec<u8>>,
    public_key: [u8; 32],
    issuer: String,
    audience: String,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// What a new access token says about its holder.
#[derive(Clone, Debug)]
pub struct TokenGrant {
    pub account_id: String,
    pub device_id: u32,
    pub session_id: String,
    pub roles: Vec<String>,
    pub ttl: Duration,
}

/// Failure to sign a token.
#[derive(Debug, thiserror::Error)]
#[error("could not sign access token: {0}")]
pub struct SignError(String);

impl TokenSigner {
    /// A signer from a 32-byte Ed25519 seed.
    pub fn from_seed(kid: impl Into<String>, seed: &[u8; 32], config: &TokenConfig) -> Self {
        // RFC 8410 PKCS#8 v1 wrapping of an Ed25519 private key: a fixed 16-byte prefix (version
        // 0, OID 1.3.101.112, OCTET STRING of OCTET STRING) followed by the seed.
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut pkcs8 = Zeroizing::new(Vec::with_capacity(48));
        pkcs8.extend_from_slice(&PREFIX);
        pkcs8.extend_from_slice(seed);
        let public_key = ed25519_dalek::SigningKey::from_bytes(seed)
            .verifying_key()
            .to_bytes();
        Self {
            kid: kid.into(),
            pkcs8,
            public_key,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
        }
    }

    /// A signer with a fresh random key.
    pub fn generate(kid: impl Into<String>, config: &TokenConfig) -> Self {
        let seed = Zeroizing::new(rand::random::<[u8; 32]>());
        Self::from_seed(kid, &seed, config)
    }

    pub fn verification_key(&self) -> VerificationKey {
        VerificationKey {
            kid: self.kid.clone(),
            public_key: self.public_key,
        }
    }

    pub fn sign(&self, grant: &TokenGrant) -> Result<String, SignError> {
        self.sign_scoped(grant, TokenScope::Full)
    }

    /// A token limited to `scope` (see [`TokenScope`]).
    pub fn sign_scoped(&self, grant: &TokenGrant, scope: TokenScope) -> Result<String, SignError> {
        let iat = unix_now();
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: grant.account_id.clone(),
            did: grant.device_id,
            sid: grant.session_id.clone(),
            roles: grant.roles.clone(),
            scope: scope.claim().map(str::to_owned),
            iat,
            exp: iat.saturating_add(grant.ttl.as_secs()),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&self.pkcs8))
            .map_err(|e| SignError(e.to_string()))
    }
}

// Lives with the verification keys it checks.
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::auth::StaticKey;

    const ACCOUNT: &str = "00000000-0000-4000-8000-000000000001";

    fn grant() -> TokenGrant {
        TokenGrant {
            account_id: ACCOUNT.into(),
            device_id: 2,
            session_id: "sess-1".into(),
            roles: vec!["user".into()],
            ttl: Duration::from_secs(900),
        }
    }

    #[test]
    fn signed_tokens_verify_and_carry_claims() {
        let cfg = TokenConfig::default();
        let signer = TokenSigner::generate("k1", &cfg);
        let verifier = TokenVerifier::new(&cfg, RevocationList::new());
        verifier.add_keys([signer.verification_key()]);
        let token = signer.sign(&grant()).unwrap();
        let ctx = verifier.verify(&token).unwrap();
        assert_eq!(ctx.account_id.to_string(), ACCOUNT);
        assert_eq!(ctx.device_id.get(), 2);
        assert_eq!(ctx.session_id, "sess-1");
        assert!(ctx.has_role("user"));
    }

    #[test]
    fn wrong_key_tampering_expiry_and_revocation_are_refused() {
        let cfg = TokenConfig::default();
        let signer = TokenSigner::generate("k1", &cfg);
        let impostor = TokenSigner::generate("k1", &cfg);
        let verifier = TokenVerifier::new(&cfg, RevocationList::new());
        verifier.add_keys([signer.verification_key()]);

        let forged = impostor.sign(&grant()).unwrap();
        assert_eq!(
            verifier.verify(&forged).unwrap_err().reason(),
            Reason::Unauthenticated
        );

        let token = signer.sign(&grant()).unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let claims = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
        let tampered = String::from_utf8(claims)
            .unwrap()
            .replace(ACCOUNT, "00000000-0000-4000-8000-000000000002");
        parts[1] = URL_SAFE_NO_PAD.encode(tampered);
        assert!(verifier.verify(&parts.join(".")).is_err());

        let expired = signer
            .sign(&TokenGrant {
                ttl: Duration::ZERO,
                ..grant()
            })
            .unwrap();
        let strict = TokenVerifier::new(
            &TokenConfig {
                leeway_secs: 0,
                ..cfg.clone()
            },
            RevocationList::new(),
        );
        strict.add_keys([signer.verification_key()]);
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(
            strict.verify(&expired).unwrap_err().reason(),
            Reason::TokenExpired
        );

        verifier.revocations().revoke("sess-1", unix_now() + 900);
        assert_eq!(
            verifier.verify(&token).unwrap_err().reason(),
            Reason::SessionRevoked
        );
    }

    #[test]
    fn other_issuers_and_unknown_kids_are_refused() {
        let cfg = TokenConfig::default();
        let other = TokenConfig {
            issuer: "someone-else".into(),
            ..cfg.clone()
        };
        let signer = TokenSigner::generate("k1", &other);
        let verifier = TokenVerifier::new(&cfg, RevocationList::new());
        let token = signer.sign(&grant()).unwrap();
        assert!(verifier.verify(&token).is_err(), "unknown kid");
        verifier.add_keys([signer.verification_key()]);
        assert!(verifier.verify(&token).is_err(), "wrong issuer");
    }

    #[test]
    fn refreshes_replace_the_published_set_and_revoked_keys_stay_out() {
        let cfg = TokenConfig::default();
        let (k1, k2, pinned) = (
            TokenSigner::generate("k1", &cfg),
            TokenSigner::generate("k2", &cfg),
            TokenSigner::generate("p", &cfg),
        );
        let verifier = TokenVerifier::new(&cfg, RevocationList::new());
        verifier.add_keys([pinned.verification_key()]);
        verifier.replace_keys([k1.verification_key(), k2.verification_key()]);
        let t1 = k1.sign(&grant()).unwrap();
        let t2 = k2.sign(&grant()).unwrap();
        assert!(verifier.verify(&t1).is_ok() && verifier.verify(&t2).is_ok());
        verifier.replace_keys([k2.verification_key()]);
        assert!(verifier.verify(&t1).is_err(), "dropped from the set");
        assert!(verifier.verify(&pinned.sign(&grant()).unwrap()).is_ok());
        verifier.revoke_key("k2");
        verifier.replace_keys([k2.verification_key()]);
        assert!(
            verifier.verify(&t2).is_err(),
            "revoked, whatever a stale set says"
        );
    }

    #[test]
    fn a_refresh_keeps_remembered_tokens_unless_a_kid_names_another_key() {
        let cfg = TokenConfig::default();
        let k1 = TokenSigner::generate("k1", &cfg);
        let verifier = TokenVerifier::new(&cfg, RevocationList::new());
        verifier.replace_keys([k1.verification_key()]);
        let token = k1.sign(&grant()).unwrap();
        assert!(verifier.verify(&token).is_ok());
        verifier.replace_keys([k1.verification_key()]);
        assert_eq!(
            verifier.verified.len(),
            1,
            "an unchanged set forgets nothing"
        );

        // The same kid now names another key: the token signed with the old one is refused.
        let impostor = TokenSigner::generate("k1", &cfg);
        verifier.replace_keys([impostor.verification_key()]);
        assert_eq!(verifier.verified.len(), 0);
        assert_eq!(
            verifier.verify(&token).unwrap_err().reason(),
            Reason::Unauthenticated
        );
        assert!(verifier.verify(&impostor.sign(&grant()).unwrap()).is_ok());
    }

    #[test]
    fn static_keys_from_config_are_validated_and_used() {
        let signer = TokenSigner::generate("k9", &TokenConfig::default());
        let cfg = TokenConfig {
            static_keys: vec![StaticKey {
                kid: "k9".into(),
                x: signer.verification_key().jwk_x(),
            }],
            ..TokenConfig::default()
        };
        cfg.validate("tokens").unwrap();
        let verifier = TokenVerifier::new(&cfg, RevocationList::new());
        assert!(verifier.knows("k9"));
        let bad = TokenConfig {
            static_keys: vec![StaticKey {
                kid: "k".into(),
                x: "not base64!".into(),
            }],
            ..TokenConfig::default()
        };
        assert_eq!(
            bad.validate("tokens").unwrap_err().key,
            "tokens.static_keys"
        );
    }

    #[test]
    fn a_remembered_token_is_still_refused_once_its_session_key_or_lifetime_ends() {
        let cfg = TokenConfig {
            leeway_secs: 0,
            ..TokenConfig::default()
        };
        let signer = TokenSigner::generate("k1", &cfg);
        let verifier = TokenVerifier::new(&cfg, RevocationList::new());
        verifier.add_keys([signer.verification_key()]);

        let token = signer.sign(&grant()).unwrap();
        assert!(verifier.verify(&token).is_ok());
        assert_eq!(verifier.verified.len(), 1, "first use is remembered");
        assert_eq!(verifier.verify(&token).unwrap().session_id, "sess-1");
        verifier.revocations().revoke("sess-1", unix_now() + 900);
        assert_eq!(
            verifier.verify(&token).unwrap_err().reason(),
            Reason::SessionRevoked
        );

        let short = signer
            .sign(&TokenGrant {
                session_id: "sess-2".into(),
                ttl: Duration::from_secs(1),
                ..grant()
            })
            .unwrap();
        assert!(verifier.verify(&short).is_ok());
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(
            verifier.verify(&short).unwrap_err().reason(),
            Reason::TokenExpired
        );

        let other = signer
            .sign(&TokenGrant {
                session_id: "sess-3".into(),
                ..grant()
            })
            .unwrap();
        assert!(verifier.verify(&other).is_ok());
        verifier.revoke_key("k1");
        assert_eq!(
            verifier.verify(&other).unwrap_err().reason(),
            Reason::Unauthenticated
        );
    }
}
