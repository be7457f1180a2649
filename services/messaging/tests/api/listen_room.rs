//! Room for large group messages on Listen streams: a stream has at most 1 MiB of group
//! messages unacknowledged, and the process's Listen buffer is held until acknowledgement (or
//! `listen_hold_secs`), so streams catching up on large commits wait their turn.

use std::time::Duration;

use guardyn_crypto::mls::{Group, MlsClient};
use guardyn_proto::guardyn::messaging::v1::listen_response::Item;
use guardyn_proto::guardyn::messaging::v1::{
    DeliveredEnvelope, ListenResponse, SendGroupMessageRequest,
};
use tonic::Streaming;

use crate::common::*;
use crate::groups::{GROUP_ID, ack_request, group_of_two};
use crate::proposals::group_of_three;

/// Plaintext of each large message: five fit in 1 MiB, six do not.
const LARGE: usize = 200_000;

async fn send_large(env: &Env, who: &str, g: &mut Group, c: &MlsClient, n: usize) {
    for i in 0..n {
        let message = g
            .encrypt(c, &vec![u8::try_from(i).unwrap(); LARGE])
            .unwrap();
        env.groups()
            .send_group_message(authed(
                SendGroupMessageRequest {
                    group_id: GROUP_ID.to_vec(),
                    epoch: g.epoch(),
                    client_message_id: format!("large-{i}"),
                    message,
                    urgent: false,
                },
                &env.token(who, 1),
            ))
            .await
            .unwrap();
    }
}

/// The next envelope, past keepalives; `None` if nothing else arrives within `wait`.
async fn envelope_within(
    s: &mut Streaming<ListenResponse>,
    wait: Duration,
) -> Option<DeliveredEnvelope> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let item = tokio::time::timeout_at(deadline, s.message()).await.ok()?;
        match item.unwrap().expect("stream open").item.expect("item set") {
            Item::Keepalive(_) => continue,
            Item::Envelope(e) => return Some(e),
            other => panic!("expected an envelope, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_stream_gets_at_most_one_mib_of_group_messages_unacknowledged() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    let ([ca, cb], [mut ga, mut gb]) = group_of_two(&env, &a, &b).await;
    send_large(&env, &a, &mut ga, &ca, 8).await;

    let mut s = env.listen(&b, 1).await;
    let mut got = Vec::new();
    while let Some(e) = envelope_within(&mut s, Duration::from_millis(500)).await {
        got.push(e);
    }
    assert_eq!(
        got.len(),
        5,
        "five 200 KB messages fit in 1 MiB, six do not"
    );
    // Acknowledging makes room for the rest, in order, then the backlog ends.
    for e in &got {
        env.messaging()
            .ack(authed(ack_request(e), &env.token(&b, 1)))
            .await
            .unwrap();
    }
    for _ in 5..8 {
        got.push(next_envelope(&mut s).await);
    }
    expect_queue_empty(&mut s).await;
    for (i, e) in got.iter().enumerate() {
        assert!(e.group_log);
        match gb.process_message(&cb, &e.content).unwrap() {
            guardyn_crypto::mls::Received::Application { plaintext, .. } => {
                assert_eq!(plaintext, vec![u8::try_from(i).unwrap(); LARGE]);
            }
            other => panic!("expected an application message, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn streams_wait_for_room_held_by_another_until_its_hold_passes() {
    let env = Env::start_with(|c| {
        c.messaging.listen_buffer_mib = 1;
        c.messaging.listen_hold_secs = 2;
        c.messaging.keepalive_secs = 1;
    })
    .await;
    let (a, b, c) = (acct(1), acct(2), acct(3));
    let (clients, mut groups) = group_of_three(&env, [&a, &b, &c]).await;
    send_large(&env, &a, &mut groups[0], &clients[0], 6).await;

    // B takes the whole buffer and never acknowledges.
    let mut sb = env.listen(&b, 1).await;
    for _ in 0..5 {
        envelope_within(&mut sb, Duration::from_secs(10))
            .await
            .expect("B's messages");
    }
    // C waits while B holds the room...
    let mut sc = env.listen(&c, 1).await;
    let early = envelope_within(&mut sc, Duration::from_millis(300)).await;
    assert!(
        early.is_none(),
        "C waits for room: {:?}",
        early.map(|e| (e.server_id, e.group_log, e.content.len()))
    );
    // ...and gets its messages (its own 1 MiB of them) once B's hold (2 s) has passed, while
    // B, still not acknowledging, gets nothing beyond its 1 MiB.
    for _ in 0..5 {
        envelope_within(&mut sc, Duration::from_secs(10))
            .await
            .expect("C's messages after B's hold");
    }
    assert!(
        envelope_within(&mut sb, Duration::from_millis(500))
            .await
            .is_none(),
        "B has 1 MiB unacknowledged"
    );
}
