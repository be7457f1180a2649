#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Client flows across independent providers, checked with the server parser.

use super::*;

fn client(name: &str) -> MlsClient {
    MlsClient::new(format!("acct-{name}:dev-1").as_bytes()).unwrap()
}

fn app(r: Received) -> (u32, Vec<u8>, Vec<u8>) {
    match r {
        Received::Application {
            sender,
            sender_identity,
            plaintext,
        } => (sender, sender_identity, plaintext),
        other => panic!("expected application message, got {other:?}"),
    }
}

fn commit(r: Received) -> CommitSummary {
    match r {
        Received::Commit(s) => s,
        other => panic!("expected commit, got {other:?}"),
    }
}

fn parsed_commit(bytes: &[u8], epoch: u64, sender: SenderInfo) -> CommitInfo {
    let p = parse_message(bytes).unwrap();
    p.check_guardyn_policy().unwrap();
    assert_eq!(p.kind, MessageKind::PublicMessage);
    assert_eq!(p.content, Some(ContentKind::Commit));
    assert_eq!(p.epoch, Some(epoch));
    assert_eq!(p.sender, Some(sender));
    match p.body {
        ParsedBody::Commit(info) => info,
        other => panic!("expected commit body, got {other:?}"),
    }
}

/// Sends `pt` from (sender, group) and checks every receiver decrypts it.
fn send(from: (&MlsClient, &mut Group), to: &mut [(&MlsClient, &mut Group)], pt: &[u8]) {
    let (sc, sg) = from;
    let ct = sg.encrypt(sc, pt).unwrap();
    let parsed = parse_message(&ct).unwrap();
    assert_eq!(parsed.kind, MessageKind::PrivateMessage);
    assert_eq!(parsed.content, Some(ContentKind::Application));
    assert_eq!(parsed.epoch, Some(sg.epoch()));
    assert_eq!(parsed.sender, None);
    parsed.check_guardyn_policy().unwrap();
    for (rc, rg) in to.iter_mut() {
        let (leaf, identity, plaintext) = app(rg.process_message(rc, &ct).unwrap());
        assert_eq!(plaintext, pt);
        assert_eq!(identity, sc.identity());
        assert_eq!(leaf, sg.own_leaf_index());
    }
}

#[test]
fn three_member_group_lifecycle() {
    let (a, b, c, d) = (client("a"), client("b"), client("c"), client("d"));
    let mut ga = Group::create(&a, b"group-1").unwrap();
    assert_eq!(ga.epoch(), 0);

    // Add B.
    let kp_b = b.create_key_package().unwrap();
    let summary_b = validate_key_package(&kp_b, &KeyPackagePolicy::default()).unwrap();
    assert_eq!(summary_b.identity, b.identity());
    assert!(!summary_b.is_last_resort);
    let add_b = ga.add_members(&a, &[&kp_b]).unwrap();
    let info = parsed_commit(&add_b.commit, 0, SenderInfo::Member(0));
    assert_eq!(
        info.proposals,
        vec![ProposalSummary::Add {
            identity: b.identity().to_vec()
        }]
    );
    let welcome = add_b.welcome.unwrap();
    match parse_message(&welcome).unwrap().body {
        ParsedBody::Welcome {
            ciphersuite,
            recipients,
        } => {
            assert_eq!(ciphersuite, u16::from(DEFAULT_CIPHERSUITE));
            assert_eq!(recipients, vec![summary_b.key_package_ref.clone()]);
        }
        other => panic!("expected welcome, got {other:?}"),
    }
    ga.merge_pending_commit(&a).unwrap();
    let mut gb = Group::join_from_welcome(&b, &welcome, Some(&ga.ratchet_tree().unwrap())).unwrap();
    assert_eq!((ga.epoch(), gb.epoch()), (1, 1));

    // Add C with a last-resort KeyPackage.
    let kp_c = c.create_last_resort_key_package().unwrap();
    assert!(
        validate_key_package(&kp_c, &KeyPackagePolicy::default())
            .unwrap()
            .is_last_resort
    );
    let add_c = ga.add_members(&a, &[&kp_c]).unwrap();
    parsed_commit(&add_c.commit, 1, SenderInfo::Member(0));
    ga.merge_pending_commit(&a).unwrap();
    let s = commit(gb.process_message(&b, &add_c.commit).unwrap());
    assert_eq!((s.epoch, s.added.clone()), (2, vec![c.identity().to_vec()]));
    let mut gc = Group::join_from_welcome(
        &c,
        &add_c.welcome.unwrap(),
        Some(&ga.ratchet_tree().unwrap()),
    )
    .unwrap();
    let ids: Vec<Vec<u8>> = gc.members().into_iter().map(|m| m.identity).collect();
    assert_eq!(
        ids,
        vec![
            a.identity().to_vec(),
            b.identity().to_vec(),
            c.identity().to_vec()
        ]
    );

    // Application messages each way.
    send(
        (&a, &mut ga),
        &mut [(&b, &mut gb), (&c, &mut gc)],
        b"hello from a",
    );
    send(
        (&b, &mut gb),
        &mut [(&a, &mut ga), (&c, &mut gc)],
        b"hello from b",
    );
    send(
        (&c, &mut gc),
        &mut [(&a, &mut ga), (&b, &mut gb)],
        b"hello from c",
    );

    // B self-updates.
    let upd = gb.self_update(&b).unwrap();
    let info = parsed_commit(&upd.commit, 2, SenderInfo::Member(1));
    assert!(info.has_path && info.proposals.is_empty());
    gb.merge_pending_commit(&b).unwrap();
    for (cl, g) in [(&a, &mut ga), (&c, &mut gc)] {
        assert_eq!(commit(g.process_message(cl, &upd.commit).unwrap()).epoch, 3);
    }
    send(
        (&b, &mut gb),
        &mut [(&a, &mut ga), (&c, &mut gc)],
        b"after update",
    );

    // A removes C.
    let rm = ga.remove_members(&a, &[2]).unwrap();
    let info = parsed_commit(&rm.commit, 3, SenderInfo::Member(0));
    assert_eq!(
        info.proposals,
        vec![ProposalSummary::Remove { leaf_index: 2 }]
    );
    ga.merge_pending_commit(&a).unwrap();
    let s = commit(gb.process_message(&b, &rm.commit).unwrap());
    assert_eq!(
        (s.epoch, s.removed.clone(), s.self_removed),
        (4, vec![2], false)
    );
    let s = commit(gc.process_message(&c, &rm.commit).unwrap());
    assert!(s.self_removed);
    assert!(!gc.is_active());
    let after = ga.encrypt(&a, b"c must not read this").unwrap();
    assert!(gc.process_message(&c, &after).is_err());
    assert!(gc.encrypt(&c, b"still here?").is_err());
    assert_eq!(
        app(gb.process_message(&b, &after).unwrap()).2,
        b"c must not read this"
    );

    // D joins by external commit from the published GroupInfo.
    let group_info = rm.group_info.unwrap();
    let gi = parse_message(&group_info).unwrap();
    assert_eq!((gi.kind, gi.epoch), (MessageKind::GroupInfo, Some(4)));
    assert_eq!(gi.group_id.as_deref(), Some(&b"group-1"[..]));
    // The commit's GroupInfo leaves the tree out: the joiner needs it from elsewhere.
    assert!(Group::join_by_external_commit(&d, &group_info, None).is_err());
    let (mut gd, ext) =
        Group::join_by_external_commit(&d, &group_info, Some(&ga.ratchet_tree().unwrap())).unwrap();
    parsed_commit(&ext, 4, SenderInfo::NewMemberCommit);
    assert_eq!(gd.epoch(), 5);
    for (cl, g) in [(&a, &mut ga), (&b, &mut gb)] {
        let s = commit(g.process_message(cl, &ext).unwrap());
        assert_eq!(s.sender, SenderInfo::NewMemberCommit);
        assert_eq!(s.epoch, 5);
    }
    assert_eq!(ga.members().len(), 3);
    send(
        (&d, &mut gd),
        &mut [(&a, &mut ga), (&b, &mut gb)],
        b"hi, I am d",
    );
    send(
        (&a, &mut ga),
        &mut [(&b, &mut gb), (&d, &mut gd)],
        b"welcome d",
    );
}

#[test]
fn proposals_then_commit_by_another_member() {
    let (a, b, c) = (client("a"), client("b"), client("c"));
    let mut ga = Group::create(&a, b"group-2").unwrap();
    let add_b = ga
        .add_members(&a, &[&b.create_key_package().unwrap()])
        .unwrap();
    // The server echoes A's own commit back: that merges it.
    assert_eq!(
        commit(ga.process_message(&a, &add_b.commit).unwrap()).epoch,
        1
    );
    let mut gb = Group::join_from_welcome(
        &b,
        &add_b.welcome.unwrap(),
        Some(&ga.ratchet_tree().unwrap()),
    )
    .unwrap();

    // A proposes adding C and a self update; B commits both by reference.
    let prop_add = ga
        .propose_add(&a, &c.create_key_package().unwrap())
        .unwrap();
    let parsed = parse_message(&prop_add).unwrap();
    parsed.check_guardyn_policy().unwrap();
    assert_eq!(parsed.content, Some(ContentKind::Proposal));
    assert_eq!(
        parsed.body,
        ParsedBody::Proposal(ProposalSummary::Add {
            identity: c.identity().to_vec()
        })
    );
    let prop_upd = ga.propose_self_update(&a).unwrap();
    assert_eq!(
        parse_message(&prop_upd).unwrap().body,
        ParsedBody::Proposal(ProposalSummary::Update)
    );
    for p in [&prop_add, &prop_upd] {
        match gb.process_message(&b, p).unwrap() {
            Received::Proposal { sender } => assert_eq!(sender, SenderInfo::Member(0)),
            other => panic!("expected proposal, got {other:?}"),
        }
    }
    let cb = gb.commit_pending_proposals(&b).unwrap();
    let info = parsed_commit(&cb.commit, 1, SenderInfo::Member(1));
    assert_eq!(info.proposal_refs.len(), 2);
    gb.merge_pending_commit(&b).unwrap();
    let s = commit(ga.process_message(&a, &cb.commit).unwrap());
    assert_eq!((s.epoch, s.added), (2, vec![c.identity().to_vec()]));
    let mut gc =
        Group::join_from_welcome(&c, &cb.welcome.unwrap(), Some(&gb.ratchet_tree().unwrap()))
            .unwrap();
    send(
        (&c, &mut gc),
        &mut [(&a, &mut ga), (&b, &mut gb)],
        b"added by proposal",
    );

    // B proposes removing C; A commits it.
    let prop_rm = gb.propose_remove(&b, 2).unwrap();
    assert_eq!(
        parse_message(&prop_rm).unwrap().body,
        ParsedBody::Proposal(ProposalSummary::Remove { leaf_index: 2 })
    );
    ga.process_message(&a, &prop_rm).unwrap();
    gc.process_message(&c, &prop_rm).unwrap();
    let cm = ga.commit_pending_proposals(&a).unwrap();
    ga.merge_pending_commit(&a).unwrap();
    assert!(commit(gc.process_message(&c, &cm.commit).unwrap()).self_removed);
    assert_eq!(
        commit(gb.process_message(&b, &cm.commit).unwrap()).removed,
        vec![2]
    );
    assert!(gb.propose_remove(&b, 2).is_err(), "leaf 2 is empty now");
}

#[test]
fn rejected_commit_can_be_discarded() {
    let (a, b) = (client("a"), client("b"));
    let mut ga = Group::create(&a, b"group-3").unwrap();
    let add_b = ga
        .add_members(&a, &[&b.create_key_package().unwrap()])
        .unwrap();
    ga.merge_pending_commit(&a).unwrap();
    let mut gb = Group::join_from_welcome(
        &b,
        &add_b.welcome.unwrap(),
        Some(&ga.ratchet_tree().unwrap()),
    )
    .unwrap();
    // Both commit in epoch 1; the server accepts B's, so A discards its own.
    let _lost = ga.self_update(&a).unwrap();
    let won = gb.self_update(&b).unwrap();
    gb.merge_pending_commit(&b).unwrap();
    ga.discard_pending_commit(&a).unwrap();
    assert_eq!(
        commit(ga.process_message(&a, &won.commit).unwrap()).epoch,
        2
    );
    send((&a, &mut ga), &mut [(&b, &mut gb)], b"converged");
}

#[test]
fn key_package_joinable_after_persist_and_reload() {
    let a = client("a");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.mls");
    let (kp_b, kp_last) = {
        let b = client("b");
        let kps = (
            b.create_key_package().unwrap(),
            b.create_last_resort_key_package().unwrap(),
        );
        b.save_to_file(&path).unwrap();
        kps
        // `b` (and its in-memory provider) is dropped here.
    };
    let b = MlsClient::load_from_file(&path).unwrap();
    assert_eq!(b.identity(), b"acct-b:dev-1");

    let mut ga = Group::create(&a, b"group-4").unwrap();
    let add = ga.add_members(&a, &[&kp_b]).unwrap();
    ga.merge_pending_commit(&a).unwrap();
    let mut gb =
        Group::join_from_welcome(&b, &add.welcome.unwrap(), Some(&ga.ratchet_tree().unwrap()))
            .unwrap();
    send((&a, &mut ga), &mut [(&b, &mut gb)], b"after restart");
    send((&b, &mut gb), &mut [(&a, &mut ga)], b"reply");

    // Group state persists too: save, reload, keep talking.
    let bytes = b.to_bytes().unwrap();
    drop((gb, b));
    let b = MlsClient::from_bytes(&bytes).unwrap();
    let mut gb = Group::load(&b, b"group-4").unwrap();
    send((&a, &mut ga), &mut [(&b, &mut gb)], b"after second restart");

    // A one-time KeyPackage is consumed by the join; a last-resort one is not.
    let mut g5 = Group::create(&a, b"group-5").unwrap();
    let again = g5.add_members(&a, &[&kp_b]).unwrap();
    assert!(matches!(
        Group::join_from_welcome(&b, &again.welcome.unwrap(), None),
        Err(MlsError::Welcome(_))
    ));
    for gid in [&b"group-6"[..], b"group-7"] {
        let mut g = Group::create(&a, gid).unwrap();
        let add = g.add_members(&a, &[&kp_last]).unwrap();
        g.merge_pending_commit(&a).unwrap();
        let mut gb =
            Group::join_from_welcome(&b, &add.welcome.unwrap(), Some(&g.ratchet_tree().unwrap()))
                .unwrap();
        send((&a, &mut g), &mut [(&b, &mut gb)], b"last resort");
    }
}

#[test]
fn persisted_state_is_versioned_and_checked() {
    let b = client("b");
    let mut bytes = b.to_bytes().unwrap();
    assert_eq!(&bytes[..5], b"GMLC\x01");
    bytes[4] = 9;
    assert!(matches!(
        MlsClient::from_bytes(&bytes),
        Err(MlsError::UnsupportedStateVersion(9))
    ));
    bytes[4] = 1;
    bytes.truncate(bytes.len() - 1);
    assert!(matches!(
        MlsClient::from_bytes(&bytes),
        Err(MlsError::StateFormat(_))
    ));
    let p = b.provider().to_bytes().unwrap();
    assert_eq!(&p[..5], b"GMLS\x01");
    assert_eq!(MlsProvider::from_bytes(&p).unwrap().to_bytes().unwrap(), p);
}

#[test]
fn debug_output_has_no_secrets() {
    let a = client("a");
    let b = client("b");
    let mut ga = Group::create(&a, b"group-8").unwrap();
    let add = ga
        .add_members(&a, &[&b.create_key_package().unwrap()])
        .unwrap();
    ga.merge_pending_commit(&a).unwrap();
    let mut gb = Group::join_from_welcome(
        &b,
        add.welcome.as_ref().unwrap(),
        Some(&ga.ratchet_tree().unwrap()),
    )
    .unwrap();
    let ct = ga.encrypt(&a, b"top secret plaintext").unwrap();
    let received = gb.process_message(&b, &ct).unwrap();

    let dump = format!(
        "{a:?} {b:?} {ga:?} {gb:?} {add:?} {received:?} {:?}",
        a.provider()
    );
    assert!(!dump.contains("top secret"));
    assert!(!dump.contains("116, 111, 112")); // "top" as a byte list
    // Keys would show up as byte lists; nothing longer than a few numbers may appear.
    assert!(
        longest_number_list(&dump) < 8,
        "byte material leaked: {dump}"
    );
}

fn longest_number_list(s: &str) -> usize {
    let (mut best, mut run) = (0, 0);
    for token in s.split(", ") {
        let t = token.trim_start_matches('[');
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}
