//! The storage sweeper (dead sessions and their index, link codes, lockouts) and ListSessions
//! pagination.

use std::collections::HashSet;
use std::time::Duration;

use guardyn_common::ratelimit::RateLimit;
use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_storage::{Direction, KeyRange};
use tonic::Code;

use super::helpers::*;
use super::sessions::link;

async fn keys(env: &Env, prefix: &str) -> Vec<String> {
    env.server
        .kv()
        .scan(
            KeyRange::prefix(format!("auth/v1/{prefix}/").as_bytes()),
            Direction::Forward,
            10_000,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|p| String::from_utf8_lossy(&p.key).into_owned())
        .collect()
}

/// Wait (real time) until `check` holds for the keys under `prefix`.
async fn eventually(env: &Env, prefix: &str, check: impl Fn(&[String]) -> bool) -> Vec<String> {
    for _ in 0..200 {
        let k = keys(env, prefix).await;
        if check(&k) {
            return k;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{prefix}: {:?}", keys(env, prefix).await);
}

#[tokio::test]
async fn the_sweeper_deletes_dead_records_and_keeps_live_ones() {
    let env = start_with(|c| c.auth.sweep_batch = 2).await;
    let a = env.register("erin", 0).await;
    // A second login replaces (revokes) the first session.
    let second = env.login("erin", 1).await.unwrap();
    let Some(pb::login_response::Outcome::Tokens(live)) = second.outcome else {
        panic!()
    };
    // A link request left unapproved; failed logins for an unknown and a malformed name.
    let ik = guardyn_crypto::IdentityKeyPair::generate();
    super::sessions::request_link(&env, new_device("tablet", &ik, 0)).await;
    for name in ["nobody-here", "Not A Name!"] {
        let _ = env
            .auth()
            .login(pb::LoginRequest {
                username: name.into(),
                password: "wrong password".into(),
                device_id: 1,
            })
            .await
            .unwrap_err();
    }
    assert_eq!(keys(&env, "session").await.len(), 2);
    assert_eq!(keys(&env, "acctsess").await.len(), 2);
    assert_eq!(keys(&env, "link").await.len(), 1);
    assert!(!keys(&env, "lockout").await.is_empty());

    // Past the access token lifetime, the link code expiry and the lockout quiet period.
    env.clock.advance(Duration::from_secs(3600 + 120));
    let sessions = eventually(&env, "session", |k| k.len() == 1).await;
    assert!(sessions[0].ends_with(&live.session_id));
    let index = eventually(&env, "acctsess", |k| k.len() == 1).await;
    assert!(index[0].ends_with(&live.session_id));
    assert!(!index[0].contains(&a.tokens.session_id));
    eventually(&env, "link", <[String]>::is_empty).await;
    eventually(&env, "lockout", <[String]>::is_empty).await;
    // The live session still works.
    env.auth()
        .list_sessions(authed(
            pb::ListSessionsRequest::default(),
            &live.access_token,
        ))
        .await
        .unwrap();

    // Past the refresh token expiry, the live session goes too.
    env.clock.advance(Duration::from_secs(31 * 24 * 3600));
    eventually(&env, "session", <[String]>::is_empty).await;
    eventually(&env, "acctsess", <[String]>::is_empty).await;
}

#[tokio::test]
async fn a_lockout_that_failed_recently_is_kept() {
    let env = start().await;
    let _ = env.login("someone", 1).await.unwrap_err();
    env.clock.advance(Duration::from_secs(600));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(keys(&env, "lockout").await.len(), 1);
}

#[tokio::test]
async fn list_sessions_pages_without_duplicates_or_gaps() {
    let env = start_with(|c| {
        c.auth.max_devices = 30;
        c.auth.limits.link_code_per_account = RateLimit::new(100, 100);
        // Each link is two unauthenticated calls (request, collect) from the test's address.
        c.auth.limits.login_per_address = RateLimit::new(100, 100);
    })
    .await;
    let a = env.register("frank", 0).await;
    let mut expected = HashSet::from([a.tokens.session_id.clone()]);
    for _ in 0..20 {
        let (_, t, _) = link(&env, &a, 0).await;
        expected.insert(t.session_id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let r = env
            .auth()
            .list_sessions(authed(
                pb::ListSessionsRequest {
                    page_size: 6,
                    page_token: token.clone(),
                },
                a.token(),
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(r.sessions.len() <= 6);
        pages += 1;
        seen.extend(r.sessions.into_iter().map(|s| s.session_id));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(pages, 4);
    assert_eq!(seen.len(), 21);
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), expected);
    // The default page holds them all.
    let all = env
        .auth()
        .list_sessions(authed(pb::ListSessionsRequest::default(), a.token()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.sessions.len(), 21);
    assert!(all.next_page_token.is_empty());

    for bad in [
        pb::ListSessionsRequest {
            page_size: 201,
            page_token: String::new(),
        },
        pb::ListSessionsRequest {
            page_size: 0,
            page_token: "not a token!".into(),
        },
        pb::ListSessionsRequest {
            page_size: 0,
            page_token: "bm9wZQ".into(),
        },
    ] {
        let err = env
            .auth()
            .list_sessions(authed(bad, a.token()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
}

#[tokio::test]
async fn unused_mfa_tickets_are_swept_after_they_expire() {
    let env = start().await;
    let a = env.register("gail", 0).await;
    super::mfa::enrol(&env, &a).await;
    // Password accepted, second factor never given: the ticket is left behind.
    let r = env.login("gail", 1).await.unwrap();
    assert!(matches!(
        r.outcome,
        Some(pb::login_response::Outcome::MfaChallenge(_))
    ));
    assert_eq!(keys(&env, "mfaticket").await.len(), 1);
    env.clock.advance(Duration::from_secs(200));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(keys(&env, "mfaticket").await.len(), 1, "not expired yet");
    env.clock.advance(Duration::from_secs(200));
    eventually(&env, "mfaticket", <[String]>::is_empty).await;
}
