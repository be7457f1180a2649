//! The delivery service verifies handshake messages against the group's public state and binds
//! member leaves to devices: forged commits, impersonating leaves and KeyPackages the directory
//! did not hand out are refused without costing honest members the epoch.

use guardyn_crypto::mls::{Group, MlsClient, Received};
use guardyn_proto::guardyn::messaging::v1::{
    GetGroupInfoRequest, GetGroupRequest, SendCommitRequest, SendGroupMessageRequest,
    SendProposalRequest,
};
use tonic::Code;

use crate::common::*;
use crate::groups::{GROUP_ID, address, client, group_of_two, mls_envelope};
use crate::proposals::commit;

async fn epoch(env: &Env, who: &str) -> u64 {
    env.groups()
        .get_group(authed(
            GetGroupRequest {
                group_id: GROUP_ID.to_vec(),
            },
            &env.token(who, 1),
        ))
        .await
        .unwrap()
        .into_inner()
        .group
        .unwrap()
        .epoch
}

fn violation(status: &tonic::Status) -> String {
    use tonic_types::StatusExt as _;
    status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_forged_commit_is_refused_and_the_honest_commit_still_wins_the_epoch() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    let ([ca, cb], [mut ga, mut gb]) = group_of_two(&env, &a, &b).await;

    // Someone holding A's token but not A's MLS key: a commit "from leaf 0 at epoch 1" signed
    // with another key, in a group of the same id it built itself.
    let mallory = client(&a, 1);
    let mut gm = Group::create(&mallory, GROUP_ID).unwrap();
    gm.self_update(&mallory).unwrap();
    gm.merge_pending_commit(&mallory).unwrap();
    let forged = gm.self_update(&mallory).unwrap();
    let err = commit(&env, &a, 1, &forged, vec![]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "INVALID_COMMIT");
    assert!(
        violation(&err).starts_with("commit:"),
        "{}",
        violation(&err)
    );

    // An honest commit with one flipped signature bit (the message ends with the signature,
    // then the confirmation and membership tags of 33 bytes each).
    let honest = ga.self_update(&ca).unwrap();
    let mut tampered = honest.commit.clone();
    let at = tampered.len() - 2 * 33 - 10;
    tampered[at] ^= 1;
    let err = env
        .groups()
        .send_commit(authed(
            SendCommitRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 1,
                commit: tampered,
                welcome: None,
                welcome_recipients: vec![],
                group_info: honest.group_info.clone().unwrap(),
            },
            &env.token(&a, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_COMMIT");

    // The honest commit with a GroupInfo that does not describe its new epoch.
    let err = env
        .groups()
        .send_commit(authed(
            SendCommitRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 1,
                commit: honest.commit.clone(),
                welcome: None,
                welcome_recipients: vec![],
                group_info: forged.group_info.clone().unwrap(),
            },
            &env.token(&a, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_COMMIT");
    assert!(
        violation(&err).starts_with("group_info:"),
        "{}",
        violation(&err)
    );
    assert_eq!(epoch(&env, &a).await, 1, "no refused commit took the epoch");

    // The honest commit still wins epoch 1, and B follows it.
    assert_eq!(commit(&env, &a, 1, &honest, vec![]).await.unwrap(), 2);
    ga.merge_pending_commit(&ca).unwrap();
    let e = mls_envelope(&env, &b, 1).await;
    assert!(matches!(
        gb.process_message(&cb, &e.content).unwrap(),
        Received::Commit(_)
    ));
    assert_eq!(gb.epoch(), 2);
}

#[tokio::test]
async fn a_member_cannot_add_a_leaf_claiming_another_device() {
    let env = Env::start().await;
    let (a, b, c) = (acct(1), acct(2), acct(3));
    let ([_ca, cb], [_ga, mut gb]) = group_of_two(&env, &a, &b).await;
    env.dir.set(&c, &[(1, 1)]);
    // C's device pinned its key with its first KeyPackage upload.
    let cc = client(&c, 1);
    env.dir.pin(&c, 1, cc.signature_public_key());

    // B makes a KeyPackage naming C's device under B's own key and adds it.
    let fake_c = client(&c, 1);
    let fake = gb
        .add_members(&cb, &[fake_c.create_key_package().unwrap().as_slice()])
        .unwrap();
    let err = commit(&env, &b, 1, &fake, vec![address(&c, 1)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "MLS_IDENTITY_MISMATCH");
    gb.discard_pending_commit(&cb).unwrap();

    // The same as a standalone proposal (from a copy of B's state, so B's own state does not
    // keep the refused proposal queued).
    let copy = MlsClient::from_bytes(&cb.to_bytes().unwrap()).unwrap();
    let proposal = Group::load(&copy, GROUP_ID)
        .unwrap()
        .propose_add(&copy, &fake_c.create_key_package().unwrap())
        .unwrap();
    let err = env
        .groups()
        .send_proposal(authed(
            SendProposalRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 1,
                proposal,
            },
            &env.token(&b, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "MLS_IDENTITY_MISMATCH");
    assert_eq!(epoch(&env, &a).await, 1);

    // C's genuine KeyPackage is accepted.
    let real = gb
        .add_members(&cb, &[cc.create_key_package().unwrap().as_slice()])
        .unwrap();
    assert_eq!(
        commit(&env, &b, 1, &real, vec![address(&c, 1)])
            .await
            .unwrap(),
        2
    );
}

#[tokio::test]
async fn only_key_packages_the_directory_handed_out_can_be_added() {
    let env = Env::start().await;
    env.dir.require_claims();
    let (a, b, c) = (acct(1), acct(2), acct(3));
    env.dir.set(&a, &[(1, 1)]);
    env.dir.set(&b, &[(1, 1)]);
    env.dir.set(&c, &[(1, 1)]);
    let (ca, cb, cc) = (client(&a, 1), client(&b, 1), client(&c, 1));
    let mut ga = crate::groups::create(&env, (&a, 1), &ca).await;

    // C's own genuine KeyPackage, but never claimed from the directory.
    let kp = cc.create_key_package().unwrap();
    let bundle = ga.add_members(&ca, &[kp.as_slice()]).unwrap();
    let err = commit(&env, &a, 0, &bundle, vec![address(&c, 1)])
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "MLS_IDENTITY_MISMATCH");
    assert!(
        violation(&err).contains("ClaimKeyPackages"),
        "{}",
        violation(&err)
    );
    ga.discard_pending_commit(&ca).unwrap();

    // Once handed out it is accepted.
    env.dir.hand_out(&c, 1, &kp);
    let kp_b = cb.create_key_package().unwrap();
    env.dir.hand_out(&b, 1, &kp_b);
    let bundle = ga
        .add_members(&ca, &[kp.as_slice(), kp_b.as_slice()])
        .unwrap();
    assert_eq!(
        commit(&env, &a, 0, &bundle, vec![address(&c, 1), address(&b, 1)])
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn removed_members_and_outsiders_cannot_send_and_cannot_tell_groups_apart() {
    let env = Env::start().await;
    let (a, b, d) = (acct(1), acct(2), acct(4));
    env.dir.set(&d, &[(1, 1)]);
    let ([ca, cb], [mut ga, mut gb]) = group_of_two(&env, &a, &b).await;
    let ct = gb.encrypt(&cb, b"still here?").unwrap();
    let b_leaf = gb.own_leaf_index();
    let removal = ga.remove_members(&ca, &[b_leaf]).unwrap();
    commit(&env, &a, 1, &removal, vec![]).await.unwrap();
    ga.merge_pending_commit(&ca).unwrap();

    // B, removed at epoch 1 -> 2, sends with its old state.
    let err = env
        .groups()
        .send_group_message(authed(
            SendGroupMessageRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 1,
                client_message_id: "late".into(),
                message: ct,
                urgent: false,
            },
            &env.token(&b, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // An existing group the caller is not in and a group that does not exist answer alike.
    let mut answers = Vec::new();
    for id in [GROUP_ID.to_vec(), b"no-such-group-id-000001".to_vec()] {
        let e = env
            .groups()
            .get_group(authed(
                GetGroupRequest {
                    group_id: id.clone(),
                },
                &env.token(&d, 1),
            ))
            .await
            .unwrap_err();
        let i = env
            .groups()
            .get_group_info(authed(
                GetGroupInfoRequest {
                    group_id: id.clone(),
                },
                &env.token(&d, 1),
            ))
            .await
            .unwrap_err();
        // A write with unparseable content: refused for who is asking, not for what it holds.
        let c = env
            .groups()
            .send_commit(authed(
                SendCommitRequest {
                    group_id: id.clone(),
                    epoch: 1,
                    commit: vec![0; 64],
                    welcome: None,
                    welcome_recipients: vec![],
                    group_info: vec![0; 64],
                },
                &env.token(&d, 1),
            ))
            .await
            .unwrap_err();
        answers.push([
            (e.code(), reason(&e), e.message().to_owned()),
            (i.code(), reason(&i), i.message().to_owned()),
            (c.code(), reason(&c), c.message().to_owned()),
        ]);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0][0].0, Code::NotFound);
}

#[tokio::test]
async fn the_last_epoch_is_refused_without_overflowing() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    let ([ca, _], [mut ga, _]) = group_of_two(&env, &a, &b).await;
    let bundle = ga.self_update(&ca).unwrap();
    let err = commit(&env, &a, u64::MAX, &bundle, vec![])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        violation(&err),
        "epoch: no epoch follows 18446744073709551615"
    );
}

#[tokio::test]
async fn an_external_join_is_accepted_only_for_the_calling_device() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    let ([ca, _cb], [mut ga, _gb]) = group_of_two(&env, &a, &b).await;
    env.dir.set(&b, &[(1, 1), (2, 1), (3, 1)]);
    let gi = env
        .groups()
        .get_group_info(authed(
            GetGroupInfoRequest {
                group_id: GROUP_ID.to_vec(),
            },
            &env.token(&b, 2),
        ))
        .await
        .unwrap()
        .into_inner();
    let join = |c: &MlsClient| {
        let (g, commit) =
            Group::join_by_external_commit(c, &gi.group_info, Some(&gi.ratchet_tree)).unwrap();
        SendCommitRequest {
            group_id: GROUP_ID.to_vec(),
            epoch: gi.epoch,
            commit,
            welcome: None,
            welcome_recipients: vec![],
            group_info: g.export_group_info(c).unwrap(),
        }
    };

    // B's device 2 joining with a leaf that names device 3.
    let err = env
        .groups()
        .send_commit(authed(join(&client(&b, 3)), &env.token(&b, 2)))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "MLS_IDENTITY_MISMATCH");

    // Its own leaf: accepted, and A follows.
    let r = env
        .groups()
        .send_commit(authed(join(&client(&b, 2)), &env.token(&b, 2)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.epoch, 2);
    let e = mls_envelope(&env, &a, 1).await;
    assert!(matches!(
        ga.process_message(&ca, &e.content).unwrap(),
        Received::Commit(_)
    ));
    assert_eq!(ga.members().len(), 3);
}

#[tokio::test]
async fn proposals_queued_in_one_epoch_are_bounded() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    let ([_ca, cb], [_ga, mut gb]) = group_of_two(&env, &a, &b).await;
    let mut propose = async || {
        let proposal = gb.propose_self_update(&cb).unwrap();
        env.groups()
            .send_proposal(authed(
                SendProposalRequest {
                    group_id: GROUP_ID.to_vec(),
                    epoch: 1,
                    proposal,
                },
                &env.token(&b, 1),
            ))
            .await
    };
    for _ in 0..64 {
        propose().await.unwrap();
    }
    let err = propose().await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "QUOTA_EXCEEDED");
}
