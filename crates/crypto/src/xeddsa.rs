//! XEdDSA signatures over Curve25519 (Montgomery) keys, per Signal's XEdDSA specification
//! (<https://signal.org/docs/specifications/xeddsa/>), built on curve25519-dalek primitives.
//!
//! Signing follows the specification exactly: the Montgomery private key is converted to an
//! Edwards key whose public point has sign bit 0 (negating the scalar when needed), the nonce is
//! `hash1(a || M || Z)` with `hash1` = SHA-512 prefixed by `0xFE || 31 x 0xFF` and `Z` 64 fresh
//! random bytes, and the signature is `R || s` with the top bit of `s` clear.
//!
//! Verification follows libsignal: the Edwards point is recovered from the Montgomery
//! u-coordinate with the sign bit taken from the top bit of the signature (libsignal's own signer
//! stores its public key's sign bit there; spec-conformant signatures always carry 0). Both kinds
//! of signature therefore verify here, and ours verify under libsignal (see the known-answer
//! tests in `crates/crypto/testdata/libsignal`).

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::{Scalar, clamp_integer};
use rand::CryptoRng;
use sha2::{Digest, Sha512};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

/// Length of an XEdDSA signature.
pub const SIGNATURE_LEN: usize = 64;

/// Signs `message` with the X25519 private key `private` (raw 32 bytes, clamped here).
pub(crate) fn sign<R: CryptoRng + ?Sized>(
    private: &[u8; 32],
    message: &[u8],
    rng: &mut R,
) -> [u8; SIGNATURE_LEN] {
    let mut z = Zeroizing::new([0u8; 64]);
    rng.fill_bytes(z.as_mut());
    sign_with_nonce_input(private, message, &z)
}

/// The deterministic core of [`sign`]; `z` must be fresh random bytes in production.
fn sign_with_nonce_input(private: &[u8; 32], message: &[u8], z: &[u8; 64]) -> [u8; SIGNATURE_LEN] {
    // calculate_key_pair(k): force the Edwards public key's sign bit to 0.
    let k = Zeroizing::new(Scalar::from_bytes_mod_order(clamp_integer(*private)));
    let e = EdwardsPoint::mul_base(&k).compress();
    let sign_bit = e.as_bytes()[31] >> 7;
    let neg_k = Zeroizing::new(-*k);
    let a = Zeroizing::new(Scalar::conditional_select(&k, &neg_k, sign_bit.into()));
    let mut public_a = e.to_bytes();
    public_a[31] &= 0x7F;

    // r = hash1(a || M || Z) mod q
    let mut prefix = [0xFFu8; 32];
    prefix[0] = 0xFE;
    let mut h1 = Sha512::new();
    h1.update(prefix);
    h1.update(a.as_bytes());
    h1.update(message);
    h1.update(z);
    let r_wide = Zeroizing::new(<[u8; 64]>::from(h1.finalize()));
    let r = Zeroizing::new(Scalar::from_bytes_mod_order_wide(&r_wide));
    let big_r = EdwardsPoint::mul_base(&r).compress();

    // h = hash(R || A || M) mod q ; s = r + h a mod q
    let h = challenge(&big_r, &public_a, message);
    let s = h * *a + *r;

    let mut sig = [0u8; SIGNATURE_LEN];
    sig[..32].copy_from_slice(big_r.as_bytes());
    sig[32..].copy_from_slice(s.as_bytes());
    sig
}

fn challenge(big_r: &CompressedEdwardsY, public_a: &[u8; 32], message: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(big_r.as_bytes());
    h.update(public_a);
    h.update(message);
    Scalar::from_bytes_mod_order_wide(&h.finalize().into())
}

/// Whether `u` is a canonical field element encoding (little-endian value below 2^255 - 19).
pub(crate) fn is_canonical_u(u: &[u8; 32]) -> bool {
    if u[31] & 0x80 != 0 {
        return false;
    }
    // Values >= p are exactly 0x7FFF...FFED ..= 0x7FFF...FFFF.
    !(u[31] == 0x7F && u[1..31].iter().all(|&b| b == 0xFF) && u[0] >= 0xED)
}

/// Verifies an XEdDSA signature by the Montgomery public key `u` (raw 32 bytes).
pub(crate) fn verify(u: &[u8; 32], message: &[u8], signature: &[u8; SIGNATURE_LEN]) -> bool {
    if !is_canonical_u(u) {
        return false;
    }
    let sign_bit = signature[63] >> 7;
    let Some(a_point) = MontgomeryPoint(*u).to_edwards(sign_bit) else {
        return false;
    };
    let public_a = a_point.compress().to_bytes();

    let mut r_bytes = [0u8; 32];
    r_bytes.copy_from_slice(&signature[..32]);
    let mut s_bytes = [0u8; 32];
    s_bytes.copy_from_slice(&signature[32..]);
    s_bytes[31] &= 0x7F;
    // Rejects s >= q, which also covers the specification's s >= 2^253 check.
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
        return false;
    };

    let big_r = CompressedEdwardsY(r_bytes);
    let h = challenge(&big_r, &public_a, message);
    // R' = sB - hA
    let r_check = EdwardsPoint::vartime_double_scalar_mul_basepoint(&h, &-a_point, &s).compress();
    r_check.as_bytes().ct_eq(&r_bytes).into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn keypair(seed: u8) -> ([u8; 32], [u8; 32]) {
        let private = [seed; 32];
        let public = MontgomeryPoint::mul_base_clamped(private).to_bytes();
        (private, public)
    }

    #[test]
    fn sign_then_verify_for_many_keys_and_both_sign_bits() {
        let mut rng = rand::rng();
        let mut seen_sign = [false; 2];
        for seed in 1..=40u8 {
            let (private, public) = keypair(seed);
            let k = Scalar::from_bytes_mod_order(clamp_integer(private));
            seen_sign[usize::from(EdwardsPoint::mul_base(&k).compress().as_bytes()[31] >> 7)] =
                true;
            let sig = sign(&private, b"message", &mut rng);
            assert_eq!(sig[63] & 0x80, 0, "spec signatures carry sign bit 0");
            assert!(verify(&public, b"message", &sig));
            assert!(!verify(&public, b"messagf", &sig));
        }
        assert_eq!(
            seen_sign,
            [true, true],
            "test keys must exercise the negation path"
        );
    }

    #[test]
    fn every_flipped_signature_bit_is_rejected() {
        let (private, public) = keypair(9);
        let sig = sign_with_nonce_input(&private, b"abc", &[3; 64]);
        for bit in 0..SIGNATURE_LEN * 8 {
            let mut bad = sig;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(!verify(&public, b"abc", &bad), "bit {bit}");
        }
    }

    #[test]
    fn wrong_key_and_non_canonical_keys_are_rejected() {
        let (private, _) = keypair(5);
        let (_, other) = keypair(6);
        let sig = sign(&private, b"m", &mut rand::rng());
        assert!(!verify(&other, b"m", &sig));
        let mut p = [0xFFu8; 32];
        p[31] = 0x7F;
        p[0] = 0xED;
        assert!(!is_canonical_u(&p));
        p[0] = 0xEC;
        assert!(is_canonical_u(&p));
        assert!(!is_canonical_u(&[0xFF; 32]));
    }

    #[test]
    fn nonce_depends_on_random_input() {
        let (private, public) = keypair(7);
        let a = sign_with_nonce_input(&private, b"m", &[1; 64]);
        let b = sign_with_nonce_input(&private, b"m", &[2; 64]);
        assert_ne!(a, b);
        assert!(verify(&public, b"m", &a) && verify(&public, b"m", &b));
    }
}
