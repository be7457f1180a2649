//! Listen ends when its caller's authentication does: at the token's expiry, on a revocation
//! that races the stream's start, and after a restart for a revocation persisted before it.
//! Until then an idle stream gets keepalives.

use std::time::Duration;

use guardyn_common::auth::persist_revocation;
use guardyn_common::events::Payload as _;
use guardyn_common::events::auth::{SESSION_REVOKED, SessionRevoked};
use guardyn_common::{AccountId, DeviceId};
use guardyn_proto::guardyn::messaging::v1::ListenRequest;
use guardyn_proto::guardyn::messaging::v1::listen_response::Item;
use guardyn_storage::Txn;
use tonic::{Code, Status};

use crate::common::*;

/// The status a stream ends with (skipping what it still delivers), within 10 s.
async fn end_status(
    stream: &mut tonic::Streaming<guardyn_proto::guardyn::messaging::v1::ListenResponse>,
) -> Status {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream ends within 10 s")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended with OK"),
            Err(status) => return status,
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Device 1 of `account` listening on a token that expires after `ttl`, past its (empty)
/// backlog.
async fn listen_expiring(
    env: &Env,
    account: &str,
    ttl: Duration,
) -> tonic::Streaming<guardyn_proto::guardyn::messaging::v1::ListenResponse> {
    env.dir.set(account, &[(1, 11)]);
    let token = env.server.token_with_ttl(account, 1, "expiring", ttl);
    let mut stream = env
        .messaging()
        .listen(authed(ListenRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    expect_queue_empty(&mut stream).await;
    stream
}

#[tokio::test]
async fn listen_ends_with_token_expired_when_its_token_expires() {
    let env = Env::start_with(|c| c.tokens.leeway_secs = 0).await;
    let mut stream = listen_expiring(&env, &acct(1), Duration::from_secs(2)).await;
    let end = end_status(&mut stream).await;
    assert_eq!(end.code(), Code::Unauthenticated);
    assert_eq!(reason(&end), "TOKEN_EXPIRED");
}

/// An idle stream is kept alive by keepalives (one timer serves them and the token's
/// expiry), and still ends when the token expires.
#[tokio::test]
async fn an_idle_stream_gets_keepalives_until_its_token_expires() {
    let env = Env::start_with(|c| {
        c.tokens.leeway_secs = 0;
        c.messaging.keepalive_secs = 1;
    })
    .await;
    let mut stream = listen_expiring(&env, &acct(2), Duration::from_secs(6)).await;
    for _ in 0..2 {
        match next(&mut stream).await {
            Item::Keepalive(_) => {}
            other => panic!("expected a keepalive, got {other:?}"),
        }
    }
    let end = end_status(&mut stream).await;
    assert_eq!(end.code(), Code::Unauthenticated);
    assert_eq!(reason(&end), "TOKEN_EXPIRED");
}

/// A revocation whose event every subscriber missed (lagged) is reloaded from storage and
/// still ends the stream. The test runtime is single-threaded, so the burst below is published
/// before any subscriber runs.
#[tokio::test]
async fn a_revocation_missed_by_lagging_subscribers_still_ends_the_stream() {
    let env = Env::start_with(|c| c.events.subscriber_buffer = 1).await;
    let a = acct(2);
    env.dir.set(&a, &[(1, 11)]);
    let account = AccountId::parse(&a).unwrap();
    let token = env.server.token(&a, 1, "lagged");
    let mut stream = env
        .messaging()
        .listen(authed(ListenRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    expect_queue_empty(&mut stream).await;

    // What auth does: persist the revocation, then publish it; a burst of other revocations
    // right behind it overflows every subscriber's buffer.
    let until = unix_now() + 900;
    let txn = persist_revocation(Txn::new(), "lagged", until);
    assert!(env.server.kv().commit(txn).await.unwrap().is_committed());
    let bus = env.server.bus();
    for sid in std::iter::once("lagged".to_owned()).chain((0..8).map(|i| format!("other-{i}"))) {
        let event = SessionRevoked {
            session_id: sid,
            account,
            device: DeviceId::new(1).unwrap(),
            tokens_valid_until: until,
        };
        bus.publish(SESSION_REVOKED, event.encode()).await.unwrap();
    }
    let end = end_status(&mut stream).await;
    assert_eq!(end.code(), Code::Unauthenticated);
    assert_eq!(reason(&end), "SESSION_REVOKED");
}

#[tokio::test]
async fn a_persisted_revocation_is_honoured_after_a_restart_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let clock = guardyn_common::clock::ManualClock::new();
    let env = Env::start_on(&data, clock.clone()).await;
    let a = acct(3);
    env.dir.set(&a, &[(1, 11)]);
    let token = env.server.token(&a, 1, "persisted");
    let mut stream = env
        .messaging()
        .listen(authed(ListenRequest {}, &token))
        .await
        .unwrap()
        .into_inner();
    expect_queue_empty(&mut stream).await;
    // What auth writes when it revokes the session, in the same store.
    let txn = persist_revocation(Txn::new(), "persisted", unix_now() + 900);
    assert!(env.server.kv().commit(txn).await.unwrap().is_committed());
    drop(stream);
    env.server.stop().await.unwrap();

    let env = Env::start_on(&data, clock).await;
    env.dir.set(&a, &[(1, 11)]);
    // A new token of the session (the testkit signs with a fresh key per server).
    let token = env.server.token(&a, 1, "persisted");
    let refused = env
        .messaging()
        .listen(authed(ListenRequest {}, &token))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(reason(&refused), "SESSION_REVOKED");
}
