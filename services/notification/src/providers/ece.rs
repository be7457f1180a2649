//! RFC 8291 message encryption for Web Push: one aes128gcm record (RFC 8188) under a key agreed
//! between a fresh P-256 key of ours and the subscription's `p256dh`, mixed with its `auth`
//! secret. Written on RustCrypto primitives because the Web Push crates on crates.io encrypt
//! through OpenSSL.

use aes_gcm::Aes128Gcm;
use aes_gcm::aead::{Aead, KeyInit};
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;

/// Record size announced in the header; our one record is far smaller.
const RECORD_SIZE: u32 = 4096;
/// RFC 8188 padding delimiter of the last record.
const LAST_RECORD: u8 = 0x02;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum EceError {
    #[error("p256dh is not an uncompressed P-256 point")]
    BadPublicKey,
    #[error("auth secret must be 16 bytes")]
    BadAuthSecret,
    #[error("payload too large for one record")]
    TooLarge,
}

/// Encrypts `plaintext` for a subscription with a fresh sender key and salt.
pub(crate) fn encrypt(
    ua_public: &[u8],
    auth_secret: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, EceError> {
    encrypt_with(
        ua_public,
        auth_secret,
        plaintext,
        &ephemeral_key(),
        rand::random(),
    )
}

fn ephemeral_key() -> SecretKey {
    // A random 32-byte string is a valid scalar except with probability ~2^-32; draw again then.
    loop {
        if let Ok(key) = SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            return key;
        }
    }
}

/// The deterministic core (RFC 8291 §3.3, §3.4; RFC 8188 §2), separated for test vectors.
pub(crate) fn encrypt_with(
    ua_public: &[u8],
    auth_secret: &[u8],
    plaintext: &[u8],
    as_secret: &SecretKey,
    salt: [u8; 16],
) -> Result<Vec<u8>, EceError> {
    if ua_public.len() != 65 {
        return Err(EceError::BadPublicKey);
    }
    let ua = PublicKey::from_sec1_bytes(ua_public).map_err(|_| EceError::BadPublicKey)?;
    if auth_secret.len() != 16 {
        return Err(EceError::BadAuthSecret);
    }
    // 16-byte tag plus the delimiter must fit in one record.
    if plaintext.len() + 17 > RECORD_SIZE as usize {
        return Err(EceError::TooLarge);
    }
    let as_public = as_secret.public_key().to_encoded_point(false);
    let as_public = as_public.as_bytes();
    let shared = p256::ecdh::diffie_hellman(as_secret.to_nonzero_scalar(), ua.as_affine());

    let mut key_info = Vec::with_capacity(14 + 65 + 65);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    expand(
        Hkdf::<Sha256>::new(Some(auth_secret), shared.raw_secret_bytes()),
        &key_info,
        &mut ikm,
    );
    let prk = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let mut cek = [0u8; 16];
    expand(prk.clone(), b"Content-Encoding: aes128gcm\0", &mut cek);
    let mut nonce = [0u8; 12];
    expand(prk, b"Content-Encoding: nonce\0", &mut nonce);

    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(LAST_RECORD);
    // The sequence number of the first record is 0, so its nonce is the derived nonce.
    let sealed = Aes128Gcm::new((&cek).into())
        .encrypt((&nonce).into(), record.as_slice())
        .map_err(|_| EceError::TooLarge)?;

    let mut out = Vec::with_capacity(16 + 4 + 1 + as_public.len() + sealed.len());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    out.push(65);
    out.extend_from_slice(as_public);
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn expand(prk: Hkdf<Sha256>, info: &[u8], out: &mut [u8]) {
    // Output lengths here (12, 16, 32) are far below HKDF-SHA256's 8160-byte limit, so expand
    // cannot fail; an error would leave `out` zeroed and the record undecryptable, not unsafe.
    let _ = prk.expand(info, out);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    use super::*;

    /// RFC 8291 Appendix A.
    #[test]
    fn rfc8291_example() {
        let d = |s: &str| B64.decode(s).unwrap();
        let as_secret =
            SecretKey::from_slice(&d("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw")).unwrap();
        let salt: [u8; 16] = d("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let out = encrypt_with(
            &d("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"),
            &d("BTBZMqHH6r4Tts7J_aSIgg"),
            b"When I grow up, I want to be a watermelon",
            &as_secret,
            salt,
        )
        .unwrap();
        assert_eq!(
            B64.encode(out),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn rejects_bad_keys() {
        let key = ephemeral_key();
        assert_eq!(
            encrypt(&[4; 65], &[0; 16], b"x"),
            Err(EceError::BadPublicKey)
        );
        let public = key.public_key().to_encoded_point(false);
        assert_eq!(
            encrypt(public.as_bytes(), &[0; 15], b"x"),
            Err(EceError::BadAuthSecret)
        );
    }
}
