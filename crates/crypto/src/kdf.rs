//! Key derivation and AEAD helpers shared by X3DH/PQXDH, the Double Ratchet and sealing.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, Payload};
use hkdf::Hkdf;
use hmac::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::Error;

/// HKDF-SHA256 producing `N` bytes.
///
/// `N` is at most 64 everywhere in this crate, far below HKDF-SHA256's 255*32 output limit.
#[allow(clippy::expect_used)]
pub(crate) fn hkdf_sha256<const N: usize>(
    salt: &[u8],
    ikm: &[u8],
    info: &[u8],
) -> Zeroizing<[u8; N]> {
    const { assert!(N <= 255 * 32) };
    let mut out = Zeroizing::new([0u8; N]);
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, out.as_mut())
        .expect("output length is checked at compile time to be within HKDF's limit");
    out
}

/// HMAC-SHA256 of `data` under `key`.
///
/// HMAC accepts keys of any length, so construction cannot fail.
#[allow(clippy::expect_used)]
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(data);
    Zeroizing::new(mac.finalize().into_bytes().into())
}

pub(crate) const AEAD_TAG_LEN: usize = 16;
pub(crate) const AEAD_NONCE_LEN: usize = 12;

/// AES-256-GCM encryption with an explicit 12-byte nonce.
pub(crate) fn aead_encrypt(
    key: &[u8; 32],
    nonce: &[u8; AEAD_NONCE_LEN],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, Error> {
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .encrypt(
            nonce.into(),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| Error::Malformed {
            what: "plaintext",
            reason: "too long for AES-GCM",
        })
}

/// AES-256-GCM decryption; any failure is reported as [`Error::DecryptFailed`].
pub(crate) fn aead_decrypt(
    key: &[u8; 32],
    nonce: &[u8; AEAD_NONCE_LEN],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(
            nonce.into(),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| Error::DecryptFailed)
}
