//! One-to-one delivery: queues, Listen, Ack, limits and authorization.

use std::time::Duration;

use guardyn_proto::guardyn::common::v1::DeviceMismatch;
use guardyn_proto::guardyn::messaging::v1::{
    AckRequest, EchoRequest, EnvelopeType, ListenRequest, listen_response::Item,
    server_notice::Notice,
};
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn offline_then_live_delivery_in_order_with_untouched_ciphertext() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201), (2, 202)]);
    let mut sent = Vec::new();
    for i in 0..3u8 {
        let content: Vec<u8> = (0..=255u8).map(|x| x ^ i).collect();
        let r = env
            .send(
                (&a, 1),
                &b,
                &[(1, 201), (2, 202)],
                &format!("m{i}"),
                &content,
            )
            .await
            .unwrap();
        assert!(!r.duplicate);
        assert_eq!(r.queued.len(), 2);
        sent.push(content);
    }
    for device in [2u32, 1] {
        let mut s = env.listen(&b, device).await;
        let mut last = 0;
        for content in &sent {
            let e = next_envelope(&mut s).await;
            assert!(e.server_id > last, "server ids increase");
            last = e.server_id;
            // Bytes out == bytes in: the server never touches the ciphertext.
            assert_eq!(e.content, [content.as_slice(), &[device as u8]].concat());
            assert_eq!(e.sender_account_id.as_deref(), Some(a.as_str()));
            assert_eq!(e.sender_device_id, Some(1));
            assert_eq!(e.r#type, EnvelopeType::Ciphertext as i32);
        }
        expect_queue_empty(&mut s).await;
        if device == 1 {
            env.send((&a, 1), &b, &[(1, 201), (2, 202)], "live", b"live")
                .await
                .unwrap();
            let e = next_envelope(&mut s).await;
            assert_eq!(e.content, b"live\x01");
            assert!(e.server_id > last);
        }
    }
}

#[tokio::test]
async fn device_mismatch_lists_missing_extra_and_stale_then_retry_succeeds() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201), (2, 202), (3, 203)]);
    // Device 1 stale, device 2 missing, device 3 correct, device 9 extra.
    let err = env
        .send((&a, 1), &b, &[(1, 999), (3, 203), (9, 1)], "m", b"x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "DEVICE_MISMATCH");
    let d: DeviceMismatch = detail(&err, "DeviceMismatch");
    assert_eq!(d.missing_devices, vec![2]);
    assert_eq!(d.extra_devices, vec![9]);
    assert_eq!(d.stale_devices, vec![1]);
    // Nothing was stored by the failed attempt; the retry with the same id goes through.
    let r = env
        .send((&a, 1), &b, &[(1, 201), (2, 202), (3, 203)], "m", b"x")
        .await
        .unwrap();
    assert!(!r.duplicate);
    let mut s = env.listen(&b, 1).await;
    assert_eq!(next_envelope(&mut s).await.content, b"x\x01");
    expect_queue_empty(&mut s).await;
}

#[tokio::test]
async fn sync_copies_go_to_the_other_own_devices_only() {
    let env = Env::start().await;
    let a = acct(1);
    env.dir.set(&a, &[(1, 101), (2, 102), (3, 103)]);
    env.send((&a, 1), &a, &[(2, 102), (3, 103)], "s", b"sync")
        .await
        .unwrap();
    let err = env
        .send((&a, 1), &a, &[(1, 101), (2, 102), (3, 103)], "s2", b"sync")
        .await
        .unwrap_err();
    let d: DeviceMismatch = detail(&err, "DeviceMismatch");
    assert_eq!(
        d.extra_devices,
        vec![1],
        "the sending device is not a destination"
    );
    // sync must match "destination is the own account".
    let req = send_request(&a, &[(2, 102), (3, 103)], "s3", b"x", false);
    let err = env
        .messaging()
        .send_message(authed(req, &env.token(&a, 1)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut s = env.listen(&a, 3).await;
    let e = next_envelope(&mut s).await;
    assert_eq!(e.content, b"sync\x03");
    assert_eq!(e.sender_device_id, Some(1));
    expect_queue_empty(&mut s).await;
}

#[tokio::test]
async fn retrying_a_client_message_id_stores_nothing_new() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201)]);
    let first = env
        .send((&a, 1), &b, &[(1, 201)], "same", b"one")
        .await
        .unwrap();
    let again = env
        .send((&a, 1), &b, &[(1, 201)], "same", b"one")
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.queued, first.queued);
    assert_eq!(again.server_timestamp, first.server_timestamp);
    // Once the recipient has another device, a retry still replays its first answer, while a
    // new id addressed the old way is refused.
    env.dir.set(&b, &[(1, 201), (2, 202)]);
    let late = env
        .send((&a, 1), &b, &[(1, 201)], "same", b"one")
        .await
        .unwrap();
    assert!(late.duplicate);
    assert_eq!(late.queued, first.queued);
    let err = env
        .send((&a, 1), &b, &[(1, 201)], "new", b"two")
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "DEVICE_MISMATCH", "{err:?}");
    let mut s = env.listen(&b, 1).await;
    next_envelope(&mut s).await;
    expect_queue_empty(&mut s).await;
}

#[tokio::test]
async fn unacknowledged_envelopes_are_redelivered_and_acks_delete() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201)]);
    for i in 0..4 {
        env.send((&a, 1), &b, &[(1, 201)], &format!("m{i}"), &[i])
            .await
            .unwrap();
    }
    let token = env.token(&b, 1);
    let mut s = env.listen(&b, 1).await;
    let ids: Vec<u64> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(next_envelope(&mut s).await.server_id);
        }
        v
    };
    expect_queue_empty(&mut s).await;
    // Ack the first by position, the second and fourth by id (the third, read with them,
    // stays) and an id never assigned, then drop the stream.
    let acked = env
        .messaging()
        .ack(authed(
            AckRequest {
                server_ids: vec![ids[3], ids[1], 9_999],
                up_to_server_id: ids[0],
                group_acks: vec![],
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .acked;
    assert_eq!(acked, 3);
    drop(s);
    let mut s = env.listen(&b, 1).await;
    assert_eq!(next_envelope(&mut s).await.content, [2u8, 1]);
    expect_queue_empty(&mut s).await;
}

#[tokio::test]
async fn delivery_pauses_at_the_in_flight_window_until_acks_arrive() {
    let env = Env::start_with(|c| c.messaging.max_in_flight = 2).await;
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201)]);
    for i in 0..4 {
        env.send((&a, 1), &b, &[(1, 201)], &format!("m{i}"), &[i])
            .await
            .unwrap();
    }
    let mut s = env.listen(&b, 1).await;
    let first = next_envelope(&mut s).await;
    let second = next_envelope(&mut s).await;
    expect_quiet(&mut s).await;
    env.ack_up_to(&b, second.server_id).await;
    assert_eq!(next_envelope(&mut s).await.content, [2u8, 1]);
    assert_eq!(next_envelope(&mut s).await.content, [3u8, 1]);
    expect_queue_empty(&mut s).await;
    assert!(first.server_id < second.server_id);
}

/// A window wider than one read batch: the stream reads its in-flight entries again only when
/// the window is nearly full, and still never exceeds it.
#[tokio::test]
async fn a_window_wider_than_a_read_batch_holds_and_reopens_as_acks_arrive() {
    let env = Env::start_with(|c| c.messaging.max_in_flight = 70).await;
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201)]);
    for i in 0..90u8 {
        env.send((&a, 1), &b, &[(1, 201)], &format!("m{i}"), &[i])
            .await
            .unwrap();
    }
    let mut s = env.listen(&b, 1).await;
    let mut got = Vec::new();
    for _ in 0..70 {
        got.push(next_envelope(&mut s).await);
    }
    expect_quiet(&mut s).await;
    assert_eq!(env.ack_up_to(&b, got[9].server_id).await, 10);
    for i in 70..80u8 {
        assert_eq!(next_envelope(&mut s).await.content, [i, 1]);
    }
    expect_quiet(&mut s).await;
    // More than the acknowledgement's first read of the queue (32 entries) at once.
    assert_eq!(env.ack_up_to(&b, got[69].server_id).await, 60);
    for i in 80..90u8 {
        assert_eq!(next_envelope(&mut s).await.content, [i, 1]);
    }
    expect_queue_empty(&mut s).await;
    let contents: Vec<_> = got.iter().map(|e| e.content.clone()).collect();
    assert_eq!(contents, (0..70u8).map(|i| vec![i, 1]).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_new_listen_replaces_the_old_stream() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201)]);
    let mut old = env.listen(&b, 1).await;
    expect_queue_empty(&mut old).await;
    let mut new = env.listen(&b, 1).await;
    expect_queue_empty(&mut new).await;
    match next(&mut old).await {
        Item::Notice(n) => assert!(matches!(n.notice, Some(Notice::StreamReplaced(_)))),
        other => panic!("expected StreamReplaced, got {other:?}"),
    }
    assert!(
        old.message().await.unwrap().is_none(),
        "old stream ends with OK"
    );
    env.send((&a, 1), &b, &[(1, 201)], "m", b"hi")
        .await
        .unwrap();
    assert_eq!(next_envelope(&mut new).await.content, b"hi\x01");
}

#[tokio::test]
async fn online_only_messages_reach_connected_devices_and_are_never_stored() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201), (2, 202)]);
    let mut s = env.listen(&b, 1).await;
    expect_queue_empty(&mut s).await;
    let mut req = send_request(&b, &[(1, 201), (2, 202)], "typing", b"typing", false);
    req.online_only = true;
    let r = env
        .messaging()
        .send_message(authed(req, &env.token(&a, 1)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.queued.len(), 1, "only the connected device is listed");
    assert_eq!(r.queued[0].destination_device_id, 1);
    assert_eq!(r.queued[0].server_id, 0);
    let e = next_envelope(&mut s).await;
    assert_eq!((e.server_id, e.content.as_slice()), (0, &b"typing\x01"[..]));
    // Device 2 was offline: it never gets it.
    let mut s2 = env.listen(&b, 2).await;
    expect_queue_empty(&mut s2).await;
}

#[tokio::test]
async fn envelopes_expire_after_the_retention_time() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201)]);
    env.send((&a, 1), &b, &[(1, 201)], "old", b"old")
        .await
        .unwrap();
    env.clock.advance(Duration::from_secs(29 * 24 * 3600));
    env.send((&a, 1), &b, &[(1, 201)], "new", b"new")
        .await
        .unwrap();
    env.clock.advance(Duration::from_secs(2 * 24 * 3600));
    let mut s = env.listen(&b, 1).await;
    assert_eq!(next_envelope(&mut s).await.content, b"new\x01");
    expect_queue_empty(&mut s).await;
}

#[tokio::test]
async fn limits_and_bad_input_are_refused_clearly() {
    let env = Env::start_with(|c| c.messaging.max_queue_len = 2).await;
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201)]);
    let big = vec![7u8; 256 * 1024 + 1];
    let err = env
        .send((&a, 1), &b, &[(1, 201)], "big", &big)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "PAYLOAD_TOO_LARGE");
    let err = env
        .send((&a, 1), &acct(77), &[(1, 1)], "nobody", b"x")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let mut req = send_request(&b, &[(1, 201)], "t", b"x", false);
    req.envelopes[0].r#type = EnvelopeType::Mls as i32;
    let err = env
        .messaging()
        .send_message(authed(req, &env.token(&a, 1)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    env.send((&a, 1), &b, &[(1, 201)], "q1", b"1")
        .await
        .unwrap();
    env.send((&a, 1), &b, &[(1, 201)], "q2", b"2")
        .await
        .unwrap();
    let err = env
        .send((&a, 1), &b, &[(1, 201)], "q3", b"3")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "QUOTA_EXCEEDED");

    let echo = env
        .messaging()
        .echo(authed(
            EchoRequest {
                payload: b"ping".to_vec(),
            },
            &env.token(&a, 1),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(echo.payload, b"ping");
    let err = env
        .messaging()
        .echo(authed(
            EchoRequest {
                payload: vec![0; 64 * 1024 + 1],
            },
            &env.token(&a, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn a_device_only_reads_and_acknowledges_its_own_queue() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201), (2, 202)]);
    let r = env
        .send((&a, 1), &b, &[(1, 201), (2, 202)], "m", b"m")
        .await
        .unwrap();
    let id_for_2 = r
        .queued
        .iter()
        .find(|q| q.destination_device_id == 2)
        .unwrap()
        .server_id;
    // Without a token: refused.
    let err = env
        .messaging()
        .listen(tonic::Request::new(ListenRequest {}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // Other devices' acks (even of the same server id) touch only their own queues.
    for (acc, dev) in [(&b, 1), (&a, 1)] {
        env.messaging()
            .ack(authed(
                AckRequest {
                    server_ids: vec![id_for_2],
                    up_to_server_id: 100,
                    group_acks: vec![],
                },
                &env.token(acc, dev),
            ))
            .await
            .unwrap();
    }
    let mut s = env.listen(&b, 2).await;
    assert_eq!(next_envelope(&mut s).await.content, b"m\x02");
    expect_queue_empty(&mut s).await;
}

#[tokio::test]
async fn streams_end_on_server_shutdown() {
    let env = Env::start().await;
    let b = acct(2);
    env.dir.set(&b, &[(1, 201)]);
    let mut s = env.listen(&b, 1).await;
    expect_queue_empty(&mut s).await;
    let Env { server, .. } = env;
    let stop = tokio::spawn(server.stop());
    let end = tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .unwrap();
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
    stop.await.unwrap().unwrap();
}
