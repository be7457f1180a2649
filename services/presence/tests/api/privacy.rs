//! Invisible status and last-seen visibility, on every read path.

use guardyn_common::error::{reason_of, violations_of};
use guardyn_proto::guardyn::presence::v1::{
    GetVisibilityRequest, LastSeenVisibility, PresenceState, PresenceStatus, SetStatusRequest,
    SetVisibilityRequest,
};

use crate::*;

async fn set_status(server: &guardyn_testkit::TestServer, x: &str, status: PresenceStatus) {
    client(server)
        .set_status(req(
            server,
            x,
            1,
            SetStatusRequest {
                status: status as i32,
                custom_text: "secret plans".into(),
            },
        ))
        .await
        .unwrap();
}

async fn set_visibility(
    server: &guardyn_testkit::TestServer,
    x: &str,
    visibility: LastSeenVisibility,
    allowed: &[&str],
) {
    client(server)
        .set_visibility(req(
            server,
            x,
            1,
            SetVisibilityRequest {
                visibility: visibility as i32,
                allowed_account_ids: allowed.iter().map(|s| (*s).to_owned()).collect(),
            },
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn invisible_accounts_appear_offline_to_others_everywhere_and_keep_their_last_seen() {
    let (server, clock) = start(|_| {}).await;
    let (x, viewer) = (account(), account());
    // x watches itself: it always sees its real state, which tells the test when each
    // change has been processed.
    let (mut own, _) = subscribe(&server, &x, 3, &[&x]).await;
    let (mut stream, _) = subscribe(&server, &viewer, 1, &[&x]).await;
    heartbeat(&server, &x, 1).await;
    assert_eq!(next_presence(&mut own).await.state(), PresenceState::Online);
    assert_eq!(
        next_presence(&mut stream).await.state(),
        PresenceState::Online
    );
    clock.advance(secs(91));
    assert_eq!(
        next_presence(&mut own).await.state(),
        PresenceState::Offline
    );
    let first_seen = next_presence(&mut stream).await.last_seen.unwrap();

    set_status(&server, &x, PresenceStatus::Invisible).await;
    clock.advance(secs(600));
    heartbeat(&server, &x, 1).await;
    let mine = next_presence(&mut own).await;
    assert_eq!(mine.state(), PresenceState::Online);
    assert_eq!(mine.custom_text, "secret plans");
    // Bulk read and a fresh subscription: offline, old last seen, no custom text.
    let seen = &get(&server, &viewer, &[&x]).await[0];
    assert_eq!(seen.state(), PresenceState::Offline);
    assert_eq!(seen.custom_text, "");
    assert_eq!(seen.last_seen, Some(first_seen));
    let (mut fresh, initial) = subscribe(&server, &viewer, 2, &[&x]).await;
    assert_eq!(initial[0].state(), PresenceState::Offline);
    assert_eq!(state_of(&server, &x, &x).await, PresenceState::Online);

    // Going offline while invisible does not move last seen.
    clock.advance(secs(91));
    let mine = next_presence(&mut own).await;
    assert_eq!(mine.state(), PresenceState::Offline);
    assert_eq!(mine.last_seen, Some(first_seen));

    // Visible again: the viewers see the truth.
    set_status(&server, &x, PresenceStatus::Online).await;
    heartbeat(&server, &x, 1).await;
    assert_eq!(
        next_presence(&mut fresh).await.state(),
        PresenceState::Online
    );
    clock.advance(secs(91));
    let p = next_presence(&mut fresh).await;
    assert_eq!(p.state(), PresenceState::Offline);
    assert!(p.last_seen.unwrap().seconds > first_seen.seconds);
    // The first stream saw nothing while x was invisible.
    assert_eq!(
        next_presence(&mut stream).await.state(),
        PresenceState::Online
    );
}

#[tokio::test]
async fn last_seen_follows_the_visibility_setting_in_reads_and_subscriptions() {
    let (server, clock) = start(|_| {}).await;
    let (x, friend, stranger) = (account(), account(), account());
    heartbeat(&server, &x, 1).await;
    let (mut friend_stream, _) = subscribe(&server, &friend, 1, &[&x]).await;
    let (mut stranger_stream, _) = subscribe(&server, &stranger, 1, &[&x]).await;
    set_visibility(&server, &x, LastSeenVisibility::AllowList, &[&friend]).await;

    clock.advance(secs(91));
    let to_friend = next_presence(&mut friend_stream).await;
    let to_stranger = next_presence(&mut stranger_stream).await;
    assert_eq!(to_friend.state(), PresenceState::Offline);
    assert!(to_friend.last_seen.is_some());
    assert_eq!(to_stranger.state(), PresenceState::Offline);
    assert_eq!(to_stranger.last_seen, None);

    assert!(get(&server, &friend, &[&x]).await[0].last_seen.is_some());
    assert_eq!(get(&server, &stranger, &[&x]).await[0].last_seen, None);
    let (_, initial) = subscribe(&server, &stranger, 2, &[&x]).await;
    assert_eq!(initial[0].last_seen, None);

    // Nobody: hidden from the friend too (pushed to the open stream), never from x itself.
    set_visibility(&server, &x, LastSeenVisibility::Nobody, &[]).await;
    let to_friend = next_presence(&mut friend_stream).await;
    assert_eq!(to_friend.last_seen, None);
    assert_eq!(get(&server, &friend, &[&x]).await[0].last_seen, None);
    assert!(get(&server, &x, &[&x]).await[0].last_seen.is_some());

    // The allow list is kept while another visibility is selected.
    let v = client(&server)
        .get_visibility(req(&server, &x, 1, GetVisibilityRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.visibility(), LastSeenVisibility::Nobody);
    assert_eq!(v.allowed_account_ids, vec![friend.clone()]);

    set_visibility(&server, &x, LastSeenVisibility::Everyone, &[]).await;
    assert!(
        next_presence(&mut stranger_stream)
            .await
            .last_seen
            .is_some()
    );
    assert!(get(&server, &stranger, &[&x]).await[0].last_seen.is_some());
}

#[tokio::test]
async fn visibility_input_is_validated() {
    let (server, _clock) = start(|_| {}).await;
    let x = account();
    let mut c = client(&server);
    let too_many: Vec<String> = (0..1001).map(|_| account()).collect();
    let err = c
        .set_visibility(req(
            &server,
            &x,
            1,
            SetVisibilityRequest {
                visibility: LastSeenVisibility::AllowList as i32,
                allowed_account_ids: too_many,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err).as_deref(), Some("PAYLOAD_TOO_LARGE"));
    let err = c
        .set_visibility(req(
            &server,
            &x,
            1,
            SetVisibilityRequest {
                visibility: LastSeenVisibility::AllowList as i32,
                allowed_account_ids: vec!["ABC".into()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(violations_of(&err)[0].field, "allowed_account_ids[0]");
}
