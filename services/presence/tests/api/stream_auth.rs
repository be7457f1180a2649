//! Subscribe ends when its caller's authentication does: at the token's expiry
//! (TOKEN_EXPIRED) and when its session is revoked (SESSION_REVOKED).

use guardyn_common::events::Payload as _;
use guardyn_common::events::auth::{SESSION_REVOKED, SessionRevoked};
use guardyn_common::{AccountId, DeviceId};
use guardyn_proto::guardyn::presence::v1::SubscribeRequest;
use tonic::Code;

use crate::*;

/// The status the stream ends with, skipping what it still delivers.
async fn end_status(stream: &mut Streaming<SubscribeResponse>) -> tonic::Status {
    loop {
        match tokio::time::timeout(secs(10), stream.message())
            .await
            .expect("the stream ends within 10 s")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended with OK"),
            Err(status) => return status,
        }
    }
}

fn reason(status: &tonic::Status) -> String {
    guardyn_common::error::reason_of(status).unwrap_or_default()
}

#[tokio::test]
async fn subscribe_ends_with_token_expired_when_its_token_expires() {
    let (server, _clock) = start(|c| c.tokens.leeway_secs = 0).await;
    let (viewer, peer) = (account(), account());
    let token = server.token_with_ttl(&viewer, 1, "short", secs(2));
    let mut r = tonic::Request::new(SubscribeRequest {
        account_ids: vec![peer],
    });
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut stream = client(&server).subscribe(r).await.unwrap().into_inner();
    let end = end_status(&mut stream).await;
    assert_eq!(end.code(), Code::Unauthenticated);
    assert_eq!(reason(&end), "TOKEN_EXPIRED");
}

#[tokio::test]
async fn subscribe_ends_with_session_revoked_when_its_session_is_revoked() {
    let (server, _clock) = start(|_| {}).await;
    let (viewer, peer) = (account(), account());
    let (mut stream, _) = subscribe(&server, &viewer, 1, &[&peer]).await;
    // `req` signs tokens for session `session-<device>`.
    let revoked = SessionRevoked {
        session_id: "session-1".into(),
        account: AccountId::parse(&viewer).unwrap(),
        device: DeviceId::new(1).unwrap(),
        tokens_valid_until: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 900,
    };
    server
        .bus()
        .publish(SESSION_REVOKED, revoked.encode())
        .await
        .unwrap();
    let end = end_status(&mut stream).await;
    assert_eq!(end.code(), Code::Unauthenticated);
    assert_eq!(reason(&end), "SESSION_REVOKED");
}
