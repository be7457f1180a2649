//! SendProposal and LeaveGroup with genuine openmls messages: proposals relayed before the
//! commit that references them, commits resolved by ProposalRef, leaving.

use guardyn_crypto::mls::{Group, MlsClient, Received};
use guardyn_proto::guardyn::messaging::v1::{
    GetGroupRequest, LeaveGroupRequest, MlsMessageKind, SendCommitRequest, SendGroupMessageRequest,
    SendProposalRequest,
};
use tonic::Code;

use crate::common::*;
use crate::groups::{GROUP_ID, address, client, create, join, mls_envelope};

/// A, B and C in a group at epoch 1, each with its openmls state.
pub async fn group_of_three(env: &Env, names: [&str; 3]) -> (Vec<MlsClient>, Vec<Group>) {
    for n in names {
        env.dir.set(n, &[(1, 1)]);
    }
    let clients: Vec<MlsClient> = names.iter().map(|n| client(n, 1)).collect();
    let mut ga = create(env, (names[0], 1), &clients[0]).await;
    let kps = [
        clients[1].create_key_package().unwrap(),
        clients[2].create_key_package().unwrap(),
    ];
    let bundle = ga
        .add_members(&clients[0], &[kps[0].as_slice(), kps[1].as_slice()])
        .unwrap();
    commit(
        env,
        names[0],
        0,
        &bundle,
        vec![address(names[1], 1), address(names[2], 1)],
    )
    .await
    .unwrap();
    ga.merge_pending_commit(&clients[0]).unwrap();
    let mut groups = vec![ga];
    for (n, c) in names[1..].iter().zip(&clients[1..]) {
        let w = mls_envelope(env, n, 1).await;
        groups.push(join(env, n, 1, c, &w.content).await);
    }
    (clients, groups)
}

pub async fn commit(
    env: &Env,
    who: &str,
    epoch: u64,
    bundle: &guardyn_crypto::mls::CommitBundle,
    welcome_recipients: Vec<guardyn_proto::guardyn::common::v1::DeviceAddress>,
) -> Result<u64, tonic::Status> {
    env.groups()
        .send_commit(authed(
            SendCommitRequest {
                group_id: GROUP_ID.to_vec(),
                epoch,
                commit: bundle.commit.clone(),
                welcome: bundle.welcome.clone(),
                welcome_recipients,
                group_info: bundle.group_info.clone().unwrap(),
            },
            &env.token(who, 1),
        ))
        .await
        .map(|r| r.into_inner().epoch)
}

async fn members(env: &Env, who: &str) -> Result<(u64, usize), tonic::Status> {
    env.groups()
        .get_group(authed(
            GetGroupRequest {
                group_id: GROUP_ID.to_vec(),
            },
            &env.token(who, 1),
        ))
        .await
        .map(|r| {
            let g = r.into_inner().group.unwrap();
            (g.epoch, g.members.len())
        })
}

#[tokio::test]
async fn a_relayed_proposal_reaches_members_before_the_commit_that_references_it() {
    let env = Env::start().await;
    let (a, b, c, d) = (acct(1), acct(2), acct(3), acct(4));
    let (clients, mut groups) = group_of_three(&env, [&a, &b, &c]).await;
    env.dir.set(&d, &[(1, 1)]);
    let cd = client(&d, 1);

    // B proposes adding D.
    let proposal = groups[1]
        .propose_add(&clients[1], &cd.create_key_package().unwrap())
        .unwrap();
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

    // A receives it and commits it by reference (openmls commits received proposals as
    // ProposalRefs); the server resolves the reference to "add D".
    let e = mls_envelope(&env, &a, 1).await;
    assert_eq!(e.mls_kind, MlsMessageKind::Proposal as i32);
    assert_eq!(e.content, proposal);
    assert!(matches!(
        groups[0].process_message(&clients[0], &e.content).unwrap(),
        Received::Proposal { .. }
    ));
    let bundle = groups[0].commit_pending_proposals(&clients[0]).unwrap();
    assert!(bundle.welcome.is_some());
    let parsed = guardyn_crypto::mls::parse_message(&bundle.commit).unwrap();
    match parsed.body {
        guardyn_crypto::mls::ParsedBody::Commit(info) => {
            assert_eq!(
                info.proposal_refs.len(),
                1,
                "the add is referenced, not inlined"
            );
            assert!(info.proposals.is_empty());
        }
        other => panic!("expected a commit, got {other:?}"),
    }
    assert_eq!(
        commit(&env, &a, 1, &bundle, vec![address(&d, 1)])
            .await
            .unwrap(),
        2
    );
    groups[0].merge_pending_commit(&clients[0]).unwrap();
    assert_eq!(members(&env, &a).await.unwrap(), (2, 4));

    // C gets the proposal first, then the commit, and applies both.
    let mut s = env.listen(&c, 1).await;
    let first = next_envelope(&mut s).await;
    let second = next_envelope(&mut s).await;
    assert_eq!(first.mls_kind, MlsMessageKind::Proposal as i32);
    assert_eq!(second.mls_kind, MlsMessageKind::Commit as i32);
    assert!(first.server_id < second.server_id);
    assert!(matches!(
        groups[2]
            .process_message(&clients[2], &first.content)
            .unwrap(),
        Received::Proposal { .. }
    ));
    match groups[2]
        .process_message(&clients[2], &second.content)
        .unwrap()
    {
        Received::Commit(summary) => {
            assert_eq!(summary.epoch, 2);
            assert_eq!(summary.added, vec![format!("{d}.1").into_bytes()]);
        }
        other => panic!("expected a commit, got {other:?}"),
    }

    // D joins from the Welcome and reads what A sends next.
    let w = mls_envelope(&env, &d, 1).await;
    assert_eq!(w.mls_kind, MlsMessageKind::Welcome as i32);
    let mut gd = join(&env, &d, 1, &cd, &w.content).await;
    assert_eq!(gd.epoch(), 2);
    let ct = groups[0].encrypt(&clients[0], b"welcome, D").unwrap();
    env.groups()
        .send_group_message(authed(
            SendGroupMessageRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 2,
                client_message_id: "hello-d".into(),
                message: ct,
                urgent: false,
            },
            &env.token(&a, 1),
        ))
        .await
        .unwrap();
    let e = mls_envelope(&env, &d, 1).await;
    match gd.process_message(&cd, &e.content).unwrap() {
        Received::Application { plaintext, .. } => assert_eq!(plaintext, b"welcome, D"),
        other => panic!("expected application, got {other:?}"),
    }
}

#[tokio::test]
async fn a_leaving_member_is_marked_and_removed_by_the_next_commit() {
    let env = Env::start().await;
    let (a, b, c) = (acct(1), acct(2), acct(3));
    let (clients, mut groups) = group_of_three(&env, [&a, &b, &c]).await;

    // (openmls refuses to encrypt while own proposals are pending: encrypt first.)
    let ct = groups[2].encrypt(&clients[2], b"still here?").unwrap();
    let c_leaf = groups[2].own_leaf_index();
    let leave = groups[2].propose_remove(&clients[2], c_leaf).unwrap();
    // A LeaveGroup must remove the caller's own leaf.
    let b_leaf = groups[1].own_leaf_index();
    let not_self = groups[2].propose_remove(&clients[2], b_leaf).unwrap();
    let leave_req = |proposal: Vec<u8>| LeaveGroupRequest {
        group_id: GROUP_ID.to_vec(),
        epoch: 1,
        remove_proposal: proposal,
    };
    let err = env
        .groups()
        .leave_group(authed(leave_req(not_self), &env.token(&c, 1)))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_MLS_MESSAGE");
    env.groups()
        .leave_group(authed(leave_req(leave.clone()), &env.token(&c, 1)))
        .await
        .unwrap();

    // C is marked: no more application messages, but still a member until a commit.
    let err = env
        .groups()
        .send_group_message(authed(
            SendGroupMessageRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 1,
                client_message_id: "after-leave".into(),
                message: ct,
                urgent: false,
            },
            &env.token(&c, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(members(&env, &a).await.unwrap(), (1, 3));

    // A commits the relayed remove by reference; C is gone.
    let e = mls_envelope(&env, &a, 1).await;
    assert_eq!(e.mls_kind, MlsMessageKind::Proposal as i32);
    assert_eq!(e.content, leave);
    groups[0].process_message(&clients[0], &e.content).unwrap();
    let bundle = groups[0].commit_pending_proposals(&clients[0]).unwrap();
    assert_eq!(commit(&env, &a, 1, &bundle, vec![]).await.unwrap(), 2);
    groups[0].merge_pending_commit(&clients[0]).unwrap();
    assert_eq!(members(&env, &a).await.unwrap(), (2, 2));
    assert_eq!(members(&env, &c).await.unwrap_err().code(), Code::NotFound);

    // C still receives the commit that removes it; B applies proposal and commit.
    let e = mls_envelope(&env, &c, 1).await;
    assert_eq!(e.mls_kind, MlsMessageKind::Commit as i32);
    match groups[2].process_message(&clients[2], &e.content).unwrap() {
        Received::Commit(s) => assert!(s.self_removed),
        other => panic!("expected commit, got {other:?}"),
    }
    let mut s = env.listen(&b, 1).await;
    let p = next_envelope(&mut s).await;
    let cm = next_envelope(&mut s).await;
    groups[1].process_message(&clients[1], &p.content).unwrap();
    match groups[1].process_message(&clients[1], &cm.content).unwrap() {
        Received::Commit(s) => assert_eq!(s.removed, vec![c_leaf]),
        other => panic!("expected commit, got {other:?}"),
    }
}
