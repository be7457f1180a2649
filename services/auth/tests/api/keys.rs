//! Key directory: prekey uploads, bundles, exactly-once one-time keys, KeyPackages.

use std::collections::HashSet;

use guardyn_proto::guardyn::auth::v1 as pb;
use tonic::Code;

use super::helpers::*;
use super::sessions::link;

async fn counts(env: &Env, user_token: &str) -> pb::PreKeyCounts {
    env.keys()
        .get_pre_key_counts(authed(pb::GetPreKeyCountsRequest {}, user_token))
        .await
        .unwrap()
        .into_inner()
        .counts
        .unwrap()
}

async fn bundle(
    env: &Env,
    token: &str,
    acc: &str,
    device_id: u32,
) -> Result<pb::GetPreKeyBundleResponse, tonic::Status> {
    env.keys()
        .get_pre_key_bundle(authed(
            pb::GetPreKeyBundleRequest {
                account_id: acc.into(),
                device_id,
            },
            token,
        ))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn bundles_hand_out_one_time_keys_then_fall_back_to_the_last_resort_key() {
    let env = start().await;
    let bob = env.register("bob", 2).await;
    let alice = env.register("alice", 0).await;
    let c = counts(&env, bob.token()).await;
    assert_eq!(
        (
            c.one_time_prekeys,
            c.one_time_kem_prekeys,
            c.has_last_resort_kem_prekey,
            c.signed_prekey_id
        ),
        (2, 2, true, Some(1))
    );
    let mut ec_ids = HashSet::new();
    for i in 0..3 {
        let r = bundle(&env, alice.token(), &bob.account_id, 0)
            .await
            .unwrap();
        assert_eq!(r.bundles.len(), 1);
        let b = &r.bundles[0];
        assert_eq!(b.identity_key, bob.ik.identity_key().to_bytes().to_vec());
        assert_eq!(b.registration_id, 1234);
        assert_eq!(b.signed_prekey.as_ref().unwrap().key_id, 1);
        let kem = b.kem_prekey.as_ref().unwrap();
        if i < 2 {
            assert!(!b.kem_prekey_is_last_resort);
            assert!(ec_ids.insert(b.one_time_prekey.as_ref().unwrap().key_id));
        } else {
            assert!(b.kem_prekey_is_last_resort);
            assert_eq!(kem.key_id, 1000);
            assert!(b.one_time_prekey.is_none());
        }
    }
    let c = counts(&env, bob.token()).await;
    assert_eq!((c.one_time_prekeys, c.one_time_kem_prekeys), (0, 0));
    // Bob's own device never gets its own bundle; an unknown account is NOT_FOUND.
    let own = bundle(&env, bob.token(), &bob.account_id, 0).await.unwrap();
    assert!(own.bundles.is_empty());
    let err = bundle(
        &env,
        alice.token(),
        "00000000-0000-4000-8000-000000000000",
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = bundle(&env, alice.token(), "not-a-uuid", 0)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_ARGUMENT");
}

#[tokio::test]
async fn devices_without_keys_are_reported_unavailable_or_exhausted() {
    let env = start().await;
    let ik = guardyn_crypto::IdentityKeyPair::generate();
    let mut device = new_device("bare", &ik, 0);
    device.signed_prekey = None;
    device.last_resort_kem_prekey = None;
    let r = env
        .auth()
        .register(pb::RegisterRequest {
            username: "carol".into(),
            password: PASSWORD.into(),
            device: Some(device),
        })
        .await
        .unwrap()
        .into_inner();
    let alice = env.register("alice", 0).await;
    let all = bundle(&env, alice.token(), &r.account_id, 0).await.unwrap();
    assert!(all.bundles.is_empty());
    assert_eq!(all.unavailable_device_ids, vec![1]);
    let err = bundle(&env, alice.token(), &r.account_id, 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "PREKEYS_EXHAUSTED");
}

#[tokio::test]
async fn concurrent_fetchers_never_get_the_same_one_time_key() {
    let env = start_with(|c| {
        c.auth.limits.prekey_fetch_per_target =
            guardyn_common::ratelimit::RateLimit::new(1000, 1000)
    })
    .await;
    let bob = env.register("bob", 40).await;
    let alice = env.register("alice", 0).await;
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let mut client = env.keys();
        let req = authed(
            pb::GetPreKeyBundleRequest {
                account_id: bob.account_id.clone(),
                device_id: 1,
            },
            alice.token(),
        );
        tasks.push(tokio::spawn(async move {
            client.get_pre_key_bundle(req).await.unwrap().into_inner()
        }));
    }
    let mut ec = Vec::new();
    let mut kem = Vec::new();
    for t in tasks {
        let b = t.await.unwrap().bundles.remove(0);
        if let Some(k) = b.one_time_prekey {
            ec.push(k.key_id);
        }
        if !b.kem_prekey_is_last_resort {
            kem.push(b.kem_prekey.unwrap().key_id);
        }
    }
    assert_eq!(ec.len(), 40);
    assert_eq!(ec.iter().collect::<HashSet<_>>().len(), 40);
    assert_eq!(kem.len(), 40);
    assert_eq!(kem.iter().collect::<HashSet<_>>().len(), 40);
}

#[tokio::test]
async fn uploads_are_verified_and_apply_to_the_callers_device_only() {
    let env = start().await;
    let bob = env.register("bob", 0).await;
    let mallory = env.register("mallory", 0).await;
    let upload = |token: String, req: pb::UploadPreKeysRequest| {
        let mut c = env.keys();
        async move {
            c.upload_pre_keys(authed(req, &token))
                .await
                .map(|r| r.into_inner().counts.unwrap())
        }
    };
    let c = upload(
        bob.token().into(),
        pb::UploadPreKeysRequest {
            signed_prekey: Some(signed_prekey(&bob.ik, 2)),
            one_time_prekeys: (1..=5).map(one_time).collect(),
            one_time_kem_prekeys: (1..=3).map(|i| kem_prekey(&bob.ik, i)).collect(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (
            c.one_time_prekeys,
            c.one_time_kem_prekeys,
            c.signed_prekey_id
        ),
        (5, 3, Some(2))
    );
    // A key signed by another identity: INVALID_SIGNATURE naming the field; nothing stored.
    let err = upload(
        bob.token().into(),
        pb::UploadPreKeysRequest {
            one_time_prekeys: vec![one_time(50)],
            one_time_kem_prekeys: vec![kem_prekey(&mallory.ik, 9)],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "INVALID_SIGNATURE");
    assert!(
        err.message().contains("one_time_kem_prekeys[0].signature"),
        "{}",
        err.message()
    );
    assert_eq!(counts(&env, bob.token()).await.one_time_prekeys, 5);
    // Duplicate ids, stored ids, oversized batches.
    let err = upload(
        bob.token().into(),
        pb::UploadPreKeysRequest {
            one_time_prekeys: vec![one_time(7), one_time(7)],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&err), "INVALID_ARGUMENT");
    let err = upload(
        bob.token().into(),
        pb::UploadPreKeysRequest {
            one_time_prekeys: vec![one_time(60), one_time(3)],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = upload(
        bob.token().into(),
        pb::UploadPreKeysRequest {
            one_time_prekeys: (1000..1101).map(one_time).collect(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&err), "PAYLOAD_TOO_LARGE");
    let mut bad = one_time(70);
    bad.public_key[0] = 0x07;
    let err = upload(
        bob.token().into(),
        pb::UploadPreKeysRequest {
            one_time_prekeys: vec![bad],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&err), "INVALID_KEY");
    // Mallory uploading with her token changes only her own device.
    upload(
        mallory.token().into(),
        pb::UploadPreKeysRequest {
            one_time_prekeys: vec![one_time(1)],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(counts(&env, bob.token()).await.one_time_prekeys, 5);
    assert_eq!(counts(&env, mallory.token()).await.one_time_prekeys, 1);
}

#[tokio::test]
async fn prekey_fetches_are_rate_limited_per_target() {
    let env = start_with(|c| {
        c.auth.limits.prekey_fetch_per_target = guardyn_common::ratelimit::RateLimit::new(2, 1)
    })
    .await;
    let bob = env.register("bob", 5).await;
    let carol = env.register("carol", 5).await;
    let alice = env.register("alice", 0).await;
    bundle(&env, alice.token(), &bob.account_id, 0)
        .await
        .unwrap();
    bundle(&env, alice.token(), &bob.account_id, 0)
        .await
        .unwrap();
    let err = bundle(&env, alice.token(), &bob.account_id, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "RATE_LIMITED");
    bundle(&env, alice.token(), &carol.account_id, 0)
        .await
        .unwrap();
}

#[tokio::test]
async fn key_packages_are_validated_claimed_once_and_fall_back_to_last_resort() {
    use guardyn_crypto::mls::MlsClient;
    let env = start().await;
    let bob = env.register("bob", 0).await;
    let (dev2, laptop, _) = link(&env, &bob, 0).await;
    let alice = env.register("alice", 0).await;
    let me = MlsClient::new(format!("{}.1", bob.account_id).as_bytes()).unwrap();
    let upload = |token: String, kps: Vec<Vec<u8>>, last_resort: bool| {
        let mut c = env.keys();
        async move {
            c.upload_key_packages(authed(
                pb::UploadKeyPackagesRequest {
                    key_packages: kps,
                    last_resort,
                },
                &token,
            ))
            .await
            .map(|r| r.into_inner())
        }
    };
    let r = upload(
        bob.token().into(),
        vec![
            me.create_key_package().unwrap(),
            me.create_key_package().unwrap(),
        ],
        false,
    )
    .await
    .unwrap();
    assert_eq!((r.one_time_count, r.has_last_resort), (2, false));
    let r = upload(
        bob.token().into(),
        vec![me.create_last_resort_key_package().unwrap()],
        true,
    )
    .await
    .unwrap();
    assert!(r.has_last_resort);
    // Someone else's identity, a last-resort flag mismatch, garbage: refused.
    let other = MlsClient::new(format!("{}.{dev2}", bob.account_id).as_bytes()).unwrap();
    let err = upload(
        bob.token().into(),
        vec![other.create_key_package().unwrap()],
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&err), "MLS_IDENTITY_MISMATCH");
    let err = upload(
        bob.token().into(),
        vec![me.create_key_package().unwrap()],
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&err), "INVALID_MLS_MESSAGE");
    let err = upload(bob.token().into(), vec![vec![0, 1, 2, 3]], false)
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_MLS_MESSAGE");
    // The laptop's own identity is accepted from the laptop.
    upload(
        laptop.access_token.clone(),
        vec![other.create_key_package().unwrap()],
        false,
    )
    .await
    .unwrap();

    let claim = || {
        let mut c = env.keys();
        let req = authed(
            pb::ClaimKeyPackagesRequest {
                account_id: bob.account_id.clone(),
                device_ids: vec![1],
            },
            alice.token(),
        );
        async move { c.claim_key_packages(req).await.unwrap().into_inner() }
    };
    let mut seen = HashSet::new();
    for _ in 0..2 {
        let r = claim().await;
        assert!(!r.key_packages[0].last_resort);
        assert!(seen.insert(r.key_packages[0].key_package.clone()));
    }
    for _ in 0..2 {
        let r = claim().await;
        assert!(r.key_packages[0].last_resort);
    }
    let count = env
        .keys()
        .get_key_package_count(authed(pb::GetKeyPackageCountRequest {}, bob.token()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((count.one_time_count, count.has_last_resort), (0, true));
    // All devices: the laptop has one, device 1 only the last resort.
    let all = env
        .keys()
        .claim_key_packages(authed(
            pb::ClaimKeyPackagesRequest {
                account_id: bob.account_id.clone(),
                device_ids: vec![],
            },
            alice.token(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        all.key_packages
            .iter()
            .map(|k| k.device_id)
            .collect::<Vec<_>>(),
        vec![1, dev2]
    );
    let again = env
        .keys()
        .claim_key_packages(authed(
            pb::ClaimKeyPackagesRequest {
                account_id: bob.account_id.clone(),
                device_ids: vec![dev2],
            },
            alice.token(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(again.key_packages.is_empty());
    assert_eq!(again.unavailable_device_ids, vec![dev2]);
}

#[tokio::test]
async fn the_first_key_package_upload_pins_the_devices_mls_signature_key() {
    use guardyn_crypto::mls::MlsClient;
    let env = start().await;
    let bob = env.register("bob", 0).await;
    let alice = env.register("alice", 0).await;
    let upload = |token: String, kps: Vec<Vec<u8>>| {
        let mut c = env.keys();
        async move {
            c.upload_key_packages(authed(
                pb::UploadKeyPackagesRequest {
                    key_packages: kps,
                    last_resort: false,
                },
                &token,
            ))
            .await
            .map(|r| r.into_inner())
        }
    };
    let identity = format!("{}.1", bob.account_id);
    let (me, impostor) = (
        MlsClient::new(identity.as_bytes()).unwrap(),
        MlsClient::new(identity.as_bytes()).unwrap(),
    );
    // One upload may not mix signature keys, even for the first pin.
    let err = upload(
        bob.token().into(),
        vec![
            me.create_key_package().unwrap(),
            impostor.create_key_package().unwrap(),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(reason(&err), "MLS_IDENTITY_MISMATCH");
    upload(bob.token().into(), vec![me.create_key_package().unwrap()])
        .await
        .unwrap();
    // The device's identity with another signature key: refused from now on.
    let err = upload(
        bob.token().into(),
        vec![impostor.create_key_package().unwrap()],
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "MLS_IDENTITY_MISMATCH");
    upload(bob.token().into(), vec![me.create_key_package().unwrap()])
        .await
        .unwrap();

    // Clients learn the pinned key with a claimed package and on its own.
    let claimed = env
        .keys()
        .claim_key_packages(authed(
            pb::ClaimKeyPackagesRequest {
                account_id: bob.account_id.clone(),
                device_ids: vec![],
            },
            alice.token(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        claimed.key_packages[0].mls_signature_key,
        me.signature_public_key()
    );
    let keys = env
        .keys()
        .get_mls_signature_keys(authed(
            pb::GetMlsSignatureKeysRequest {
                account_id: bob.account_id.clone(),
            },
            alice.token(),
        ))
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0].device_id, keys[0].signature_key.as_slice()),
        (1, me.signature_public_key())
    );
    let err = env
        .keys()
        .get_mls_signature_keys(authed(
            pb::GetMlsSignatureKeysRequest {
                account_id: "00000000-0000-4000-8000-000000000999".into(),
            },
            alice.token(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

/// Auth and messaging in one process: the delivery service checks group leaves against the
/// directory's pinned keys and the KeyPackageRefs ClaimKeyPackages handed out.
#[tokio::test]
async fn the_delivery_service_accepts_only_claimed_key_packages_with_pinned_keys() {
    use guardyn_crypto::mls::{Group, MlsClient};
    use guardyn_proto::guardyn::common::v1::DeviceAddress;
    use guardyn_proto::guardyn::messaging::v1 as msg;
    use guardyn_proto::guardyn::messaging::v1::group_service_client::GroupServiceClient;

    let clock = guardyn_common::clock::ManualClock::new();
    let server = guardyn_testkit::TestServer::start_with(guardyn_testkit::Options {
        services: vec!["auth".into(), "messaging".into()],
        clock: Some(std::sync::Arc::new(clock.clone())),
        configure: Some(Box::new(|c| {
            c.auth.argon2.memory_kib = 8;
            c.auth.argon2.iterations = 1;
        })),
        ..guardyn_testkit::Options::default()
    })
    .await
    .unwrap();
    let env = Env { server, clock };
    let alice = env.register("alice", 0).await;
    let bob = env.register("bob", 0).await;
    let ca = MlsClient::new(format!("{}.1", alice.account_id).as_bytes()).unwrap();
    let cb = MlsClient::new(format!("{}.1", bob.account_id).as_bytes()).unwrap();
    for (user, c) in [(&alice, &ca), (&bob, &cb)] {
        env.keys()
            .upload_key_packages(authed(
                pb::UploadKeyPackagesRequest {
                    key_packages: vec![c.create_key_package().unwrap()],
                    last_resort: false,
                },
                user.token(),
            ))
            .await
            .unwrap();
    }
    let gid = b"directory-bound-group-01".to_vec();
    let mut ga = Group::create(&ca, &gid).unwrap();
    let mut groups = GroupServiceClient::new(env.server.channel());
    groups
        .create_group(authed(
            msg::CreateGroupRequest {
                group_id: gid.clone(),
                group_info: ga.export_group_info(&ca).unwrap(),
            },
            alice.token(),
        ))
        .await
        .unwrap();
    let add = |kp: &[u8], ga: &mut Group| {
        let bundle = ga.add_members(&ca, &[kp]).unwrap();
        msg::SendCommitRequest {
            group_id: gid.clone(),
            epoch: 0,
            commit: bundle.commit,
            welcome: bundle.welcome,
            welcome_recipients: vec![DeviceAddress {
                account_id: bob.account_id.clone(),
                device_id: 1,
            }],
            group_info: bundle.group_info.unwrap(),
        }
    };

    // Bob's genuine key, in a KeyPackage the directory never handed out.
    let unclaimed = add(&cb.create_key_package().unwrap(), &mut ga);
    let err = groups
        .send_commit(authed(unclaimed, alice.token()))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "MLS_IDENTITY_MISMATCH");
    ga.discard_pending_commit(&ca).unwrap();
    // Bob's identity under another key.
    let impostor = MlsClient::new(format!("{}.1", bob.account_id).as_bytes()).unwrap();
    let forged = add(&impostor.create_key_package().unwrap(), &mut ga);
    let err = groups
        .send_commit(authed(forged, alice.token()))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "MLS_IDENTITY_MISMATCH");
    ga.discard_pending_commit(&ca).unwrap();

    // The package ClaimKeyPackages hands out is accepted.
    let claimed = env
        .keys()
        .claim_key_packages(authed(
            pb::ClaimKeyPackagesRequest {
                account_id: bob.account_id.clone(),
                device_ids: vec![1],
            },
            alice.token(),
        ))
        .await
        .unwrap()
        .into_inner()
        .key_packages
        .remove(0);
    let commit = add(&claimed.key_package, &mut ga);
    let r = groups
        .send_commit(authed(commit, alice.token()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.epoch, 1);
}
