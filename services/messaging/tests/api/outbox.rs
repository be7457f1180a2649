//! An accepted commit is delivered even when the process died between the compare-and-set
//! and the fan-out: the outbox record written with the epoch change is completed at start-up.

use std::time::Duration;

use guardyn_common::clock::{Clock as _, ManualClock};
use guardyn_crypto::mls::{Group, Received};
use guardyn_proto::guardyn::messaging::v1::{
    MlsMessageKind, SendCommitRequest, listen_response::Item,
};
use guardyn_storage::{AppendLog as _, Direction, KeyRange, KvStore as _};

use crate::common::*;
use crate::groups::{GROUP_ID, address, client, create, mls_envelope};

async fn outbox_records(env: &Env) -> usize {
    env.server
        .store()
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
    let mut gb = Group::join_from_welcome(&cb, &mls_envelope(&env, &b, 1).await.content).unwrap();

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
    // ... and the process dies right after the compare-and-set: B's queue never got the
    // commit, the outbox record written in the same transaction is still there.
    let store = env.server.store();
    store
        .delete_through(&queue_partition(&b, 1), u64::MAX)
        .await
        .unwrap();
    let (key, value) = guardyn_messaging::testing::commit_record(
        GROUP_ID,
        1,
        (&a, 1),
        &update.commit,
        &[(b.clone(), 1)],
        clock.now_ms(),
    );
    store.put(&key, &value).await.unwrap();
    drop(store);
    let Env { server, .. } = env;
    server.stop().await.unwrap();

    // The restarted server completes the record (it is older than the sweep's grace period
    // for fan-outs that may still be running elsewhere).
    clock.advance(Duration::from_secs(60));
    let env = restart(data.path(), clock).await;
    env.dir.set(&a, &[(1, 1)]);
    env.dir.set(&b, &[(1, 1)]);
    let mut s = env.listen(&b, 1).await;
    let e = loop {
        match next(&mut s).await {
            Item::Envelope(e) => break e,
            Item::QueueEmpty(_) => {}
            other => panic!("expected the commit, got {other:?}"),
        }
    };
    assert_eq!(e.mls_kind, MlsMessageKind::Commit as i32);
    assert_eq!(e.epoch, Some(1));
    assert_eq!(e.sender_account_id.as_deref(), Some(a.as_str()));
    match gb.process_message(&cb, &e.content).unwrap() {
        Received::Commit(summary) => assert_eq!(summary.epoch, 2),
        other => panic!("expected a commit, got {other:?}"),
    }
    for _ in 0..200 {
        if outbox_records(&env).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the completed outbox record was not deleted");
}
