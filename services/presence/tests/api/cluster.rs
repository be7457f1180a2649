//! Two instances on a real NATS server: presence and typing cross instances.

use guardyn::config::EventsBackend;
use guardyn_common::clock::ManualClock;
use guardyn_proto::guardyn::presence::v1::PresenceState;
use guardyn_proto::guardyn::presence::v1::set_typing_request::Target;
use guardyn_testkit::NatsServer;

use crate::typing::{next_typing, typing};
use crate::*;

#[tokio::test]
async fn updates_cross_instances_through_nats() {
    let Some(nats) = NatsServer::start_or_skip() else {
        return;
    };
    let clock = ManualClock::new();
    let on_nats = |url: String| {
        move |c: &mut guardyn::config::Config| {
            c.events.backend = EventsBackend::Nats;
            c.events.nats_url = url;
        }
    };
    let a = start_on(clock.clone(), on_nats(nats.url.clone())).await;
    let b = start_on(clock.clone(), on_nats(nats.url.clone())).await;
    let (x, viewer) = (account(), account());

    // The viewer is connected to A; x's device to B.
    let (mut stream, initial) = subscribe(&a, &viewer, 1, &[&x]).await;
    assert_eq!(initial[0].state(), PresenceState::Offline);
    heartbeat(&b, &x, 1).await;
    assert_eq!(
        next_presence(&mut stream).await.state(),
        PresenceState::Online
    );
    // A second device of x on A: x stays online when the one on B expires.
    heartbeat(&a, &x, 2).await;
    clock.advance(secs(60));
    heartbeat(&a, &x, 2).await;
    clock.advance(secs(31));
    // B's device expired at 90 s; A's lives until 150 s. Typing from B, then the expiry of
    // A's device, are the next events the viewer sees.
    typing(&b, &x, Target::PeerAccountId(viewer.clone()), true).await;
    let t = next_typing(&mut stream).await;
    assert_eq!(t.sender_account_id, x);
    assert!(t.typing);
    typing(&b, &x, Target::PeerAccountId(viewer.clone()), false).await;
    assert!(!next_typing(&mut stream).await.typing);
    clock.advance(secs(60));
    let p = next_presence(&mut stream).await;
    assert_eq!(p.state(), PresenceState::Offline);
    assert!(p.last_seen.is_some());
    assert_eq!(state_of(&a, &viewer, &x).await, PresenceState::Offline);
}
