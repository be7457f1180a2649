//! Abuse limits: per-account send rates, per-device queue quotas (count and bytes, a sender's
//! share) on 1:1 sends and Welcomes (group messages are read from the group log and charge no
//! queue), kept across acknowledgements, expiry and restarts.

use std::time::Duration;

use guardyn_common::clock::ManualClock;
use guardyn_common::ratelimit::RateLimit;
use guardyn_crypto::mls::Group;
use guardyn_proto::guardyn::messaging::v1::{
    AckRequest, CreateGroupRequest, EchoRequest, GetGroupInfoRequest, MlsMessageKind,
    SendCommitRequest,
};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::common::*;
use crate::groups::{GROUP_ID, address, client, group_of_two, send_group_message};

/// The `limit` of a QUOTA_EXCEEDED refusal (which quota it hit).
fn limit(status: &Status) -> String {
    status
        .get_details_error_info()
        .and_then(|i| i.metadata.get("limit").cloned())
        .unwrap_or_default()
}

fn quota_exceeded(result: Result<impl std::fmt::Debug, Status>, which: &str) {
    let err = result.expect_err("refused");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(reason(&err), "QUOTA_EXCEEDED");
    assert_eq!(limit(&err), which);
}

async fn ack(env: &Env, who: (&str, u32), ids: Vec<u64>) -> u32 {
    env.messaging()
        .ack(authed(
            AckRequest {
                server_ids: ids,
                up_to_server_id: 0,
                group_acks: vec![],
            },
            &env.token(who.0, who.1),
        ))
        .await
        .unwrap()
        .into_inner()
        .acked
}

fn server_id(r: &guardyn_proto::guardyn::messaging::v1::SendMessageResponse) -> u64 {
    r.queued[0].server_id
}

#[tokio::test]
async fn a_sender_over_its_send_rate_is_refused_with_retry_info_and_others_are_not() {
    let env = Env::start_with(|c| c.messaging.limits.send_per_account = RateLimit::new(2, 1)).await;
    let (a, b, c) = (acct(1), acct(2), acct(3));
    for x in [&a, &b, &c] {
        env.dir.set(x, &[(1, 1)]);
    }
    env.send((&a, 1), &b, &[(1, 1)], "r1", b"1").await.unwrap();
    env.send((&a, 1), &b, &[(1, 1)], "r2", b"2").await.unwrap();
    // The bucket is the account's: another of its devices does not get a fresh one.
    env.dir.set(&a, &[(1, 1), (2, 2)]);
    let err = env
        .send((&a, 2), &b, &[(1, 1)], "r3", b"3")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "RATE_LIMITED");
    let wait = retry_after(&err).expect("RetryInfo");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    // Nothing of the refused send was stored.
    assert_eq!(queued(&env.server, &b, 1).await, 2);
    env.send((&c, 1), &b, &[(1, 1)], "c1", b"c").await.unwrap();
}

#[tokio::test]
async fn a_flooder_fills_only_its_share_and_another_sender_still_delivers() {
    let env = Env::start_with(|c| {
        c.messaging.max_queue_len = 10;
        c.messaging.max_sender_queue_len = 3;
    })
    .await;
    let (flooder, victim, friend) = (acct(1), acct(2), acct(3));
    for x in [&flooder, &victim, &friend] {
        env.dir.set(x, &[(1, 1)]);
    }
    let mut first = 0;
    for i in 0..3 {
        let r = env
            .send((&flooder, 1), &victim, &[(1, 1)], &format!("f{i}"), b"spam")
            .await
            .unwrap();
        if i == 0 {
            first = server_id(&r);
        }
    }
    quota_exceeded(
        env.send((&flooder, 1), &victim, &[(1, 1)], "f3", b"spam")
            .await,
        "sender_queue_len",
    );
    // The victim's other contacts still get through.
    env.send((&friend, 1), &victim, &[(1, 1)], "hi", b"hello")
        .await
        .unwrap();
    let mut s = env.listen(&victim, 1).await;
    let mut contents = Vec::new();
    for _ in 0..4 {
        contents.push(next_envelope(&mut s).await.content);
    }
    assert!(contents.contains(&b"hello\x01".to_vec()), "{contents:?}");
    // An acknowledgement gives the flooder room for exactly one more.
    assert_eq!(ack(&env, (&victim, 1), vec![first]).await, 1);
    env.send((&flooder, 1), &victim, &[(1, 1)], "f4", b"spam")
        .await
        .unwrap();
    quota_exceeded(
        env.send((&flooder, 1), &victim, &[(1, 1)], "f5", b"spam")
            .await,
        "sender_queue_len",
    );
}

/// Limits where a 1000-byte envelope is the largest message and a queue holds 2500 bytes.
fn small_bytes(c: &mut guardyn::config::Config) {
    let m = &mut c.messaging;
    m.max_envelope_bytes = 1000;
    m.max_mls_message_bytes = 1000;
    m.max_welcome_bytes = 1000;
    m.max_queue_bytes = 2500;
    m.max_sender_queue_bytes = 2500;
}

/// A server with [`small_bytes`] on `dir`, once a previous one released it.
async fn start_small_on(dir: &std::path::Path, clock: &ManualClock) -> Env {
    for _ in 0..100 {
        let (dir, clock) = (dir.to_owned(), clock.clone());
        let started =
            tokio::spawn(async move { Env::start_configured_on(&dir, clock, small_bytes).await });
        if let Ok(env) = started.await {
            return env;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not reopen the data directory");
}

#[tokio::test]
async fn the_byte_quota_holds_across_a_restart_and_frees_up_after_ack_and_expiry() {
    let data = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let env = start_small_on(data.path(), &clock).await;
    let (a, b, c) = (acct(1), acct(2), acct(3));
    let setup = |env: &Env| {
        for x in [&a, &b, &c] {
            env.dir.set(x, &[(1, 1)]);
        }
    };
    setup(&env);
    // send_request appends the device id: 999 + 1 = 1000 bytes of ciphertext each.
    let body = vec![9u8; 999];
    let r1 = env.send((&a, 1), &b, &[(1, 1)], "a1", &body).await.unwrap();
    env.send((&c, 1), &b, &[(1, 1)], "c1", &body).await.unwrap();
    // 2000 of 2500 bytes queued: another 1000 does not fit, though A's own share would.
    quota_exceeded(
        env.send((&a, 1), &b, &[(1, 1)], "a2", &body).await,
        "queue_bytes",
    );
    // A small one still fits.
    env.send((&a, 1), &b, &[(1, 1)], "a3", b"tiny")
        .await
        .unwrap();

    // The accounting is persisted with the queue: a restarted server still refuses.
    let Env { server, .. } = env;
    server.stop().await.unwrap();
    let env = start_small_on(data.path(), &clock).await;
    setup(&env);
    quota_exceeded(
        env.send((&a, 1), &b, &[(1, 1)], "a4", &body).await,
        "queue_bytes",
    );
    // An acknowledgement frees its bytes.
    assert_eq!(ack(&env, (&b, 1), vec![server_id(&r1)]).await, 1);
    env.send((&a, 1), &b, &[(1, 1)], "a5", &body).await.unwrap();
    quota_exceeded(
        env.send((&c, 1), &b, &[(1, 1)], "c2", &body).await,
        "queue_bytes",
    );
    // Expired entries no longer count.
    clock.advance(Duration::from_secs(30 * 24 * 60 * 60 + 1));
    env.send((&c, 1), &b, &[(1, 1)], "c3", &body).await.unwrap();
    env.send((&a, 1), &b, &[(1, 1)], "a6", &body).await.unwrap();
}

#[tokio::test]
async fn concurrent_senders_do_not_overshoot_the_queue() {
    no_overshoot(Env::start_with(|c| c.messaging.max_queue_len = 5).await).await;
}

#[tokio::test]
async fn concurrent_stepwise_senders_do_not_overshoot_the_queue() {
    no_overshoot(Env::start_stepwise_with(|c| c.messaging.max_queue_len = 5).await).await;
}

#[tokio::test]
async fn an_acknowledgement_gives_its_place_back_to_concurrent_senders() {
    ack_gives_places_back(Env::start_with(|c| c.messaging.max_queue_len = 4).await).await;
}

#[tokio::test]
async fn a_stepwise_acknowledgement_gives_its_place_back_to_concurrent_senders() {
    ack_gives_places_back(Env::start_stepwise_with(|c| c.messaging.max_queue_len = 4).await).await;
}

/// Acknowledgements racing sends to the same queue: every acknowledged entry frees exactly
/// one place, whichever order the storage applies them in.
async fn ack_gives_places_back(env: Env) {
    let b = acct(100);
    env.dir.set(&b, &[(1, 1)]);
    let senders: Vec<String> = (1..=8).map(acct).collect();
    for s in &senders {
        env.dir.set(s, &[(1, 1)]);
    }
    let mut ids = Vec::new();
    for (i, s) in senders.iter().take(4).enumerate() {
        let r = env
            .send((s, 1), &b, &[(1, 1)], &format!("m{i}"), b"m")
            .await
            .unwrap();
        ids.push(server_id(&r));
    }
    quota_exceeded(
        env.send((&senders[4], 1), &b, &[(1, 1)], "full", b"m")
            .await,
        "queue_len",
    );
    let env = std::sync::Arc::new(env);
    let acks = {
        let (env, b, ids) = (env.clone(), b.clone(), ids.clone());
        tokio::spawn(async move { ack(&env, (&b, 1), ids[..3].to_vec()).await })
    };
    // Four more try while three places come free: never more than the queue holds.
    let tasks: Vec<_> = senders[4..]
        .iter()
        .map(|s| {
            let (env, s, b) = (env.clone(), s.clone(), b.clone());
            tokio::spawn(async move { env.send((&s, 1), &b, &[(1, 1)], "x", b"m").await })
        })
        .collect();
    assert_eq!(acks.await.unwrap(), 3);
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    // Whatever raced, the queue now holds its one old entry and the sends that got in, and
    // exactly the places left are free.
    let stored = queued(&env.server, &b, 1).await;
    assert_eq!(stored, 1 + ok);
    for i in 0..(4 - stored) {
        env.send((&senders[4], 1), &b, &[(1, 1)], &format!("late{i}"), b"m")
            .await
            .unwrap();
    }
    quota_exceeded(
        env.send((&senders[5], 1), &b, &[(1, 1)], "over", b"m")
            .await,
        "queue_len",
    );
}

async fn no_overshoot(env: Env) {
    let b = acct(100);
    env.dir.set(&b, &[(1, 1)]);
    let senders: Vec<String> = (1..=12).map(acct).collect();
    for s in &senders {
        env.dir.set(s, &[(1, 1)]);
    }
    let env = std::sync::Arc::new(env);
    let tasks: Vec<_> = senders
        .iter()
        .map(|s| {
            let (env, s, b) = (env.clone(), s.clone(), b.clone());
            tokio::spawn(async move { env.send((&s, 1), &b, &[(1, 1)], "x", b"m").await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert_eq!(limit(&e), "queue_len", "{e:?}"),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(queued(&env.server, &b, 1).await, 5);
}

#[tokio::test]
async fn group_messages_are_read_from_the_group_log_and_charge_no_member_queue() {
    let env = Env::start_with(|c| c.messaging.max_sender_queue_len = 2).await;
    let (a, b) = (acct(1), acct(2));
    // B's Welcome (A's) was read and acknowledged: A's share of B's queue is empty.
    let ([ca, _cb], [mut ga, _gb]) = group_of_two(&env, &a, &b).await;
    let direct = env
        .send((&a, 1), &b, &[(1, 1)], "d1", b"1:1")
        .await
        .unwrap();
    // More group messages than A's share of B's queue holds: none of them is in B's queue.
    for id in ["g1", "g2", "g3"] {
        send_group_message(&env, &a, &mut ga, &ca, id)
            .await
            .unwrap();
    }
    assert_eq!(queued(&env.server, &b, 1).await, 1);
    // A's share still bounds its 1:1 messages.
    env.send((&a, 1), &b, &[(1, 1)], "d2", b"1:1")
        .await
        .unwrap();
    quota_exceeded(
        env.send((&a, 1), &b, &[(1, 1)], "d3", b"1:1").await,
        "sender_queue_len",
    );
    ack(&env, (&b, 1), vec![server_id(&direct)]).await;
    let mut s = env.listen(&b, 1).await;
    let first = next_envelope(&mut s).await;
    assert!(!first.group_log);
    for _ in 0..3 {
        let e = next_envelope(&mut s).await;
        assert!(e.group_log);
        assert_eq!(e.mls_kind, MlsMessageKind::Application as i32);
    }
    expect_queue_empty(&mut s).await;
}

#[tokio::test]
async fn group_creation_and_welcomes_are_rate_limited_per_account() {
    let env = Env::start_with(|c| {
        c.messaging.limits.create_group_per_account = RateLimit::new(1, 1);
        c.messaging.limits.welcome_per_account = RateLimit::new(1, 1);
    })
    .await;
    let (a, b, c) = (acct(1), acct(2), acct(3));
    // One group created and one Welcome sent: the whole allowance.
    let ([ca, cb], [mut ga, _gb]) = group_of_two(&env, &a, &b).await;
    env.dir.set(&c, &[(1, 1)]);
    let other = Group::create(&ca, b"guardyn-test-group-0002").unwrap();
    let err = env
        .groups()
        .create_group(authed(
            CreateGroupRequest {
                group_id: b"guardyn-test-group-0002".to_vec(),
                group_info: other.export_group_info(&ca).unwrap(),
            },
            &env.token(&a, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "RATE_LIMITED");
    assert!(retry_after(&err).is_some());
    let cc = client(&c, 1);
    let bundle = ga
        .add_members(&ca, &[cc.create_key_package().unwrap().as_slice()])
        .unwrap();
    let err = env
        .groups()
        .send_commit(authed(
            SendCommitRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 1,
                commit: bundle.commit.clone(),
                welcome: bundle.welcome.clone(),
                welcome_recipients: vec![address(&c, 1)],
                group_info: bundle.group_info.clone().unwrap(),
            },
            &env.token(&a, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "RATE_LIMITED");
    assert!(retry_after(&err).is_some());
    // Another account has its own buckets.
    let g2 = Group::create(&cb, b"guardyn-test-group-0003").unwrap();
    env.groups()
        .create_group(authed(
            CreateGroupRequest {
                group_id: b"guardyn-test-group-0003".to_vec(),
                group_info: g2.export_group_info(&cb).unwrap(),
            },
            &env.token(&b, 1),
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_welcome_is_refused_when_the_added_device_queue_is_full() {
    let env = Env::start_with(|c| c.messaging.max_queue_len = 1).await;
    let (a, b, x) = (acct(1), acct(2), acct(3));
    env.dir.set(&a, &[(1, 1)]);
    env.dir.set(&b, &[(1, 1)]);
    env.dir.set(&x, &[(1, 1)]);
    env.send((&x, 1), &b, &[(1, 1)], "fill", b"x")
        .await
        .unwrap();
    let ca = client(&a, 1);
    let mut ga = crate::groups::create(&env, (&a, 1), &ca).await;
    let cb = client(&b, 1);
    let bundle = ga
        .add_members(&ca, &[cb.create_key_package().unwrap().as_slice()])
        .unwrap();
    let r = env
        .groups()
        .send_commit(authed(
            SendCommitRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 0,
                commit: bundle.commit.clone(),
                welcome: bundle.welcome.clone(),
                welcome_recipients: vec![address(&b, 1)],
                group_info: bundle.group_info.clone().unwrap(),
            },
            &env.token(&a, 1),
        ))
        .await;
    quota_exceeded(r, "queue_len");
    assert_eq!(queued(&env.server, &b, 1).await, 1);
}

#[tokio::test]
async fn one_connection_holds_at_most_the_configured_streams() {
    let env = Env::start_with(|c| c.server.max_streams_per_connection = 1).await;
    let a = acct(1);
    env.dir.set(&a, &[(1, 1)]);
    let echo = || {
        let mut client = env.messaging();
        let request = authed(
            EchoRequest {
                payload: b"ping".to_vec(),
            },
            &env.token(&a, 1),
        );
        async move { client.echo(request).await }
    };
    // The connection's one stream is the Listen: a call on it waits.
    let mut listen = env.listen(&a, 1).await;
    expect_queue_empty(&mut listen).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), echo())
            .await
            .is_err(),
        "a second stream on the connection waits"
    );
    drop(listen);
    let answered = tokio::time::timeout(Duration::from_secs(10), echo()).await;
    assert_eq!(answered.unwrap().unwrap().into_inner().payload, b"ping");
}

#[tokio::test]
async fn ratchet_tree_fetches_are_rate_limited_per_account() {
    let env = Env::start_with(|c| {
        c.messaging.limits.tree_fetch_per_account = RateLimit::new(1, 1);
    })
    .await;
    let (a, b) = (acct(1), acct(2));
    // B's join fetches its Welcome's tree: B's whole allowance.
    let _ = group_of_two(&env, &a, &b).await;
    let info = |who: &str| {
        let (mut groups, token) = (env.groups(), env.token(who, 1));
        async move {
            groups
                .get_group_info(authed(
                    GetGroupInfoRequest {
                        group_id: GROUP_ID.to_vec(),
                    },
                    &token,
                ))
                .await
        }
    };
    let err = info(&b).await.unwrap_err();
    assert_eq!(reason(&err), "RATE_LIMITED");
    assert!(retry_after(&err).is_some());
    let own = info(&a).await.unwrap().into_inner();
    assert_eq!(own.epoch, 1, "another account has its own bucket");
    assert!(!own.ratchet_tree.is_empty());
}

/// Streams catching up on large envelopes share a small Listen buffer (1 MiB for the process,
/// against 200 KB envelopes): each waits for room instead of reading its backlog into memory,
/// and every envelope still arrives, in order, on every stream.
#[tokio::test]
async fn streams_catching_up_on_large_envelopes_share_the_listen_buffer() {
    let env = Env::start_with(|c| c.messaging.listen_buffer_mib = 1).await;
    let (a, b, c) = (acct(1), acct(2), acct(3));
    env.dir.set(&a, &[(1, 1)]);
    let large = vec![7u8; 200_000];
    for to in [&b, &c] {
        env.dir.set(to, &[(1, 1)]);
        for i in 0..8 {
            env.send((&a, 1), to, &[(1, 1)], &format!("{to}-{i}"), &large)
                .await
                .unwrap();
        }
    }
    let (mut sb, mut sc) = (env.listen(&b, 1).await, env.listen(&c, 1).await);
    let (mut last_b, mut last_c) = (0, 0);
    for _ in 0..8 {
        for (s, last) in [(&mut sb, &mut last_b), (&mut sc, &mut last_c)] {
            let e = next_envelope(s).await;
            assert_eq!(e.content.len(), large.len() + 1);
            assert!(e.server_id > *last, "in order");
            *last = e.server_id;
        }
    }
    expect_queue_empty(&mut sb).await;
    expect_queue_empty(&mut sc).await;
}
