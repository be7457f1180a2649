//! Heartbeats, expiry, status, bulk reads, subscriptions and input validation.

use guardyn_common::error::{reason_of, violations_of};
use guardyn_proto::guardyn::presence::v1::subscribe_response::Event;
use guardyn_proto::guardyn::presence::v1::{
    GetPresenceRequest, HeartbeatRequest, PresenceState, PresenceStatus, SetStatusRequest,
    SubscribeRequest,
};
use tonic::Code;

use crate::*;

#[tokio::test]
async fn heartbeat_tells_the_interval_and_missed_intervals_take_the_device_offline() {
    let (server, clock) = start(|_| {}).await;
    let (x, viewer) = (account(), account());
    let resp = client(&server)
        .heartbeat(req(&server, &x, 1, HeartbeatRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.interval.unwrap().seconds, 30);
    assert!(resp.server_time.is_some());
    assert_eq!(state_of(&server, &viewer, &x).await, PresenceState::Online);

    let (mut stream, initial) = subscribe(&server, &viewer, 1, &[&x]).await;
    assert_eq!(initial[0].state(), PresenceState::Online);
    assert_eq!(initial[0].last_seen, None);

    // Three missed 30 s intervals: offline, with a last seen.
    clock.advance(secs(91));
    let p = next_presence(&mut stream).await;
    assert_eq!(p.account_id, x);
    assert_eq!(p.state(), PresenceState::Offline);
    let last_seen = p.last_seen.unwrap().seconds;
    assert_eq!(last_seen % 60, 0, "last seen is coarsened to the minute");
    assert_eq!(state_of(&server, &viewer, &x).await, PresenceState::Offline);

    // The next heartbeat brings it back.
    heartbeat(&server, &x, 1).await;
    assert_eq!(
        next_presence(&mut stream).await.state(),
        PresenceState::Online
    );
}

#[tokio::test]
async fn heartbeats_keep_a_device_online_and_an_account_is_online_while_any_device_is() {
    let (server, clock) = start(|_| {}).await;
    let (x, sentinel, viewer) = (account(), account(), account());
    heartbeat(&server, &x, 1).await;
    heartbeat(&server, &x, 2).await;
    let (mut stream, initial) = subscribe(&server, &viewer, 1, &[&x, &sentinel]).await;
    assert_eq!(initial.len(), 2);
    // Device 1 keeps heartbeating every interval; device 2 goes silent and expires at 90 s.
    for i in 1..=3 {
        clock.advance(secs(30));
        heartbeat(&server, &x, 1).await;
        if i == 2 {
            heartbeat(&server, &sentinel, 1).await;
            assert_eq!(next_presence(&mut stream).await.account_id, sentinel);
        }
    }
    // At 151 s the sentinel (last heartbeat at 60 s) expires; device 1 (last at 90 s) does
    // not, so x never went offline: the sentinel's is the next event.
    clock.advance(secs(61));
    let p = next_presence(&mut stream).await;
    assert_eq!(
        (p.account_id.as_str(), p.state()),
        (sentinel.as_str(), PresenceState::Offline)
    );
    assert_eq!(state_of(&server, &viewer, &x).await, PresenceState::Online);
}

#[tokio::test]
async fn status_and_custom_text_are_shown_while_online_and_only_for_the_caller() {
    let (server, _clock) = start(|_| {}).await;
    let (x, other, viewer) = (account(), account(), account());
    heartbeat(&server, &x, 1).await;
    heartbeat(&server, &other, 1).await;
    let (mut stream, _) = subscribe(&server, &viewer, 1, &[&x]).await;
    client(&server)
        .set_status(req(
            &server,
            &x,
            1,
            SetStatusRequest {
                status: PresenceStatus::Away as i32,
                custom_text: "lunch".into(),
            },
        ))
        .await
        .unwrap();
    let p = next_presence(&mut stream).await;
    assert_eq!(
        (p.state(), p.custom_text.as_str()),
        (PresenceState::Away, "lunch")
    );
    let all = get(&server, &viewer, &[&x, &other]).await;
    assert_eq!(all[0].state(), PresenceState::Away);
    assert_eq!(
        all[1].state(),
        PresenceState::Online,
        "only the caller's account changed"
    );
    assert_eq!(all[1].custom_text, "");

    let mut c = client(&server);
    let err = c
        .set_status(req(
            &server,
            &x,
            1,
            SetStatusRequest {
                status: PresenceStatus::Online as i32,
                custom_text: "x".repeat(141),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(violations_of(&err)[0].field, "custom_text");
    let err = c
        .set_status(req(&server, &x, 1, SetStatusRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(violations_of(&err)[0].field, "status");
}

#[tokio::test]
async fn bulk_reads_and_subscriptions_are_bounded_and_validated() {
    let (server, _clock) = start(|c| c.presence.max_subscribe_accounts = 2).await;
    let viewer = account();
    let mut c = client(&server);
    let too_many: Vec<String> = (0..101).map(|_| account()).collect();
    let err = c
        .get_presence(req(
            &server,
            &viewer,
            1,
            GetPresenceRequest {
                account_ids: too_many.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason_of(&err).as_deref(), Some("PAYLOAD_TOO_LARGE"));

    let err = c
        .get_presence(req(
            &server,
            &viewer,
            1,
            GetPresenceRequest {
                account_ids: vec![account(), "not-a-uuid".into()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations_of(&err)[0].field, "account_ids[1]");

    let err = c
        .subscribe(req(
            &server,
            &viewer,
            1,
            SubscribeRequest {
                account_ids: too_many[..3].to_vec(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err).as_deref(), Some("PAYLOAD_TOO_LARGE"));

    // A never-seen account is reported offline without last seen, in request order.
    let (a, b) = (account(), account());
    heartbeat(&server, &b, 1).await;
    let got = get(&server, &viewer, &[&a, &b]).await;
    assert_eq!(got[0].account_id, a);
    assert_eq!(got[0].state(), PresenceState::Offline);
    assert_eq!(got[0].last_seen, None);
    assert_eq!(got[1].state(), PresenceState::Online);

    // No token, no presence.
    let err = c
        .get_presence(GetPresenceRequest {
            account_ids: vec![a],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_new_subscribe_from_the_same_device_replaces_the_old_and_shutdown_ends_streams() {
    let (server, _clock) = start(|_| {}).await;
    let (x, viewer) = (account(), account());
    let (mut old, _) = subscribe(&server, &viewer, 1, &[&x]).await;
    let (mut new, _) = subscribe(&server, &viewer, 1, &[&x]).await;
    let ended = tokio::time::timeout(secs(20), old.message()).await.unwrap();
    assert!(
        matches!(ended, Ok(None)),
        "replaced stream ends with OK: {ended:?}"
    );
    // Another device of the same account keeps its own stream.
    let (_other_device, _) = subscribe(&server, &viewer, 2, &[&x]).await;

    heartbeat(&server, &x, 1).await;
    assert_eq!(next_presence(&mut new).await.state(), PresenceState::Online);

    let stopping = tokio::spawn(server.stop());
    let end = loop {
        match tokio::time::timeout(secs(20), new.message()).await.unwrap() {
            Ok(Some(m)) if matches!(m.event, Some(Event::Keepalive(_))) => continue,
            other => break other,
        }
    };
    match end {
        Err(status) => assert_eq!(status.code(), Code::Unavailable),
        Ok(None) => {}
        Ok(Some(m)) => panic!("unexpected {m:?}"),
    }
    stopping.await.unwrap().unwrap();
}
