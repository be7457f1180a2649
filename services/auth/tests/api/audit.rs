//! The audit log under load: concurrent audited operations all land in one intact chain.
//! (Throughput: the ignored `audit_append_throughput` unit test of crate `guardyn-audit`.)

use guardyn_auth::audit::AuditKind;
use guardyn_common::ratelimit::RateLimit;
use guardyn_proto::guardyn::auth::v1 as pb;

use super::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_audited_operations_all_land_in_one_intact_chain() {
    let env = start_with(|c| {
        c.auth.limits.register_per_address = RateLimit::new(10_000, 10_000);
    })
    .await;
    let n = 200;
    let mut tasks = Vec::new();
    for i in 0..n {
        let channel = env.server.channel();
        tasks.push(tokio::spawn(async move {
            let ik = guardyn_crypto::IdentityKeyPair::generate();
            let mut client = pb::auth_service_client::AuthServiceClient::new(channel);
            // A slow machine sheds password hashing with OVERLOADED (RESOURCE_EXHAUSTED and a
            // RetryInfo); a client retries after the hint, and so does this one.
            loop {
                let answer = client
                    .register(pb::RegisterRequest {
                        username: format!("user{i}"),
                        password: PASSWORD.into(),
                        device: Some(new_device("phone", &ik, 0)),
                    })
                    .await;
                match answer {
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    other => return other.map(|r| r.into_inner().account_id),
                }
            }
        }));
    }
    let mut accounts = Vec::new();
    for t in tasks {
        accounts.push(t.await.unwrap().unwrap());
    }

    let kv = env.server.kv();
    let len = guardyn_auth::audit::verify(&*kv).await.unwrap().checked;
    let entries = guardyn_auth::audit::entries(&*kv).await.unwrap();
    assert_eq!(entries.len() as u64, len);
    // Every registration is in the chain exactly once, numbered 1.. without gaps, in time
    // order.
    for acc in &accounts {
        let mine = entries
            .iter()
            .filter(|e| e.kind == AuditKind::AccountRegistered && &e.account_id == acc)
            .count();
        assert_eq!(mine, 1, "{acc}");
    }
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }
    assert!(entries.windows(2).all(|w| w[0].time_ms <= w[1].time_ms));
}

#[tokio::test]
async fn a_failed_login_flood_is_logged_as_counts_not_one_entry_each() {
    let env = start_with(|c| {
        let many = RateLimit::new(10_000, 10_000);
        c.auth.limits.login_per_address = many;
        c.auth.limits.login_per_account = many;
        c.auth.limits.login_per_username = many;
        // One entry at once, then one per 100 ms.
        c.auth.limits.failed_login_audit = RateLimit::new(1, 600);
    })
    .await;
    let fail = |i: u32| {
        let mut c = env.auth();
        async move {
            c.login(pb::LoginRequest {
                username: format!("nobody{i}"),
                password: "wrong password".into(),
                device_id: 1,
            })
            .await
            .unwrap_err()
        }
    };
    for i in 0..20 {
        assert_eq!(reason(&fail(i).await), "INVALID_CREDENTIALS");
    }
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    fail(20).await;

    let entries = guardyn_auth::audit::entries(&*env.server.kv())
        .await
        .unwrap();
    let failed: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == AuditKind::LoginFailed)
        .collect();
    assert!(failed.len() < 21, "{}", failed.len());
    // Every failure is accounted for: an entry of its own or a count in a later entry.
    let accounted: u64 = failed
        .iter()
        .map(|e| {
            1 + e
                .detail
                .split_once("(+")
                .and_then(|(_, n)| n.split(' ').next())
                .map_or(0, |n| n.parse::<u64>().unwrap())
        })
        .sum();
    assert_eq!(accounted, 21);
    guardyn_auth::audit::verify(&*env.server.kv())
        .await
        .unwrap();
}

#[tokio::test]
async fn prekey_uploads_are_rate_limited_per_device() {
    let env = start_with(|c| c.auth.limits.prekey_upload_per_device = RateLimit::new(2, 1)).await;
    let a = env.register("ursula", 0).await;
    let upload = |first: u32| {
        let mut c = env.keys();
        let token = a.token().to_owned();
        async move {
            c.upload_pre_keys(authed(
                pb::UploadPreKeysRequest {
                    one_time_prekeys: (first..first + 3).map(one_time).collect(),
                    ..Default::default()
                },
                &token,
            ))
            .await
        }
    };
    upload(10).await.unwrap();
    upload(20).await.unwrap();
    let err = upload(30).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert_eq!(reason(&err), "RATE_LIMITED");
    // Another device (of another account) has its own allowance.
    let b = env.register("victor", 0).await;
    env.keys()
        .upload_pre_keys(authed(
            pb::UploadPreKeysRequest {
                one_time_prekeys: (1..4).map(one_time).collect(),
                ..Default::default()
            },
            b.token(),
        ))
        .await
        .unwrap();
}
