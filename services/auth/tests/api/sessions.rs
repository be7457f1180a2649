//! Refresh rotation and theft detection, logout, session listing and revocation, password
//! change, persistence of signing keys, and the audit chain.

use std::sync::Arc;

use guardyn_proto::guardyn::auth::v1 as pb;
use tonic::Code;

use super::helpers::*;

async fn list_devices(env: &Env, token: &str) -> Result<(), tonic::Status> {
    env.devices()
        .list_devices(authed(pb::ListDevicesRequest {}, token))
        .await
        .map(drop)
}

async fn refresh(env: &Env, token: &str) -> Result<pb::Tokens, tonic::Status> {
    env.auth()
        .refresh_session(pb::RefreshSessionRequest {
            refresh_token: token.into(),
        })
        .await
        .map(|r| r.into_inner().tokens.unwrap())
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_session() {
    let env = start().await;
    let a = env.register("alice", 0).await;
    let first = a.tokens.refresh_token.clone();
    let second = refresh(&env, &first).await.unwrap();
    assert_ne!(second.refresh_token, first);
    assert_eq!(second.session_id, a.tokens.session_id);
    list_devices(&env, &second.access_token).await.unwrap();
    let third = refresh(&env, &second.refresh_token).await.unwrap();
    // Garbage is just invalid.
    let err = refresh(&env, "not-a-token").await.unwrap_err();
    assert_eq!(reason(&err), "INVALID_REFRESH_TOKEN");
    // The consumed first token comes back: theft. The session dies, with every token of it.
    let err = refresh(&env, &first).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(reason(&err), "SESSION_REVOKED");
    assert_eq!(
        reason(&refresh(&env, &third.refresh_token).await.unwrap_err()),
        "SESSION_REVOKED"
    );
    let err = list_devices(&env, &third.access_token).await.unwrap_err();
    assert_eq!(reason(&err), "SESSION_REVOKED");
}

#[tokio::test]
async fn refresh_tokens_expire() {
    let env = start().await;
    let a = env.register("bob", 0).await;
    env.clock
        .advance(std::time::Duration::from_secs(31 * 24 * 3600));
    let err = refresh(&env, &a.tokens.refresh_token).await.unwrap_err();
    assert_eq!(reason(&err), "INVALID_REFRESH_TOKEN");
}

#[tokio::test]
async fn logout_stops_the_access_token_on_the_very_next_call() {
    let env = start().await;
    let a = env.register("carol", 0).await;
    list_devices(&env, a.token()).await.unwrap();
    let n = env
        .auth()
        .logout(authed(
            pb::LogoutRequest {
                all_sessions: false,
            },
            a.token(),
        ))
        .await
        .unwrap()
        .into_inner()
        .revoked_sessions;
    assert_eq!(n, 1);
    let err = list_devices(&env, a.token()).await.unwrap_err();
    assert_eq!(reason(&err), "SESSION_REVOKED");
    assert_eq!(
        reason(&refresh(&env, &a.tokens.refresh_token).await.unwrap_err()),
        "SESSION_REVOKED"
    );
    // A new login for the same device works; logging in again replaces that session.
    let Some(pb::login_response::Outcome::Tokens(t1)) =
        env.login("carol", 1).await.unwrap().outcome
    else {
        panic!()
    };
    let Some(pb::login_response::Outcome::Tokens(t2)) =
        env.login("carol", 1).await.unwrap().outcome
    else {
        panic!()
    };
    assert_eq!(
        reason(&list_devices(&env, &t1.access_token).await.unwrap_err()),
        "SESSION_REVOKED"
    );
    list_devices(&env, &t2.access_token).await.unwrap();
}

/// Link a second device to `user`'s account (request, approval by `user`, collection);
/// returns its id, tokens and identity key.
pub async fn link(
    env: &Env,
    user: &User,
    n: u32,
) -> (u32, pb::Tokens, guardyn_crypto::IdentityKeyPair) {
    let ik = guardyn_crypto::IdentityKeyPair::generate();
    let ticket = request_link(env, new_device("laptop", &ik, n)).await;
    env.devices()
        .approve_link(authed(
            pb::ApproveLinkRequest {
                link_code: ticket.link_code.clone(),
            },
            user.token(),
        ))
        .await
        .unwrap();
    let r = collect_link(env, &ticket).await.unwrap();
    assert_eq!(r.account_id, user.account_id);
    (r.device_id, r.tokens.unwrap(), ik)
}

/// RequestLink for a new device.
pub async fn request_link(env: &Env, device: pb::NewDevice) -> pb::RequestLinkResponse {
    env.devices()
        .request_link(pb::RequestLinkRequest {
            device: Some(device),
        })
        .await
        .unwrap()
        .into_inner()
}

/// LinkDevice with a ticket from RequestLink.
pub async fn collect_link(
    env: &Env,
    ticket: &pb::RequestLinkResponse,
) -> Result<pb::LinkDeviceResponse, tonic::Status> {
    env.devices()
        .link_device(pb::LinkDeviceRequest {
            link_code: ticket.link_code.clone(),
            link_secret: ticket.link_secret.clone(),
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn sessions_are_listed_and_revoked_only_within_the_account() {
    let env = start().await;
    let a = env.register("dave", 0).await;
    let (_, laptop, _) = link(&env, &a, 0).await;
    let mallory = env.register("mallory", 0).await;
    let sessions = env
        .auth()
        .list_sessions(authed(pb::ListSessionsRequest::default(), a.token()))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s.current).count(), 1);
    let current = sessions.iter().find(|s| s.current).unwrap();
    assert_eq!(current.session_id, a.tokens.session_id);
    // Another account can neither see nor revoke them.
    let theirs = env
        .auth()
        .list_sessions(authed(pb::ListSessionsRequest::default(), mallory.token()))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(theirs.len(), 1);
    let err = env
        .auth()
        .revoke_session(authed(
            pb::RevokeSessionRequest {
                session_id: laptop.session_id.clone(),
            },
            mallory.token(),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    list_devices(&env, &laptop.access_token).await.unwrap();
    // The owner can.
    env.auth()
        .revoke_session(authed(
            pb::RevokeSessionRequest {
                session_id: laptop.session_id.clone(),
            },
            a.token(),
        ))
        .await
        .unwrap();
    assert_eq!(
        reason(&list_devices(&env, &laptop.access_token).await.unwrap_err()),
        "SESSION_REVOKED"
    );
    list_devices(&env, a.token()).await.unwrap();
    // Logout of all sessions.
    let login = env.login("dave", 2).await.unwrap();
    let Some(pb::login_response::Outcome::Tokens(laptop2)) = login.outcome else {
        panic!()
    };
    let n = env
        .auth()
        .logout(authed(pb::LogoutRequest { all_sessions: true }, a.token()))
        .await
        .unwrap()
        .into_inner()
        .revoked_sessions;
    assert_eq!(n, 2);
    assert!(list_devices(&env, &laptop2.access_token).await.is_err());
    assert!(list_devices(&env, a.token()).await.is_err());
}

#[tokio::test]
async fn changing_the_password_revokes_other_sessions_only() {
    let env = start().await;
    let a = env.register("erin", 0).await;
    let (_, laptop, _) = link(&env, &a, 0).await;
    let change = |old: &str, new: &str| {
        let mut c = env.auth();
        let req = authed(
            pb::ChangePasswordRequest {
                old_password: old.into(),
                new_password: new.into(),
            },
            a.token(),
        );
        async move { c.change_password(req).await }
    };
    let err = change("wrong wrong wrong", "a new long password")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(reason(&err), "INVALID_CREDENTIALS");
    assert_eq!(
        reason(&change(PASSWORD, "short").await.unwrap_err()),
        "WEAK_PASSWORD"
    );
    let n = change(PASSWORD, "a new long password")
        .await
        .unwrap()
        .into_inner()
        .revoked_sessions;
    assert_eq!(n, 1);
    list_devices(&env, a.token()).await.unwrap();
    assert!(list_devices(&env, &laptop.access_token).await.is_err());
    assert_eq!(
        reason(&env.login("erin", 1).await.unwrap_err()),
        "INVALID_CREDENTIALS"
    );
    env.auth()
        .login(pb::LoginRequest {
            username: "erin".into(),
            password: "a new long password".into(),
            device_id: 2,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn verification_keys_are_published_and_persist_across_restarts_and_the_audit_chain_detects_tampering()
 {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d1 = data.clone();
    let env = start_with(move |c| c.storage.data_dir = d1).await;
    let keys = env
        .auth()
        .get_verification_keys(pb::GetVerificationKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys.keys.len(), 1);
    let k = &keys.keys[0];
    assert_eq!(
        (k.kty.as_str(), k.crv.as_str(), k.alg.as_str()),
        ("OKP", "Ed25519", "EdDSA")
    );
    assert_eq!(k.public_key.len(), 32);
    // The token's kid names the published key.
    let a = env.register("frank", 2).await;
    let header = a.token().split('.').next().unwrap();
    use base64::Engine as _;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .unwrap();
    assert!(String::from_utf8(header).unwrap().contains(&k.kid));
    let _ = env.login("frank", 9).await;
    env.server.stop().await.unwrap();

    // Restart on the same data: same keys, the old token still verifies.
    let d2 = data.clone();
    let env = start_with(move |c| c.storage.data_dir = d2).await;
    let again = env
        .auth()
        .get_verification_keys(pb::GetVerificationKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.keys[0].kid, k.kid);
    list_devices(&env, a.token()).await.unwrap();
    env.server.stop().await.unwrap();

    // The audit chain: intact, then every kind of tampering is detected.
    let store = guardyn_storage_embedded::EmbeddedStore::open(&data, Default::default())
        .await
        .unwrap();
    let kv: Arc<dyn guardyn_storage::KvStore> = store.clone();
    let n = guardyn_auth::audit::verify(&*kv).await.unwrap().checked;
    assert!(n >= 2, "{n}");
    let entries = guardyn_auth::audit::entries(&*kv).await.unwrap();
    use guardyn_auth::audit::AuditKind as K;
    let kinds: Vec<K> = entries.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&K::AccountRegistered) && kinds.contains(&K::LoginFailed));
    // No secret ever lands in the log.
    for e in &entries {
        assert!(!e.detail.contains(PASSWORD) && !e.detail.contains(&a.tokens.refresh_token));
    }
    let key1 = guardyn_auth::audit::entry_key(1);
    let original = kv.get(&key1).await.unwrap().unwrap();
    let mut altered = original.clone();
    let last = altered.len() - 40;
    altered[last] ^= 1;
    kv.put(&key1, &altered).await.unwrap();
    assert!(guardyn_auth::audit::verify(&*kv).await.is_err());
    kv.put(&key1, &original).await.unwrap();
    assert_eq!(guardyn_auth::audit::verify(&*kv).await.unwrap().checked, n);
    kv.delete(&key1).await.unwrap();
    assert!(matches!(
        guardyn_auth::audit::verify(&*kv).await,
        Err(guardyn_auth::audit::AuditViolation::Missing(1))
    ));
    kv.put(&key1, &original).await.unwrap();
    let last_key = guardyn_auth::audit::entry_key(n);
    kv.delete(&last_key).await.unwrap();
    assert!(matches!(
        guardyn_auth::audit::verify(&*kv).await,
        Err(guardyn_auth::audit::AuditViolation::Truncated { .. })
    ));
    store.close().await;
}
