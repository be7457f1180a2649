//! Provider credentials, read from files named in the configuration (never inline).

use std::path::Path;

use jsonwebtoken::EncodingKey;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};

use super::ProviderError;

/// A P-256 private key as JWT signing key, with its public key (SEC1 uncompressed, 65 bytes).
pub(crate) struct EcKey {
    pub signing: EncodingKey,
    pub public: Vec<u8>,
}

pub(crate) fn read(
    section: &'static str,
    key: &'static str,
    path: &Path,
) -> Result<String, ProviderError> {
    if path.as_os_str().is_empty() {
        return Err(ProviderError::Invalid {
            section,
            key,
            reason: "a file path is required".into(),
        });
    }
    std::fs::read_to_string(path).map_err(|source| ProviderError::Read {
        section,
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a PKCS#8 (`BEGIN PRIVATE KEY`, what Apple's .p8 and most VAPID tools write) or SEC1
/// (`BEGIN EC PRIVATE KEY`, what `openssl ecparam` writes) P-256 key.
pub(crate) fn p256(
    section: &'static str,
    key: &'static str,
    path: &Path,
) -> Result<EcKey, ProviderError> {
    let pem = read(section, key, path)?;
    let invalid = |reason: &str| ProviderError::Invalid {
        section,
        key,
        reason: format!("{}: {reason}", path.display()),
    };
    let secret = p256::SecretKey::from_pkcs8_pem(&pem)
        .or_else(|_| p256::SecretKey::from_sec1_pem(&pem))
        .map_err(|_| invalid("not a P-256 private key in PKCS#8 or SEC1 PEM"))?;
    let der = secret
        .to_pkcs8_der()
        .map_err(|_| invalid("cannot encode the key"))?;
    Ok(EcKey {
        signing: EncodingKey::from_ec_der(der.as_bytes()),
        public: secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec(),
    })
}
