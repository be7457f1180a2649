#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Server-side KeyPackage validation and message parsing.

use std::time::{SystemTime, UNIX_EPOCH};

use openmls::prelude::{
    Ciphersuite, MlsGroup, MlsGroupCreateConfig, PURE_CIPHERTEXT_WIRE_FORMAT_POLICY,
    tls_codec::Serialize as _,
};
use openmls_traits::OpenMlsProvider as _;
use proptest::prelude::*;

use super::*;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn valid_key_package_summary() {
    let c = MlsClient::new(b"acct-1:dev-9").unwrap();
    let kp = c.create_key_package().unwrap();
    let s = validate_key_package(&kp, &KeyPackagePolicy::default()).unwrap();
    assert_eq!(s.identity, b"acct-1:dev-9");
    assert_eq!(s.signature_key, c.signature_public_key());
    assert_eq!(s.ciphersuite, 1);
    assert!(!s.is_last_resort);
    assert!(s.not_before <= now() && now() < s.not_after);
    assert_eq!(s.key_package_ref.len(), 32);
    // Two packages of one client have distinct refs.
    let s2 = validate_key_package(
        &c.create_key_package().unwrap(),
        &KeyPackagePolicy::default(),
    )
    .unwrap();
    assert_ne!(s.key_package_ref, s2.key_package_ref);
    assert_eq!(
        parse_message(&kp).unwrap().body,
        ParsedBody::KeyPackage {
            identity: b"acct-1:dev-9".to_vec()
        }
    );
}

#[test]
fn tampered_signature_is_rejected() {
    let kp = MlsClient::new(b"x:1")
        .unwrap()
        .create_key_package()
        .unwrap();
    // The KeyPackage signature is the last field of the message.
    let mut bad = kp.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(matches!(
        validate_key_package(&bad, &KeyPackagePolicy::default()),
        Err(MlsError::InvalidKeyPackageSignature)
    ));
    // Changing signed content (a byte of the identity) also breaks it.
    let pos = kp.windows(3).position(|w| w == b"x:1").unwrap();
    let mut bad = kp;
    bad[pos] = b'y';
    assert!(matches!(
        validate_key_package(&bad, &KeyPackagePolicy::default()),
        Err(MlsError::InvalidKeyPackageSignature)
    ));
}

#[test]
fn ciphersuite_outside_allowed_set_is_rejected() {
    let p256 =
        MlsClient::with_ciphersuite(b"x:1", Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256)
            .unwrap();
    let kp = p256.create_key_package().unwrap();
    assert!(matches!(
        validate_key_package(&kp, &KeyPackagePolicy::default()),
        Err(MlsError::CiphersuiteNotAllowed(2))
    ));
    let policy = KeyPackagePolicy {
        allowed_ciphersuites: vec![1, 2],
        ..KeyPackagePolicy::default()
    };
    assert_eq!(validate_key_package(&kp, &policy).unwrap().ciphersuite, 2);
}

#[test]
fn lifetime_and_last_resort_policy() {
    let c = MlsClient::new(b"x:1").unwrap();
    let t = now();
    let expired = c
        .create_key_package_with_lifetime(t - 7200, t - 3600, false)
        .unwrap();
    assert!(matches!(
        validate_key_package(&expired, &KeyPackagePolicy::default()),
        Err(MlsError::KeyPackageExpired { not_after, .. }) if not_after == t - 3600
    ));
    let future = c
        .create_key_package_with_lifetime(t + 3600, t + 7200, false)
        .unwrap();
    assert!(matches!(
        validate_key_package(&future, &KeyPackagePolicy::default()),
        Err(MlsError::KeyPackageNotYetValid { .. })
    ));
    let long = c
        .create_key_package_with_lifetime(t - 60, t + 365 * 86_400, false)
        .unwrap();
    assert!(matches!(
        validate_key_package(&long, &KeyPackagePolicy::default()),
        Err(MlsError::KeyPackageLifetimeTooLong)
    ));

    let one_time = c.create_key_package().unwrap();
    let last = c.create_last_resort_key_package().unwrap();
    let only_last = KeyPackagePolicy {
        require_last_resort: Some(true),
        ..KeyPackagePolicy::default()
    };
    assert!(
        validate_key_package(&last, &only_last)
            .unwrap()
            .is_last_resort
    );
    assert!(matches!(
        validate_key_package(&one_time, &only_last),
        Err(MlsError::LastResortMismatch {
            required: true,
            found: false
        })
    ));
}

#[test]
fn wrong_kind_and_garbage_are_rejected() {
    let a = MlsClient::new(b"a:1").unwrap();
    let g = Group::create(&a, b"g").unwrap();
    let gi = g.export_group_info(&a).unwrap();
    assert!(matches!(
        validate_key_package(&gi, &KeyPackagePolicy::default()),
        Err(MlsError::UnexpectedMessageKind {
            expected: MessageKind::KeyPackage,
            found: MessageKind::GroupInfo
        })
    ));
    assert!(matches!(
        parse_message(b"\x00\x01\x00\x09"),
        Err(MlsError::Malformed(_))
    ));
    assert!(matches!(parse_message(&[]), Err(MlsError::Malformed(_))));
    let mut trailing = gi;
    trailing.push(0);
    assert!(matches!(
        parse_message(&trailing),
        Err(MlsError::Malformed(_))
    ));
}

/// A group configured with openmls' default (all-ciphertext) policy produces
/// PrivateMessage commits: visible as commits, and rejected by Guardyn policy.
#[test]
fn private_handshake_violates_guardyn_policy() {
    let a = MlsClient::new(b"a:1").unwrap();
    let b = MlsClient::new(b"b:1").unwrap();
    let cfg = MlsGroupCreateConfig::builder()
        .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
        .ciphersuite(DEFAULT_CIPHERSUITE)
        .build();
    let mut g = MlsGroup::new(&a.provider, &a.signer, &cfg, a.credential.clone()).unwrap();
    let kp =
        server::decode_key_package(&b.create_key_package().unwrap(), a.provider.crypto()).unwrap();
    let (_c, _w, _) = g.add_members(&a.provider, &a.signer, &[kp]).unwrap();
    g.merge_pending_commit(&a.provider).unwrap();
    let (upd, _, _) = g
        .self_update(&a.provider, &a.signer, Default::default())
        .unwrap()
        .into_contents();
    let parsed = parse_message(&upd.tls_serialize_detached().unwrap()).unwrap();
    assert_eq!(parsed.kind, MessageKind::PrivateMessage);
    assert_eq!(parsed.content, Some(ContentKind::Commit));
    assert_eq!(parsed.epoch, Some(1));
    assert!(matches!(
        parsed.check_guardyn_policy(),
        Err(MlsError::HandshakeNotPublic)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parser_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_message(&bytes);
        let _ = validate_key_package(&bytes, &KeyPackagePolicy::default());
    }

    #[test]
    fn parser_never_panics_on_mutated_messages(pos in any::<prop::sample::Index>(), val in any::<u8>(), cut in any::<prop::sample::Index>()) {
        thread_local! {
            static SAMPLES: Vec<Vec<u8>> = {
                let a = MlsClient::new(b"a:1").unwrap();
                let b = MlsClient::new(b"b:1").unwrap();
                let mut g = Group::create(&a, b"g").unwrap();
                let kp = b.create_key_package().unwrap();
                let add = g.add_members(&a, &[&kp]).unwrap();
                g.merge_pending_commit(&a).unwrap();
                let ct = g.encrypt(&a, b"x").unwrap();
                vec![kp, add.commit, add.welcome.unwrap(), add.group_info.unwrap(), ct]
            };
        }
        SAMPLES.with(|samples| {
            for s in samples {
                let mut m = s.clone();
                let i = pos.index(m.len());
                m[i] = val;
                let _ = parse_message(&m);
                let _ = validate_key_package(&m, &KeyPackagePolicy::default());
                let _ = parse_message(&m[..cut.index(m.len())]);
            }
        });
    }
}
