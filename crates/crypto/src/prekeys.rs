//! Signed EC prekeys, one-time EC prekeys and signed ML-KEM-1024 prekeys, the bundle a server
//! hands to initiators, the signature check the server runs on upload, and the responder's
//! prekey store.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use zeroize::Zeroizing;

use crate::codec::{Reader, put_u32};
use crate::error::{Error, PreKeyKind};
use crate::keys::{
    EC_PUBLIC_KEY_LEN, EcKeyPair, IdentityKey, IdentityKeyPair, KEM_PUBLIC_KEY_LEN, KemKeyPair,
    KemPublicKey, PublicKey,
};

/// Server-side check of an uploaded prekey: `signature` must be an XEdDSA signature by
/// `identity_key` (33-byte libsignal serialization) over `serialized_prekey`, which must be a
/// serialized EC public key (33 bytes, type 0x05) or KEM public key (1569 bytes, type 0x08 for
/// libsignal's Kyber1024 or 0x0A for ML-KEM-1024). The signature covers the type byte.
pub fn verify_prekey_signature(
    identity_key: &[u8],
    serialized_prekey: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    let identity = IdentityKey::from_bytes(identity_key)?;
    match serialized_prekey.len() {
        EC_PUBLIC_KEY_LEN => PublicKey::parse(serialized_prekey, "EC prekey").map(drop)?,
        KEM_PUBLIC_KEY_LEN => KemPublicKey::from_bytes(serialized_prekey).map(drop)?,
        _ => {
            return Err(Error::InvalidKey {
                what: "prekey",
                reason: "length is neither 33 (EC) nor 1569 (KEM) bytes",
            });
        }
    }
    if signature.len() != 64 {
        return Err(Error::Malformed {
            what: "signature",
            reason: "length is not 64 bytes",
        });
    }
    identity.verify(serialized_prekey, signature)
}

/// A medium-term X25519 prekey signed by the identity key (private part zeroized on drop).
#[derive(Clone)]
pub struct SignedPreKey {
    id: u32,
    pub(crate) pair: EcKeyPair,
    signature: [u8; 64],
}

impl SignedPreKey {
    /// Generates a key and signs its 33-byte serialization with `identity`.
    pub fn generate(id: u32, identity: &IdentityKeyPair) -> Self {
        let mut rng = rand::rng();
        let pair = EcKeyPair::generate(&mut rng);
        let signature = identity.pair.sign(&pair.public.to_bytes(), &mut rng);
        Self {
            id,
            pair,
            signature,
        }
    }

    /// The prekey id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The part published to the server.
    pub fn public(&self) -> SignedPreKeyPublic {
        SignedPreKeyPublic {
            id: self.id,
            key: self.pair.public,
            signature: self.signature,
        }
    }
}

impl fmt::Debug for SignedPreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedPreKey")
            .field("id", &self.id)
            .field("pair", &self.pair)
            .finish()
    }
}

/// The public half of a [`SignedPreKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPreKeyPublic {
    /// Prekey id.
    pub id: u32,
    /// The X25519 public key.
    pub key: PublicKey,
    /// XEdDSA signature by the identity key over `key.to_bytes()`.
    pub signature: [u8; 64],
}

/// A single-use X25519 prekey (private part zeroized on drop).
#[derive(Clone)]
pub struct OneTimePreKey {
    id: u32,
    pub(crate) pair: EcKeyPair,
}

impl OneTimePreKey {
    /// Generates a one-time prekey. One-time prekeys are not signed (as in X3DH).
    pub fn generate(id: u32) -> Self {
        Self {
            id,
            pair: EcKeyPair::generate(&mut rand::rng()),
        }
    }

    /// The prekey id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The part published to the server.
    pub fn public(&self) -> OneTimePreKeyPublic {
        OneTimePreKeyPublic {
            id: self.id,
            key: self.pair.public,
        }
    }
}

impl fmt::Debug for OneTimePreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OneTimePreKey")
            .field("id", &self.id)
            .field("pair", &self.pair)
            .finish()
    }
}

/// The public half of a [`OneTimePreKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneTimePreKeyPublic {
    /// Prekey id.
    pub id: u32,
    /// The X25519 public key.
    pub key: PublicKey,
}

/// A signed ML-KEM-1024 prekey (PQXDH's "signed post-quantum prekey").
#[derive(Clone)]
pub struct KemPreKey {
    id: u32,
    pub(crate) pair: KemKeyPair,
    signature: [u8; 64],
}

impl KemPreKey {
    /// Generates a key pair and signs its 1569-byte serialization (type 0x0A) with `identity`.
    pub fn generate(id: u32, identity: &IdentityKeyPair) -> Self {
        let mut rng = rand::rng();
        let pair = KemKeyPair::generate(&mut rng);
        let signature = identity.pair.sign(pair.public().as_bytes(), &mut rng);
        Self {
            id,
            pair,
            signature,
        }
    }

    /// The prekey id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The part published to the server.
    pub fn public(&self) -> KemPreKeyPublic {
        KemPreKeyPublic {
            id: self.id,
            key: self.pair.public().clone(),
            signature: self.signature,
        }
    }
}

impl fmt::Debug for KemPreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemPreKey")
            .field("id", &self.id)
            .field("pair", &self.pair)
            .finish()
    }
}

/// The public half of a [`KemPreKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KemPreKeyPublic {
    /// Prekey id.
    pub id: u32,
    /// The KEM public key.
    pub key: KemPublicKey,
    /// XEdDSA signature by the identity key over `key.to_bytes()`.
    pub signature: [u8; 64],
}

/// Everything an initiator fetches from the server to start a session with a peer device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreKeyBundle {
    /// The peer's identity key.
    pub identity_key: IdentityKey,
    /// The peer's current signed prekey.
    pub signed_prekey: SignedPreKeyPublic,
    /// A one-time prekey, if the server had one left.
    pub one_time_prekey: Option<OneTimePreKeyPublic>,
    /// A signed ML-KEM-1024 prekey; present means PQXDH, absent means classic X3DH.
    pub kem_prekey: Option<KemPreKeyPublic>,
}

impl PreKeyBundle {
    /// Checks the signed prekey's and (if present) the KEM prekey's signatures.
    pub fn verify(&self) -> Result<(), Error> {
        self.identity_key.verify(
            &self.signed_prekey.key.to_bytes(),
            &self.signed_prekey.signature,
        )?;
        if let Some(kem) = &self.kem_prekey {
            self.identity_key
                .verify(kem.key.as_bytes(), &kem.signature)?;
        }
        Ok(())
    }
}

/// The responder's prekey storage. "Take" is explicit: [`crate::respond`] looks the one-time
/// prekey up with [`PreKeyStore::one_time_prekey`], and only after the initial message has
/// authenticated does it call [`PreKeyStore::take_one_time_prekey`], which must remove the key
/// and remember its id so that a replayed initial message fails with [`Error::PreKeyReplayed`].
pub trait PreKeyStore {
    /// The signed prekey with this id, if still held.
    fn signed_prekey(&self, id: u32) -> Option<&SignedPreKey>;
    /// The KEM prekey with this id, if still held.
    fn kem_prekey(&self, id: u32) -> Option<&KemPreKey>;
    /// The one-time prekey with this id without consuming it: `Err(PreKeyReplayed)` if it was
    /// already taken, `Err(UnknownPreKey)` if it never existed here.
    fn one_time_prekey(&self, id: u32) -> Result<&OneTimePreKey, Error>;
    /// Removes the one-time prekey and records its id as consumed.
    fn take_one_time_prekey(&mut self, id: u32) -> Result<OneTimePreKey, Error>;
}

/// A simple in-memory [`PreKeyStore`] (for tests and as a reference for SDK implementations).
#[derive(Debug, Default)]
pub struct InMemoryPreKeyStore {
    signed: BTreeMap<u32, SignedPreKey>,
    kem: BTreeMap<u32, KemPreKey>,
    one_time: BTreeMap<u32, OneTimePreKey>,
    consumed: BTreeSet<u32>,
}

impl InMemoryPreKeyStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a signed prekey.
    pub fn add_signed_prekey(&mut self, key: SignedPreKey) {
        self.signed.insert(key.id(), key);
    }

    /// Adds (or replaces) a KEM prekey.
    pub fn add_kem_prekey(&mut self, key: KemPreKey) {
        self.kem.insert(key.id(), key);
    }

    /// Adds a one-time prekey. Ids that were already consumed are refused so that a replayed
    /// initial message can never be matched to a re-uploaded id.
    pub fn add_one_time_prekey(&mut self, key: OneTimePreKey) -> Result<(), Error> {
        if self.consumed.contains(&key.id()) {
            return Err(Error::PreKeyReplayed { id: key.id() });
        }
        self.one_time.insert(key.id(), key);
        Ok(())
    }
}

impl PreKeyStore for InMemoryPreKeyStore {
    fn signed_prekey(&self, id: u32) -> Option<&SignedPreKey> {
        self.signed.get(&id)
    }

    fn kem_prekey(&self, id: u32) -> Option<&KemPreKey> {
        self.kem.get(&id)
    }

    fn one_time_prekey(&self, id: u32) -> Result<&OneTimePreKey, Error> {
        if self.consumed.contains(&id) {
            return Err(Error::PreKeyReplayed { id });
        }
        self.one_time.get(&id).ok_or(Error::UnknownPreKey {
            kind: PreKeyKind::OneTime,
            id,
        })
    }

    fn take_one_time_prekey(&mut self, id: u32) -> Result<OneTimePreKey, Error> {
        if self.consumed.contains(&id) {
            return Err(Error::PreKeyReplayed { id });
        }
        let key = self.one_time.remove(&id).ok_or(Error::UnknownPreKey {
            kind: PreKeyKind::OneTime,
            id,
        })?;
        self.consumed.insert(id);
        Ok(key)
    }
}

/// Version byte of the private prekey record encodings (`to_bytes`/`from_bytes`).
pub const PREKEY_RECORD_VERSION: u8 = 1;

fn record_header(r: &mut Reader<'_>, what: &'static str) -> Result<u32, Error> {
    let version = r.u8()?;
    if version != PREKEY_RECORD_VERSION {
        return Err(Error::UnsupportedVersion { what, version });
    }
    r.u32()
}

impl SignedPreKey {
    /// Private record for the client's storage: `0x01 | id | private (32) | signature (64)`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(101));
        out.push(PREKEY_RECORD_VERSION);
        put_u32(&mut out, self.id);
        out.extend_from_slice(&*self.pair.private_bytes());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Strictly decodes [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "signed prekey record";
        let mut r = Reader::new(bytes, WHAT);
        let id = record_header(&mut r, WHAT)?;
        let pair = EcKeyPair::from_private(*Zeroizing::new(r.array::<32>()?))?;
        let signature = r.array()?;
        r.finish()?;
        Ok(Self {
            id,
            pair,
            signature,
        })
    }
}

impl OneTimePreKey {
    /// Private record for the client's storage: `0x01 | id | private (32)`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(37));
        out.push(PREKEY_RECORD_VERSION);
        put_u32(&mut out, self.id);
        out.extend_from_slice(&*self.pair.private_bytes());
        out
    }

    /// Strictly decodes [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "one-time prekey record";
        let mut r = Reader::new(bytes, WHAT);
        let id = record_header(&mut r, WHAT)?;
        let pair = EcKeyPair::from_private(*Zeroizing::new(r.array::<32>()?))?;
        r.finish()?;
        Ok(Self { id, pair })
    }
}

impl KemPreKey {
    /// Private record for the client's storage: `0x01 | id | ML-KEM seed (64) | signature (64)`.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(133));
        out.push(PREKEY_RECORD_VERSION);
        put_u32(&mut out, self.id);
        out.extend_from_slice(self.pair.seed());
        out.extend_from_slice(&self.signature);
        out
    }

    /// Strictly decodes [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "KEM prekey record";
        let mut r = Reader::new(bytes, WHAT);
        let id = record_header(&mut r, WHAT)?;
        let pair = KemKeyPair::from_seed(Zeroizing::new(r.array::<64>()?));
        let signature = r.array()?;
        r.finish()?;
        Ok(Self {
            id,
            pair,
            signature,
        })
    }
}
