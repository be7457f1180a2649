#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::responder;
use crate::{
    Error, IdentityKeyPair, InitialMessage, KemPreKey, OneTimePreKey, RatchetMessage, Session,
    SignedPreKey, initiate, respond,
};

fn pair() -> (Session, Session, InitialMessage) {
    let mut bob = responder(true, true);
    let (a, initial) = initiate(&IdentityKeyPair::generate(), &bob.bundle, b"hi").unwrap();
    let (b, _) = respond(&bob.identity, &mut bob.store, &initial).unwrap();
    (a, b, initial)
}

/// Every strict prefix and the one-byte extension of a fixed-layout encoding must be rejected
/// (with an error, not a panic).
fn assert_strict<T>(bytes: &[u8], decode: impl Fn(&[u8]) -> Result<T, Error>) {
    assert_prefixes_rejected(bytes, bytes.len(), &decode);
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(decode(&longer).is_err(), "trailing byte accepted");
}

/// Prefixes shorter than `upto` must be rejected at parse time.
fn assert_prefixes_rejected<T>(
    bytes: &[u8],
    upto: usize,
    decode: impl Fn(&[u8]) -> Result<T, Error>,
) {
    assert!(decode(bytes).is_ok());
    for len in 0..upto {
        assert!(
            decode(&bytes[..len]).is_err(),
            "prefix of length {len} accepted"
        );
    }
}

#[test]
fn session_survives_serialization_mid_conversation() {
    let (mut a, mut b, _) = pair();
    let m1 = a.encrypt(b"one").unwrap();
    let m2 = a.encrypt(b"two").unwrap();
    let m3 = a.encrypt(b"three").unwrap();
    b.decrypt(&m3).unwrap();
    let mut b = Session::from_bytes(&b.to_bytes()).unwrap();
    assert_eq!(b.skipped_key_count(), 2);
    assert_eq!(&b.decrypt(&m1).unwrap()[..], b"one");
    let reply = b.encrypt(b"reply").unwrap();
    let mut a = Session::from_bytes(&a.to_bytes()).unwrap();
    assert_eq!(&a.decrypt(&reply).unwrap()[..], b"reply");
    assert_eq!(&b.decrypt(&m2).unwrap()[..], b"two");
    assert_eq!(b.decrypt(&m3).unwrap_err(), Error::DuplicateMessage);
    assert!(a.is_post_quantum() && b.is_post_quantum());
    assert_strict(&b.to_bytes(), Session::from_bytes);
    assert_strict(&a.to_bytes(), Session::from_bytes);
    let mut bad_version = b.to_bytes().to_vec();
    bad_version[0] = 2;
    assert_eq!(
        Session::from_bytes(&bad_version).unwrap_err(),
        Error::UnsupportedVersion {
            what: "session",
            version: 2
        }
    );
}

#[test]
fn sealed_session_round_trips_and_rejects_wrong_key_or_tampering() {
    let (mut a, mut b, _) = pair();
    let key = [7u8; 32];
    let sealed = b.seal(&key).unwrap();
    assert_ne!(b.seal(&key).unwrap(), sealed, "nonce must be random");
    let mut b2 = Session::unseal(&sealed, &key).unwrap();
    let m = a.encrypt(b"after unseal").unwrap();
    assert_eq!(&b2.decrypt(&m).unwrap()[..], b"after unseal");
    assert_eq!(
        Session::unseal(&sealed, &[8u8; 32]).unwrap_err(),
        Error::DecryptFailed
    );
    for bit in (0..sealed.len() * 8).step_by(13) {
        let mut bad = sealed.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(Session::unseal(&bad, &key).is_err(), "bit {bit}");
    }
    for len in 0..30 {
        assert!(Session::unseal(&sealed[..len], &key).is_err());
    }
    assert_eq!(&b.decrypt(&m).unwrap()[..], b"after unseal");
}

#[test]
fn message_decoders_are_strict() {
    let (mut a, _, initial) = pair();
    // Both end in a variable-length AEAD ciphertext: a cut inside it is caught by
    // authentication, anything shorter than header + tag at parse time.
    let bytes = initial.to_bytes();
    let ct_len = initial.message.to_bytes().len() - crate::Header::ENCODED_LEN;
    assert_prefixes_rejected(
        &bytes,
        bytes.len() - ct_len + 16,
        InitialMessage::from_bytes,
    );
    assert_eq!(InitialMessage::from_bytes(&bytes).unwrap(), initial);
    let msg = a.encrypt(b"x").unwrap();
    assert_prefixes_rejected(
        &msg.to_bytes(),
        crate::Header::ENCODED_LEN + 16,
        RatchetMessage::from_bytes,
    );
    let mut v2 = msg.to_bytes();
    v2[0] = 2;
    assert_eq!(
        RatchetMessage::from_bytes(&v2).unwrap_err(),
        Error::UnsupportedVersion {
            what: "ratchet message",
            version: 2
        }
    );
}

#[test]
fn prekey_records_round_trip_and_are_strict() {
    let identity = IdentityKeyPair::generate();
    let spk = SignedPreKey::generate(3, &identity);
    let restored = SignedPreKey::from_bytes(&spk.to_bytes()).unwrap();
    assert_eq!(restored.public(), spk.public());
    assert_strict(&spk.to_bytes(), SignedPreKey::from_bytes);
    let otk = OneTimePreKey::generate(4);
    assert_eq!(
        OneTimePreKey::from_bytes(&otk.to_bytes()).unwrap().public(),
        otk.public()
    );
    assert_strict(&otk.to_bytes(), OneTimePreKey::from_bytes);
    let kem = KemPreKey::generate(5, &identity);
    assert_eq!(
        KemPreKey::from_bytes(&kem.to_bytes()).unwrap().public(),
        kem.public()
    );
    assert_strict(&kem.to_bytes(), KemPreKey::from_bytes);
    let id2 = IdentityKeyPair::from_private_bytes(*identity.private_bytes()).unwrap();
    assert_eq!(id2.identity_key(), identity.identity_key());
}
