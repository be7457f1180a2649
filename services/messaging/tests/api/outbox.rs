//! Accepted group messages are delivered even when the process died between accepting them
//! and their fan-out: the outbox record written with the acceptance (the commit's or the
//! proposal's compare-and-set, the application message's idempotency record) is completed at
//! start-up.

use std::time::Duration;

use guardyn_common::clock::{Clock as _, ManualClock};
use guardyn_common::{AccountId, DeviceId, GroupId};
use guardyn_crypto::mls::Received;
use guardyn_proto::guardyn::messaging::v1::{
    DeliveredEnvelope, ListenResponse, MlsMessageKind, SendCommitRequest, SendGroupMessageRequest,
    SendProposalRequest, listen_response::Item,
};
use guardyn_storage::{Direction, KeyRange};

use crate::common::*;
use crate::groups::{GROUP_ID, address, client, create, group_of_two, join, mls_envelope};

fn dev(account: &str, device: u32) -> (AccountId, DeviceId) {
    (
        AccountId::parse(account).unwrap(),
        DeviceId::new(device).unwrap(),
    )
}

fn gid() -> GroupId {
    GroupId::new(GROUP_ID).unwrap()
}
use crate::proposals::{commit, group_of_three};

/// Past the sweep's grace period for records that may still be in progress elsewhere.
const AFTER_GRACE: Duration = Duration::from_secs(60);

async fn outbox_records(env: &Env) -> usize {
    env.server
        .kv()
        .scan(KeyRange::prefix(b"msg/v1/ob"), Direction::Forward, 10)
        .await
        .unwrap()
        .len()
}

/// Start a server on `dir`, waiting for the previous one to have released it.
async fn restart(dir: &std::path::Path, clock: ManualClock) -> Env {
    for _ in 0..100 {
        let dir = dir.to_owned();
        let clock = clock.clone();
        // The previous server's background tasks may hold the database for a moment after
        // its shutdown returned.
        if let Ok(env) = tokio::spawn(async move { Env::start_on(&dir, clock).await }).await {
            return env;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("could not reopen the data directory");
}

/// Stop `env` (its state as a crash left it), move the clock by `pause` and start a new server
/// on the same data directory with `accounts` (one device each) in the directory.
async fn crash_and_restart(
    env: Env,
    dir: &std::path::Path,
    clock: &ManualClock,
    pause: Duration,
    accounts: &[&str],
) -> Env {
    let Env { server, .. } = env;
    server.stop().await.unwrap();
    clock.advance(pause);
    let env = restart(dir, clock.clone()).await;
    for a in accounts {
        env.dir.set(a, &[(1, 1)]);
    }
    env
}

/// The first envelope on the stream (a QueueEmpty may come first if recovery is still busy).
async fn first_envelope(s: &mut tonic::Streaming<ListenResponse>) -> DeliveredEnvelope {
    loop {
        match next(s).await {
            Item::Envelope(e) => return e,
            Item::QueueEmpty(_) => {}
            other => panic!("expected an envelope, got {other:?}"),
        }
    }
}

async fn wait_for_empty_outbox(env: &Env) {
    for _ in 0..200 {
        if outbox_records(env).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the completed outbox record was not deleted");
}

#[tokio::test]
async fn a_commit_whose_fan_out_was_cut_short_reaches_members_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let env = Env::start_on(data.path(), clock.clone()).await;
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 1)]);
    env.dir.set(&b, &[(1, 1)]);
    let (ca, cb) = (client(&a, 1), client(&b, 1));
    let mut ga = create(&env, (&a, 1), &ca).await;
    let add = ga
        .add_members(&ca, &[cb.create_key_package().unwrap().as_slice()])
        .unwrap();
    let request = |epoch: u64, bundle: &guardyn_crypto::mls::CommitBundle, to| SendCommitRequest {
        group_id: GROUP_ID.to_vec(),
        epoch,
        commit: bundle.commit.clone(),
        welcome: bundle.welcome.clone(),
        welcome_recipients: to,
        group_info: bundle.group_info.clone().unwrap(),
    };
    env.groups()
        .send_commit(authed(
            request(0, &add, vec![address(&b, 1)]),
            &env.token(&a, 1),
        ))
        .await
        .unwrap();
    ga.merge_pending_commit(&ca).unwrap();
    assert_eq!(
        outbox_records(&env).await,
        0,
        "a completed fan-out leaves no record"
    );
    let mut gb = join(&env, &b, 1, &cb, &mls_envelope(&env, &b, 1).await.content).await;

    // A's update is accepted (the group moves to epoch 2) ...
    let update = ga.self_update(&ca).unwrap();
    let epoch = env
        .groups()
        .send_commit(authed(request(1, &update, vec![]), &env.token(&a, 1)))
        .await
        .unwrap()
        .into_inner()
        .epoch;
    assert_eq!(epoch, 2);
    ga.merge_pending_commit(&ca).unwrap();
    // ... and the process dies right after the compare-and-set: the group log never got the
    // commit, the outbox record written in the same transaction is still there.
    let store = env.server.stores();
    store
        .log
        .delete_through(&group_log_partition(GROUP_ID), u64::MAX)
        .await
        .unwrap();
    let (key, value) = guardyn_messaging::testing::commit_record(
        &gid(),
        1,
        dev(&a, 1),
        &update.commit,
        clock.now_ms(),
    );
    store.kv.put(&key, &value).await.unwrap();
    drop(store);

    // The restarted server completes the record.
    let env = crash_and_restart(env, data.path(), &clock, AFTER_GRACE, &[&a, &b]).await;
    let e = first_envelope(&mut env.listen(&b, 1).await).await;
    assert_eq!(e.mls_kind, MlsMessageKind::Commit as i32);
    assert_eq!(e.epoch, Some(1));
    assert_eq!(e.sender_account_id.as_deref(), Some(a.as_str()));
    match gb.process_message(&cb, &e.content).unwrap() {
        Received::Commit(summary) => assert_eq!(summary.epoch, 2),
        other => panic!("expected a commit, got {other:?}"),
    }
    wait_for_empty_outbox(&env).await;
}

#[tokio::test]
async fn a_relayed_proposal_whose_fan_out_was_cut_short_reaches_members_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let env = Env::start_on(data.path(), clock.clone()).await;
    let (a, b) = (acct(1), acct(2));
    let ([ca, cb], [mut ga, mut gb]) = group_of_two(&env, &a, &b).await;

    // B's proposal is accepted ...
    let proposal = gb.propose_self_update(&cb).unwrap();
    env.groups()
        .send_proposal(authed(
            SendProposalRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 1,
                proposal: proposal.clone(),
            },
            &env.token(&b, 1),
        ))
        .await
        .unwrap();
    assert_eq!(outbox_records(&env).await, 0);
    // ... and the process dies right after the transaction that stored its effect: A's queue
    // never got it, the outbox record written in that transaction is still there.
    let store = env.server.stores();
    store
        .log
        .delete_through(&group_log_partition(GROUP_ID), u64::MAX)
        .await
        .unwrap();
    let (key, value) = guardyn_messaging::testing::proposal_record(
        &gid(),
        1,
        dev(&b, 1),
        &proposal,
        clock.now_ms(),
    );
    store.kv.put(&key, &value).await.unwrap();
    drop(store);

    let env = crash_and_restart(env, data.path(), &clock, AFTER_GRACE, &[&a, &b]).await;
    let e = first_envelope(&mut env.listen(&a, 1).await).await;
    assert_eq!(e.mls_kind, MlsMessageKind::Proposal as i32);
    assert_eq!(e.epoch, Some(1));
    assert_eq!(e.sender_account_id.as_deref(), Some(b.as_str()));
    assert!(matches!(
        ga.process_message(&ca, &e.content).unwrap(),
        Received::Proposal { .. }
    ));
    wait_for_empty_outbox(&env).await;
}

#[tokio::test]
async fn a_group_message_whose_fan_out_was_cut_short_reaches_members_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let env = Env::start_on(data.path(), clock.clone()).await;
    let (a, b) = (acct(1), acct(2));
    let ([ca, cb], [mut ga, mut gb]) = group_of_two(&env, &a, &b).await;

    // A's message is accepted ...
    let ct = ga.encrypt(&ca, b"survives a crash").unwrap();
    let request = SendGroupMessageRequest {
        group_id: GROUP_ID.to_vec(),
        epoch: 1,
        client_message_id: "m-1".into(),
        message: ct.clone(),
        urgent: true,
    };
    let sent = env
        .groups()
        .send_group_message(authed(request.clone(), &env.token(&a, 1)))
        .await
        .unwrap()
        .into_inner();
    assert!(!sent.duplicate);
    // ... and the process dies right after the transaction that completed the client message
    // id together with the outbox record, before the group log got the message.
    let store = env.server.stores();
    store
        .log
        .delete_through(&group_log_partition(GROUP_ID), u64::MAX)
        .await
        .unwrap();
    let (key, value) = guardyn_messaging::testing::group_message_record(
        &gid(),
        1,
        dev(&a, 1),
        "m-1",
        &ct,
        true,
        clock.now_ms(),
    );
    store.kv.put(&key, &value).await.unwrap();
    drop(store);

    let env = crash_and_restart(env, data.path(), &clock, AFTER_GRACE, &[&a, &b]).await;
    let e = first_envelope(&mut env.listen(&b, 1).await).await;
    assert_eq!(e.mls_kind, MlsMessageKind::Application as i32);
    assert!(e.urgent);
    match gb.process_message(&cb, &e.content).unwrap() {
        Received::Application { plaintext, .. } => assert_eq!(plaintext, b"survives a crash"),
        other => panic!("expected an application message, got {other:?}"),
    }
    wait_for_empty_outbox(&env).await;
    // A retry after the restart is answered from the id's record, not stored again.
    let retry = env
        .groups()
        .send_group_message(authed(request, &env.token(&a, 1)))
        .await
        .unwrap()
        .into_inner();
    assert!(retry.duplicate);
    assert_eq!(retry.server_timestamp, sent.server_timestamp);
    // Stored once, in the group log; no member queue holds it.
    assert_eq!(group_logged(&env.server, GROUP_ID).await, 1);
    assert_eq!(queued(&env.server, &b, 1).await, 0);
}

#[tokio::test]
async fn a_left_over_proposal_reaches_members_before_the_next_commit() {
    let data = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let env = Env::start_on(data.path(), clock.clone()).await;
    let (a, b, c) = (acct(1), acct(2), acct(3));
    let (clients, mut groups) = group_of_three(&env, [&a, &b, &c]).await;

    // B's proposal was accepted, then the process died before the group log got it.
    let proposal = groups[1].propose_self_update(&clients[1]).unwrap();
    env.groups()
        .send_proposal(authed(
            SendProposalRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 1,
                proposal: proposal.clone(),
            },
            &env.token(&b, 1),
        ))
        .await
        .unwrap();
    let store = env.server.stores();
    store
        .log
        .delete_through(&group_log_partition(GROUP_ID), u64::MAX)
        .await
        .unwrap();
    let (key, value) = guardyn_messaging::testing::proposal_record(
        &gid(),
        1,
        dev(&b, 1),
        &proposal,
        clock.now_ms(),
    );
    store.kv.put(&key, &value).await.unwrap();
    drop(store);

    // Restarted within the sweep's grace period, A commits an update of its own: the pending
    // proposal of the epoch is fanned out first.
    let env = crash_and_restart(env, data.path(), &clock, Duration::ZERO, &[&a, &b, &c]).await;
    assert_eq!(outbox_records(&env).await, 1);
    let bundle = groups[0].self_update(&clients[0]).unwrap();
    assert_eq!(commit(&env, &a, 1, &bundle, vec![]).await.unwrap(), 2);

    // C gets the proposal first, then the commit, and can apply the commit.
    let mut s = env.listen(&c, 1).await;
    let first = next_envelope(&mut s).await;
    assert_eq!(first.mls_kind, MlsMessageKind::Proposal as i32);
    assert_eq!(first.content, proposal);
    groups[2]
        .process_message(&clients[2], &first.content)
        .unwrap();
    let second = next_envelope(&mut s).await;
    assert_eq!(second.mls_kind, MlsMessageKind::Commit as i32);
    match groups[2]
        .process_message(&clients[2], &second.content)
        .unwrap()
    {
        Received::Commit(summary) => assert_eq!(summary.epoch, 2),
        other => panic!("expected a commit, got {other:?}"),
    }
    wait_for_empty_outbox(&env).await;
}

#[tokio::test]
async fn a_failing_outbox_record_does_not_stop_the_sweep() {
    let data = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let env = Env::start_on(data.path(), clock.clone()).await;
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 1)]);
    env.dir.set(&b, &[(1, 1)]);
    // Two fan-outs a crash of a process before group-log cursors left behind (so they queue
    // references, and still work). The first in key order (an application message of the
    // epoch) has a corrupt progress record: its fan-out fails on every attempt.
    use guardyn_messaging::testing::before_cursors;
    let store = env.server.stores();
    let (bad_key, bad) = before_cursors(
        &guardyn_messaging::testing::group_message_record(
            &gid(),
            1,
            dev(&a, 1),
            "m-1",
            b"never delivered",
            false,
            clock.now_ms(),
        ),
        &[dev(&b, 1)],
    )
    .unwrap();
    store.kv.put(&bad_key, &bad).await.unwrap();
    let progress = [b"msg/v1/obp/".as_slice(), &bad_key[b"msg/v1/ob/".len()..]].concat();
    store.kv.put(&progress, &[0xff]).await.unwrap();
    let (key, value) = before_cursors(
        &guardyn_messaging::testing::commit_record(
            &gid(),
            1,
            dev(&a, 1),
            b"commit after the failing record",
            clock.now_ms(),
        ),
        &[dev(&b, 1)],
    )
    .unwrap();
    assert!(bad_key < key);
    store.kv.put(&key, &value).await.unwrap();
    drop(store);

    let env = crash_and_restart(env, data.path(), &clock, AFTER_GRACE, &[&a, &b]).await;
    let e = first_envelope(&mut env.listen(&b, 1).await).await;
    assert_eq!(e.mls_kind, MlsMessageKind::Commit as i32);
    assert_eq!(e.content, b"commit after the failing record");
    // The failing record (and its progress) stays for a later attempt.
    for _ in 0..200 {
        if outbox_records(&env).await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let left = env
        .server
        .kv()
        .scan(KeyRange::prefix(b"msg/v1/ob/"), Direction::Forward, 10)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].key, bad_key);
}
