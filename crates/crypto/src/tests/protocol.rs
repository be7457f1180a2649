#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::responder;
use crate::{
    Error, IdentityKeyPair, InitialMessage, PreKeyStore, RatchetConfig, RatchetMessage, Session,
    initiate, initiate_with_config, respond, respond_with_config,
};

fn establish(one_time: bool, kem: bool) -> (Session, Session) {
    let mut bob = responder(one_time, kem);
    let alice = IdentityKeyPair::generate();
    let (a, initial) = initiate(&alice, &bob.bundle, b"hello bob").unwrap();
    // Go through the wire encoding, as a real client would.
    let initial = InitialMessage::from_bytes(&initial.to_bytes()).unwrap();
    assert_eq!(initial.one_time_prekey_id, one_time.then_some(42));
    assert_eq!(initial.kem.as_ref().map(|(id, _)| *id), kem.then_some(9));
    let (b, pt) = respond(&bob.identity, &mut bob.store, &initial).unwrap();
    assert_eq!(&pt[..], b"hello bob");
    assert_eq!(a.is_post_quantum(), kem);
    assert_eq!(b.is_post_quantum(), kem);
    assert_eq!(a.remote_identity(), bob.identity.identity_key());
    assert_eq!(b.remote_identity(), alice.identity_key());
    if one_time {
        assert_eq!(
            bob.store.one_time_prekey(42).unwrap_err(),
            Error::PreKeyReplayed { id: 42 }
        );
    }
    (a, b)
}

fn send(from: &mut Session, to: &mut Session, text: &[u8]) {
    let msg = RatchetMessage::from_bytes(&from.encrypt(text).unwrap().to_bytes()).unwrap();
    assert_eq!(&to.decrypt(&msg).unwrap()[..], text);
}

fn converse(a: &mut Session, b: &mut Session) {
    send(a, b, b"a1");
    send(a, b, b"a2");
    send(b, a, b"b1");
    send(a, b, b"a3");
    send(b, a, b"b2");
    send(b, a, b"b3");
}

#[test]
fn x3dh_without_one_time_prekey_round_trip() {
    let (mut a, mut b) = establish(false, false);
    converse(&mut a, &mut b);
}

#[test]
fn x3dh_with_one_time_prekey_round_trip() {
    let (mut a, mut b) = establish(true, false);
    converse(&mut a, &mut b);
}

#[test]
fn pqxdh_round_trip_with_and_without_one_time_prekey() {
    for one_time in [true, false] {
        let (mut a, mut b) = establish(one_time, true);
        converse(&mut a, &mut b);
    }
}

#[test]
fn replayed_one_time_prekey_is_refused() {
    let mut bob = responder(true, true);
    let alice = IdentityKeyPair::generate();
    let (_, initial) = initiate(&alice, &bob.bundle, b"first").unwrap();
    respond(&bob.identity, &mut bob.store, &initial).unwrap();
    let err = respond(&bob.identity, &mut bob.store, &initial).unwrap_err();
    assert_eq!(err, Error::PreKeyReplayed { id: 42 });
    // A different initiator naming the same (consumed) one-time prekey is refused too.
    let (_, other) = initiate(&IdentityKeyPair::generate(), &bob.bundle, b"x").unwrap();
    assert_eq!(
        respond(&bob.identity, &mut bob.store, &other).unwrap_err(),
        Error::PreKeyReplayed { id: 42 }
    );
}

#[test]
fn unknown_prekeys_are_reported() {
    let mut bob = responder(false, true);
    let (_, mut initial) = initiate(&IdentityKeyPair::generate(), &bob.bundle, b"x").unwrap();
    initial.signed_prekey_id = 8;
    assert!(matches!(
        respond(&bob.identity, &mut bob.store, &initial),
        Err(Error::UnknownPreKey {
            kind: crate::PreKeyKind::Signed,
            id: 8
        })
    ));
    initial.signed_prekey_id = 7;
    initial.kem.as_mut().unwrap().0 = 10;
    assert!(matches!(
        respond(&bob.identity, &mut bob.store, &initial),
        Err(Error::UnknownPreKey {
            kind: crate::PreKeyKind::Kem,
            id: 10
        })
    ));
}

/// Flips bit `bit` of a serialized initial message and asserts it is rejected.
fn assert_tampered_initial_rejected(bytes: &[u8], bit: usize, bob: &mut super::Responder) {
    let mut bad = bytes.to_vec();
    bad[bit / 8] ^= 1 << (bit % 8);
    let res = InitialMessage::from_bytes(&bad)
        .and_then(|m| respond(&bob.identity, &mut bob.store, &m).map(|_| ()));
    assert!(res.is_err(), "flipped bit {bit} was accepted");
}

#[test]
fn tampered_x3dh_initial_message_is_rejected_and_prekey_survives() {
    let mut bob = responder(true, false);
    let (_, initial) = initiate(&IdentityKeyPair::generate(), &bob.bundle, b"hi").unwrap();
    let bytes = initial.to_bytes();
    for bit in 0..bytes.len() * 8 {
        assert_tampered_initial_rejected(&bytes, bit, &mut bob);
    }
    // Nothing was consumed by the rejected attempts: the genuine message still works.
    let (_, pt) = respond(&bob.identity, &mut bob.store, &initial).unwrap();
    assert_eq!(&pt[..], b"hi");
}

#[test]
fn tampered_pqxdh_initial_message_is_rejected() {
    let mut bob = responder(true, true);
    let (_, initial) = initiate(&IdentityKeyPair::generate(), &bob.bundle, b"hi").unwrap();
    let bytes = initial.to_bytes();
    // Every bit of the fixed fields, then one bit in every 5th byte of ciphertext and message.
    let fixed = (2 + 33 + 33 + 4 + 5 + 4) * 8;
    let sampled = (fixed..bytes.len() * 8).step_by(8 * 5 + 3);
    for bit in (0..fixed).chain(sampled) {
        assert_tampered_initial_rejected(&bytes, bit, &mut bob);
    }
    let (_, pt) = respond(&bob.identity, &mut bob.store, &initial).unwrap();
    assert_eq!(&pt[..], b"hi");
}

#[test]
fn tampered_bundle_signatures_are_rejected() {
    let bob = responder(true, true);
    let alice = IdentityKeyPair::generate();
    for bit in 0..64 * 8 {
        let mut bundle = bob.bundle.clone();
        bundle.signed_prekey.signature[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            initiate(&alice, &bundle, b"x").unwrap_err(),
            Error::BadSignature
        );
        let mut bundle = bob.bundle.clone();
        bundle.kem_prekey.as_mut().unwrap().signature[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            initiate(&alice, &bundle, b"x").unwrap_err(),
            Error::BadSignature
        );
    }
    // A KEM key swapped for another (validly encoded) one no longer matches its signature.
    let mut bundle = bob.bundle.clone();
    bundle.kem_prekey.as_mut().unwrap().key = responder(false, true).bundle.kem_prekey.unwrap().key;
    assert_eq!(
        initiate(&alice, &bundle, b"x").unwrap_err(),
        Error::BadSignature
    );
    // As does a signed prekey signed by someone else.
    let mut bundle = bob.bundle.clone();
    bundle.signed_prekey = responder(false, false).bundle.signed_prekey;
    assert_eq!(
        initiate(&alice, &bundle, b"x").unwrap_err(),
        Error::BadSignature
    );
}

#[test]
fn every_flipped_bit_of_a_ratchet_message_is_rejected_and_session_survives() {
    let (mut a, mut b) = establish(false, false);
    send(&mut a, &mut b, b"warm up");
    send(&mut b, &mut a, b"reply");
    let genuine = a.encrypt(b"the genuine message").unwrap();
    let bytes = genuine.to_bytes();
    for bit in 0..bytes.len() * 8 {
        let mut bad = bytes.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let res = RatchetMessage::from_bytes(&bad).and_then(|m| b.decrypt(&m).map(|_| ()));
        assert!(res.is_err(), "flipped bit {bit} was accepted");
    }
    assert_eq!(
        b.skipped_key_count(),
        0,
        "rejected messages must not store skipped keys"
    );
    assert_eq!(&b.decrypt(&genuine).unwrap()[..], b"the genuine message");
    send(&mut b, &mut a, b"still working");
}

#[test]
fn replayed_ratchet_messages_are_refused() {
    let (mut a, mut b) = establish(false, false);
    let m1 = a.encrypt(b"1").unwrap();
    let m2 = a.encrypt(b"2").unwrap();
    let m3 = a.encrypt(b"3").unwrap();
    b.decrypt(&m1).unwrap();
    b.decrypt(&m3).unwrap(); // m2's key is now a skipped key
    assert_eq!(b.decrypt(&m1).unwrap_err(), Error::DuplicateMessage);
    assert_eq!(b.decrypt(&m3).unwrap_err(), Error::DuplicateMessage);
    b.decrypt(&m2).unwrap();
    assert_eq!(b.decrypt(&m2).unwrap_err(), Error::DuplicateMessage);
    // After a ratchet step, messages of the finished chain are still recognised as replays.
    send(&mut b, &mut a, b"turn");
    send(&mut a, &mut b, b"new chain");
    assert_eq!(b.decrypt(&m3).unwrap_err(), Error::DuplicateMessage);
    send(&mut a, &mut b, b"usable");
}

#[test]
fn skipped_key_bound_per_chain_is_enforced_with_clear_error() {
    let config = RatchetConfig {
        max_skip: 10,
        max_skipped_total: 100,
    };
    let mut bob = responder(false, false);
    let (mut a, initial) =
        initiate_with_config(&IdentityKeyPair::generate(), &bob.bundle, b"x", config).unwrap();
    let (mut b, _) = respond_with_config(&bob.identity, &mut bob.store, &initial, config).unwrap();
    // The initial message was n = 0; these are n = 1..=11 with plaintext [n].
    let msgs: Vec<_> = (1..=11u8).map(|i| a.encrypt(&[i]).unwrap()).collect();
    // n = 12 after nr = 1 would need 11 skipped keys; n = 11 needs exactly the limit of 10.
    let far = a.encrypt(b"far").unwrap();
    assert_eq!(far.header.n, 12);
    assert_eq!(
        b.decrypt(&far).unwrap_err(),
        Error::TooManySkipped {
            requested: 11,
            limit: 10
        }
    );
    assert_eq!(b.skipped_key_count(), 0);
    assert_eq!(&b.decrypt(&msgs[10]).unwrap()[..], &[11]);
    assert_eq!(b.skipped_key_count(), 10);
    assert_eq!(&b.decrypt(&far).unwrap()[..], b"far");
    for (i, m) in (1u8..).zip(&msgs[..10]) {
        assert_eq!(&b.decrypt(m).unwrap()[..], &[i]);
    }
    assert_eq!(b.skipped_key_count(), 0);
}

#[test]
fn skipped_keys_in_total_are_bounded_by_discarding_the_oldest() {
    let config = RatchetConfig {
        max_skip: 10,
        max_skipped_total: 6,
    };
    let mut bob = responder(false, false);
    let (mut a, initial) =
        initiate_with_config(&IdentityKeyPair::generate(), &bob.bundle, b"x", config).unwrap();
    let (mut b, _) = respond_with_config(&bob.identity, &mut bob.store, &initial, config).unwrap();
    let msgs: Vec<_> = (1..=10u8).map(|i| a.encrypt(&[i]).unwrap()).collect();
    b.decrypt(&msgs[9]).unwrap(); // skips n = 1..=9 (9 keys), keeps the newest 6 (n = 4..=9)
    assert_eq!(b.skipped_key_count(), 6);
    assert_eq!(b.decrypt(&msgs[0]).unwrap_err(), Error::DuplicateMessage);
    assert_eq!(&b.decrypt(&msgs[4]).unwrap()[..], &[5]);
    assert_eq!(b.skipped_key_count(), 5);
    assert!(
        initiate_with_config(
            &IdentityKeyPair::generate(),
            &bob.bundle,
            b"x",
            RatchetConfig {
                max_skip: 0,
                max_skipped_total: 1
            }
        )
        .is_err()
    );
}

#[test]
fn debug_output_contains_no_secrets() {
    let identity = IdentityKeyPair::generate();
    let private_hex: String = identity
        .private_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let (mut a, b) = establish(true, true);
    let state_hex: String = a.to_bytes()[80..120]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let rendered = format!(
        "{identity:?} {a:?} {b:?} {:?} {:?}",
        crate::SignedPreKey::generate(1, &identity),
        a.encrypt(b"secret body").unwrap()
    );
    assert!(rendered.contains("redacted"));
    assert!(!rendered.contains(&private_hex[..16]));
    assert!(!rendered.contains(&state_hex[..16]));
}
