//! Benchmarks of the Signal-protocol half: X3DH / PQXDH initiation and Double Ratchet
//! per-message encryption and decryption.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use guardyn_crypto::{
    IdentityKeyPair, InMemoryPreKeyStore, KemPreKey, OneTimePreKey, PreKeyBundle, Session,
    SignedPreKey, initiate, respond,
};

fn setup(kem: bool) -> (IdentityKeyPair, InMemoryPreKeyStore, PreKeyBundle) {
    let identity = IdentityKeyPair::generate();
    let spk = SignedPreKey::generate(1, &identity);
    let otk = OneTimePreKey::generate(2);
    let kpk = kem.then(|| KemPreKey::generate(3, &identity));
    let bundle = PreKeyBundle {
        identity_key: identity.identity_key(),
        signed_prekey: spk.public(),
        one_time_prekey: Some(otk.public()),
        kem_prekey: kpk.as_ref().map(KemPreKey::public),
    };
    let mut store = InMemoryPreKeyStore::new();
    store.add_signed_prekey(spk);
    store.add_one_time_prekey(otk).unwrap();
    if let Some(k) = kpk {
        store.add_kem_prekey(k);
    }
    (identity, store, bundle)
}

fn sessions() -> (Session, Session) {
    let (identity, mut store, bundle) = setup(false);
    let (a, initial) = initiate(&IdentityKeyPair::generate(), &bundle, b"hi").unwrap();
    let (b, _) = respond(&identity, &mut store, &initial).unwrap();
    (a, b)
}

fn bench(c: &mut Criterion) {
    let alice = IdentityKeyPair::generate();
    let (_, _, x3dh_bundle) = setup(false);
    c.bench_function("x3dh_initiate", |b| {
        b.iter(|| initiate(&alice, &x3dh_bundle, b"hello").unwrap())
    });
    let (_, _, pq_bundle) = setup(true);
    c.bench_function("pqxdh_initiate", |b| {
        b.iter(|| initiate(&alice, &pq_bundle, b"hello").unwrap())
    });

    let payload = [0x5Au8; 256];
    let (mut a, _) = sessions();
    c.bench_function("ratchet_encrypt_256B", |b| {
        b.iter(|| a.encrypt(&payload).unwrap())
    });

    // Decrypt in the same chain (no DH step): a fresh receiver per batch of 1,000 messages.
    c.bench_function("ratchet_decrypt_256B", |b| {
        b.iter_batched(
            || {
                let (mut a, b) = sessions();
                let msgs: Vec<_> = (0..1000).map(|_| a.encrypt(&payload).unwrap()).collect();
                (b, msgs, 0usize)
            },
            |(mut b, msgs, _)| {
                for m in &msgs {
                    b.decrypt(m).unwrap();
                }
            },
            BatchSize::PerIteration,
        )
    });

    // One full round trip with a DH ratchet step on each side.
    let (mut a, mut b) = sessions();
    c.bench_function("ratchet_round_trip_with_dh_steps", |bch| {
        bch.iter(|| {
            let m = a.encrypt(&payload).unwrap();
            b.decrypt(&m).unwrap();
            let r = b.encrypt(&payload).unwrap();
            a.decrypt(&r).unwrap();
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
