//! Idempotent SendMessage under concurrency and after a crashed attempt.

use std::time::Duration;

use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn eight_concurrent_identical_sends_store_one_message() {
    eight_concurrent_identical_sends(Env::start().await).await;
}

#[tokio::test]
async fn eight_concurrent_identical_stepwise_sends_store_one_message() {
    eight_concurrent_identical_sends(Env::start_stepwise().await).await;
}

async fn eight_concurrent_identical_sends(env: Env) {
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201), (2, 202)]);
    let token = env.token(&a, 1);
    let calls = (0..8).map(|_| {
        let mut client = env.messaging();
        let req = send_request(&b, &[(1, 201), (2, 202)], "same-id", b"once", false);
        let token = token.clone();
        async move { client.send_message(authed(req, &token)).await }
    });
    let responses: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().into_inner())
        .collect();
    assert_eq!(responses.iter().filter(|r| !r.duplicate).count(), 1);
    assert_eq!(responses.iter().filter(|r| r.duplicate).count(), 7);
    for r in &responses {
        assert_eq!(
            r.queued, responses[0].queued,
            "every answer names the same envelopes"
        );
        assert_eq!(r.server_timestamp, responses[0].server_timestamp);
    }
    assert_eq!(responses[0].queued.len(), 2);
    for device in [1, 2] {
        assert_eq!(queued(&env.server, &b, device).await, 1, "device {device}");
    }
}

#[tokio::test]
async fn a_crashed_sends_reservation_blocks_retries_only_until_its_lease_ends() {
    crashed_reservation(Env::start().await).await;
}

#[tokio::test]
async fn a_crashed_stepwise_sends_reservation_blocks_retries_only_until_its_lease_ends() {
    crashed_reservation(Env::start_stepwise().await).await;
}

#[tokio::test]
async fn a_send_to_two_devices_is_one_storage_commit() {
    let env = Env::start_with(|c| c.metrics.enabled = true).await;
    assert_eq!(storage_writes_of_a_send(&env).await, (1, 2));
}

#[tokio::test]
async fn a_stepwise_send_reserves_then_completes_its_id() {
    let env = Env::start_stepwise_with(|c| c.metrics.enabled = true).await;
    assert_eq!(storage_writes_of_a_send(&env).await, (2, 2));
}

/// (KV commits, log appends) of the second send from A to B's two devices (the first builds
/// the queues' usage records).
async fn storage_writes_of_a_send(env: &Env) -> (u64, u64) {
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201), (2, 202)]);
    let to = [(1, 201), (2, 202)];
    env.send((&a, 1), &b, &to, "first", b"1").await.unwrap();
    let writes = |m: &str| {
        (
            counter(m, "guardyn_storage_kv_commits_total"),
            counter(m, "guardyn_storage_log_appends_total"),
        )
    };
    let before = writes(&metrics(env).await);
    let sent = env.send((&a, 1), &b, &to, "second", b"2").await.unwrap();
    let after = writes(&metrics(env).await);
    assert_eq!(sent.queued.len(), 2);
    for device in [1, 2] {
        assert_eq!(queued(&env.server, &b, device).await, 2, "device {device}");
    }
    (after.0 - before.0, after.1 - before.1)
}

/// A reservation left by a send that crashed mid-way (a stepwise send, or one from before
/// joint writes) holds on either path.
async fn crashed_reservation(env: Env) {
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201)]);
    // A send reserved the id and died before appending anything.
    use guardyn_common::clock::Clock as _;
    let (key, value) = guardyn_messaging::testing::pending_send_record(
        guardyn_common::AccountId::parse(&a).unwrap(),
        guardyn_common::DeviceId::new(1).unwrap(),
        "crashed",
        env.clock.now_ms(),
    );
    env.server.kv().put(&key, &value).await.unwrap();

    let err = env
        .send((&a, 1), &b, &[(1, 201)], "crashed", b"retry")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(
        guardyn_common::error::reason_of(&err).as_deref(),
        Some("SEND_IN_PROGRESS")
    );
    let s = retry_after(&err);
    assert!(s.is_some_and(|d| d > Duration::ZERO), "retry hint: {s:?}");
    assert_eq!(queued(&env.server, &b, 1).await, 0);

    env.clock.advance(Duration::from_secs(31));
    let r = env
        .send((&a, 1), &b, &[(1, 201)], "crashed", b"retry")
        .await
        .unwrap();
    assert!(!r.duplicate);
    let again = env
        .send((&a, 1), &b, &[(1, 201)], "crashed", b"retry")
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.queued, r.queued);
    assert_eq!(queued(&env.server, &b, 1).await, 1);
}

#[tokio::test]
async fn eight_concurrent_identical_group_messages_store_one_message() {
    use guardyn_proto::guardyn::messaging::v1::SendGroupMessageRequest;

    use crate::groups::{GROUP_ID, group_of_two};

    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    let ([ca, _], [mut ga, _]) = group_of_two(&env, &a, &b).await;
    let request = SendGroupMessageRequest {
        group_id: GROUP_ID.to_vec(),
        epoch: 1,
        client_message_id: "same-id".into(),
        message: ga.encrypt(&ca, b"once").unwrap(),
        urgent: false,
    };
    let token = env.token(&a, 1);
    let calls = (0..8).map(|_| {
        let mut client = env.groups();
        let req = request.clone();
        let token = token.clone();
        async move { client.send_group_message(authed(req, &token)).await }
    });
    let responses: Vec<_> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().into_inner())
        .collect();
    assert_eq!(responses.iter().filter(|r| !r.duplicate).count(), 1);
    assert_eq!(responses.iter().filter(|r| r.duplicate).count(), 7);
    for r in &responses {
        assert_eq!(r.server_timestamp, responses[0].server_timestamp);
    }
    assert_eq!(queued(&env.server, &b, 1).await, 0);
    let hex: String = GROUP_ID.iter().map(|x| format!("{x:02x}")).collect();
    let group_log = env
        .server
        .log()
        .read(format!("msg/v1/g/{hex}").as_bytes(), 1, 100)
        .await
        .unwrap();
    // The Welcome that added B (the commit had no one to go to), then the message once.
    assert_eq!(group_log.len(), 2);
}
