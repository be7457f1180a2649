//! A Double Ratchet session with its peer identities, its versioned binary encoding and sealing
//! at rest.
//!
//! Session encoding, version 1 (all integers big-endian):
//! ```text
//! 0x01 | role (0 initiator, 1 responder) | post-quantum (0/1) | local IK (33) | remote IK (33)
//!      | max_skip (u32) | max_skipped_total (u32)
//!      | DHs private (32) | DHr flag [| DHr (32)] | RK (32) | CKs flag [| CKs (32)]
//!      | CKr flag [| CKr (32)] | Ns (u32) | Nr (u32) | PN (u32)
//!      | skipped count (u32, <= max_skipped_total) | count x (dh (32) | n (u32) | mk (32))
//!      | previous remote key count (u8, <= 32) | count x dh (32)
//! ```
//! Sealed session, version 1: `0x01 | nonce (12) | AES-256-GCM(key, nonce, encoding, aad = 0x01)`.

use std::collections::VecDeque;
use std::fmt;

use rand::Rng;
use zeroize::Zeroizing;

use crate::codec::{Reader, put_u32};
use crate::error::{Error, malformed};
use crate::kdf::{AEAD_NONCE_LEN, AEAD_TAG_LEN, aead_decrypt, aead_encrypt};
use crate::keys::{EC_PUBLIC_KEY_LEN, EcKeyPair, IdentityKey, PublicKey};
use crate::ratchet::{Key32, MAX_PREVIOUS_REMOTE, RatchetConfig, RatchetState, SkippedKey};
use crate::wire::RatchetMessage;

/// Version byte of the session encoding.
pub const SESSION_VERSION: u8 = 1;
/// Version byte of a sealed session (also its AEAD associated data).
pub const SEALED_SESSION_VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Initiator,
    Responder,
}

/// An established end-to-end session with one peer device.
pub struct Session {
    role: Role,
    local_identity: IdentityKey,
    remote_identity: IdentityKey,
    post_quantum: bool,
    config: RatchetConfig,
    state: RatchetState,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.role)
            .field("remote_identity", &self.remote_identity)
            .field("post_quantum", &self.post_quantum)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        role: Role,
        local_identity: IdentityKey,
        remote_identity: IdentityKey,
        post_quantum: bool,
        config: RatchetConfig,
        state: RatchetState,
    ) -> Self {
        Self {
            role,
            local_identity,
            remote_identity,
            post_quantum,
            config,
            state,
        }
    }

    /// X3DH associated data: Encode(IK_A) || Encode(IK_B), A being the initiator.
    fn associated_data(&self) -> [u8; 2 * EC_PUBLIC_KEY_LEN] {
        let (a, b) = match self.role {
            Role::Initiator => (&self.local_identity, &self.remote_identity),
            Role::Responder => (&self.remote_identity, &self.local_identity),
        };
        let mut ad = [0u8; 2 * EC_PUBLIC_KEY_LEN];
        ad[..EC_PUBLIC_KEY_LEN].copy_from_slice(&a.to_bytes());
        ad[EC_PUBLIC_KEY_LEN..].copy_from_slice(&b.to_bytes());
        ad
    }

    /// Encrypts the next message.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<RatchetMessage, Error> {
        let ad = self.associated_data();
        self.state.encrypt(&ad, plaintext)
    }

    /// Decrypts a message. On any error the session is unchanged and stays usable.
    pub fn decrypt(&mut self, message: &RatchetMessage) -> Result<Zeroizing<Vec<u8>>, Error> {
        let ad = self.associated_data();
        self.state.decrypt(&self.config, &ad, message)
    }

    /// The peer's identity key (compare it with the one the user verified).
    pub fn remote_identity(&self) -> IdentityKey {
        self.remote_identity
    }

    /// Our own identity key.
    pub fn local_identity(&self) -> IdentityKey {
        self.local_identity
    }

    /// Whether the session was established with PQXDH (a KEM shared secret went into SK).
    pub fn is_post_quantum(&self) -> bool {
        self.post_quantum
    }

    /// The skipped-key bounds in force.
    pub fn config(&self) -> RatchetConfig {
        self.config
    }

    /// Number of skipped message keys currently stored.
    pub fn skipped_key_count(&self) -> usize {
        self.state.skipped.len()
    }

    /// Serializes the full session state (secret!) in the version-1 encoding.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let s = &self.state;
        let mut out = Zeroizing::new(Vec::with_capacity(256 + s.skipped.len() * 68));
        out.push(SESSION_VERSION);
        out.push(match self.role {
            Role::Initiator => 0,
            Role::Responder => 1,
        });
        out.push(u8::from(self.post_quantum));
        out.extend_from_slice(&self.local_identity.to_bytes());
        out.extend_from_slice(&self.remote_identity.to_bytes());
        put_u32(&mut out, self.config.max_skip);
        put_u32(&mut out, self.config.max_skipped_total);
        out.extend_from_slice(&*s.dhs.private_bytes());
        put_opt(&mut out, s.dhr.as_ref().map(PublicKey::as_raw));
        out.extend_from_slice(&s.rk.0);
        put_opt(&mut out, s.cks.as_ref().map(|k| &k.0));
        put_opt(&mut out, s.ckr.as_ref().map(|k| &k.0));
        put_u32(&mut out, s.ns);
        put_u32(&mut out, s.nr);
        put_u32(&mut out, s.pn);
        // Both collections are bounded (validated config, MAX_PREVIOUS_REMOTE) far below u32/u8.
        put_u32(&mut out, s.skipped.len() as u32);
        for k in &s.skipped {
            out.extend_from_slice(k.dh.as_raw());
            put_u32(&mut out, k.n);
            out.extend_from_slice(&k.mk.0);
        }
        out.push(s.previous_remote.len() as u8);
        for k in &s.previous_remote {
            out.extend_from_slice(k.as_raw());
        }
        out
    }

    /// Strictly decodes a session produced by [`Self::to_bytes`]. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "session";
        let mut r = Reader::new(bytes, WHAT);
        let version = r.u8()?;
        if version != SESSION_VERSION {
            return Err(Error::UnsupportedVersion {
                what: WHAT,
                version,
            });
        }
        let role = match r.u8()? {
            0 => Role::Initiator,
            1 => Role::Responder,
            _ => return Err(malformed(WHAT, "unknown role")),
        };
        let post_quantum = r.flag()?;
        let local_identity = IdentityKey::from_bytes(r.take(EC_PUBLIC_KEY_LEN)?)?;
        let remote_identity = IdentityKey::from_bytes(r.take(EC_PUBLIC_KEY_LEN)?)?;
        let config = RatchetConfig {
            max_skip: r.u32()?,
            max_skipped_total: r.u32()?,
        };
        config
            .validate()
            .map_err(|_| malformed(WHAT, "invalid skipped-key bounds"))?;
        let dhs = EcKeyPair::from_private(*Zeroizing::new(r.array::<32>()?))?;
        let dhr = if r.flag()? {
            Some(read_key(&mut r)?)
        } else {
            None
        };
        let rk = Key32(r.array()?);
        let cks = if r.flag()? {
            Some(Key32(r.array()?))
        } else {
            None
        };
        let ckr = if r.flag()? {
            Some(Key32(r.array()?))
        } else {
            None
        };
        // The initiator knows the remote ratchet key before it has a receiving chain; the
        // reverse can never happen.
        if ckr.is_some() && dhr.is_none() {
            return Err(malformed(
                WHAT,
                "receiving chain without a remote ratchet key",
            ));
        }
        let (ns, nr, pn) = (r.u32()?, r.u32()?, r.u32()?);
        let skipped_len = r.u32()?;
        if skipped_len > config.max_skipped_total {
            return Err(malformed(
                WHAT,
                "more skipped keys than the configured bound",
            ));
        }
        let mut skipped = VecDeque::new();
        for _ in 0..skipped_len {
            let dh = read_key(&mut r)?;
            let n = r.u32()?;
            skipped.push_back(SkippedKey {
                dh,
                n,
                mk: Key32(r.array()?),
            });
        }
        let prev_len = usize::from(r.u8()?);
        if prev_len > MAX_PREVIOUS_REMOTE {
            return Err(malformed(WHAT, "too many previous ratchet keys"));
        }
        let mut previous_remote = VecDeque::with_capacity(prev_len);
        for _ in 0..prev_len {
            previous_remote.push_back(read_key(&mut r)?);
        }
        r.finish()?;
        let state = RatchetState {
            dhs,
            dhr,
            rk,
            cks,
            ckr,
            ns,
            nr,
            pn,
            skipped,
            previous_remote,
        };
        Ok(Self {
            role,
            local_identity,
            remote_identity,
            post_quantum,
            config,
            state,
        })
    }

    /// Encrypts the session for storage at rest under a caller-provided 32-byte key
    /// (AES-256-GCM, random nonce, version byte as associated data).
    pub fn seal(&self, key: &[u8; 32]) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; AEAD_NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let plaintext = self.to_bytes();
        let ct = aead_encrypt(key, &nonce, &plaintext, &[SEALED_SESSION_VERSION])?;
        let mut out = Vec::with_capacity(1 + AEAD_NONCE_LEN + ct.len());
        out.push(SEALED_SESSION_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a session sealed with [`Self::seal`]. A wrong key or any modification yields
    /// [`Error::DecryptFailed`].
    pub fn unseal(sealed: &[u8], key: &[u8; 32]) -> Result<Self, Error> {
        const WHAT: &str = "sealed session";
        let mut r = Reader::new(sealed, WHAT);
        let version = r.u8()?;
        if version != SEALED_SESSION_VERSION {
            return Err(Error::UnsupportedVersion {
                what: WHAT,
                version,
            });
        }
        let nonce: [u8; AEAD_NONCE_LEN] = r.array()?;
        let ct = r.rest();
        if ct.len() < AEAD_TAG_LEN {
            return Err(malformed(WHAT, "shorter than the authentication tag"));
        }
        let plaintext = aead_decrypt(key, &nonce, ct, &[SEALED_SESSION_VERSION])?;
        Self::from_bytes(&plaintext)
    }
}

fn put_opt(out: &mut Vec<u8>, v: Option<&[u8; 32]>) {
    match v {
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(bytes);
        }
        None => out.push(0),
    }
}

fn read_key(r: &mut Reader<'_>) -> Result<PublicKey, Error> {
    PublicKey::from_raw(r.array()?).ok_or(malformed(
        "session",
        "ratchet key is not a canonical Curve25519 key",
    ))
}
