//! The Double Ratchet (<https://signal.org/docs/specifications/doubleratchet/>) with X25519,
//! HKDF-SHA256 as KDF_RK, HMAC-SHA256 as KDF_CK, and AES-256-GCM as the AEAD.
//!
//! * `KDF_RK(rk, dh_out)` = HKDF-SHA256(salt = rk, ikm = dh_out, info = [`RK_INFO`]) -> 64 bytes,
//!   split into the new root key and a chain key.
//! * `KDF_CK(ck)`: message key = HMAC-SHA256(ck, 0x01), next chain key = HMAC-SHA256(ck, 0x02).
//! * `ENCRYPT(mk, pt, ad)`: HKDF-SHA256(salt = 32 zero bytes, ikm = mk, info = [`MK_INFO`])
//!   -> 44 bytes = AES-256 key || 96-bit nonce; AES-256-GCM with associated data
//!   `AD || header`. A message key is used for exactly one message, so the derived nonce is
//!   never reused under the same key.
//!
//! Decryption runs on a staged copy of the state that replaces the live state only after the
//! message has authenticated, so tampered, replayed or over-skipping messages leave the session
//! exactly as it was.

use std::collections::VecDeque;
use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::Error;
use crate::kdf::{aead_decrypt, aead_encrypt, hkdf_sha256, hmac_sha256};
use crate::keys::{EcKeyPair, PublicKey};
use crate::wire::{Header, RatchetMessage};

/// HKDF info for KDF_RK.
pub const RK_INFO: &[u8] = b"Guardyn_DoubleRatchet_RootKey_v1";
/// HKDF info for deriving the AES-256-GCM key and nonce from a message key.
pub const MK_INFO: &[u8] = b"Guardyn_DoubleRatchet_MessageKey_v1";
/// How many earlier remote ratchet keys are remembered, so that replays of messages from an
/// already-finished receiving chain are reported as [`Error::DuplicateMessage`].
pub(crate) const MAX_PREVIOUS_REMOTE: usize = 32;

/// Bounds on skipped message keys (the specification's MAX_SKIP and a total cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatchetConfig {
    /// Most message keys a single incoming message may cause to be skipped in one chain.
    /// A message beyond it is rejected with [`Error::TooManySkipped`] and changes nothing.
    pub max_skip: u32,
    /// Most skipped message keys stored across all chains. When a new skipped key would exceed
    /// it, the oldest stored keys are discarded (those messages can no longer be decrypted),
    /// so storage stays bounded even if messages are lost for good.
    pub max_skipped_total: u32,
}

impl Default for RatchetConfig {
    fn default() -> Self {
        Self {
            max_skip: 1000,
            max_skipped_total: 2000,
        }
    }
}

impl RatchetConfig {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.max_skip == 0 || self.max_skipped_total == 0 {
            return Err(Error::InvalidConfig(
                "max_skip and max_skipped_total must be non-zero",
            ));
        }
        if self.max_skipped_total > 1_000_000 {
            return Err(Error::InvalidConfig(
                "max_skipped_total must be at most 1,000,000",
            ));
        }
        Ok(())
    }
}

/// A 32-byte secret (root, chain or message key), zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct Key32(pub(crate) [u8; 32]);

#[derive(Clone)]
pub(crate) struct SkippedKey {
    pub(crate) dh: PublicKey,
    pub(crate) n: u32,
    pub(crate) mk: Key32,
}

/// The ratchet state variables of the specification.
#[derive(Clone)]
pub(crate) struct RatchetState {
    pub(crate) dhs: EcKeyPair,
    pub(crate) dhr: Option<PublicKey>,
    pub(crate) rk: Key32,
    pub(crate) cks: Option<Key32>,
    pub(crate) ckr: Option<Key32>,
    pub(crate) ns: u32,
    pub(crate) nr: u32,
    pub(crate) pn: u32,
    pub(crate) skipped: VecDeque<SkippedKey>,
    pub(crate) previous_remote: VecDeque<PublicKey>,
}

impl fmt::Debug for RatchetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RatchetState")
            .field("dhs", &self.dhs.public)
            .field("dhr", &self.dhr)
            .field("ns", &self.ns)
            .field("nr", &self.nr)
            .field("pn", &self.pn)
            .field("skipped_keys", &self.skipped.len())
            .finish_non_exhaustive()
    }
}

fn kdf_rk(rk: &Key32, dh_out: &[u8; 32]) -> (Key32, Key32) {
    let out = hkdf_sha256::<64>(&rk.0, dh_out, RK_INFO);
    let mut root = Key32([0; 32]);
    let mut chain = Key32([0; 32]);
    root.0.copy_from_slice(&out[..32]);
    chain.0.copy_from_slice(&out[32..]);
    (root, chain)
}

fn kdf_ck(ck: &Key32) -> (Key32, Key32) {
    let mk = hmac_sha256(&ck.0, &[0x01]);
    let next = hmac_sha256(&ck.0, &[0x02]);
    (Key32(*next), Key32(*mk))
}

fn message_key_material(mk: &Key32) -> (Zeroizing<[u8; 32]>, [u8; 12]) {
    let okm = hkdf_sha256::<44>(&[0u8; 32], &mk.0, MK_INFO);
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&okm[..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    (key, nonce)
}

fn aad(ad: &[u8], header: &Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(ad.len() + Header::ENCODED_LEN);
    out.extend_from_slice(ad);
    header.encode_into(&mut out);
    out
}

fn open(mk: &Key32, ad: &[u8], msg: &RatchetMessage) -> Result<Zeroizing<Vec<u8>>, Error> {
    let (key, nonce) = message_key_material(mk);
    aead_decrypt(&key, &nonce, &msg.ciphertext, &aad(ad, &msg.header))
}

impl RatchetState {
    /// RatchetInitAlice: `sk` from X3DH/PQXDH, `their_ratchet_key` = Bob's signed prekey.
    pub(crate) fn init_initiator(
        sk: &[u8; 32],
        their_ratchet_key: PublicKey,
    ) -> Result<Self, Error> {
        let dhs = EcKeyPair::generate(&mut rand::rng());
        let (rk, cks) = kdf_rk(&Key32(*sk), &*dhs.dh(&their_ratchet_key)?);
        Ok(Self {
            dhs,
            dhr: Some(their_ratchet_key),
            rk,
            cks: Some(cks),
            ckr: None,
            ns: 0,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
            previous_remote: VecDeque::new(),
        })
    }

    /// RatchetInitBob: `our_ratchet_key` = the signed prekey pair.
    pub(crate) fn init_responder(sk: &[u8; 32], our_ratchet_key: EcKeyPair) -> Self {
        Self {
            dhs: our_ratchet_key,
            dhr: None,
            rk: Key32(*sk),
            cks: None,
            ckr: None,
            ns: 0,
            nr: 0,
            pn: 0,
            skipped: VecDeque::new(),
            previous_remote: VecDeque::new(),
        }
    }

    pub(crate) fn encrypt(&mut self, ad: &[u8], plaintext: &[u8]) -> Result<RatchetMessage, Error> {
        let ck = self.cks.as_ref().ok_or(Error::Malformed {
            what: "session",
            reason: "no sending chain (responder has not received a message yet)",
        })?;
        let next_ns = self.ns.checked_add(1).ok_or(Error::CounterExhausted)?;
        let (next_ck, mk) = kdf_ck(ck);
        let header = Header {
            dh: self.dhs.public,
            pn: self.pn,
            n: self.ns,
        };
        let (key, nonce) = message_key_material(&mk);
        let ciphertext = aead_encrypt(&key, &nonce, plaintext, &aad(ad, &header))?;
        self.cks = Some(next_ck);
        self.ns = next_ns;
        Ok(RatchetMessage { header, ciphertext })
    }

    pub(crate) fn decrypt(
        &mut self,
        config: &RatchetConfig,
        ad: &[u8],
        msg: &RatchetMessage,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let h = &msg.header;
        if let Some(idx) = self.skipped.iter().position(|s| s.dh == h.dh && s.n == h.n) {
            let plaintext = open(&self.skipped[idx].mk, ad, msg)?;
            self.skipped.remove(idx);
            return Ok(plaintext);
        }

        let mut staged = self.clone();
        if staged.dhr != Some(h.dh) {
            if staged.previous_remote.contains(&h.dh) {
                return Err(Error::DuplicateMessage);
            }
            staged.skip_message_keys(config, h.pn)?;
            staged.dh_ratchet(h.dh)?;
        } else if h.n < staged.nr {
            return Err(Error::DuplicateMessage);
        }
        staged.skip_message_keys(config, h.n)?;
        let ckr = staged.ckr.as_ref().ok_or(Error::DecryptFailed)?;
        let (next_ck, mk) = kdf_ck(ckr);
        staged.ckr = Some(next_ck);
        staged.nr = staged.nr.checked_add(1).ok_or(Error::CounterExhausted)?;
        let plaintext = open(&mk, ad, msg)?;
        *self = staged;
        Ok(plaintext)
    }

    fn skip_message_keys(&mut self, config: &RatchetConfig, until: u32) -> Result<(), Error> {
        let requested = u64::from(until).saturating_sub(u64::from(self.nr));
        if requested > u64::from(config.max_skip) {
            return Err(Error::TooManySkipped {
                requested,
                limit: config.max_skip,
            });
        }
        let (Some(mut ck), Some(dh)) = (self.ckr.clone(), self.dhr) else {
            return Ok(());
        };
        while self.nr < until {
            let (next_ck, mk) = kdf_ck(&ck);
            self.skipped.push_back(SkippedKey { dh, n: self.nr, mk });
            while self.skipped.len() > config.max_skipped_total as usize {
                self.skipped.pop_front();
            }
            ck = next_ck;
            self.nr += 1;
        }
        self.ckr = Some(ck);
        Ok(())
    }

    fn dh_ratchet(&mut self, their: PublicKey) -> Result<(), Error> {
        if let Some(old) = self.dhr.replace(their) {
            self.previous_remote.push_back(old);
            if self.previous_remote.len() > MAX_PREVIOUS_REMOTE {
                self.previous_remote.pop_front();
            }
        }
        self.pn = self.ns;
        self.ns = 0;
        self.nr = 0;
        let (rk, ckr) = kdf_rk(&self.rk, &*self.dhs.dh(&their)?);
        self.dhs = EcKeyPair::generate(&mut rand::rng());
        let (rk, cks) = kdf_rk(&rk, &*self.dhs.dh(&their)?);
        self.rk = rk;
        self.ckr = Some(ckr);
        self.cks = Some(cks);
        Ok(())
    }
}
