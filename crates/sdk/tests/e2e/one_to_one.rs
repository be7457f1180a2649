//! 1:1 messaging through the server.

use std::time::Duration;

use guardyn_proto::guardyn::messaging::v1::{
    ListenRequest, messaging_service_client::MessagingServiceClient,
};
use guardyn_sdk::{Client, Event, StateKey, Storage};
use zeroize::Zeroizing;

use super::support::*;

#[tokio::test]
async fn online_and_offline_delivery_in_order_and_replies() {
    let server = server().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;

    let mut inbox = bob.listen().await.unwrap();
    alice.send(bob.account_id(), b"hello online").await.unwrap();
    let m = next_message(&mut inbox).await;
    assert_eq!(m.body, b"hello online");
    assert_eq!(m.sender.account_id, alice.account_id());
    drop(inbox);

    for i in 0..15 {
        alice
            .send(bob.account_id(), format!("offline {i}").as_bytes())
            .await
            .unwrap();
    }
    let events = bob.sync().await.unwrap();
    let expected: Vec<String> = (0..15).map(|i| format!("offline {i}")).collect();
    assert_eq!(bodies(&events), expected);
    assert!(
        bob.sync()
            .await
            .unwrap()
            .iter()
            .all(|e| !matches!(e, Event::Message(_)))
    );

    bob.send(alice.account_id(), b"reply").await.unwrap();
    assert_eq!(bodies(&alice.sync().await.unwrap()), vec!["reply"]);
}

#[tokio::test]
async fn new_device_after_cached_list_gets_the_message_and_sync_copies_reach_own_devices() {
    let server = server().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    alice.send(bob.account_id(), b"first").await.unwrap();
    assert_eq!(bodies(&bob.sync().await.unwrap()), vec!["first"]);

    // Bob links a second device after Alice cached his device list: her next send is
    // rejected with DEVICE_MISMATCH, repaired and retried with the same message id.
    let bob2 = link(&server, &bob).await;
    let sent = alice.send(bob.account_id(), b"second").await.unwrap();
    assert_eq!(sent.devices, 2);
    assert_eq!(bodies(&bob.sync().await.unwrap()), vec!["second"]);
    assert_eq!(bodies(&bob2.sync().await.unwrap()), vec!["second"]);

    // Alice links a second device: it receives sync copies of what Alice sends.
    let alice2 = link(&server, &alice).await;
    alice.send(bob.account_id(), b"third").await.unwrap();
    let copies: Vec<_> = alice2
        .sync()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            Event::SentByOtherDevice {
                destination,
                message,
            } => Some((destination, message.body)),
            _ => None,
        })
        .collect();
    assert_eq!(
        copies,
        vec![(bob.account_id().to_owned(), b"third".to_vec())]
    );
    assert_eq!(bodies(&bob.sync().await.unwrap()), vec!["third"]);
    assert_eq!(bodies(&bob2.sync().await.unwrap()), vec!["third"]);

    // Bob's second device answers; Alice's devices both get it.
    bob2.send(alice.account_id(), b"from bob2").await.unwrap();
    assert_eq!(bodies(&alice.sync().await.unwrap()), vec!["from bob2"]);
    assert_eq!(bodies(&alice2.sync().await.unwrap()), vec!["from bob2"]);

    // Bob removes the second device after the server's directory had his two cached: Alice's
    // next send, still addressed to both, is refused and repaired to the one left.
    bob.remove_device(bob2.device_id()).await.unwrap();
    let sent = alice.send(bob.account_id(), b"fourth").await.unwrap();
    assert_eq!(sent.devices, 1);
    assert_eq!(bodies(&bob.sync().await.unwrap()), vec!["fourth"]);
}

#[tokio::test]
async fn unacknowledged_envelopes_are_redelivered_after_a_dropped_stream() {
    let server = server().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    for i in 0..3 {
        alice
            .send(bob.account_id(), format!("m{i}").as_bytes())
            .await
            .unwrap();
    }
    // A stream that receives everything but never acknowledges, then drops.
    let token = server.token(bob.account_id(), bob.device_id(), "s");
    let mut req = tonic::Request::new(ListenRequest {});
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut stream = MessagingServiceClient::new(server.channel())
        .listen(req)
        .await
        .unwrap()
        .into_inner();
    let mut seen = 0;
    while seen < 3 {
        let item = tokio::time::timeout(WAIT, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if matches!(
            item.item,
            Some(guardyn_proto::guardyn::messaging::v1::listen_response::Item::Envelope(_))
        ) {
            seen += 1;
        }
    }
    drop(stream);
    assert_eq!(bodies(&bob.sync().await.unwrap()), vec!["m0", "m1", "m2"]);
}

#[tokio::test]
async fn retrying_a_send_with_the_same_id_delivers_once() {
    let server = server().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let first = alice
        .send_with_id(bob.account_id(), b"once", "msg-1")
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = alice
        .send_with_id(bob.account_id(), b"once", "msg-1")
        .await
        .unwrap();
    assert!(again.duplicate);
    let events = bob.sync().await.unwrap();
    assert_eq!(bodies(&events), vec!["once"]);
    // The ratchet step the discarded retry consumed does not break the session.
    alice.send(bob.account_id(), b"after").await.unwrap();
    assert_eq!(bodies(&bob.sync().await.unwrap()), vec!["after"]);
}

#[tokio::test]
async fn a_restarted_client_continues_its_sessions_from_the_sealed_state_file() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alice.state");
    let key = StateKey::Key(Zeroizing::new([9; 32]));
    let storage = Storage::File {
        path: path.clone(),
        key: key.clone(),
    };
    let alice = register_with(&server, "alice", storage.clone()).await;
    let bob = register(&server, "bob").await;
    alice
        .send(bob.account_id(), b"before restart")
        .await
        .unwrap();
    bob.send(alice.account_id(), b"to alice").await.unwrap();
    assert_eq!(bodies(&bob.sync().await.unwrap()), vec!["before restart"]);
    let alice_id = alice.account_id().to_owned();
    drop(alice);

    let wrong = Storage::File {
        path: path.clone(),
        key: StateKey::Passphrase(Zeroizing::new("nope".into())),
    };
    assert!(
        Client::open(server.channel(), wrong, config())
            .await
            .is_err()
    );
    let alice = Client::open(server.channel(), storage, config())
        .await
        .unwrap();
    assert_eq!(alice.account_id(), alice_id);
    assert_eq!(bodies(&alice.sync().await.unwrap()), vec!["to alice"]);
    alice
        .send(bob.account_id(), b"after restart")
        .await
        .unwrap();
    assert_eq!(bodies(&bob.sync().await.unwrap()), vec!["after restart"]);
}

#[tokio::test]
async fn the_server_stores_only_ciphertext() {
    let server = server().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let secret = b"the eagle lands at midnight 7f3a";
    alice.send(bob.account_id(), secret).await.unwrap();
    // Queued, not yet delivered: the bytes are in the server's store.
    let mut found_account = false;
    let mut found_secret = false;
    for entry in walk(server.data_dir()) {
        let bytes = std::fs::read(&entry).unwrap();
        found_account |= contains(&bytes, bob.account_id().as_bytes());
        found_secret |= contains(&bytes, secret);
    }
    assert!(found_account, "the scan sees the server's stored data");
    assert!(!found_secret, "plaintext must never reach the server");
    assert_eq!(
        bodies(&bob.sync().await.unwrap()),
        vec![String::from_utf8(secret.to_vec()).unwrap()]
    );
}

#[tokio::test]
async fn an_expired_access_token_is_refreshed_transparently() {
    // Verifiers check expiry against the system clock, so this test shortens the access
    // token lifetime (below the validated minimum; the testkit does not validate) and waits.
    let mut options = options(None);
    let base = options.configure.take().unwrap();
    options.configure = Some(Box::new(move |c| {
        base(c);
        c.auth.access_token_ttl_secs = 1;
        c.tokens.leeway_secs = 0;
    }));
    let server = guardyn_testkit::TestServer::start_with(options)
        .await
        .unwrap();
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let before = alice.token_refreshes();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    alice.send(bob.account_id(), b"after expiry").await.unwrap();
    assert_eq!(alice.token_refreshes(), before + 1);
    assert_eq!(bodies(&bob.sync().await.unwrap()), vec!["after expiry"]);
}

#[tokio::test]
async fn an_open_inbox_outlives_its_access_token() {
    // The server ends a Listen stream when its token expires; the SDK refreshes and reopens.
    let mut options = options(None);
    let base = options.configure.take().unwrap();
    options.configure = Some(Box::new(move |c| {
        base(c);
        c.auth.access_token_ttl_secs = 2;
        c.tokens.leeway_secs = 0;
    }));
    let server = guardyn_testkit::TestServer::start_with(options)
        .await
        .unwrap();
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let mut inbox = bob.listen().await.unwrap();
    alice
        .send(bob.account_id(), b"before expiry")
        .await
        .unwrap();
    assert_eq!(next_message(&mut inbox).await.body, b"before expiry");
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    alice.send(bob.account_id(), b"after expiry").await.unwrap();
    assert_eq!(next_message(&mut inbox).await.body, b"after expiry");
    assert!(bob.token_refreshes() >= 1);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn exhausted_prekeys_fall_back_to_last_resort_and_are_replenished() {
    let server = server().await;
    let bob = register(&server, "bob").await;
    let initial = bob.key_counts().await.unwrap();
    assert_eq!(initial.one_time_prekeys, config().prekey_batch);
    // More initiators than one-time prekeys: the last ones get no one-time EC prekey and the
    // last-resort KEM prekey, and their sessions still work.
    let n = config().prekey_batch as usize + 2;
    for i in 0..n {
        let a = register(&server, "a").await;
        a.send(bob.account_id(), format!("from {i}").as_bytes())
            .await
            .unwrap();
    }
    let expected: Vec<String> = (0..n).map(|i| format!("from {i}")).collect();
    assert_eq!(bodies(&bob.sync().await.unwrap()), expected);
    let drained = bob.key_counts().await.unwrap();
    assert_eq!(drained.one_time_prekeys, 0);
    assert_eq!(drained.one_time_kem_prekeys, 0);
    bob.top_up_keys().await.unwrap();
    let refilled = bob.key_counts().await.unwrap();
    assert_eq!(refilled.one_time_prekeys, config().prekey_batch);
    assert_eq!(refilled.one_time_kem_prekeys, config().prekey_batch);
}

#[tokio::test]
async fn login_with_a_second_factor() {
    let (clock, shared) = manual_clock();
    let server = guardyn_testkit::TestServer::start_with(options(Some(shared.clone())))
        .await
        .unwrap();
    let name = username("mfa");
    let alice = Client::register(
        server.channel(),
        guardyn_sdk::Storage::Memory,
        config(),
        &name,
        PASSWORD,
    )
    .await
    .unwrap();
    let enrolment = alice.begin_totp_enrollment().await.unwrap();
    let secret = base32(&enrolment.secret);
    let now = || shared.now_ms() / 1000;
    let codes = alice
        .confirm_totp_enrollment(&guardyn_auth::totp_code(&secret, now()))
        .await
        .unwrap();
    assert_eq!(codes.len(), 10);
    assert!(alice.login("wrong password 123").await.is_err());
    let guardyn_sdk::LoginOutcome::MfaRequired { ticket } = alice.login(PASSWORD).await.unwrap()
    else {
        panic!("TOTP is enabled: login must ask for the second factor");
    };
    clock.advance(Duration::from_secs(31));
    alice
        .complete_mfa(
            &ticket,
            guardyn_sdk::SecondFactor::Totp(guardyn_auth::totp_code(&secret, now())),
        )
        .await
        .unwrap();
    // The new session works.
    let bob = register(&server, "bob").await;
    alice
        .send(bob.account_id(), b"signed in again")
        .await
        .unwrap();
    assert_eq!(bodies(&bob.sync().await.unwrap()), vec!["signed in again"]);
}

fn base32(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .unwrap() as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

#[tokio::test]
async fn peers_are_found_by_username_unless_hidden() {
    let server = server().await;
    let alice = register(&server, "alice").await;
    let name = username("bob");
    let bob = Client::register(server.channel(), Storage::Memory, config(), &name, PASSWORD)
        .await
        .unwrap();
    let found = alice.lookup_username(&name.to_uppercase()).await.unwrap();
    assert_eq!(found, bob.account_id());
    let mut inbox = bob.listen().await.unwrap();
    alice.send(&found, b"found you").await.unwrap();
    assert_eq!(next_message(&mut inbox).await.body, b"found you");

    bob.set_username_discoverable(false).await.unwrap();
    let hidden = alice.lookup_username(&name).await.unwrap_err();
    let unknown = alice.lookup_username("nobody_here").await.unwrap_err();
    assert_eq!(hidden.code(), Some(tonic::Code::NotFound));
    assert_eq!(hidden.to_string(), unknown.to_string());
    bob.set_username_discoverable(true).await.unwrap();
    assert_eq!(alice.lookup_username(&name).await.unwrap(), found);
}
