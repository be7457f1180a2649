//! The token-signing key set: a successor is published before it signs, a retired key stops
//! verifying once dropped from the set, an emergency-revoked key is refused at once, and the
//! mesh refuses plaintext to other hosts unless allowed.

use std::time::Duration;

use base64::Engine as _;
use guardyn_auth::sealing::MasterKey;
use guardyn_proto::guardyn::auth::v1 as pb;
use tonic::Code;

use super::helpers::*;
use super::revocation::probe;

/// The `kid` in a token's header.
fn kid(token: &str) -> String {
    let header = token.split('.').next().unwrap();
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    let header = String::from_utf8(header).unwrap();
    let rest = &header[header.find("\"kid\":\"").unwrap() + 7..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn published(env: &Env) -> Vec<pb::VerificationKey> {
    env.auth()
        .get_verification_keys(pb::GetVerificationKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
}

/// Wait (bounded) until `check` holds: background refreshes run when the clock jumps.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn refresh(env: &Env, refresh_token: &str) -> pb::Tokens {
    env.auth()
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: refresh_token.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
}

#[tokio::test]
async fn a_successor_is_published_before_it_signs_and_a_retired_key_stops_verifying() {
    let env = start_with(|c| c.auth.signing_key_rotation_secs = 3600).await;
    let u = env.register("rosa", 1).await;
    let first = kid(u.token());
    assert_eq!(published(&env).await.len(), 1);

    // Rotation is due: the successor is published at once but does not sign yet.
    env.clock.advance(Duration::from_secs(3600));
    eventually("the successor is published", || async {
        published(&env).await.len() == 2
    })
    .await;
    let keys = published(&env).await;
    let next = keys.iter().find(|k| k.kid != first).unwrap();
    let not_before = next.not_before.unwrap().seconds as u64;
    use guardyn_common::clock::Clock as _;
    assert!(
        not_before >= env.clock.now_ms() / 1000 + 590,
        "pre-published"
    );
    let old_token = refresh(&env, &u.tokens.refresh_token).await;
    assert_eq!(
        kid(&old_token.access_token),
        first,
        "the old key still signs"
    );

    // After the pre-publication delay the successor signs.
    env.clock.advance(Duration::from_secs(600));
    let new_token = refresh(&env, &old_token.refresh_token).await;
    assert_eq!(kid(&new_token.access_token), next.kid);
    probe(&env, &old_token.access_token).await.unwrap();

    // Past the retired key's grace the refresh drops it, and its unexpired token is refused.
    env.clock.advance(Duration::from_secs(1000));
    eventually("the retired key is dropped", || async {
        published(&env).await.len() == 1
    })
    .await;
    let refused = probe(&env, &old_token.access_token).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    probe(&env, &new_token.access_token).await.unwrap();
}

#[tokio::test]
async fn an_emergency_revoked_key_is_refused_at_once_and_a_successor_signs() {
    let env = start().await;
    let u = env.register("ravi", 1).await;
    let leaked = kid(u.token());
    probe(&env, u.token()).await.unwrap();

    let data_dir = env.server.data_dir().join("data");
    let master = MasterKey::load_or_create(std::path::Path::new(""), &data_dir).unwrap();
    let kv = env.server.kv();
    let bus = env.server.bus();
    let revoked = guardyn::keys::revoke_with(&*kv, &*bus, &master, &leaked)
        .await
        .unwrap();
    assert_ne!(revoked.signing_kid, leaked);
    assert!(revoked.announced);

    eventually("the leaked key's token is refused", || async {
        probe(&env, u.token()).await.is_err()
    })
    .await;
    let refused = probe(&env, u.token()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Auth re-reads the set on the event; the session goes on with tokens of the successor.
    eventually("auth adopts the revoked set", || async {
        let keys = published(&env).await;
        keys.iter().all(|k| k.kid != leaked) && keys.iter().any(|k| k.kid == revoked.signing_kid)
    })
    .await;
    let fresh = refresh(&env, &u.tokens.refresh_token).await;
    assert_eq!(kid(&fresh.access_token), revoked.signing_kid);
    probe(&env, &fresh.access_token).await.unwrap();

    // Unknown keys are reported as such.
    let err = guardyn::keys::revoke_with(&*kv, &*bus, &master, "auth-nope")
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("not found"), "{err:#}");
}

#[tokio::test]
async fn plaintext_mesh_to_another_host_is_refused_at_start_unless_allowed() {
    let refused = guardyn_testkit::TestServer::start_with(guardyn_testkit::Options {
        services: vec!["presence".into()],
        ..guardyn_testkit::Options::configure(|c| {
            c.mesh.auth_addresses = vec!["http://192.0.2.10:50051".into()];
        })
    })
    .await
    .unwrap_err();
    let msg = format!("{refused:#}");
    assert!(msg.contains("mesh.allow_plaintext"), "{msg}");

    let allowed = guardyn_testkit::TestServer::start_with(guardyn_testkit::Options {
        services: vec!["presence".into()],
        ..guardyn_testkit::Options::configure(|c| {
            c.mesh.auth_addresses = vec!["http://192.0.2.10:50051".into()];
            c.mesh.allow_plaintext = true;
        })
    })
    .await
    .unwrap();
    allowed.stop().await.unwrap();

    // Loopback needs no flag.
    let local = guardyn_testkit::TestServer::start_with(guardyn_testkit::Options {
        services: vec!["presence".into()],
        ..guardyn_testkit::Options::configure(|c| {
            c.mesh.auth_addresses = vec!["http://127.0.0.1:1".into()];
        })
    })
    .await
    .unwrap();
    local.stop().await.unwrap();
}
