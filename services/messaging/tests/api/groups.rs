//! The MLS delivery service with genuine openmls messages.

use guardyn_crypto::mls::{Group, MlsClient, OpenWelcome, Received};
use guardyn_proto::guardyn::common::v1::{DeviceAddress, StaleEpoch};
use guardyn_proto::guardyn::messaging::v1::{
    AckRequest, CreateGroupRequest, DeliveredEnvelope, EnvelopeType, GetGroupInfoRequest,
    GetGroupRequest, GetRatchetTreeRequest, GroupAck, MlsMessageKind, SendCommitRequest,
    SendGroupMessageRequest,
};
use tonic::Code;

use crate::common::*;
use crate::proposals::commit;

pub const GROUP_ID: &[u8] = b"guardyn-test-group-0001";

pub fn client(account: &str, device: u32) -> MlsClient {
    MlsClient::new(format!("{account}.{device}").as_bytes()).unwrap()
}

pub fn address(account: &str, device: u32) -> DeviceAddress {
    DeviceAddress {
        account_id: account.to_owned(),
        device_id: device,
    }
}

pub async fn create(env: &Env, who: (&str, u32), c: &MlsClient) -> Group {
    let g = Group::create(c, GROUP_ID).unwrap();
    env.groups()
        .create_group(authed(
            CreateGroupRequest {
                group_id: GROUP_ID.to_vec(),
                group_info: g.export_group_info(c).unwrap(),
            },
            &env.token(who.0, who.1),
        ))
        .await
        .unwrap();
    g
}

/// Joins `account`'s device from a Welcome, with the ratchet tree the server keeps for the
/// Welcome's epoch (Welcomes leave it out).
pub async fn join(env: &Env, account: &str, device: u32, c: &MlsClient, welcome: &[u8]) -> Group {
    let open = OpenWelcome::open(c, welcome).unwrap();
    let tree = env
        .groups()
        .get_ratchet_tree(authed(
            GetRatchetTreeRequest {
                group_id: open.group_id().to_vec(),
                epoch: open.epoch(),
            },
            &env.token(account, device),
        ))
        .await
        .unwrap()
        .into_inner()
        .ratchet_tree;
    open.join(c, Some(&tree), |_| true).unwrap()
}

pub async fn mls_envelope(env: &Env, account: &str, device: u32) -> DeliveredEnvelope {
    let mut s = env.listen(account, device).await;
    let e = next_envelope(&mut s).await;
    assert_eq!(e.r#type, EnvelopeType::Mls as i32);
    assert_eq!(e.group_id.as_deref(), Some(GROUP_ID));
    env.messaging()
        .ack(authed(ack_request(&e), &env.token(account, device)))
        .await
        .unwrap();
    e
}

/// The acknowledgement of one envelope: by queue position, or by group-log position.
pub fn ack_request(e: &DeliveredEnvelope) -> AckRequest {
    if e.group_log {
        AckRequest {
            group_acks: vec![GroupAck {
                group_id: e.group_id.clone().unwrap_or_default(),
                server_ids: vec![e.server_id],
            }],
            ..Default::default()
        }
    } else {
        AckRequest {
            server_ids: vec![e.server_id],
            ..Default::default()
        }
    }
}

/// Send `id` (also the plaintext) as an application message from `a`'s device 1.
pub async fn send_group_message(
    env: &Env,
    a: &str,
    g: &mut Group,
    c: &guardyn_crypto::mls::MlsClient,
    id: &str,
) -> Result<(), tonic::Status> {
    let message = g.encrypt(c, id.as_bytes()).unwrap();
    env.groups()
        .send_group_message(authed(
            SendGroupMessageRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: g.epoch(),
                client_message_id: id.into(),
                message,
                urgent: false,
            },
            &env.token(a, 1),
        ))
        .await
        .map(|_| ())
}

/// A (creator) and B, each with one device, in a group at epoch 1: their MLS clients and
/// group states. B's Welcome is read and acknowledged.
pub async fn group_of_two(env: &Env, a: &str, b: &str) -> ([MlsClient; 2], [Group; 2]) {
    env.dir.set(a, &[(1, 1)]);
    env.dir.set(b, &[(1, 1)]);
    let (ca, cb) = (client(a, 1), client(b, 1));
    let mut ga = create(env, (a, 1), &ca).await;
    let bundle = ga
        .add_members(&ca, &[cb.create_key_package().unwrap().as_slice()])
        .unwrap();
    env.groups()
        .send_commit(authed(
            SendCommitRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 0,
                commit: bundle.commit.clone(),
                welcome: bundle.welcome.clone(),
                welcome_recipients: vec![address(b, 1)],
                group_info: bundle.group_info.clone().unwrap(),
            },
            &env.token(a, 1),
        ))
        .await
        .unwrap();
    ga.merge_pending_commit(&ca).unwrap();
    let gb = join(env, b, 1, &cb, &mls_envelope(env, b, 1).await.content).await;
    ([ca, cb], [ga, gb])
}

#[tokio::test]
async fn a_group_of_three_adds_messages_and_removes_with_real_mls() {
    let env = Env::start().await;
    let (a, b, c, d) = (acct(1), acct(2), acct(3), acct(4));
    for x in [&a, &b, &c, &d] {
        env.dir.set(x, &[(1, 1)]);
    }
    let (ca, cb, cc) = (client(&a, 1), client(&b, 1), client(&c, 1));
    let mut ga = create(&env, (&a, 1), &ca).await;

    let kps = [
        cb.create_key_package().unwrap(),
        cc.create_key_package().unwrap(),
    ];
    let bundle = ga
        .add_members(&ca, &[kps[0].as_slice(), kps[1].as_slice()])
        .unwrap();
    let r = env
        .groups()
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
        .unwrap()
        .into_inner();
    assert_eq!(r.epoch, 1);
    ga.merge_pending_commit(&ca).unwrap();

    let mut members = Vec::new();
    for (acc, cl) in [(&b, &cb), (&c, &cc)] {
        let w = mls_envelope(&env, acc, 1).await;
        assert_eq!(w.mls_kind, MlsMessageKind::Welcome as i32);
        assert_eq!(
            Some(&w.content),
            bundle.welcome.as_ref(),
            "welcome bytes unchanged"
        );
        members.push(join(&env, acc, 1, cl, &w.content).await);
    }
    let group = env
        .groups()
        .get_group(authed(
            GetGroupRequest {
                group_id: GROUP_ID.to_vec(),
            },
            &env.token(&b, 1),
        ))
        .await
        .unwrap()
        .into_inner()
        .group
        .unwrap();
    assert_eq!(group.epoch, 1);
    assert_eq!(group.members.len(), 3);

    // An application message: stored once, referenced per member, bytes out == bytes in.
    let plaintext = vec![42u8; 40_000];
    let ct = ga.encrypt(&ca, &plaintext).unwrap();
    env.groups()
        .send_group_message(authed(
            SendGroupMessageRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 1,
                client_message_id: "g1".into(),
                message: ct.clone(),
                urgent: true,
            },
            &env.token(&a, 1),
        ))
        .await
        .unwrap();
    let store = env.server.stores();
    for acc in [&b, &c] {
        let part = format!("msg/v1/q/{acc}/").into_bytes();
        let part = [part, 1u32.to_be_bytes().to_vec()].concat();
        let queued = store.log.read(&part, 1, 10).await.unwrap();
        assert!(
            queued.is_empty(),
            "members read the group log, not their queues"
        );
    }
    let hex: String = GROUP_ID.iter().map(|b| format!("{b:02x}")).collect();
    let stored = store
        .log
        .read(format!("msg/v1/g/{hex}").as_bytes(), 1, 100)
        .await
        .unwrap();
    let big: Vec<_> = stored
        .iter()
        .filter(|e| e.payload.len() >= ct.len())
        .collect();
    assert_eq!(big.len(), 1, "the ciphertext is stored once");
    for (i, acc) in [&b, &c].into_iter().enumerate() {
        let e = mls_envelope(&env, acc, 1).await;
        assert_eq!(e.content, ct);
        assert!(e.group_log, "read from the group log");
        assert_eq!(e.mls_kind, MlsMessageKind::Application as i32);
        match members[i]
            .process_message(if i == 0 { &cb } else { &cc }, &e.content)
            .unwrap()
        {
            Received::Application { plaintext: p, .. } => assert_eq!(p, plaintext),
            other => panic!("expected application, got {other:?}"),
        }
    }

    // Outsiders see nothing and send nothing.
    let outsider = env.token(&d, 1);
    let err = env
        .groups()
        .get_group(authed(
            GetGroupRequest {
                group_id: GROUP_ID.to_vec(),
            },
            &outsider,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = env
        .groups()
        .get_group_info(authed(
            GetGroupInfoRequest {
                group_id: GROUP_ID.to_vec(),
            },
            &outsider,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = env
        .groups()
        .send_group_message(authed(
            SendGroupMessageRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 1,
                client_message_id: "x".into(),
                message: ct.clone(),
                urgent: false,
            },
            &outsider,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // A member's other device (same account) may fetch the GroupInfo for an external join.
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
    assert_eq!(gi.epoch, 1);

    // B removes C: C receives the commit that removes it and is no longer a member.
    let c_leaf = ga
        .members()
        .into_iter()
        .find(|m| m.identity == format!("{c}.1").into_bytes())
        .unwrap()
        .leaf_index;
    let gb = &mut members[0];
    let removal = gb.remove_members(&cb, &[c_leaf]).unwrap();
    env.groups()
        .send_commit(authed(
            SendCommitRequest {
                group_id: GROUP_ID.to_vec(),
                epoch: 1,
                commit: removal.commit.clone(),
                welcome: None,
                welcome_recipients: vec![],
                group_info: removal.group_info.clone().unwrap(),
            },
            &env.token(&b, 1),
        ))
        .await
        .unwrap();
    gb.merge_pending_commit(&cb).unwrap();
    let e = mls_envelope(&env, &c, 1).await;
    assert_eq!(e.mls_kind, MlsMessageKind::Commit as i32);
    match members[1].process_message(&cc, &e.content).unwrap() {
        Received::Commit(s) => assert!(s.self_removed),
        other => panic!("expected commit, got {other:?}"),
    }
    let e = mls_envelope(&env, &a, 1).await;
    assert!(matches!(
        ga.process_message(&ca, &e.content).unwrap(),
        Received::Commit(_)
    ));
    let g = env
        .groups()
        .get_group(authed(
            GetGroupRequest {
                group_id: GROUP_ID.to_vec(),
            },
            &env.token(&a, 1),
        ))
        .await
        .unwrap()
        .into_inner()
        .group
        .unwrap();
    assert_eq!(g.epoch, 2);
    assert_eq!(g.members.len(), 2);
    let err = env
        .groups()
        .get_group(authed(
            GetGroupRequest {
                group_id: GROUP_ID.to_vec(),
            },
            &env.token(&c, 1),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn exactly_one_of_eight_concurrent_commits_wins_the_epoch() {
    let env = Env::start().await;
    let a = acct(1);
    env.dir.set(&a, &[(1, 1)]);
    let ca = client(&a, 1);
    let _g = create(&env, (&a, 1), &ca).await;
    // Eight independent copies of the creator's state, each committing a self-update at
    // epoch 0.
    let saved = ca.to_bytes().unwrap();
    let mut requests = Vec::new();
    for _ in 0..8 {
        let copy = MlsClient::from_bytes(&saved).unwrap();
        let mut g = Group::load(&copy, GROUP_ID).unwrap();
        let b = g.self_update(&copy).unwrap();
        requests.push(SendCommitRequest {
            group_id: GROUP_ID.to_vec(),
            epoch: 0,
            commit: b.commit,
            welcome: None,
            welcome_recipients: vec![],
            group_info: b.group_info.unwrap(),
        });
    }
    let token = env.token(&a, 1);
    let calls = requests.into_iter().map(|r| {
        let mut client = env.groups();
        let token = token.clone();
        async move { client.send_commit(authed(r, &token)).await }
    });
    let results = futures::future::join_all(calls).await;
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1);
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.code(), Code::Aborted);
        assert_eq!(reason(r), "STALE_EPOCH");
        let s: StaleEpoch = detail(r, "StaleEpoch");
        assert_eq!(s.current_epoch, 1);
    }
}

/// The group record's key, and the prefix of its bulky state's chunks.
fn group_keys() -> (Vec<u8>, Vec<u8>) {
    let hex = guardyn_common::ids::hex(GROUP_ID);
    (
        format!("msg/v1/group/{hex}").into_bytes(),
        format!("msg/v1/gs/{hex}/").into_bytes(),
    )
}

/// The generations of the group's bulky state found in storage.
async fn bulk_generations(env: &Env) -> std::collections::BTreeSet<Vec<u8>> {
    let (_, prefix) = group_keys();
    env.server
        .kv()
        .scan(
            guardyn_storage::KeyRange::prefix(&prefix),
            guardyn_storage::Direction::Forward,
            1_000,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.key[prefix.len()..prefix.len() + 8].to_vec())
        .collect()
}

/// A group whose ratchet tree no longer fits the record it routes by: the record keeps only
/// the leaves, the GroupInfo and public state move beside it, and every operation still
/// verifies against them: messages, a removal, GetGroupInfo, and concurrent commits, of which
/// one wins and leaves exactly one stored generation.
#[tokio::test]
async fn a_group_whose_tree_outgrows_its_record_keeps_verifying_and_delivering() {
    const MEMBERS: u32 = 100;
    let env = Env::start().await;
    let a = acct(1);
    let others: Vec<String> = (2..=MEMBERS).map(acct).collect();
    for x in std::iter::once(&a).chain(&others) {
        env.dir.set(x, &[(1, 1)]);
    }
    let ca = client(&a, 1);
    let clients: Vec<MlsClient> = others.iter().map(|o| client(o, 1)).collect();
    let mut ga = create(&env, (&a, 1), &ca).await;
    let (record_key, _) = group_keys();
    let small = env.server.kv().get(&record_key).await.unwrap().unwrap();

    let kps: Vec<Vec<u8>> = clients
        .iter()
        .map(|c| c.create_key_package().unwrap())
        .collect();
    let kps: Vec<&[u8]> = kps.iter().map(Vec::as_slice).collect();
    let bundle = ga.add_members(&ca, &kps).unwrap();
    let group_info = bundle.group_info.clone().unwrap();
    assert!(
        group_info.len() < 1_000,
        "the GroupInfo leaves the tree out: {} bytes",
        group_info.len()
    );
    let to = others.iter().map(|o| address(o, 1)).collect();
    commit(&env, &a, 0, &bundle, to).await.unwrap();
    ga.merge_pending_commit(&ca).unwrap();
    let record = env.server.kv().get(&record_key).await.unwrap().unwrap();
    assert!(
        record.len() < small.len() + MEMBERS as usize * 64,
        "the record grows by the leaves only: {} bytes, {} with one member",
        record.len(),
        small.len()
    );
    assert_eq!(bulk_generations(&env).await.len(), 1);

    let b = &others[0];
    let mut gb = join(
        &env,
        b,
        1,
        &clients[0],
        &mls_envelope(&env, b, 1).await.content,
    )
    .await;
    send_group_message(&env, &a, &mut ga, &ca, "to-a-hundred")
        .await
        .unwrap();
    match gb
        .process_message(&clients[0], &mls_envelope(&env, b, 1).await.content)
        .unwrap()
    {
        Received::Application { plaintext, .. } => assert_eq!(plaintext, b"to-a-hundred"),
        other => panic!("expected the message, got {other:?}"),
    }

    // A removal verifies against the stored state and replaces it.
    let last = ga.members().last().unwrap().leaf_index;
    let removal = ga.remove_members(&ca, &[last]).unwrap();
    let removal_info = removal.group_info.clone().unwrap();
    commit(&env, &a, 1, &removal, vec![]).await.unwrap();
    ga.merge_pending_commit(&ca).unwrap();
    let info = env
        .groups()
        .get_group_info(authed(
            GetGroupInfoRequest {
                group_id: GROUP_ID.to_vec(),
            },
            &env.token(b, 1),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((info.epoch, info.group_info), (2, removal_info));
    assert_eq!(bulk_generations(&env).await.len(), 1);

    // Concurrent commits from copies of the creator: one wins, the others are refused whole.
    let saved = ca.to_bytes().unwrap();
    let token = env.token(&a, 1);
    let calls = (0..4).map(|_| {
        let copy = MlsClient::from_bytes(&saved).unwrap();
        let b = Group::load(&copy, GROUP_ID)
            .unwrap()
            .self_update(&copy)
            .unwrap();
        let r = SendCommitRequest {
            group_id: GROUP_ID.to_vec(),
            epoch: 2,
            commit: b.commit,
            welcome: None,
            welcome_recipients: vec![],
            group_info: b.group_info.unwrap(),
        };
        let (mut client, token) = (env.groups(), token.clone());
        async move { client.send_commit(authed(r, &token)).await }
    });
    let results = futures::future::join_all(calls).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|e| reason(e) == "STALE_EPOCH")
    );
    assert_eq!(bulk_generations(&env).await.len(), 1);
}

/// The ratchet tree a Welcome leaves out: served to the group's members only, for the epochs
/// that added members, and useless for any other epoch (the joiner checks it against the tree
/// hash in its Welcome, so the server cannot feed it another tree).
#[tokio::test]
async fn welcome_trees_go_to_members_only_and_bind_to_their_epoch() {
    let env = Env::start().await;
    let (a, b, c, outsider) = (acct(1), acct(2), acct(3), acct(4));
    for x in [&c, &outsider] {
        env.dir.set(x, &[(1, 1)]);
    }
    let ([ca, _cb], [mut ga, _gb]) = group_of_two(&env, &a, &b).await;
    let tree = |who: &str, epoch: u64| {
        let (mut groups, token) = (env.groups(), env.token(who, 1));
        async move {
            groups
                .get_ratchet_tree(authed(
                    GetRatchetTreeRequest {
                        group_id: GROUP_ID.to_vec(),
                        epoch,
                    },
                    &token,
                ))
                .await
                .map(|r| r.into_inner().ratchet_tree)
        }
    };
    let epoch_1 = tree(&b, 1).await.unwrap();
    assert_eq!(tree(&outsider, 1).await.unwrap_err().code(), Code::NotFound);
    let not_kept = tree(&b, 0).await.unwrap_err();
    assert_eq!(not_kept.code(), Code::NotFound);
    assert!(
        not_kept.message().contains("external commit"),
        "{not_kept:?}"
    );

    let cc = client(&c, 1);
    let bundle = ga
        .add_members(&ca, &[cc.create_key_package().unwrap().as_slice()])
        .unwrap();
    commit(&env, &a, 1, &bundle, vec![address(&c, 1)])
        .await
        .unwrap();
    ga.merge_pending_commit(&ca).unwrap();
    let welcome = mls_envelope(&env, &c, 1).await;
    assert_eq!(
        welcome.epoch,
        Some(2),
        "a Welcome's envelope names the epoch it is for"
    );
    let welcome = welcome.content;
    let epoch_2 = tree(&c, 2).await.unwrap();
    assert_eq!(epoch_2, ga.ratchet_tree().unwrap());
    // Opening a Welcome consumes its one-time KeyPackage: the wrong tree is tried on a copy.
    let copy = MlsClient::from_bytes(&cc.to_bytes().unwrap()).unwrap();
    assert!(
        OpenWelcome::open(&copy, &welcome)
            .unwrap()
            .join(&copy, Some(&epoch_1), |_| true)
            .is_err(),
        "another epoch's tree does not match the Welcome"
    );
    let mut gc = OpenWelcome::open(&cc, &welcome)
        .unwrap()
        .join(&cc, Some(&epoch_2), |_| true)
        .unwrap();
    let ct = ga.encrypt(&ca, b"hello c").unwrap();
    assert!(matches!(
        gc.process_message(&cc, &ct).unwrap(),
        Received::Application { plaintext, .. } if plaintext == b"hello c"
    ));
}
