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
    assert_eq!(reason(&err), "INVALID_MLS_MESSAGE");
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
