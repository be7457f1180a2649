//! The push trigger: mail queued for a device with no open Listen stream anywhere in the
//! cluster enqueues one wake-up job (`notification-wake`) per device and window.
//!
//! Jobs are consumed in order, so "no job for X" is shown by a later job for an offline
//! marker device coming first.

use std::time::Duration;

use futures::StreamExt as _;
use guardyn_common::events::Payload as _;
use guardyn_common::events::messaging::{
    LISTEN_ALL, ListenClaim, ListenRelease, UNLISTEN_ALL, listen_subject, unlisten_subject,
};
use guardyn_common::events::notification::{WAKE_QUEUE, WakeJob};
use guardyn_common::{AccountId, DeviceId};
use guardyn_events::{Delivery, JobStream, Subscription};
use guardyn_proto::guardyn::messaging::v1::{SendCommitRequest, SendGroupMessageRequest};
use guardyn_testkit::NatsServer;

use crate::common::*;
use crate::groups::{GROUP_ID, address, client, create, join, mls_envelope};

const SENDER: u32 = 900;

async fn jobs(env: &Env) -> JobStream {
    env.server.bus().consume(WAKE_QUEUE).await.unwrap()
}

/// The next job (acknowledged), as (account, device, urgent).
async fn next_job(jobs: &mut JobStream) -> (String, u32, bool) {
    let job = tokio::time::timeout(Duration::from_secs(10), jobs.next())
        .await
        .expect("a wake-up job within 10 s")
        .expect("job stream open")
        .unwrap();
    let w = WakeJob::decode(job.payload()).unwrap();
    job.ack().await.unwrap();
    (w.account.to_string(), w.device.get(), w.urgent)
}

/// Send one envelope to `to`'s only device.
async fn send(env: &Env, to: &str, id: &str, urgent: bool, online_only: bool) {
    let mut req = send_request(to, &[(1, 1)], id, b"hi", false);
    req.urgent = urgent;
    req.online_only = online_only;
    let from = acct(SENDER);
    env.messaging()
        .send_message(authed(req, &env.token(&from, 1)))
        .await
        .unwrap();
}

/// An account with one device (and the sender's).
fn account(env: &Env, n: u32) -> String {
    let x = acct(n);
    env.dir.set(&x, &[(1, 1)]);
    env.dir.set(&acct(SENDER), &[(1, 1)]);
    x
}

#[tokio::test]
async fn one_job_per_offline_device_and_window_never_for_a_streaming_device() {
    let env = Env::start_with(|c| c.metrics.enabled = true).await;
    let (x, y, marker) = (account(&env, 1), account(&env, 2), account(&env, 3));
    let mut jobs = jobs(&env).await;

    // X streams: mail for it wakes nothing; Y is offline.
    let mut stream = env.listen(&x, 1).await;
    expect_queue_empty(&mut stream).await;
    send(&env, &x, "s1", true, false).await;
    assert_eq!(next_envelope(&mut stream).await.content, b"hi\x01");
    for i in 0..5 {
        send(&env, &y, &format!("b{i}"), false, false).await;
    }
    assert_eq!(next_job(&mut jobs).await, (y.clone(), 1, false));

    // The rest of the burst was coalesced; an urgent message in the same window still goes,
    // once. Online-only mail never wakes.
    send(&env, &y, "u1", true, false).await;
    send(&env, &y, "u2", true, false).await;
    send(&env, &y, "o1", true, true).await;
    drop(stream);
    send(&env, &marker, "m1", false, false).await;
    assert_eq!(next_job(&mut jobs).await, (y.clone(), 1, true));
    assert_eq!(next_job(&mut jobs).await, (marker.clone(), 1, false));

    // After the window, the next message wakes the device again.
    env.clock.advance(Duration::from_millis(2_001));
    send(&env, &y, "after", false, false).await;
    assert_eq!(next_job(&mut jobs).await, (y.clone(), 1, false));

    // A sync copy to the sender's own offline device wakes it too.
    let me = acct(4);
    env.dir.set(&me, &[(1, 1), (2, 1)]);
    let req = send_request(&me, &[(2, 1)], "sync", b"me", true);
    env.messaging()
        .send_message(authed(req, &env.token(&me, 1)))
        .await
        .unwrap();
    assert_eq!(next_job(&mut jobs).await, (me, 2, false));
    // X's stream closed above: it is offline now.
    send(&env, &x, "late", false, false).await;
    assert_eq!(next_job(&mut jobs).await, (x, 1, false));

    let metrics = metrics(&env).await;
    for line in [
        r#"guardyn_messaging_wake_jobs_enqueued_total{instance="testkit",service="messaging"} 6"#,
        r#"guardyn_messaging_wake_jobs_coalesced_total{instance="testkit",service="messaging"} 5"#,
        r#"guardyn_messaging_wake_jobs_failed_total{instance="testkit",service="messaging"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn disabled_wake_jobs_enqueue_nothing() {
    let env = Env::start_with(|c| c.messaging.wake_jobs = false).await;
    let x = account(&env, 1);
    let mut jobs = jobs(&env).await;
    send(&env, &x, "a", true, false).await;
    // Our own marker is the first job in the queue.
    let marker = WakeJob {
        account: AccountId::parse(&acct(7)).unwrap(),
        device: DeviceId::new(3).unwrap(),
        urgent: false,
        queued_at_ms: 1,
    };
    env.server
        .bus()
        .enqueue(WAKE_QUEUE, marker.encode())
        .await
        .unwrap();
    assert_eq!(next_job(&mut jobs).await, (acct(7), 3, false));
}

#[tokio::test]
async fn group_fan_out_wakes_offline_members_only() {
    let env = Env::start().await;
    let (a, b, c) = (acct(11), acct(12), acct(13));
    for x in [&a, &b, &c] {
        env.dir.set(x, &[(1, 1)]);
    }
    let mut jobs = jobs(&env).await;
    let (ca, cb, cc) = (client(&a, 1), client(&b, 1), client(&c, 1));
    let mut ga = create(&env, (&a, 1), &ca).await;
    let bundle = ga
        .add_members(
            &ca,
            &[
                cb.create_key_package().unwrap().as_slice(),
                cc.create_key_package().unwrap().as_slice(),
            ],
        )
        .unwrap();
    env.groups()
        .send_commit(authed(
            SendCommitRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 0,
                commit: bundle.commit.clone(),
                welcome: bundle.welcome.clone(),
                welcome_recipients: vec![address(&b, 1), address(&c, 1)],
                group_info: bundle.group_info.clone().unwrap(),
            },
            &env.token(&a, 1),
        ))
        .await
        .unwrap();
    ga.merge_pending_commit(&ca).unwrap();
    // The Welcome wakes both new members, as the envelope's urgency says (urgent: a new
    // member's first message). The jobs of one fan-out are enqueued together, in any order.
    let mut welcomed = vec![next_job(&mut jobs).await, next_job(&mut jobs).await];
    welcomed.sort();
    assert_eq!(welcomed, vec![(b.clone(), 1, true), (c.clone(), 1, true)]);
    let mut gb = join(&env, &b, 1, &cb, &mls_envelope(&env, &b, 1).await.content).await;
    let _gc = join(&env, &c, 1, &cc, &mls_envelope(&env, &c, 1).await.content).await;
    // Let the server see the two streams end.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // B streams, C does not: an urgent application message wakes C only, urgently.
    env.clock.advance(Duration::from_millis(2_001));
    let mut stream = env.listen(&b, 1).await;
    expect_queue_empty(&mut stream).await;
    let ct = ga.encrypt(&ca, b"hello").unwrap();
    env.groups()
        .send_group_message(authed(
            SendGroupMessageRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 1,
                client_message_id: "g1".into(),
                message: ct,
                urgent: true,
            },
            &env.token(&a, 1),
        ))
        .await
        .unwrap();
    next_envelope(&mut stream).await;
    assert_eq!(next_job(&mut jobs).await, (c.clone(), 1, true));

    // A commit is not urgent; B, still streaming, is not woken by it. B's own message then
    // wakes A, who has no stream.
    env.clock.advance(Duration::from_millis(2_001));
    let update = ga.self_update(&ca).unwrap();
    env.groups()
        .send_commit(authed(
            SendCommitRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 1,
                commit: update.commit.clone(),
                welcome: None,
                welcome_recipients: vec![],
                group_info: update.group_info.clone().unwrap(),
            },
            &env.token(&a, 1),
        ))
        .await
        .unwrap();
    assert_eq!(next_job(&mut jobs).await, (c.clone(), 1, false));
    let commit = next_envelope(&mut stream).await;
    gb.process_message(&cb, &commit.content).unwrap();
    let ct = gb.encrypt(&cb, b"hi a").unwrap();
    env.groups()
        .send_group_message(authed(
            SendGroupMessageRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 2,
                client_message_id: "g2".into(),
                message: ct,
                urgent: false,
            },
            &env.token(&b, 1),
        ))
        .await
        .unwrap();
    // C was woken within the window already: only A's job comes.
    assert_eq!(next_job(&mut jobs).await, (a, 1, false));
}

/// The next event of `sub` on `subject` (10 s at most).
async fn next_event_on(sub: &mut Subscription, subject: &str) {
    loop {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .unwrap_or_else(|_| panic!("an event on {subject} within 10 s"))
            .expect("subscription open");
        if let Delivery::Event(e) = d
            && e.subject() == subject
        {
            return;
        }
    }
}

/// Wait until `sub` receives what `from` publishes: NATS registers a new subscription
/// asynchronously (the client's flush does not wait for the server), so an event published
/// from another connection right after `subscribe` may miss it.
async fn synced(
    sub: &mut Subscription,
    from: &Env,
    subject: &str,
    payload: &impl guardyn_common::events::Payload,
) {
    for _ in 0..100 {
        from.server
            .bus()
            .publish(subject, payload.encode())
            .await
            .unwrap();
        if let Ok(Some(Delivery::Event(_))) =
            tokio::time::timeout(Duration::from_millis(100), sub.next()).await
        {
            return;
        }
    }
    panic!("the subscription never received {subject}");
}

#[tokio::test]
async fn a_device_streaming_on_another_instance_is_not_woken_until_its_stream_ends() {
    let Some(nats) = NatsServer::start_or_skip() else {
        return;
    };
    let on_nats = |url: String| {
        move |c: &mut guardyn::config::Config| {
            c.events.backend = guardyn::config::EventsBackend::Nats;
            c.events.nats_url = url;
        }
    };
    let a = Env::start_with(on_nats(nats.url.clone())).await;
    let b = Env::start_with(on_nats(nats.url.clone())).await;
    let (x, y) = (account(&a, 1), account(&a, 2));
    account(&b, 1);
    let mut jobs = jobs(&a).await;
    let mut claims = a.server.bus().subscribe(LISTEN_ALL).await.unwrap();
    let mut releases = a.server.bus().subscribe(UNLISTEN_ALL).await.unwrap();
    // Probes about a device nobody uses.
    let (nobody, one) = (
        AccountId::parse(&acct(99)).unwrap(),
        DeviceId::new(1).unwrap(),
    );
    let (instance, stream) = ([0; 16], 0);
    let probe = ListenClaim { instance, stream };
    synced(&mut claims, &b, &listen_subject(nobody, one), &probe).await;
    let probe = ListenRelease { instance, stream };
    synced(&mut releases, &b, &unlisten_subject(nobody, one), &probe).await;
    let x_id = AccountId::parse(&x).unwrap();

    // X streams on B; A sends to it and to offline Y.
    let mut stream = b.listen(&x, 1).await;
    expect_queue_empty(&mut stream).await;
    next_event_on(&mut claims, &listen_subject(x_id, one)).await;
    // A's own subscription got the claim alongside ours.
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&a, &x, "1", true, false).await;
    send(&a, &x, "2", true, false).await;
    send(&a, &y, "3", false, false).await;
    assert_eq!(next_job(&mut jobs).await, (y, 1, false));

    // The stream ends: B releases it, and the next mail wakes the device.
    drop(stream);
    next_event_on(&mut releases, &unlisten_subject(x_id, one)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&a, &x, "4", true, false).await;
    assert_eq!(next_job(&mut jobs).await, (x, 1, true));
}

#[tokio::test]
async fn streams_of_a_silent_instance_stop_counting_after_their_lease() {
    use guardyn_common::events::messaging::{StreamAnnounce, streams_subject};
    // Claims count for three announcement intervals: 3 s here.
    let env = Env::start_with(|c| c.messaging.stream_announce_secs = 1).await;
    let (x, y) = (account(&env, 1), account(&env, 2));
    let (m1, m2) = (account(&env, 3), account(&env, 4));
    let mut jobs = jobs(&env).await;
    let id = |s: &str| AccountId::parse(s).unwrap();
    let one = DeviceId::new(1).unwrap();
    // Another instance (played by the test) claims X, and announces Y with a long lease.
    let other = [9u8; 16];
    let bus = env.server.bus();
    let claim = ListenClaim {
        instance: other,
        stream: 1,
    };
    bus.publish(&listen_subject(id(&x), one), claim.encode())
        .await
        .unwrap();
    let announce = StreamAnnounce {
        instance: other,
        lease_ms: 60_000,
        streams: vec![(id(&y), one, 2)],
    };
    bus.publish(&streams_subject(other), announce.encode())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    send(&env, &x, "x1", false, false).await;
    send(&env, &y, "y1", false, false).await;
    send(&env, &m1, "m1", false, false).await;
    assert_eq!(next_job(&mut jobs).await, (m1, 1, false));

    // The instance fell silent: its claim runs out, the announced lease still holds.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    send(&env, &x, "x2", false, false).await;
    send(&env, &y, "y2", false, false).await;
    send(&env, &m2, "m2", false, false).await;
    assert_eq!(next_job(&mut jobs).await, (x, 1, false));
    assert_eq!(next_job(&mut jobs).await, (m2, 1, false));
}
