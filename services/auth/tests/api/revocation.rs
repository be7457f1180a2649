//! Session revocation survives restarts: the revoked session's still-unexpired access token is
//! refused by a server restarted on the same data.

use guardyn_proto::guardyn::auth::v1 as pb;
use tonic::Code;

use super::helpers::*;

/// An authenticated call that any live session may make.
pub async fn probe(env: &Env, token: &str) -> Result<(), tonic::Status> {
    env.auth()
        .list_sessions(authed(pb::ListSessionsRequest::default(), token))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_revoked_session_stays_revoked_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d1 = data.clone();
    let env = start_with(move |c| c.storage.data_dir = d1).await;
    let rita = env.register("rita", 1).await;
    let kept = env.register("kent", 1).await;
    probe(&env, rita.token()).await.unwrap();
    env.auth()
        .logout(authed(
            pb::LogoutRequest {
                all_sessions: false,
            },
            rita.token(),
        ))
        .await
        .unwrap();
    let refused = probe(&env, rita.token()).await.unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::Unauthenticated, "SESSION_REVOKED")
    );
    env.server.stop().await.unwrap();

    // The token has not expired and the signing key is the same after the restart: only the
    // persisted revocation refuses it.
    let d2 = data.clone();
    let env = start_with(move |c| c.storage.data_dir = d2).await;
    let refused = probe(&env, rita.token()).await.unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::Unauthenticated, "SESSION_REVOKED")
    );
    probe(&env, kept.token()).await.unwrap();
    env.server.stop().await.unwrap();
}

#[tokio::test]
async fn persisted_revocations_are_swept_once_their_tokens_expired() {
    use guardyn_common::auth::persist_revocation;
    use guardyn_storage::{Direction, KeyRange, Txn};

    let env = start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let kv = env.server.kv();
    let txn = persist_revocation(Txn::new(), "expired", now - 1);
    let txn = persist_revocation(txn, "live", now + 900);
    assert!(kv.commit(txn).await.unwrap().is_committed());
    let stored = || async {
        kv.scan(KeyRange::prefix(b"revoked/v1/"), Direction::Forward, 10)
            .await
            .unwrap()
            .len()
    };
    // A sweeper pass may already have run since the commit: at most the expired entry is gone.
    assert!(stored().await >= 1);
    // Wake the sweeper.
    env.clock.advance(std::time::Duration::from_secs(1));
    for _ in 0..200 {
        if stored().await == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let left = kv
        .scan(KeyRange::prefix(b"revoked/v1/"), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].key.ends_with(b"/live"));
}
