//! LookupUsername and SetUsernameDiscoverable: exact matches only, one indistinguishable
//! NOT_FOUND for unknown, malformed and hidden names, authentication and the per-caller limit.

use guardyn_common::ratelimit::RateLimit;
use guardyn_proto::guardyn::auth::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt as _;

use super::helpers::*;

async fn lookup(env: &Env, token: &str, name: &str) -> Result<String, tonic::Status> {
    env.auth()
        .lookup_username(authed(
            pb::LookupUsernameRequest {
                username: name.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().account_id)
}

async fn set_discoverable(env: &Env, token: &str, discoverable: bool) {
    env.auth()
        .set_username_discoverable(authed(
            pb::SetUsernameDiscoverableRequest { discoverable },
            token,
        ))
        .await
        .unwrap();
}

/// What a client can observe of a refusal.
fn shape(err: &tonic::Status) -> (Code, String, String) {
    (err.code(), reason(err), err.message().to_owned())
}

#[tokio::test]
async fn names_resolve_exactly_and_normalised_like_login() {
    let env = start().await;
    let a = env.register("alice", 0).await;
    let b = env.register("bob.b_1", 0).await;
    assert_eq!(
        lookup(&env, a.token(), "bob.b_1").await.unwrap(),
        b.account_id
    );
    // Case and surrounding blanks are normalised as at registration and login.
    assert_eq!(
        lookup(&env, a.token(), " BoB.B_1 ").await.unwrap(),
        b.account_id
    );
    env.login(" BoB.B_1 ", 1).await.unwrap();
    // One's own name resolves too.
    assert_eq!(
        lookup(&env, a.token(), "alice").await.unwrap(),
        a.account_id
    );
    // No prefix, suffix or fuzzy matches.
    for near in ["bob", "bob.b_", "bob.b_12", "bob.b-1", "ob.b_1", "bob*"] {
        let err = lookup(&env, a.token(), near).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{near}");
    }
}

#[tokio::test]
async fn unknown_malformed_and_hidden_names_get_the_same_not_found() {
    let env = start().await;
    let a = env.register("alice", 0).await;
    let b = env.register("bob", 0).await;
    let unknown = shape(&lookup(&env, a.token(), "nobody").await.unwrap_err());
    assert_eq!(unknown.0, Code::NotFound);
    assert_eq!(unknown.1, "NOT_FOUND");
    for malformed in ["", "x", "1abc", "al ice", &"a".repeat(5000)] {
        let err = lookup(&env, a.token(), malformed).await.unwrap_err();
        assert_eq!(shape(&err), unknown, "{malformed:?}");
    }
    // Bob hides his name: the answer is the unknown one, to everyone, Bob included.
    set_discoverable(&env, b.token(), false).await;
    let hidden = shape(&lookup(&env, a.token(), "bob").await.unwrap_err());
    assert_eq!(hidden, unknown);
    assert_eq!(
        shape(&lookup(&env, b.token(), "bob").await.unwrap_err()),
        unknown
    );
    // Hiding twice is fine; showing again makes it resolvable.
    set_discoverable(&env, b.token(), false).await;
    set_discoverable(&env, b.token(), true).await;
    assert_eq!(lookup(&env, a.token(), "bob").await.unwrap(), b.account_id);
}

#[tokio::test]
async fn lookups_need_a_token() {
    let env = start().await;
    env.register("alice", 0).await;
    let err = env
        .auth()
        .lookup_username(pb::LookupUsernameRequest {
            username: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = env
        .auth()
        .set_username_discoverable(pb::SetUsernameDiscoverableRequest {
            discoverable: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = lookup(&env, "not-a-token", "alice").await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn lookups_are_rate_limited_per_caller() {
    let env = start_with(|c| {
        c.auth.limits.lookup_per_account = RateLimit::new(3, 1);
    })
    .await;
    let a = env.register("alice", 0).await;
    let b = env.register("bob", 0).await;
    // Hits and misses both count.
    lookup(&env, a.token(), "bob").await.unwrap();
    lookup(&env, a.token(), "nobody").await.unwrap_err();
    lookup(&env, a.token(), "bob").await.unwrap();
    let err = lookup(&env, a.token(), "bob").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "RATE_LIMITED");
    assert!(err.get_details_retry_info().is_some());
    // Another caller has its own bucket.
    assert_eq!(
        lookup(&env, b.token(), "alice").await.unwrap(),
        a.account_id
    );
}
