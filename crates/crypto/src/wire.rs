//! Wire formats of ratchet messages and initial (prekey) messages. Both start with a version
//! byte; decoders are strict (exact lengths, no trailing bytes) and never panic.
//!
//! Ratchet message, version 1:
//! ```text
//! 0x01 | ratchet public key (32) | pn (u32 BE) | n (u32 BE) | AES-256-GCM ciphertext+tag (>= 16)
//! ```
//! The first 41 bytes are the header; they are authenticated as associated data.
//!
//! Initial message, version 1:
//! ```text
//! 0x01 | kind (0x01 X3DH, 0x02 PQXDH) | IK_A (33) | EK_A (33) | signed prekey id (u32)
//!      | one-time flag (0/1) [| one-time prekey id (u32)]
//!      [| KEM prekey id (u32) | KEM ciphertext (1568)]        -- PQXDH only
//!      | ratchet message (rest, format above)
//! ```

use crate::codec::{Reader, put_u32};
use crate::error::{Error, malformed};
use crate::kdf::AEAD_TAG_LEN;
use crate::keys::{EC_PUBLIC_KEY_LEN, IdentityKey, KEM_CIPHERTEXT_LEN, PublicKey};

/// Version byte of ratchet messages.
pub const RATCHET_MESSAGE_VERSION: u8 = 1;
/// Version byte of initial messages.
pub const INITIAL_MESSAGE_VERSION: u8 = 1;
const KIND_X3DH: u8 = 0x01;
const KIND_PQXDH: u8 = 0x02;

/// The Double Ratchet header: sender's current ratchet key, previous chain length, message number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The sender's current ratchet public key.
    pub dh: PublicKey,
    /// Number of messages in the sender's previous sending chain.
    pub pn: u32,
    /// Message number in the current sending chain.
    pub n: u32,
}

impl Header {
    /// Encoded length including the version byte.
    pub const ENCODED_LEN: usize = 1 + 32 + 4 + 4;

    pub(crate) fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(RATCHET_MESSAGE_VERSION);
        out.extend_from_slice(self.dh.as_raw());
        put_u32(out, self.pn);
        put_u32(out, self.n);
    }
}

/// An encrypted Double Ratchet message.
#[derive(Clone, PartialEq, Eq)]
pub struct RatchetMessage {
    /// The authenticated (not encrypted) header.
    pub header: Header,
    pub(crate) ciphertext: Vec<u8>,
}

impl std::fmt::Debug for RatchetMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RatchetMessage")
            .field("header", &self.header)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

impl RatchetMessage {
    /// Serializes the message (version 1).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Header::ENCODED_LEN + self.ciphertext.len());
        self.header.encode_into(&mut out);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Strictly parses a serialized ratchet message.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "ratchet message";
        let mut r = Reader::new(bytes, WHAT);
        let version = r.u8()?;
        if version != RATCHET_MESSAGE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: WHAT,
                version,
            });
        }
        let dh = PublicKey::from_raw(r.array()?).ok_or(malformed(
            WHAT,
            "ratchet key is not a canonical Curve25519 key",
        ))?;
        let pn = r.u32()?;
        let n = r.u32()?;
        let ciphertext = r.rest();
        if ciphertext.len() < AEAD_TAG_LEN {
            return Err(malformed(
                WHAT,
                "ciphertext shorter than the authentication tag",
            ));
        }
        Ok(Self {
            header: Header { dh, pn, n },
            ciphertext: ciphertext.to_vec(),
        })
    }
}

/// Which prekeys an initial message used, and the KEM ciphertext for PQXDH.
#[derive(Clone, PartialEq, Eq)]
pub struct InitialMessage {
    /// The initiator's identity key (IK_A).
    pub identity_key: IdentityKey,
    /// The initiator's ephemeral key (EK_A); also the first ratchet key's peer input.
    pub base_key: PublicKey,
    /// Id of the responder's signed prekey that was used.
    pub signed_prekey_id: u32,
    /// Id of the responder's one-time prekey that was used, if any.
    pub one_time_prekey_id: Option<u32>,
    /// For PQXDH: id of the responder's KEM prekey and the ML-KEM-1024 ciphertext.
    pub kem: Option<(u32, Vec<u8>)>,
    /// The first Double Ratchet message.
    pub message: RatchetMessage,
}

impl std::fmt::Debug for InitialMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitialMessage")
            .field("identity_key", &self.identity_key)
            .field("base_key", &self.base_key)
            .field("signed_prekey_id", &self.signed_prekey_id)
            .field("one_time_prekey_id", &self.one_time_prekey_id)
            .field("kem_prekey_id", &self.kem.as_ref().map(|(id, _)| *id))
            .field("message", &self.message)
            .finish()
    }
}

impl InitialMessage {
    /// Serializes the message (version 1).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            2 + 2 * EC_PUBLIC_KEY_LEN + 13 + KEM_CIPHERTEXT_LEN + Header::ENCODED_LEN,
        );
        out.push(INITIAL_MESSAGE_VERSION);
        out.push(if self.kem.is_some() {
            KIND_PQXDH
        } else {
            KIND_X3DH
        });
        out.extend_from_slice(&self.identity_key.to_bytes());
        out.extend_from_slice(&self.base_key.to_bytes());
        put_u32(&mut out, self.signed_prekey_id);
        match self.one_time_prekey_id {
            Some(id) => {
                out.push(1);
                put_u32(&mut out, id);
            }
            None => out.push(0),
        }
        if let Some((id, ct)) = &self.kem {
            put_u32(&mut out, *id);
            out.extend_from_slice(ct);
        }
        out.extend_from_slice(&self.message.to_bytes());
        out
    }

    /// Strictly parses a serialized initial message.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "initial message";
        let mut r = Reader::new(bytes, WHAT);
        let version = r.u8()?;
        if version != INITIAL_MESSAGE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: WHAT,
                version,
            });
        }
        let pq = match r.u8()? {
            KIND_X3DH => false,
            KIND_PQXDH => true,
            _ => return Err(malformed(WHAT, "unknown key agreement kind")),
        };
        let identity_key = IdentityKey::from_bytes(r.take(EC_PUBLIC_KEY_LEN)?)?;
        let base_key = PublicKey::parse(r.take(EC_PUBLIC_KEY_LEN)?, "base key")?;
        let signed_prekey_id = r.u32()?;
        let one_time_prekey_id = if r.flag()? { Some(r.u32()?) } else { None };
        let kem = if pq {
            let id = r.u32()?;
            Some((id, r.take(KEM_CIPHERTEXT_LEN)?.to_vec()))
        } else {
            None
        };
        let message = RatchetMessage::from_bytes(r.rest())?;
        r.finish()?;
        Ok(Self {
            identity_key,
            base_key,
            signed_prekey_id,
            one_time_prekey_id,
            kem,
            message,
        })
    }
}
