//! Auth's events: a removed device goes offline at once, a deleted account's presence is
//! purged. The events are published on the server's bus as auth publishes them.

use guardyn_common::clock::{Clock as _, ManualClock};
use guardyn_events::EventBus;
use guardyn_proto::guardyn::auth::v1::{AccountDeletedEvent, DeviceRemovedEvent};
use guardyn_proto::guardyn::presence::v1::set_typing_request::Target;
use guardyn_proto::guardyn::presence::v1::{
    GetVisibilityRequest, LastSeenVisibility, PresenceState, PresenceStatus, SetStatusRequest,
    SetVisibilityRequest, SubscribeResponse,
};
use guardyn_storage::{Direction, KeyRange};
use guardyn_testkit::TestServer;
use prost::Message as _;

use crate::typing::{next_typing, typing};
use crate::*;

async fn device_removed(bus: &dyn EventBus, account: &str, device: u32) {
    let event = DeviceRemovedEvent {
        account_id: account.to_owned(),
        device_id: device,
    };
    bus.publish("auth.device.removed", event.encode_to_vec().into())
        .await
        .unwrap();
}

async fn account_deleted(bus: &dyn EventBus, account: &str, devices: &[u32]) {
    let event = AccountDeletedEvent {
        account_id: account.to_owned(),
        device_ids: devices.to_vec(),
    };
    bus.publish("auth.account.deleted", event.encode_to_vec().into())
        .await
        .unwrap();
}

/// Keys stored under the account's presence prefix.
async fn stored_keys(server: &TestServer, account: &str) -> usize {
    let mut prefix = b"presence/v1/acct/".to_vec();
    prefix.extend_from_slice(uuid::Uuid::parse_str(account).unwrap().as_bytes());
    prefix.push(b'/');
    server
        .kv()
        .scan(KeyRange::prefix(&prefix), Direction::Forward, 100)
        .await
        .unwrap()
        .len()
}

/// Whether the server ended the stream with OK (after whatever it still had queued).
async fn ended(stream: &mut tonic::Streaming<SubscribeResponse>) -> bool {
    loop {
        match tokio::time::timeout(secs(20), stream.message())
            .await
            .unwrap()
        {
            Ok(Some(_)) => continue,
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn a_removed_device_goes_offline_at_once_with_last_seen_when_it_was_the_last() {
    let (server, clock) = start(|_| {}).await;
    let bus = server.bus();
    let (x, viewer) = (account(), account());
    heartbeat(&server, &x, 1).await;
    heartbeat(&server, &x, 2).await;
    let (mut removed_stream, _) = subscribe(&server, &x, 2, &[&viewer]).await;
    let (mut stream, initial) = subscribe(&server, &viewer, 1, &[&x]).await;
    assert_eq!(initial[0].state(), PresenceState::Online);
    assert_eq!(stored_keys(&server, &x).await, 2, "two device entries");

    // Well inside the 90 s expiry: only the removal can take the devices offline.
    clock.advance(secs(20));
    device_removed(&*bus, &x, 2).await;
    assert!(
        ended(&mut removed_stream).await,
        "the removed device's stream ends"
    );
    device_removed(&*bus, &x, 1).await;
    // Device 2's removal changed nothing the viewer sees (device 1 was online); device 1's
    // was the last: offline, last seen now.
    let p = next_presence(&mut stream).await;
    assert_eq!(p.state(), PresenceState::Offline);
    let now_s = clock.now_ms() / 1000;
    assert_eq!(
        p.last_seen.unwrap().seconds,
        i64::try_from(now_s - now_s % 60).unwrap()
    );
    assert_eq!(state_of(&server, &viewer, &x).await, PresenceState::Offline);
    // Only the record (with last seen) is left.
    assert_eq!(stored_keys(&server, &x).await, 1);

    // A removed device that never heartbeated here changes nothing; the account's other
    // devices keep working.
    device_removed(&*bus, &x, 9).await;
    heartbeat(&server, &x, 3).await;
    assert_eq!(
        next_presence(&mut stream).await.state(),
        PresenceState::Online
    );
}

#[tokio::test]
async fn a_deleted_account_is_purged_and_seen_offline_without_last_seen() {
    let (server, clock) = start(|_| {}).await;
    let bus = server.bus();
    let (x, friend, other) = (account(), account(), account());
    // x watches itself, which tells the test when each change has been processed. x goes
    // offline once (a last seen is stored), then comes back on two devices.
    let (mut own, _) = subscribe(&server, &x, 1, &[&x]).await;
    heartbeat(&server, &x, 1).await;
    assert_eq!(next_presence(&mut own).await.state(), PresenceState::Online);
    clock.advance(secs(91));
    assert!(next_presence(&mut own).await.last_seen.is_some());
    heartbeat(&server, &x, 1).await;
    heartbeat(&server, &x, 2).await;
    assert_eq!(next_presence(&mut own).await.state(), PresenceState::Online);
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
    client(&server)
        .set_visibility(req(
            &server,
            &x,
            1,
            SetVisibilityRequest {
                visibility: LastSeenVisibility::AllowList as i32,
                allowed_account_ids: vec![friend.clone()],
            },
        ))
        .await
        .unwrap();
    let (mut stream, initial) = subscribe(&server, &friend, 1, &[&x]).await;
    assert_eq!(initial[0].state(), PresenceState::Away);
    assert_eq!(initial[0].custom_text, "lunch");
    typing(&server, &x, Target::PeerAccountId(friend.clone()), true).await;
    assert!(next_typing(&mut stream).await.typing);

    account_deleted(&*bus, &x, &[1, 2]).await;
    // Without the purge the friend (allow-listed) would see the stored last seen.
    let p = next_presence(&mut stream).await;
    assert_eq!(p.state(), PresenceState::Offline);
    assert_eq!(p.custom_text, "");
    assert_eq!(p.last_seen, None, "a deleted account has no last seen");
    let t = next_typing(&mut stream).await;
    assert_eq!(
        (t.sender_account_id.as_str(), t.typing),
        (x.as_str(), false)
    );
    assert!(ended(&mut own).await, "the deleted account's streams end");

    assert_eq!(
        stored_keys(&server, &x).await,
        0,
        "record and device entries"
    );
    let seen = &get(&server, &other, &[&x]).await[0];
    assert_eq!(
        (seen.state(), seen.last_seen),
        (PresenceState::Offline, None)
    );
    let (_, initial) = subscribe(&server, &other, 2, &[&x]).await;
    assert_eq!(
        (initial[0].state(), initial[0].last_seen),
        (PresenceState::Offline, None)
    );
    // The settings are gone too (read with a token auth would no longer honour).
    let v = client(&server)
        .get_visibility(req(&server, &x, 1, GetVisibilityRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.visibility(), LastSeenVisibility::Everyone);
    assert!(v.allowed_account_ids.is_empty());
}

#[tokio::test]
async fn a_device_removed_while_connected_to_another_instance_goes_offline_everywhere() {
    let Some(nats) = guardyn_testkit::NatsServer::start_or_skip() else {
        return;
    };
    let clock = ManualClock::new();
    let on_nats = |url: String| {
        move |c: &mut guardyn::config::Config| {
            c.events.backend = guardyn::config::EventsBackend::Nats;
            c.events.nats_url = url;
        }
    };
    let a = start_on(clock.clone(), on_nats(nats.url.clone())).await;
    let b = start_on(clock.clone(), on_nats(nats.url.clone())).await;
    let (x, viewer) = (account(), account());
    let (mut stream, _) = subscribe(&a, &viewer, 1, &[&x]).await;
    let (mut on_b, _) = subscribe(&b, &viewer, 2, &[&x]).await;
    heartbeat(&b, &x, 1).await;
    for s in [&mut stream, &mut on_b] {
        assert_eq!(next_presence(s).await.state(), PresenceState::Online);
    }
    // Auth runs anywhere: here the event comes from A's side of the bus; B, which holds the
    // device, drops it at once.
    device_removed(&*a.bus(), &x, 1).await;
    for s in [&mut stream, &mut on_b] {
        let p = next_presence(s).await;
        assert_eq!(p.state(), PresenceState::Offline);
        assert!(p.last_seen.is_some());
    }
    // B updates its view after its storage: only the record (with last seen) is left.
    assert_eq!(stored_keys(&b, &x).await, 1, "B's device entry is gone");
}
