//! Device ids come back after removal (safely), and an account deletion interrupted after its
//! first step leaves nothing usable and is finished after a restart.

use std::time::Duration;

use guardyn_common::ids::AccountId;
use guardyn_common::ratelimit::RateLimit;
use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_storage::{Direction, KeyRange};

use super::helpers::*;
use super::sessions::{collect_link, request_link};

/// Sign device 1 of `name` in again (a fresh step-up) and return its access token.
async fn fresh_token(env: &Env, name: &str) -> String {
    match env.login(name, 1).await.unwrap().outcome {
        Some(pb::login_response::Outcome::Tokens(t)) => t.access_token,
        _ => panic!("expected tokens"),
    }
}

/// Link a device with `registration_id`, approved with `token`; returns its id.
async fn link_with(env: &Env, token: &str, registration_id: u32) -> u32 {
    let ik = guardyn_crypto::IdentityKeyPair::generate();
    let mut device = new_device("tablet", &ik, 1);
    device.registration_id = registration_id;
    let ticket = request_link(env, device).await;
    env.devices()
        .approve_link(authed(
            pb::ApproveLinkRequest {
                link_code: ticket.link_code.clone(),
            },
            token,
        ))
        .await
        .unwrap();
    collect_link(env, &ticket).await.unwrap().device_id
}

async fn remove(env: &Env, token: &str, device_id: u32) {
    env.devices()
        .remove_device(authed(pb::RemoveDeviceRequest { device_id }, token))
        .await
        .unwrap();
}

#[tokio::test]
async fn link_and_remove_cycles_beyond_127_ids_keep_working() {
    let env = start_with(|c| {
        c.auth.access_token_ttl_secs = 60;
        c.auth.device_id_reuse_secs = 3600;
        let many = RateLimit::new(100_000, 100_000);
        c.auth.limits.login_per_address = many;
        c.auth.limits.login_per_account = many;
        c.auth.limits.login_per_username = many;
        c.auth.limits.link_code_per_account = many;
    })
    .await;
    env.register("ivy", 0).await;
    // Never-used ids first: 2..=127, each device removed right after linking.
    for i in 0..126u32 {
        let token = fresh_token(&env, "ivy").await;
        let id = link_with(&env, &token, 2000 + i).await;
        assert_eq!(id, 2 + i, "cycle {i}");
        remove(&env, &token, id).await;
    }
    // Every id was used once. A removed id is not handed out right after its removal (its
    // tokens may still verify and the clean-up elsewhere may still be running).
    let token = fresh_token(&env, "ivy").await;
    let ik = guardyn_crypto::IdentityKeyPair::generate();
    let ticket = request_link(&env, new_device("tablet", &ik, 0)).await;
    let err = env
        .devices()
        .approve_link(authed(
            pb::ApproveLinkRequest {
                link_code: ticket.link_code,
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "DEVICE_LIMIT_REACHED");
    env.clock.advance(Duration::from_secs(3601));
    // Then the lowest comes back, except to a device with the registration id of the id's
    // former holder, so peers' stale sessions with the old device are always detected.
    let token = fresh_token(&env, "ivy").await;
    assert_eq!(link_with(&env, &token, 2000).await, 3);
    assert_eq!(link_with(&env, &token, 5000).await, 2);
    remove(&env, &token, 2).await;
    remove(&env, &token, 3).await;
    for i in 0..4u32 {
        env.clock.advance(Duration::from_secs(3601));
        let token = fresh_token(&env, "ivy").await;
        let id = link_with(&env, &token, 6000 + i).await;
        assert_eq!(id, 2, "reuse cycle {i}");
        remove(&env, &token, id).await;
    }
    let devices = env
        .devices()
        .list_devices(authed(
            pb::ListDevicesRequest {},
            &fresh_token(&env, "ivy").await,
        ))
        .await
        .unwrap()
        .into_inner()
        .devices;
    assert_eq!(devices.len(), 1);
}

async fn count(env: &Env, prefix: &[u8]) -> usize {
    env.server
        .kv()
        .scan(KeyRange::prefix(prefix), Direction::Forward, 10_000)
        .await
        .unwrap()
        .len()
}

async fn refresh(env: &Env, token: &str) -> Result<pb::RefreshSessionResponse, tonic::Status> {
    env.auth()
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: token.into(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn an_interrupted_deletion_refuses_at_once_and_is_finished_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d1 = data.clone();
    // No sweep pass during the first run: the purge must wait for the restart.
    let env = start_with(move |c| {
        c.storage.data_dir = d1;
        c.auth.sweep_interval_secs = 86_400;
    })
    .await;
    let a = env.register("zoe", 3).await;
    let acc = AccountId::parse(&a.account_id).unwrap();
    // Step 1 of DeleteAccount only, as a process killed right after its commit leaves it.
    guardyn_auth::deletion::mark_deleted(&*env.server.kv(), acc, 0)
        .await
        .unwrap();
    assert_eq!(count(&env, b"auth/v1/session/").await, 1);
    assert_eq!(count(&env, &guardyn_auth::store::devices(acc)).await, 1);

    // Nothing of the account works any more: no refresh, no login.
    let err = refresh(&env, &a.tokens.refresh_token).await.unwrap_err();
    assert_eq!(reason(&err), "DEVICE_REMOVED");
    let err = env.login("zoe", 1).await.unwrap_err();
    assert_eq!(reason(&err), "INVALID_CREDENTIALS");
    env.server.stop().await.unwrap();

    // After a restart the sweeper finishes the purge.
    let d2 = data.clone();
    let env = start_with(move |c| c.storage.data_dir = d2).await;
    let prefixes = [
        b"auth/v1/session/".to_vec(),
        guardyn_auth::store::account_sessions(acc),
        guardyn_auth::store::devices(acc),
        guardyn_auth::store::account_prekeys(acc),
        guardyn_auth::store::tombstone(acc),
    ];
    for _ in 0..200 {
        let mut left = 0;
        for p in &prefixes {
            left += count(&env, p).await;
        }
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for p in &prefixes {
        assert_eq!(count(&env, p).await, 0, "{}", String::from_utf8_lossy(p));
    }
    let entries = guardyn_auth::audit::entries(&*env.server.kv())
        .await
        .unwrap();
    assert!(entries.iter().any(|e| {
        e.kind == guardyn_auth::audit::AuditKind::AccountDeleted && e.account_id == a.account_id
    }));
    let err = refresh(&env, &a.tokens.refresh_token).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    // The name is free again.
    env.register("zoe", 0).await;
}
