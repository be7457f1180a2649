#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The delivery service's public group state.

use super::*;

const GID: &[u8] = b"ds-test-group-000001";

fn started(alice: &MlsClient) -> (Group, DsGroup) {
    let g = Group::create(alice, GID).unwrap();
    let ds = DsGroup::from_group_info(&g.export_group_info(alice).unwrap()).unwrap();
    (g, ds)
}

#[test]
fn honest_commits_and_proposals_are_verified_and_tracked() {
    let (alice, bob, carol) = (
        MlsClient::new(b"a.1").unwrap(),
        MlsClient::new(b"b.1").unwrap(),
        MlsClient::new(b"c.1").unwrap(),
    );
    let (mut ga, mut ds) = started(&alice);
    assert_eq!(ds.epoch(), 0);
    assert_eq!(ds.leaf_of(b"a.1"), Some(0));

    let kp = bob.create_key_package().unwrap();
    let kp_ref = validate_key_package(&kp, &KeyPackagePolicy::default())
        .unwrap()
        .key_package_ref;
    let bundle = ga.add_members(&alice, &[kp.as_slice()]).unwrap();
    let c = ds.process_commit(&bundle.commit).unwrap();
    assert_eq!(c.epoch, 1);
    assert_eq!(c.sender, SenderInfo::Member(0));
    assert_eq!(c.added.len(), 1);
    assert_eq!(c.added[0].identity, b"b.1");
    assert_eq!(c.added[0].key_package_ref, kp_ref);
    assert_eq!(key_package_ref(&kp).unwrap(), kp_ref);
    assert_eq!(c.added[0].signature_key, bob.signature_public_key());
    assert!(c.changed.iter().any(|ch| ch.leaf.identity == b"b.1"
        && ch.previous.is_none()
        && ch.leaf.signature_key == bob.signature_public_key()));
    ds.check_group_info(bundle.group_info.as_ref().unwrap())
        .unwrap();
    ga.merge_pending_commit(&alice).unwrap();
    // Neither the commit's GroupInfo nor its Welcome carries the tree: Bob joins with the one
    // the delivery service verified, and cannot without it.
    assert!(matches!(
        DsGroup::from_group_info(bundle.group_info.as_ref().unwrap()),
        Err(MlsError::MissingRatchetTree)
    ));
    let welcome = bundle.welcome.as_ref().unwrap();
    let open = OpenWelcome::open(&bob, welcome).unwrap();
    assert_eq!(
        (open.group_id(), open.epoch(), open.carries_tree()),
        (GID, 1, false)
    );
    let bob_copy = MlsClient::from_bytes(&bob.to_bytes().unwrap()).unwrap();
    assert!(Group::join_from_welcome(&bob_copy, welcome, None).is_err());
    assert_eq!(ds.ratchet_tree().unwrap(), ga.ratchet_tree().unwrap());
    let mut gb = open
        .join(&bob, Some(&ds.ratchet_tree().unwrap()), |_| true)
        .unwrap();

    // Persisted and restored, the state keeps verifying.
    let mut ds = DsGroup::from_bytes(&ds.to_bytes().unwrap()).unwrap();
    assert_eq!(ds.epoch(), 1);
    assert_eq!(ds.members().len(), 2);

    // A proposal by Bob, then Alice's commit that references it.
    let p = gb
        .propose_add(&bob, &carol.create_key_package().unwrap())
        .unwrap();
    let vp = ds.process_proposal(&p).unwrap();
    assert_eq!(vp.sender_leaf, 1);
    assert_eq!(vp.added.as_ref().unwrap().identity, b"c.1");
    ga.process_message(&alice, &p).unwrap();
    let mut ds = DsGroup::from_bytes(&ds.to_bytes().unwrap()).unwrap();
    let bundle = ga.commit_pending_proposals(&alice).unwrap();
    let c = ds.process_commit(&bundle.commit).unwrap();
    assert_eq!(c.epoch, 2);
    assert_eq!(c.added[0].identity, b"c.1");
    ds.check_group_info(bundle.group_info.as_ref().unwrap())
        .unwrap();
    ga.merge_pending_commit(&alice).unwrap();

    // A self-update keeps identity and signature key: nothing "changed" for the binding.
    let bundle = ga.self_update(&alice).unwrap();
    let c = ds.process_commit(&bundle.commit).unwrap();
    assert!(c.changed.is_empty(), "{:?}", c.changed);
    assert_eq!(c.removed, Vec::<u32>::new());
}

#[test]
fn forged_and_garbage_commits_are_refused_without_changing_the_state() {
    let (alice, mallory) = (
        MlsClient::new(b"a.1").unwrap(),
        MlsClient::new(b"m.1").unwrap(),
    );
    let (mut ga, mut ds) = started(&alice);

    // Mallory builds her own group with the same id and commits "at epoch 0" as leaf 0.
    let mut gm = Group::create(&mallory, GID).unwrap();
    let forged = gm.self_update(&mallory).unwrap();
    assert!(matches!(
        ds.process_commit(&forged.commit),
        Err(MlsError::InvalidHandshake(_))
    ));
    // A flipped bit in an honest commit's signature (the message ends with the signature, then
    // the confirmation and membership tags, 33 bytes each: those need group secrets to check).
    let honest = ga.self_update(&alice).unwrap();
    let mut tampered = honest.commit.clone();
    let last = tampered.len() - 2 * 33 - 10;
    tampered[last] ^= 1;
    assert!(ds.process_commit(&tampered).is_err());
    assert!(ds.process_commit(b"\x00\x01garbage").is_err());
    assert_eq!(ds.epoch(), 0);

    // The GroupInfo of another state is refused.
    assert!(matches!(
        ds.check_group_info(forged.group_info.as_ref().unwrap()),
        Err(MlsError::GroupInfoMismatch(_))
    ));

    // The honest commit still wins epoch 0, and its GroupInfo matches.
    ds.process_commit(&honest.commit).unwrap();
    assert_eq!(ds.epoch(), 1);
    ds.check_group_info(honest.group_info.as_ref().unwrap())
        .unwrap();
    // The previous epoch's GroupInfo no longer does.
    assert!(
        ds.check_group_info(forged.group_info.as_ref().unwrap())
            .is_err()
    );
}

#[test]
fn members_a_client_check_rejects_are_neither_joined_nor_merged() {
    let (alice, bob, carol) = (
        MlsClient::new(b"a.1").unwrap(),
        MlsClient::new(b"b.1").unwrap(),
        MlsClient::new(b"c.1").unwrap(),
    );
    let (mut ga, _) = started(&alice);
    let bundle = ga
        .add_members(&alice, &[bob.create_key_package().unwrap().as_slice()])
        .unwrap();
    ga.merge_pending_commit(&alice).unwrap();
    let welcome = bundle.welcome.unwrap();
    // Bob's directory pins another key for a.1: he refuses the group.
    let not_alice = |m: &MemberInfo| m.identity != b"a.1";
    let bob_copy = MlsClient::from_bytes(&bob.to_bytes().unwrap()).unwrap();
    assert!(matches!(
        OpenWelcome::open(&bob_copy, &welcome).unwrap().join(
            &bob_copy,
            Some(&ga.ratchet_tree().unwrap()),
            not_alice
        ),
        Err(MlsError::UntrustedMember { identity }) if identity == b"a.1"
    ));
    let mut gb =
        Group::join_from_welcome(&bob, &welcome, Some(&ga.ratchet_tree().unwrap())).unwrap();

    // A commit adding a leaf the check rejects is not merged.
    let add = ga
        .add_members(&alice, &[carol.create_key_package().unwrap().as_slice()])
        .unwrap();
    let not_carol = |m: &MemberInfo| m.identity != b"c.1";
    assert!(matches!(
        gb.process_message_checked(&bob, &add.commit, not_carol),
        Err(MlsError::UntrustedMember { .. })
    ));
    assert_eq!(gb.epoch(), 1);

    // An application message from a rejected sender is not delivered.
    let mut ga2 = Group::load(&alice, GID).unwrap();
    ga2.discard_pending_commit(&alice).unwrap();
    let ct = ga2.encrypt(&alice, b"hi").unwrap();
    assert!(matches!(
        gb.process_message_checked(&bob, &ct, not_alice),
        Err(MlsError::UntrustedMember { .. })
    ));
}
