//! MLS groups through GroupService.

use guardyn_sdk::{Client, Event};

use super::support::*;

fn group_bodies(events: &[Event], group: &[u8]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::GroupMessage { group_id, message } if group_id == group => {
                Some(String::from_utf8(message.body.clone()).unwrap())
            }
            _ => None,
        })
        .collect()
}

async fn joined(client: &Client, group: &[u8]) {
    let events = client.sync().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::GroupJoined { group_id } if group_id == group)),
        "no welcome in {events:?}"
    );
}

#[tokio::test]
async fn group_of_three_with_messages_and_a_commit_race() {
    let server = server().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    let dave = register(&server, "dave").await;

    let group = alice.create_group().await.unwrap();
    alice
        .add_to_group(&group, &[bob.account_id(), carol.account_id()])
        .await
        .unwrap();
    joined(&bob, &group).await;
    joined(&carol, &group).await;
    let (_, members) = alice.group_members(&group).await.unwrap();
    assert_eq!(members.len(), 3);

    alice.send_group(&group, b"hi all").await.unwrap();
    bob.send_group(&group, b"hi from bob").await.unwrap();
    assert_eq!(
        group_bodies(&carol.sync().await.unwrap(), &group),
        vec!["hi all", "hi from bob"]
    );
    assert_eq!(
        group_bodies(&alice.sync().await.unwrap(), &group),
        vec!["hi from bob"]
    );
    assert_eq!(
        group_bodies(&bob.sync().await.unwrap(), &group),
        vec!["hi all"]
    );

    // Alice removes Carol while Bob adds Dave, both at the same epoch: one commit wins, the
    // other gets STALE_EPOCH, catches up and retries on the new epoch.
    let dave_account = [dave.account_id()];
    let (removed, added) = tokio::join!(
        alice.remove_from_group(&group, carol.account_id()),
        bob.add_to_group(&group, &dave_account),
    );
    removed.unwrap();
    added.unwrap();
    joined(&dave, &group).await;
    let carol_events = carol.sync().await.unwrap();
    assert!(
        carol_events.iter().any(|e| matches!(
            e,
            Event::GroupChanged {
                self_removed: true,
                ..
            }
        )),
        "carol learns she was removed: {carol_events:?}"
    );

    // Everybody converged on the same epoch and membership.
    alice.sync().await.unwrap();
    bob.sync().await.unwrap();
    let (ea, ma) = alice.group_members(&group).await.unwrap();
    let (eb, mb) = bob.group_members(&group).await.unwrap();
    let (ed, md) = dave.group_members(&group).await.unwrap();
    assert_eq!((ea, &ma), (eb, &mb));
    assert_eq!((ea, &ma), (ed, &md));
    let accounts: Vec<&str> = ma.iter().map(|a| a.account_id.as_str()).collect();
    assert!(accounts.contains(&dave.account_id()));
    assert!(!accounts.contains(&carol.account_id()));

    dave.send_group(&group, b"dave here").await.unwrap();
    assert_eq!(
        group_bodies(&alice.sync().await.unwrap(), &group),
        vec!["dave here"]
    );
    assert_eq!(
        group_bodies(&bob.sync().await.unwrap(), &group),
        vec!["dave here"]
    );
    assert!(group_bodies(&carol.sync().await.unwrap(), &group).is_empty());
}

#[tokio::test]
async fn mls_leaves_are_bound_to_the_directorys_pinned_keys() {
    use guardyn_crypto::mls::{Group, MlsClient};
    use guardyn_proto::guardyn::messaging::v1::CreateGroupRequest;
    use guardyn_proto::guardyn::messaging::v1::group_service_client::GroupServiceClient;

    let server = server().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;

    // Alice's token, but an MLS key that is not the one her device pinned with its first
    // KeyPackage upload: the delivery service asks auth's directory and refuses the group.
    let impostor = MlsClient::new(format!("{}.1", alice.account_id()).as_bytes()).unwrap();
    let group = Group::create(&impostor, b"impostor-group-000001").unwrap();
    let err = GroupServiceClient::new(server.channel())
        .create_group(guardyn_testkit::rpc::authed(
            CreateGroupRequest {
                group_id: b"impostor-group-000001".to_vec(),
                group_info: group.export_group_info(&impostor).unwrap(),
            },
            &server.token(alice.account_id(), 1, "impostor"),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        guardyn_common::error::reason_of(&err).as_deref(),
        Some("MLS_IDENTITY_MISMATCH")
    );

    // The genuine devices: KeyPackages claimed through the directory are accepted, and every
    // member leaf matches the pinned keys.
    let group = alice.create_group().await.unwrap();
    alice
        .add_to_group(&group, &[bob.account_id()])
        .await
        .unwrap();
    joined(&bob, &group).await;
    alice.verify_group_members(&group).await.unwrap();
    bob.verify_group_members(&group).await.unwrap();
    bob.send_group(&group, b"bound").await.unwrap();
    assert_eq!(
        group_bodies(&alice.sync().await.unwrap(), &group),
        vec!["bound"]
    );
}

#[tokio::test]
async fn a_member_whose_leaf_contradicts_the_directory_is_not_trusted_on_receive() {
    use guardyn_proto::guardyn::auth::v1::GetMlsSignatureKeysResponse;
    use guardyn_sdk::Storage;

    let server = server().await;
    let alice = register(&server, "alice").await;
    // Bob reaches the server through a directory that pins other MLS keys than the ones the
    // group's leaves carry: what Bob sees when a leaf was forged (or the directory lies).
    let lying = super::mitm::start_on(
        server.channel(),
        "/guardyn.auth.v1.KeyDirectoryService/GetMlsSignatureKeys",
        |resp: &mut GetMlsSignatureKeysResponse| {
            for k in &mut resp.keys {
                k.signature_key = vec![7; k.signature_key.len()];
            }
        },
    )
    .await;
    let bob = Client::register(
        lying.channel(),
        Storage::Memory,
        config(),
        &username("bob"),
        PASSWORD,
    )
    .await
    .unwrap();
    let group = alice.create_group().await.unwrap();
    alice
        .add_to_group(&group, &[bob.account_id()])
        .await
        .unwrap();
    joined(&bob, &group).await;
    alice.send_group(&group, b"hello").await.unwrap();
    // Before the message is trusted, Bob fetches the pinned keys of the group's accounts:
    // Alice's leaf contradicts them, so the message is refused, not attributed to her.
    let events = bob.sync().await.unwrap();
    assert!(group_bodies(&events, &group).is_empty(), "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Undecryptable { reason, .. } if reason.contains(alice.account_id()))),
        "{events:?}"
    );
}
