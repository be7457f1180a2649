//! The admin policy's real-time retention: an old last seen is unknown and deleted.

use guardyn_common::clock::Clock as _;
use guardyn_common::events::presence::Status;
use guardyn_common::ids::AccountId;
use guardyn_common::policy::{self, Policy, Retention};
use guardyn_presence::testing::Store;
use guardyn_proto::guardyn::presence::v1::{PresenceStatus, SetStatusRequest};

use crate::*;

/// Heartbeat until the server tells the policy's interval: the policy is then in force (the
/// cache re-reads it within seconds). The deadline is a safety net, not a timing assertion.
async fn heartbeat_until_interval(server: &guardyn_testkit::TestServer, x: &str, secs: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let resp = client(server)
            .heartbeat(req(server, x, 1, HeartbeatRequest {}))
            .await
            .unwrap()
            .into_inner();
        if resp.interval.unwrap().seconds == secs {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the policy never took effect"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_last_seen_older_than_the_realtime_retention_is_unknown_and_deleted() {
    let (server, clock) = start(|_| {}).await;
    let (x, viewer, never) = (account(), account(), account());
    let policy = Policy {
        heartbeat_min_secs: 45,
        retention: Retention {
            realtime_secs: 600,
            ..Retention::default()
        },
        ..Policy::default()
    };
    policy::save(&*server.kv(), policy, &account(), "test", clock.now_ms())
        .await
        .unwrap();
    heartbeat_until_interval(&server, &x, 45).await;
    // Once more, so the device's expiry surely follows the policy's interval too.
    heartbeat(&server, &x, 1).await;
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
    let (mut stream, _) = subscribe(&server, &viewer, 1, &[&x]).await;

    // Three missed 45 s intervals: offline with a last seen, shown and stored.
    clock.advance(secs(136));
    let p = next_presence(&mut stream).await;
    assert_eq!(p.state(), PresenceState::Offline);
    assert!(p.last_seen.is_some());
    let store = Store::new(server.kv());
    let id = AccountId::parse(&x).unwrap();
    assert!(store.settings(id).await.unwrap().last_seen_ms.is_some());

    // Just inside the retention (600 s after going offline at 136 s): still shown.
    clock.advance(secs(598));
    assert!(get(&server, &viewer, &[&x]).await[0].last_seen.is_some());

    // Past it: the watcher is told, and every read shows what an account that never came
    // online shows, to others and to the account itself.
    clock.advance(secs(3));
    let expired = next_presence(&mut stream).await;
    let unknown = get(&server, &viewer, &[&never]).await.remove(0);
    assert_eq!(unknown.last_seen, None);
    let as_never = |p: Presence| Presence {
        account_id: never.clone(),
        ..p
    };
    assert_eq!(as_never(expired), unknown);
    assert_eq!(
        as_never(get(&server, &viewer, &[&x]).await.remove(0)),
        unknown
    );
    assert_eq!(as_never(get(&server, &x, &[&x]).await.remove(0)), unknown);

    // The sweep deleted it from storage (before telling the watcher), and only it.
    let stored = store.settings(id).await.unwrap();
    assert_eq!(stored.last_seen_ms, None);
    assert_eq!(
        (stored.status, stored.custom_text.as_str()),
        (Status::Away, "lunch")
    );

    // Coming back online and leaving again records a fresh last seen.
    heartbeat(&server, &x, 1).await;
    assert_eq!(
        next_presence(&mut stream).await.state(),
        PresenceState::Away
    );
    clock.advance(secs(136));
    assert!(next_presence(&mut stream).await.last_seen.is_some());
}
