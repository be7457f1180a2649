//! Crate-level tests of the Signal-protocol half (unit tests of single modules live next to them).

mod codec;
mod kat;
mod protocol;
mod simulation;

use crate::{
    IdentityKeyPair, InMemoryPreKeyStore, KemPreKey, OneTimePreKey, PreKeyBundle, SignedPreKey,
};

/// A responder with a published bundle and the matching private store.
pub(crate) struct Responder {
    pub identity: IdentityKeyPair,
    pub store: InMemoryPreKeyStore,
    pub bundle: PreKeyBundle,
}

pub(crate) fn responder(one_time: bool, kem: bool) -> Responder {
    let identity = IdentityKeyPair::generate();
    let mut store = InMemoryPreKeyStore::new();
    let spk = SignedPreKey::generate(7, &identity);
    let otk = one_time.then(|| OneTimePreKey::generate(42));
    let kpk = kem.then(|| KemPreKey::generate(9, &identity));
    let bundle = PreKeyBundle {
        identity_key: identity.identity_key(),
        signed_prekey: spk.public(),
        one_time_prekey: otk.as_ref().map(OneTimePreKey::public),
        kem_prekey: kpk.as_ref().map(KemPreKey::public),
    };
    store.add_signed_prekey(spk);
    if let Some(otk) = otk {
        store
            .add_one_time_prekey(otk)
            .unwrap_or_else(|e| panic!("fresh store: {e}"));
    }
    if let Some(kpk) = kpk {
        store.add_kem_prekey(kpk);
    }
    Responder {
        identity,
        store,
        bundle,
    }
}
