//! Known-answer tests against `@signalapp/libsignal-client` 0.103.0 (see
//! `testdata/libsignal/generate.mjs`): libsignal's XEdDSA signatures must verify here, and ours
//! were checked to verify under libsignal (`ours.json`, written by `write_ours_for_libsignal`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::{
    Error, IdentityKey, IdentityKeyPair, KemPreKey, KemPublicKey, SignedPreKey,
    verify_prekey_signature,
};

const VECTORS: &str = include_str!("../../testdata/libsignal/vectors.json");

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Vector {
    name: String,
    identity_key: Vec<u8>,
    message: Vec<u8>,
    signature: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let json: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
    assert_eq!(json["generator"], "@signalapp/libsignal-client@0.103.0");
    json["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| Vector {
            name: v["name"].as_str().unwrap().to_owned(),
            identity_key: unhex(v["identity_key"].as_str().unwrap()),
            message: unhex(v["message"].as_str().unwrap()),
            signature: unhex(v["signature"].as_str().unwrap()),
        })
        .collect()
}

#[test]
fn libsignal_signatures_verify_and_flipped_bits_fail() {
    let vectors = vectors();
    assert!(
        vectors
            .iter()
            .any(|v| v.message.len() == 1569 && v.message[0] == 0x08)
    );
    assert!(
        vectors
            .iter()
            .any(|v| v.message.len() == 33 && v.message[0] == 0x05)
    );
    for v in &vectors {
        let ik = IdentityKey::from_bytes(&v.identity_key).unwrap();
        ik.verify(&v.message, &v.signature)
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        if v.name.contains("prekey") {
            verify_prekey_signature(&v.identity_key, &v.message, &v.signature)
                .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        }
        for bit in (0..512).step_by(7) {
            let mut sig = v.signature.clone();
            sig[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                ik.verify(&v.message, &sig),
                Err(Error::BadSignature),
                "{} bit {bit}",
                v.name
            );
        }
        if !v.message.is_empty() {
            let mut msg = v.message.clone();
            let last = msg.len() - 1;
            msg[last] ^= 0x80;
            assert_eq!(
                ik.verify(&msg, &v.signature),
                Err(Error::BadSignature),
                "{}",
                v.name
            );
        }
        let mut key = v.identity_key.clone();
        key[10] ^= 1;
        if let Ok(other) = IdentityKey::from_bytes(&key) {
            assert_eq!(
                other.verify(&v.message, &v.signature),
                Err(Error::BadSignature)
            );
        }
    }
}

#[test]
fn libsignal_kyber_prekey_is_parsed_but_not_used_for_encapsulation() {
    let v = vectors()
        .into_iter()
        .find(|v| v.message.len() == 1569)
        .unwrap();
    let key = KemPublicKey::from_bytes(&v.message).unwrap();
    assert_eq!(key.kind(), crate::KemKind::LibsignalKyber1024);
    assert_eq!(
        key.encapsulate(&mut rand::rng()).unwrap_err(),
        Error::UnsupportedKem { type_byte: 0x08 }
    );
}

#[test]
fn server_side_parsers_give_clear_errors() {
    let v = vectors().into_iter().next().unwrap();
    let mut wrong_type = v.identity_key.clone();
    wrong_type[0] = 0x06;
    assert!(matches!(
        IdentityKey::from_bytes(&wrong_type),
        Err(Error::InvalidKey { what: "identity key", reason }) if reason.contains("0x05")
    ));
    assert!(matches!(
        IdentityKey::from_bytes(&v.identity_key[..32]),
        Err(Error::InvalidKey { reason, .. }) if reason.contains("33")
    ));
    assert!(matches!(
        verify_prekey_signature(&v.identity_key, &v.message[..20], &v.signature),
        Err(Error::InvalidKey { what: "prekey", .. })
    ));
    assert!(matches!(
        verify_prekey_signature(&v.identity_key, &v.message, &v.signature[..63]),
        Err(Error::Malformed {
            what: "signature",
            ..
        })
    ));
    let mut kem = vec![0x09u8; 1569];
    assert!(matches!(
        KemPublicKey::from_bytes(&kem),
        Err(Error::InvalidKey { reason, .. }) if reason.contains("type byte")
    ));
    kem.fill(0xFF);
    kem[0] = 0x0A; // every 12-bit coefficient is 0xFFF >= q = 3329: not a valid ML-KEM key
    assert!(KemPublicKey::from_bytes(&kem).is_err());
}

/// Our signatures in the same JSON layout; `generate.mjs --check-ours` verifies them with
/// libsignal. Set `GUARDYN_WRITE_OURS=1` to (re)write `testdata/libsignal/ours.json`.
#[test]
fn write_ours_for_libsignal() {
    let identity = IdentityKeyPair::generate();
    let ik = identity.identity_key().to_bytes();
    let spk = SignedPreKey::generate(1, &identity).public();
    let kem = KemPreKey::generate(2, &identity).public();
    let msg: Vec<u8> = (0..100u8).collect();
    let entries = [
        (
            "guardyn_signed_ec_prekey",
            spk.key.to_bytes().to_vec(),
            spk.signature.to_vec(),
        ),
        (
            "guardyn_mlkem1024_prekey",
            kem.key.to_bytes(),
            kem.signature.to_vec(),
        ),
        (
            "guardyn_arbitrary_100_bytes",
            msg.clone(),
            identity.sign(&msg).to_vec(),
        ),
        ("guardyn_empty", Vec::new(), identity.sign(b"").to_vec()),
    ];
    let mut out = Vec::new();
    for (name, message, signature) in &entries {
        verify_prekey_signature(&ik, message, signature)
            .or_else(|_| identity.identity_key().verify(message, signature))
            .unwrap();
        out.push(serde_json::json!({
            "name": name,
            "identity_key": hex(&ik),
            "message": hex(message),
            "signature": hex(signature),
        }));
    }
    if std::env::var_os("GUARDYN_WRITE_OURS").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/libsignal/ours.json");
        let doc = serde_json::json!({ "generator": "guardyn-crypto", "vectors": out });
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    }
}
