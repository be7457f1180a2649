//! The device's private prekeys: the responder side of X3DH/PQXDH ([`PreKeyStore`]) plus the
//! id counters used when generating new batches.

use std::collections::{BTreeMap, BTreeSet};

use guardyn_crypto::{
    Error as CryptoError, IdentityKeyPair, KemPreKey, OneTimePreKey, PreKeyKind, PreKeyStore,
    SignedPreKey,
};

use crate::codec::{Reader, Writer};
use crate::error::SdkError;

/// Largest key id of libsignal's 24-bit id space.
const MAX_KEY_ID: u32 = 0x00FF_FFFF;
/// Signed prekeys kept after rotation, so initial messages made with the previous one still
/// decrypt.
const SIGNED_PREKEYS_KEPT: usize = 3;
/// Consumed one-time prekey ids remembered for replay detection.
const CONSUMED_KEPT: usize = 4096;

/// Private prekey material of this device.
#[derive(Default)]
pub(crate) struct LocalKeys {
    signed: BTreeMap<u32, SignedPreKey>,
    kem: BTreeMap<u32, KemPreKey>,
    /// Ids in `kem` that are last-resort keys (kept after use).
    kem_last_resort: BTreeSet<u32>,
    one_time: BTreeMap<u32, OneTimePreKey>,
    consumed: BTreeSet<u32>,
    next_signed: u32,
    next_kem: u32,
    next_one_time: u32,
}

impl std::fmt::Debug for LocalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeys")
            .field("signed", &self.signed.len())
            .field("kem", &self.kem.len())
            .field("one_time", &self.one_time.len())
            .finish_non_exhaustive()
    }
}

fn next_id(counter: &mut u32) -> u32 {
    // Ids wrap inside 1..=MAX_KEY_ID; by the time they wrap the old keys are long gone.
    *counter = if *counter >= MAX_KEY_ID {
        1
    } else {
        *counter + 1
    };
    *counter
}

impl LocalKeys {
    pub(crate) fn new_signed(&mut self, identity: &IdentityKeyPair) -> SignedPreKey {
        let key = SignedPreKey::generate(next_id(&mut self.next_signed), identity);
        self.signed.insert(key.id(), key.clone());
        while self.signed.len() > SIGNED_PREKEYS_KEPT {
            self.signed.pop_first();
        }
        key
    }

    pub(crate) fn new_kem(&mut self, identity: &IdentityKeyPair, last_resort: bool) -> KemPreKey {
        let key = KemPreKey::generate(next_id(&mut self.next_kem), identity);
        if last_resort {
            // Keep one previous last-resort key: initiators may have fetched it just before.
            while self.kem_last_resort.len() >= 2 {
                if let Some(old) = self.kem_last_resort.pop_first() {
                    self.kem.remove(&old);
                }
            }
            self.kem_last_resort.insert(key.id());
        }
        self.kem.insert(key.id(), key.clone());
        key
    }

    pub(crate) fn new_one_time(&mut self) -> OneTimePreKey {
        let key = OneTimePreKey::generate(next_id(&mut self.next_one_time));
        self.one_time.insert(key.id(), key.clone());
        key
    }

    /// Drops a one-time KEM prekey after it was used (last-resort keys stay).
    pub(crate) fn used_kem(&mut self, id: u32) {
        if !self.kem_last_resort.contains(&id) {
            self.kem.remove(&id);
        }
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.next_signed)
            .u32(self.next_kem)
            .u32(self.next_one_time);
        w.u32(self.signed.len() as u32);
        for k in self.signed.values() {
            w.bytes(&k.to_bytes());
        }
        w.u32(self.kem.len() as u32);
        for k in self.kem.values() {
            w.u8(u8::from(self.kem_last_resort.contains(&k.id())));
            w.bytes(&k.to_bytes());
        }
        w.u32(self.one_time.len() as u32);
        for k in self.one_time.values() {
            w.bytes(&k.to_bytes());
        }
        w.u32(self.consumed.len() as u32);
        for id in &self.consumed {
            w.u32(*id);
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, SdkError> {
        let mut keys = Self {
            next_signed: r.u32()?,
            next_kem: r.u32()?,
            next_one_time: r.u32()?,
            ..Self::default()
        };
        for _ in 0..r.u32()? {
            let k = SignedPreKey::from_bytes(r.bytes()?)?;
            keys.signed.insert(k.id(), k);
        }
        for _ in 0..r.u32()? {
            let last_resort = r.u8()? == 1;
            let k = KemPreKey::from_bytes(r.bytes()?)?;
            if last_resort {
                keys.kem_last_resort.insert(k.id());
            }
            keys.kem.insert(k.id(), k);
        }
        for _ in 0..r.u32()? {
            let k = OneTimePreKey::from_bytes(r.bytes()?)?;
            keys.one_time.insert(k.id(), k);
        }
        for _ in 0..r.u32()? {
            keys.consumed.insert(r.u32()?);
        }
        Ok(keys)
    }
}

impl PreKeyStore for LocalKeys {
    fn signed_prekey(&self, id: u32) -> Option<&SignedPreKey> {
        self.signed.get(&id)
    }

    fn kem_prekey(&self, id: u32) -> Option<&KemPreKey> {
        self.kem.get(&id)
    }

    fn one_time_prekey(&self, id: u32) -> Result<&OneTimePreKey, CryptoError> {
        if self.consumed.contains(&id) {
            return Err(CryptoError::PreKeyReplayed { id });
        }
        self.one_time.get(&id).ok_or(CryptoError::UnknownPreKey {
            kind: PreKeyKind::OneTime,
            id,
        })
    }

    fn take_one_time_prekey(&mut self, id: u32) -> Result<OneTimePreKey, CryptoError> {
        if self.consumed.contains(&id) {
            return Err(CryptoError::PreKeyReplayed { id });
        }
        let key = self
            .one_time
            .remove(&id)
            .ok_or(CryptoError::UnknownPreKey {
                kind: PreKeyKind::OneTime,
                id,
            })?;
        self.consumed.insert(id);
        while self.consumed.len() > CONSUMED_KEPT {
            self.consumed.pop_first();
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn keys_survive_encoding_and_one_time_keys_are_single_use() {
        let identity = IdentityKeyPair::generate();
        let mut keys = LocalKeys::default();
        let spk = keys.new_signed(&identity);
        let lr = keys.new_kem(&identity, true);
        let kem = keys.new_kem(&identity, false);
        let otk = keys.new_one_time();
        let mut w = Writer::new();
        keys.encode(&mut w);
        let bytes = w.finish();
        let mut back = LocalKeys::decode(&mut Reader::new(&bytes, "keys")).unwrap();
        assert!(back.signed_prekey(spk.id()).is_some());
        assert!(back.kem_prekey(kem.id()).is_some());
        back.take_one_time_prekey(otk.id()).unwrap();
        assert!(matches!(
            back.one_time_prekey(otk.id()),
            Err(CryptoError::PreKeyReplayed { .. })
        ));
        back.used_kem(kem.id());
        back.used_kem(lr.id());
        assert!(back.kem_prekey(kem.id()).is_none());
        assert!(back.kem_prekey(lr.id()).is_some(), "last resort is kept");
    }
}
