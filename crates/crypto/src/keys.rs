//! Curve25519 and ML-KEM-1024 key types in the libsignal serialization.
//!
//! * EC public keys (identity keys and EC prekeys) are 33 bytes: type byte [`EC_TYPE`] (0x05)
//!   followed by the 32-byte X25519 (Montgomery u) key, exactly as libsignal serializes them.
//! * KEM public keys are 1569 bytes: a type byte followed by the 1568-byte encapsulation key.
//!   [`MLKEM1024_TYPE`] (0x0A) is ours: FIPS 203 ML-KEM-1024. [`LIBSIGNAL_KYBER1024_TYPE`] (0x08)
//!   is libsignal's pre-standard Kyber1024; we parse it and verify signatures over it (the server
//!   validates libsignal clients' uploads) but never encapsulate to it.

use std::fmt;

use ml_kem::{Decapsulate, DecapsulationKey, Encapsulate, EncapsulationKey, MlKem1024};
use rand::CryptoRng;
use subtle::ConstantTimeEq;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::error::Error;
use crate::xeddsa;

/// Type byte of a serialized Curve25519 public key (libsignal's `DJB_TYPE`).
pub const EC_TYPE: u8 = 0x05;
/// Type byte of libsignal's (pre-standard) Kyber1024 public key.
pub const LIBSIGNAL_KYBER1024_TYPE: u8 = 0x08;
/// Type byte of a FIPS 203 ML-KEM-1024 public key; chosen by Guardyn, distinct from libsignal's
/// Kyber types (0x07, 0x08) so the two can never be confused.
pub const MLKEM1024_TYPE: u8 = 0x0A;
/// Length of a serialized EC public key (type byte + 32).
pub const EC_PUBLIC_KEY_LEN: usize = 33;
/// Length of a Kyber1024 / ML-KEM-1024 encapsulation key without the type byte.
pub const KEM_KEY_LEN: usize = 1568;
/// Length of a serialized KEM public key (type byte + 1568).
pub const KEM_PUBLIC_KEY_LEN: usize = KEM_KEY_LEN + 1;
/// Length of an ML-KEM-1024 ciphertext.
pub const KEM_CIPHERTEXT_LEN: usize = 1568;

/// A Curve25519 public key (identity key or EC prekey), as used for X25519 and XEdDSA.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Parses the 33-byte libsignal serialization (0x05 || u).
    ///
    /// Rejects wrong lengths, other type bytes and non-canonical u-coordinates (>= 2^255 - 19).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        Self::parse(bytes, "EC public key")
    }

    pub(crate) fn parse(bytes: &[u8], what: &'static str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidKey { what, reason };
        let [type_byte, rest @ ..] = bytes else {
            return Err(invalid("empty"));
        };
        if bytes.len() != EC_PUBLIC_KEY_LEN {
            return Err(invalid("length is not 33 bytes"));
        }
        if *type_byte != EC_TYPE {
            return Err(invalid("type byte is not 0x05 (Curve25519)"));
        }
        let mut u = [0u8; 32];
        u.copy_from_slice(rest);
        Self::from_raw(u).ok_or_else(|| invalid("not a canonical Curve25519 u-coordinate"))
    }

    pub(crate) fn from_raw(u: [u8; 32]) -> Option<Self> {
        xeddsa::is_canonical_u(&u).then_some(Self(u))
    }

    /// The 33-byte libsignal serialization.
    pub fn to_bytes(&self) -> [u8; EC_PUBLIC_KEY_LEN] {
        let mut out = [0u8; EC_PUBLIC_KEY_LEN];
        out[0] = EC_TYPE;
        out[1..].copy_from_slice(&self.0);
        out
    }

    /// The raw 32-byte Montgomery u-coordinate.
    pub fn as_raw(&self) -> &[u8; 32] {
        &self.0
    }

    /// Verifies an XEdDSA signature made by the holder of this key.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        let sig: &[u8; xeddsa::SIGNATURE_LEN] =
            signature.try_into().map_err(|_| Error::BadSignature)?;
        if xeddsa::verify(&self.0, message, sig) {
            Ok(())
        } else {
            Err(Error::BadSignature)
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey(05")?;
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str(")")
    }
}

/// A long-term identity public key (libsignal `IdentityKey`: 33 bytes, 0x05 || u).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IdentityKey(pub(crate) PublicKey);

impl IdentityKey {
    /// Parses the 33-byte libsignal serialization, with clear errors for bad length/type.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        PublicKey::parse(bytes, "identity key").map(Self)
    }

    /// The 33-byte libsignal serialization (also `Encode(IK)` in X3DH's associated data).
    pub fn to_bytes(&self) -> [u8; EC_PUBLIC_KEY_LEN] {
        self.0.to_bytes()
    }

    /// The key as a plain EC public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.0
    }

    /// Verifies an XEdDSA signature by this identity.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        self.0.verify(message, signature)
    }

    /// Constant-time equality, for comparing against a pinned/verified identity.
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.0.ct_eq(&other.0.0).into()
    }
}

/// An X25519 key pair (the private half is zeroized on drop).
#[derive(Clone)]
pub(crate) struct EcKeyPair {
    pub(crate) private: StaticSecret,
    pub(crate) public: PublicKey,
}

impl EcKeyPair {
    pub(crate) fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        loop {
            let private = StaticSecret::random_from_rng(rng);
            // A u-coordinate >= p cannot come out of a base-point multiplication, but keep
            // the invariant "every PublicKey is canonical" local and obvious.
            if let Some(public) =
                PublicKey::from_raw(x25519_dalek::PublicKey::from(&private).to_bytes())
            {
                return Self { private, public };
            }
        }
    }

    pub(crate) fn from_private(bytes: [u8; 32]) -> Result<Self, Error> {
        let private = StaticSecret::from(bytes);
        let public = PublicKey::from_raw(x25519_dalek::PublicKey::from(&private).to_bytes())
            .ok_or(Error::InvalidKey {
                what: "private key",
                reason: "derives a non-canonical public key",
            })?;
        Ok(Self { private, public })
    }

    pub(crate) fn private_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.private.to_bytes())
    }

    /// X25519 with the peer's key; refuses low-order peer keys (all-zero shared secret).
    pub(crate) fn dh(&self, their: &PublicKey) -> Result<Zeroizing<[u8; 32]>, Error> {
        dh(&self.private, their)
    }

    pub(crate) fn sign<R: CryptoRng + ?Sized>(&self, message: &[u8], rng: &mut R) -> [u8; 64] {
        xeddsa::sign(&self.private_bytes(), message, rng)
    }
}

pub(crate) fn dh(private: &StaticSecret, their: &PublicKey) -> Result<Zeroizing<[u8; 32]>, Error> {
    let shared = private.diffie_hellman(&x25519_dalek::PublicKey::from(their.0));
    if !shared.was_contributory() {
        return Err(Error::InvalidKey {
            what: "peer EC public key",
            reason: "low-order point (non-contributory Diffie-Hellman)",
        });
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

impl fmt::Debug for EcKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EcKeyPair")
            .field("public", &self.public)
            .field("private", &"<redacted>")
            .finish()
    }
}

/// A long-term identity key pair: X25519 for X3DH and XEdDSA for signing prekeys.
#[derive(Clone)]
pub struct IdentityKeyPair {
    pub(crate) pair: EcKeyPair,
}

impl IdentityKeyPair {
    /// Generates a fresh identity from the operating system's CSPRNG (via `rand::rng()`).
    pub fn generate() -> Self {
        Self {
            pair: EcKeyPair::generate(&mut rand::rng()),
        }
    }

    /// Restores an identity from its 32-byte private key (as stored by [`Self::private_bytes`]).
    pub fn from_private_bytes(bytes: [u8; 32]) -> Result<Self, Error> {
        EcKeyPair::from_private(bytes).map(|pair| Self { pair })
    }

    /// The 32-byte private key, for the client's secure storage. Zeroized when dropped.
    pub fn private_bytes(&self) -> Zeroizing<[u8; 32]> {
        self.pair.private_bytes()
    }

    /// The public identity key.
    pub fn identity_key(&self) -> IdentityKey {
        IdentityKey(self.pair.public)
    }

    /// XEdDSA signature over `message` (64 bytes, randomized per the XEdDSA spec).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.pair.sign(message, &mut rand::rng())
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeyPair")
            .field("identity_key", &self.pair.public)
            .field("private", &"<redacted>")
            .finish()
    }
}

/// Which KEM a [`KemPublicKey`] belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KemKind {
    /// libsignal's pre-standard Kyber1024 (type byte 0x08): signature verification only.
    LibsignalKyber1024,
    /// FIPS 203 ML-KEM-1024 (type byte 0x0A): used by Guardyn's PQXDH.
    MlKem1024,
}

/// A serialized post-quantum KEM public key (type byte + 1568-byte encapsulation key).
#[derive(Clone, PartialEq, Eq)]
pub struct KemPublicKey {
    kind: KemKind,
    bytes: Box<[u8; KEM_PUBLIC_KEY_LEN]>,
}

impl KemPublicKey {
    /// Parses a 1569-byte serialized KEM key with type byte 0x08 or 0x0A. ML-KEM keys are also
    /// checked per FIPS 203 (every coefficient reduced modulo q).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidKey {
            what: "KEM public key",
            reason,
        };
        let arr: &[u8; KEM_PUBLIC_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| invalid("length is not 1569 bytes"))?;
        let kind = match arr[0] {
            LIBSIGNAL_KYBER1024_TYPE => KemKind::LibsignalKyber1024,
            MLKEM1024_TYPE => {
                encapsulation_key(&arr[1..])
                    .map_err(|_| invalid("not a valid ML-KEM-1024 encapsulation key"))?;
                KemKind::MlKem1024
            }
            _ => {
                return Err(invalid(
                    "type byte is neither 0x08 (Kyber1024) nor 0x0A (ML-KEM-1024)",
                ));
            }
        };
        Ok(Self {
            kind,
            bytes: Box::new(*arr),
        })
    }

    /// Which KEM this key is for.
    pub fn kind(&self) -> KemKind {
        self.kind
    }

    /// The serialized key, type byte included (what prekey signatures cover).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.to_vec()
    }

    pub(crate) fn as_bytes(&self) -> &[u8; KEM_PUBLIC_KEY_LEN] {
        &self.bytes
    }

    /// Encapsulates a fresh shared secret to this key (ML-KEM-1024 only).
    pub(crate) fn encapsulate<R: CryptoRng + ?Sized>(
        &self,
        rng: &mut R,
    ) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), Error> {
        if self.kind != KemKind::MlKem1024 {
            return Err(Error::UnsupportedKem {
                type_byte: self.bytes[0],
            });
        }
        let ek = encapsulation_key(&self.bytes[1..])?;
        let (ct, ss) = ek.encapsulate_with_rng(rng);
        Ok((ct.to_vec(), Zeroizing::new(ss.into())))
    }
}

fn encapsulation_key(raw: &[u8]) -> Result<EncapsulationKey<MlKem1024>, Error> {
    let invalid = Error::InvalidKey {
        what: "KEM public key",
        reason: "not a valid ML-KEM-1024 encapsulation key",
    };
    let key =
        ml_kem::Key::<EncapsulationKey<MlKem1024>>::try_from(raw).map_err(|_| invalid.clone())?;
    EncapsulationKey::<MlKem1024>::new(&key).map_err(|_| invalid)
}

impl fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KemPublicKey({:?}, {} bytes)",
            self.kind,
            self.bytes.len()
        )
    }
}

/// An ML-KEM-1024 key pair, stored as its 64-byte FIPS 203 seed (zeroized on drop).
#[derive(Clone)]
pub(crate) struct KemKeyPair {
    seed: Zeroizing<[u8; 64]>,
    dk: DecapsulationKey<MlKem1024>,
    public: KemPublicKey,
}

impl KemKeyPair {
    pub(crate) fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut seed = Zeroizing::new([0u8; 64]);
        rng.fill_bytes(seed.as_mut());
        Self::from_seed(seed)
    }

    pub(crate) fn from_seed(seed: Zeroizing<[u8; 64]>) -> Self {
        let dk = DecapsulationKey::<MlKem1024>::from_seed((*seed).into());
        let mut bytes = Box::new([0u8; KEM_PUBLIC_KEY_LEN]);
        bytes[0] = MLKEM1024_TYPE;
        bytes[1..].copy_from_slice(&ml_kem::KeyExport::to_bytes(dk.encapsulation_key()));
        Self {
            seed,
            dk,
            public: KemPublicKey {
                kind: KemKind::MlKem1024,
                bytes,
            },
        }
    }

    pub(crate) fn seed(&self) -> &[u8; 64] {
        &self.seed
    }

    pub(crate) fn public(&self) -> &KemPublicKey {
        &self.public
    }

    pub(crate) fn decapsulate(&self, ciphertext: &[u8]) -> Result<Zeroizing<[u8; 32]>, Error> {
        let ss = self
            .dk
            .decapsulate_slice(ciphertext)
            .map_err(|_| Error::Malformed {
                what: "KEM ciphertext",
                reason: "length is not 1568 bytes",
            })?;
        Ok(Zeroizing::new(ss.into()))
    }
}

impl fmt::Debug for KemKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemKeyPair")
            .field("public", &self.public)
            .field("private", &"<redacted>")
            .finish()
    }
}
