//! Typing indicators: delivery, expiry, visibility, rate limits.

use guardyn_common::error::{reason_of, violations_of};
use guardyn_common::ratelimit::RateLimit;
use guardyn_proto::guardyn::presence::v1::set_typing_request::Target;
use guardyn_proto::guardyn::presence::v1::subscribe_response::Event;
use guardyn_proto::guardyn::presence::v1::{
    LastSeenVisibility, PresenceStatus, SetStatusRequest, SetTypingRequest, SetVisibilityRequest,
    TypingEvent,
};
use guardyn_testkit::TestServer;
use tonic::Code;

use crate::*;

pub async fn typing(server: &TestServer, from: &str, target: Target, on: bool) {
    client(server)
        .set_typing(req(
            server,
            from,
            1,
            SetTypingRequest {
                target: Some(target),
                typing: on,
            },
        ))
        .await
        .unwrap();
}

pub async fn next_typing(stream: &mut tonic::Streaming<SubscribeResponse>) -> TypingEvent {
    match next(stream).await {
        Event::Typing(t) => t,
        other => panic!("expected typing, got {other:?}"),
    }
}

#[tokio::test]
async fn peer_typing_reaches_only_the_peer_and_expires_without_a_refresh() {
    let (server, clock) = start(|_| {}).await;
    let (alice, bob, carol) = (account(), account(), account());
    // Bob subscribes to nobody in particular; carol watches alice.
    let (mut bob_stream, _) = subscribe(&server, &bob, 1, &[]).await;
    let (mut carol_stream, _) = subscribe(&server, &carol, 1, &[&alice]).await;

    typing(&server, &alice, Target::PeerAccountId(bob.clone()), true).await;
    let t = next_typing(&mut bob_stream).await;
    assert_eq!(t.sender_account_id, alice);
    assert!(t.typing);
    assert_eq!(t.group_id, None);
    let expires = t.expires_at.unwrap().seconds;

    // A refresh pushes the expiry; without further refreshes it lapses.
    clock.advance(secs(5));
    typing(&server, &alice, Target::PeerAccountId(bob.clone()), true).await;
    assert!(
        next_typing(&mut bob_stream)
            .await
            .expires_at
            .unwrap()
            .seconds
            >= expires + 5
    );
    clock.advance(secs(9));
    // Still within the refreshed lifetime: an explicit stop arrives before any expiry.
    typing(&server, &alice, Target::PeerAccountId(bob.clone()), false).await;
    assert!(!next_typing(&mut bob_stream).await.typing);

    typing(&server, &alice, Target::PeerAccountId(bob.clone()), true).await;
    assert!(next_typing(&mut bob_stream).await.typing);
    clock.advance(secs(11));
    let t = next_typing(&mut bob_stream).await;
    assert!(!t.typing, "expired without a refresh");

    // Carol watches alice but was not the addressee: her next event is alice's status.
    heartbeat(&server, &alice, 1).await;
    assert!(matches!(next(&mut carol_stream).await, Event::Presence(_)));
}

#[tokio::test]
async fn group_typing_reaches_watchers_of_the_sender_that_may_see_it() {
    let (server, _clock) = start(|_| {}).await;
    let (alice, friend, stranger) = (account(), account(), account());
    client(&server)
        .set_visibility(req(
            &server,
            &alice,
            1,
            SetVisibilityRequest {
                visibility: LastSeenVisibility::AllowList as i32,
                allowed_account_ids: vec![friend.clone()],
            },
        ))
        .await
        .unwrap();
    let (mut friend_stream, _) = subscribe(&server, &friend, 1, &[&alice]).await;
    let (mut stranger_stream, _) = subscribe(&server, &stranger, 1, &[&alice]).await;
    heartbeat(&server, &alice, 1).await;
    next_presence(&mut friend_stream).await;
    next_presence(&mut stranger_stream).await;

    typing(&server, &alice, Target::GroupId(b"group-1".to_vec()), true).await;
    let t = next_typing(&mut friend_stream).await;
    assert_eq!(t.group_id.as_deref(), Some(&b"group-1"[..]));
    assert_eq!(t.sender_account_id, alice);

    // Events about alice arrive in order: the stranger's next one is the status change, so
    // the typing indicator was never sent to it.
    client(&server)
        .set_status(req(
            &server,
            &alice,
            1,
            SetStatusRequest {
                status: PresenceStatus::Away as i32,
                custom_text: String::new(),
            },
        ))
        .await
        .unwrap();
    assert!(matches!(
        next(&mut stranger_stream).await,
        Event::Presence(_)
    ));
    assert!(matches!(next(&mut friend_stream).await, Event::Presence(_)));

    // Invisible senders type to nobody in groups.
    client(&server)
        .set_status(req(
            &server,
            &alice,
            1,
            SetStatusRequest {
                status: PresenceStatus::Invisible as i32,
                custom_text: String::new(),
            },
        ))
        .await
        .unwrap();
    assert!(matches!(next(&mut friend_stream).await, Event::Presence(_)));
    typing(&server, &alice, Target::GroupId(b"group-1".to_vec()), false).await;
    typing(&server, &alice, Target::GroupId(b"group-1".to_vec()), true).await;
    client(&server)
        .set_status(req(
            &server,
            &alice,
            1,
            SetStatusRequest {
                status: PresenceStatus::Online as i32,
                custom_text: String::new(),
            },
        ))
        .await
        .unwrap();
    assert!(matches!(next(&mut friend_stream).await, Event::Presence(_)));
}

#[tokio::test]
async fn typing_is_rate_limited_and_validated() {
    let (server, _clock) = start(|c| c.presence.typing_rate = RateLimit::new(3, 1)).await;
    let (alice, bob) = (account(), account());
    let mut c = client(&server);
    let call = |target: Option<Target>| {
        req(
            &server,
            &alice,
            1,
            SetTypingRequest {
                target,
                typing: true,
            },
        )
    };
    let err = c.set_typing(call(None)).await.unwrap_err();
    assert_eq!(violations_of(&err)[0].field, "target");
    let err = c
        .set_typing(call(Some(Target::PeerAccountId("bob".into()))))
        .await
        .unwrap_err();
    assert_eq!(violations_of(&err)[0].field, "peer_account_id");
    let err = c
        .set_typing(call(Some(Target::PeerAccountId(alice.clone()))))
        .await
        .unwrap_err();
    assert_eq!(violations_of(&err)[0].field, "peer_account_id");
    let err = c
        .set_typing(call(Some(Target::GroupId(Vec::new()))))
        .await
        .unwrap_err();
    assert_eq!(violations_of(&err)[0].field, "group_id");

    for _ in 0..3 {
        c.set_typing(call(Some(Target::PeerAccountId(bob.clone()))))
            .await
            .unwrap();
    }
    let err = c
        .set_typing(call(Some(Target::PeerAccountId(bob.clone()))))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason_of(&err).as_deref(), Some("RATE_LIMITED"));
}
