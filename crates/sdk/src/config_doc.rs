//! The signed client configuration (`guardyn.admin.v1.ClientConfigService`): fetched, checked
//! against the pinned key and applied only when it is at least as new as the one applied.
//!
//! Checks, in order: the key id the server names against the pinned key's (a document of
//! another key is [`ConfigRefusal::WrongKey`], not a forgery), the signature over
//! [`SIGNING_CONTEXT`] ++ the document bytes with the pinned Ed25519 key (before anything of
//! the document is read), the signed key id, expiry, then the version against the last applied one (a lower version
//! is a downgrade and refused; the same version with a later signature is accepted, it is the
//! same configuration re-signed). Each failure is its own [`ConfigRefusal`].

use guardyn_proto::guardyn::admin::v1 as pb;
use prost::Message as _;
use sha2::Digest as _;

/// What the server signs before the document bytes (the signed message type's full name and a
/// NUL), so no other signature by the same key passes as a configuration's.
pub const SIGNING_CONTEXT: &[u8] = b"guardyn.admin.v1.ClientConfigDocument\0";

/// A verified configuration the client applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedClientConfig {
    /// Strictly increasing per publish.
    pub version: u64,
    /// When the server signed the document (Unix ms).
    pub issued_at_ms: u64,
    /// When the signed document stops being acceptable (Unix ms).
    pub expires_at_ms: u64,
    /// Id of the key that signed it.
    pub key_id: String,
    /// The configuration: a JSON object.
    pub payload_json: String,
}

/// Why a configuration document was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigRefusal {
    /// [`crate::ClientConfig::client_config_key`] is not set: nothing can be verified.
    #[error("no configuration key is pinned")]
    NoPinnedKey,
    /// The pinned key is not a valid Ed25519 public key.
    #[error("the pinned configuration key is not an Ed25519 public key")]
    BadPinnedKey,
    /// The signature does not verify with the pinned key (altered document, or signed by
    /// another key).
    #[error("the configuration signature does not verify with the pinned key")]
    BadSignature,
    /// The document names another signing key than the pinned one.
    #[error("the configuration is signed by key {found}, the pinned key is {pinned}")]
    WrongKey {
        /// The pinned key's id.
        pinned: String,
        /// The key id the document names.
        found: String,
    },
    /// The signed bytes are not a configuration document.
    #[error("the configuration document is malformed")]
    Malformed,
    /// The document expired.
    #[error("the configuration document expired at {expires_at_ms} (now {now_ms})")]
    Expired {
        /// Its expiry (Unix ms).
        expires_at_ms: u64,
        /// The client's clock (Unix ms).
        now_ms: u64,
    },
    /// The document is older than the version already applied.
    #[error("configuration version {offered} is older than the applied version {applied}")]
    Downgrade {
        /// The version applied.
        applied: u64,
        /// The version offered.
        offered: u64,
    },
}

/// The id of a configuration public key: the first 16 hex digits of its SHA-256 (what the
/// server puts in `key_id`).
pub fn config_key_id(public_key: &[u8; 32]) -> String {
    sha2::Sha256::digest(public_key)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Verify `signed` with the pinned key and against the last applied version; the
/// configuration to apply, or why not.
pub fn verify_client_config(
    signed: &pb::SignedClientConfig,
    pinned_key: &[u8; 32],
    applied_version: u64,
    now_ms: u64,
) -> Result<AppliedClientConfig, ConfigRefusal> {
    let pinned = config_key_id(pinned_key);
    if signed.key_id != pinned {
        return Err(ConfigRefusal::WrongKey {
            pinned,
            found: signed.key_id.clone(),
        });
    }
    let key = ed25519_dalek::VerifyingKey::from_bytes(pinned_key)
        .map_err(|_| ConfigRefusal::BadPinnedKey)?;
    let signature = ed25519_dalek::Signature::from_slice(&signed.signature)
        .map_err(|_| ConfigRefusal::BadSignature)?;
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + signed.document.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(&signed.document);
    key.verify_strict(&message, &signature)
        .map_err(|_| ConfigRefusal::BadSignature)?;
    let doc = pb::ClientConfigDocument::decode(signed.document.as_slice())
        .map_err(|_| ConfigRefusal::Malformed)?;
    if doc.key_id != pinned {
        return Err(ConfigRefusal::WrongKey {
            pinned,
            found: doc.key_id,
        });
    }
    if doc.expires_at_ms <= now_ms {
        return Err(ConfigRefusal::Expired {
            expires_at_ms: doc.expires_at_ms,
            now_ms,
        });
    }
    if doc.version == 0 {
        return Err(ConfigRefusal::Malformed);
    }
    if doc.version < applied_version {
        return Err(ConfigRefusal::Downgrade {
            applied: applied_version,
            offered: doc.version,
        });
    }
    Ok(AppliedClientConfig {
        version: doc.version,
        issued_at_ms: doc.issued_at_ms,
        expires_at_ms: doc.expires_at_ms,
        key_id: doc.key_id,
        payload_json: doc.payload_json,
    })
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use ed25519_dalek::Signer as _;

    use super::*;

    fn signed(
        key: &ed25519_dalek::SigningKey,
        doc: &pb::ClientConfigDocument,
    ) -> pb::SignedClientConfig {
        let document = doc.encode_to_vec();
        let mut msg = SIGNING_CONTEXT.to_vec();
        msg.extend_from_slice(&document);
        pb::SignedClientConfig {
            signature: key.sign(&msg).to_bytes().to_vec(),
            document,
            key_id: doc.key_id.clone(),
        }
    }

    #[test]
    fn each_check_refuses_with_its_own_reason() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3u8; 32]);
        let public = key.verifying_key().to_bytes();
        let doc = pb::ClientConfigDocument {
            version: 5,
            issued_at_ms: 1_000,
            expires_at_ms: 10_000,
            key_id: config_key_id(&public),
            payload_json: r#"{"a":1}"#.into(),
        };
        let good = signed(&key, &doc);
        let applied = verify_client_config(&good, &public, 5, 2_000).unwrap();
        assert_eq!(
            (applied.version, applied.payload_json.as_str()),
            (5, r#"{"a":1}"#)
        );

        assert_eq!(
            verify_client_config(&good, &public, 6, 2_000),
            Err(ConfigRefusal::Downgrade {
                applied: 6,
                offered: 5
            })
        );
        assert!(matches!(
            verify_client_config(&good, &public, 0, 10_000),
            Err(ConfigRefusal::Expired { .. })
        ));
        // Signed by the pinned key but naming another key id.
        let mut renamed = signed(
            &key,
            &pb::ClientConfigDocument {
                key_id: "0000".into(),
                ..doc.clone()
            },
        );
        assert!(matches!(
            verify_client_config(&renamed, &public, 0, 2_000),
            Err(ConfigRefusal::WrongKey { .. })
        ));
        renamed.key_id = doc.key_id.clone();
        assert!(matches!(
            verify_client_config(&renamed, &public, 0, 2_000),
            Err(ConfigRefusal::WrongKey { .. })
        ));
        // Another key's document naming the pinned key's id: a forgery.
        let other = ed25519_dalek::SigningKey::from_bytes(&[4u8; 32]);
        assert_eq!(
            verify_client_config(&signed(&other, &doc), &public, 0, 2_000),
            Err(ConfigRefusal::BadSignature)
        );
        // A signature without the context does not verify.
        let mut bare = good.clone();
        bare.signature = key.sign(&good.document).to_bytes().to_vec();
        assert_eq!(
            verify_client_config(&bare, &public, 0, 2_000),
            Err(ConfigRefusal::BadSignature)
        );
    }
}
