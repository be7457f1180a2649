//! Group messages stored once in the group log and read by each member device from its own
//! cursor: one log entry per message whatever the member count, per-device acknowledgements,
//! and exactly the members of a message's epoch as readers.

use guardyn_crypto::mls::{Group, Received};
use guardyn_proto::guardyn::messaging::v1::{
    AckRequest, DeliveredEnvelope, GroupAck, MlsMessageKind,
};
use guardyn_storage::{Direction, KeyRange};
use tonic::Code;

use crate::common::*;
use crate::groups::{
    GROUP_ID, ack_request, address, client, group_of_two, join, send_group_message,
};
use crate::proposals::{commit, group_of_three};

async fn send(env: &Env, who: &str, g: &mut Group, c: &guardyn_crypto::mls::MlsClient, id: &str) {
    send_group_message(env, who, g, c, id).await.unwrap();
}

async fn ack(env: &Env, who: &str, e: &DeliveredEnvelope) -> u32 {
    env.messaging()
        .ack(authed(ack_request(e), &env.token(who, 1)))
        .await
        .unwrap()
        .into_inner()
        .acked
}

#[tokio::test]
async fn every_member_reads_one_log_entry_and_acknowledges_only_its_own_cursor() {
    let env = Env::start().await;
    let (a, b, c) = (acct(1), acct(2), acct(3));
    let (clients, mut groups) = group_of_three(&env, [&a, &b, &c]).await;
    let before = group_logged(&env.server, GROUP_ID).await;
    send(&env, &a, &mut groups[0], &clients[0], "hello").await;
    assert_eq!(group_logged(&env.server, GROUP_ID).await, before + 1);
    assert_eq!(queued(&env.server, &b, 1).await, 0);
    assert_eq!(queued(&env.server, &c, 1).await, 0);

    // B acknowledges: its next stream starts after the message.
    let mut s = env.listen(&b, 1).await;
    let e = next_envelope(&mut s).await;
    assert!(e.group_log);
    assert_eq!(e.group_id.as_deref(), Some(GROUP_ID));
    match groups[1].process_message(&clients[1], &e.content).unwrap() {
        Received::Application { plaintext, .. } => assert_eq!(plaintext, b"hello"),
        other => panic!("expected an application message, got {other:?}"),
    }
    expect_queue_empty(&mut s).await;
    assert_eq!(ack(&env, &b, &e).await, 1);
    assert_eq!(ack(&env, &b, &e).await, 0, "acknowledged once");
    drop(s);
    expect_queue_empty(&mut env.listen(&b, 1).await).await;

    // C does not: the message comes again, at the same position.
    let first = next_envelope(&mut env.listen(&c, 1).await).await;
    let again = next_envelope(&mut env.listen(&c, 1).await).await;
    assert_eq!(again.server_id, first.server_id);
    assert_eq!(again.content, e.content);
    // The sender does not get its own message.
    expect_queue_empty(&mut env.listen(&a, 1).await).await;
}

#[tokio::test]
async fn a_removed_member_gets_the_commit_that_removes_it_and_nothing_after() {
    let env = Env::start().await;
    let (a, b, c) = (acct(1), acct(2), acct(3));
    let (clients, mut groups) = group_of_three(&env, [&a, &b, &c]).await;
    // C is streaming while it is removed.
    let mut live = env.listen(&c, 1).await;
    expect_queue_empty(&mut live).await;
    let bundle = groups[0].remove_members(&clients[0], &[2]).unwrap();
    assert_eq!(commit(&env, &a, 1, &bundle, vec![]).await.unwrap(), 2);
    groups[0].merge_pending_commit(&clients[0]).unwrap();
    let removal = next_envelope(&mut live).await;
    assert_eq!(removal.mls_kind, MlsMessageKind::Commit as i32);
    assert_eq!(removal.epoch, Some(1));
    assert_eq!(ack(&env, &c, &removal).await, 1);
    send(&env, &a, &mut groups[0], &clients[0], "after").await;
    expect_quiet(&mut live).await;
    drop(live);
    expect_queue_empty(&mut env.listen(&c, 1).await).await;

    let mut s = env.listen(&b, 1).await;
    let e = next_envelope(&mut s).await;
    assert_eq!(e.mls_kind, MlsMessageKind::Commit as i32);
    groups[1].process_message(&clients[1], &e.content).unwrap();
    let e = next_envelope(&mut s).await;
    assert_eq!(e.epoch, Some(2));
    match groups[1].process_message(&clients[1], &e.content).unwrap() {
        Received::Application { plaintext, .. } => assert_eq!(plaintext, b"after"),
        other => panic!("expected an application message, got {other:?}"),
    }
}

#[tokio::test]
async fn a_member_added_later_reads_its_welcome_first_and_nothing_from_before() {
    let env = Env::start().await;
    let (a, b, d) = (acct(1), acct(2), acct(4));
    let ([ca, _cb], [mut ga, _gb]) = group_of_two(&env, &a, &b).await;
    send(&env, &a, &mut ga, &ca, "before").await;
    env.dir.set(&d, &[(1, 1)]);
    // D is streaming while it is added.
    let mut live = env.listen(&d, 1).await;
    expect_queue_empty(&mut live).await;
    let cd = client(&d, 1);
    let bundle = ga
        .add_members(&ca, &[cd.create_key_package().unwrap().as_slice()])
        .unwrap();
    assert_eq!(
        commit(&env, &a, 1, &bundle, vec![address(&d, 1)])
            .await
            .unwrap(),
        2
    );
    ga.merge_pending_commit(&ca).unwrap();
    send(&env, &a, &mut ga, &ca, "after").await;
    let welcome = next_envelope(&mut live).await;
    assert_eq!(welcome.mls_kind, MlsMessageKind::Welcome as i32);
    let e = next_envelope(&mut live).await;
    assert!(e.group_log, "the open stream follows the new membership");
    drop(live);

    let mut s = env.listen(&d, 1).await;
    let welcome = next_envelope(&mut s).await;
    assert_eq!(welcome.mls_kind, MlsMessageKind::Welcome as i32);
    assert!(!welcome.group_log, "a Welcome is queued for its new member");
    let mut gd = join(&env, &d, 1, &cd, &welcome.content).await;
    let e = next_envelope(&mut s).await;
    assert!(e.group_log);
    match gd.process_message(&cd, &e.content).unwrap() {
        Received::Application { plaintext, .. } => assert_eq!(plaintext, b"after"),
        other => panic!("expected an application message, got {other:?}"),
    }
    expect_queue_empty(&mut s).await;
}

#[tokio::test]
async fn group_acknowledgements_are_validated() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    group_of_two(&env, &a, &b).await;
    let token = env.token(&b, 1);
    let bad = env
        .messaging()
        .ack(authed(
            AckRequest {
                group_acks: vec![GroupAck {
                    group_id: b"short".to_vec(),
                    server_ids: vec![1],
                }],
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("group_acks[0].group_id"), "{bad:?}");
    let many = (0..65)
        .map(|_| GroupAck {
            group_id: GROUP_ID.to_vec(),
            server_ids: vec![1],
        })
        .collect();
    let err = env
        .messaging()
        .ack(authed(
            AckRequest {
                group_acks: many,
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap_err();
    assert!(err.message().contains("group_acks"), "{err:?}");
    // A group the device is not in: nothing to acknowledge.
    let outsider = env
        .messaging()
        .ack(authed(
            AckRequest {
                group_acks: vec![GroupAck {
                    group_id: b"another-group-0000000001".to_vec(),
                    server_ids: vec![1, 2],
                }],
                ..Default::default()
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outsider.acked, 0);
}

#[tokio::test]
async fn a_group_stored_before_cursors_gets_them_with_its_next_message() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    let ([ca, cb], [mut ga, mut gb]) = group_of_two(&env, &a, &b).await;
    // The group as an older process left it: a version-3 record, no member cursors.
    let kv = env.server.kv();
    let key = [
        b"msg/v1/group/".as_slice(),
        guardyn_common::ids::hex(GROUP_ID).as_bytes(),
    ]
    .concat();
    let raw = kv.get(&key).await.unwrap().unwrap();
    let old = guardyn_messaging::testing::group_record_before_cursors(&raw).unwrap();
    kv.put(&key, &old).await.unwrap();
    let cursors = KeyRange::prefix(b"msg/v1/gm/");
    for pair in kv
        .scan(cursors.clone(), Direction::Forward, 10)
        .await
        .unwrap()
    {
        kv.delete(&pair.key).await.unwrap();
    }
    assert!(
        kv.scan(cursors.clone(), Direction::Forward, 10)
            .await
            .unwrap()
            .is_empty()
    );

    send(&env, &a, &mut ga, &ca, "migrated").await;
    assert_eq!(
        kv.scan(cursors, Direction::Forward, 10)
            .await
            .unwrap()
            .len(),
        2
    );
    let e = next_envelope(&mut env.listen(&b, 1).await).await;
    assert!(e.group_log);
    match gb.process_message(&cb, &e.content).unwrap() {
        Received::Application { plaintext, .. } => assert_eq!(plaintext, b"migrated"),
        other => panic!("expected an application message, got {other:?}"),
    }
}
