//! Identity pinning, safety numbers and the PQXDH requirement, against the real server.
//!
//! An identity change is produced the way an attacker holding a device's credentials (or the
//! server itself) would: an access token of the peer's device and an initial message under
//! another identity key, sent through MessagingService.SendMessage. A bundle without a KEM
//! prekey can only come from a server that strips it, so it goes through [`super::mitm`].

use guardyn_crypto::{
    IdentityKey, IdentityKeyPair, KemPreKeyPublic, KemPublicKey, OneTimePreKeyPublic, PreKeyBundle,
    PublicKey, SignedPreKeyPublic,
};
use guardyn_proto::guardyn::auth::v1 as auth;
use guardyn_proto::guardyn::auth::v1::key_directory_service_client::KeyDirectoryServiceClient;
use guardyn_proto::guardyn::messaging::v1 as msg;
use guardyn_proto::guardyn::messaging::v1::messaging_service_client::MessagingServiceClient;
use guardyn_sdk::{Address, Client, ClientConfig, Event, SdkError, StateKey, Storage};
use guardyn_testkit::TestServer;
use guardyn_testkit::rpc::authed;
use zeroize::Zeroizing;

use super::mitm;
use super::support::*;

/// Someone acting as `account`.`device` with its own identity key.
struct Impostor {
    token: String,
    identity: IdentityKeyPair,
    /// The real device's registration id, which the server checks replies against.
    registration_id: u32,
    server: tonic::transport::Channel,
}

impl Impostor {
    async fn new(server: &TestServer, victim: &Client) -> Self {
        let (account, device) = (victim.account_id(), victim.device_id());
        // Any other identity may read the device's public bundle.
        let reader = server.token(&uuid::Uuid::new_v4().to_string(), 1, "reader");
        let registration_id = bundles(server.channel(), &reader, account)
            .await
            .iter()
            .find(|b| b.device_id == device)
            .unwrap()
            .registration_id;
        Self {
            token: server.token(account, device, "impostor-session"),
            identity: IdentityKeyPair::generate(),
            registration_id,
            server: server.channel(),
        }
    }

    /// Sends `body` to every device of `to` as initial messages (X3DH only when `pq` is
    /// false).
    async fn send(&self, to: &str, body: &[u8], pq: bool) {
        let bundles = bundles(self.server.clone(), &self.token, to).await;
        let message_id = uuid::Uuid::new_v4().to_string();
        let mut envelopes = Vec::new();
        for b in &bundles {
            let mut bundle = bundle_of(b);
            if !pq {
                bundle.kem_prekey = None;
            }
            let content = plain_content(&message_id, self.registration_id, body);
            let (_, initial) = guardyn_crypto::initiate(&self.identity, &bundle, &content).unwrap();
            envelopes.push(msg::Envelope {
                destination_device_id: b.device_id,
                destination_registration_id: b.registration_id,
                r#type: msg::EnvelopeType::PrekeyMessage as i32,
                content: initial.to_bytes(),
            });
        }
        MessagingServiceClient::new(self.server.clone())
            .send_message(authed(
                msg::SendMessageRequest {
                    destination_account_id: to.to_owned(),
                    client_message_id: message_id,
                    envelopes,
                    urgent: true,
                    online_only: false,
                    sync: false,
                },
                &self.token,
            ))
            .await
            .unwrap();
    }
}

async fn bundles(
    channel: tonic::transport::Channel,
    token: &str,
    account: &str,
) -> Vec<auth::DeviceBundle> {
    KeyDirectoryServiceClient::new(channel)
        .get_pre_key_bundle(authed(
            auth::GetPreKeyBundleRequest {
                account_id: account.to_owned(),
                device_id: 0,
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .bundles
}

/// A plain direct message in the SDK's content encoding, version 1 (`content.rs`).
fn plain_content(message_id: &str, registration_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![1, 1];
    out.extend_from_slice(&(message_id.len() as u32).to_be_bytes());
    out.extend_from_slice(message_id.as_bytes());
    out.extend_from_slice(&1u64.to_be_bytes());
    out.extend_from_slice(&registration_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn bundle_of(b: &auth::DeviceBundle) -> PreKeyBundle {
    let spk = b.signed_prekey.as_ref().unwrap();
    PreKeyBundle {
        identity_key: IdentityKey::from_bytes(&b.identity_key).unwrap(),
        signed_prekey: SignedPreKeyPublic {
            id: spk.key_id,
            key: PublicKey::from_bytes(&spk.public_key).unwrap(),
            signature: spk.signature.as_slice().try_into().unwrap(),
        },
        one_time_prekey: b.one_time_prekey.as_ref().map(|k| OneTimePreKeyPublic {
            id: k.key_id,
            key: PublicKey::from_bytes(&k.public_key).unwrap(),
        }),
        kem_prekey: b.kem_prekey.as_ref().map(|k| KemPreKeyPublic {
            id: k.key_id,
            key: KemPublicKey::from_bytes(&k.public_key).unwrap(),
            signature: k.signature.as_slice().try_into().unwrap(),
        }),
    }
}

fn address(client: &Client) -> Address {
    Address {
        account_id: client.account_id().to_owned(),
        device_id: client.device_id(),
    }
}

fn identity_changed(events: &[Event]) -> Vec<Address> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::IdentityChanged { peer } => Some(peer.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_changed_identity_key_blocks_sending_until_accepted_and_changes_the_safety_number() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::File {
        path: dir.path().join("alice.state"),
        key: StateKey::Key(Zeroizing::new([7; 32])),
    };
    let alice = register_with(&server, "alice", storage.clone()).await;
    let bob = register(&server, "bob").await;
    alice.send(bob.account_id(), b"hi bob").await.unwrap();
    assert_eq!(bodies(&bob.sync().await.unwrap()), vec!["hi bob"]);
    bob.send(alice.account_id(), b"hi alice").await.unwrap();
    assert_eq!(bodies(&alice.sync().await.unwrap()), vec!["hi alice"]);

    let number = alice.safety_number(bob.account_id()).await.unwrap();
    assert_eq!(number, bob.safety_number(alice.account_id()).await.unwrap());
    assert_eq!(number.split(' ').count(), 12);

    // Someone holding Bob's device credentials starts a session under another identity key.
    Impostor::new(&server, &bob)
        .await
        .send(alice.account_id(), b"it is me, bob, new phone", true)
        .await;
    let events = alice.sync().await.unwrap();
    assert_eq!(identity_changed(&events), vec![address(&bob)]);
    assert!(
        bodies(&events).is_empty(),
        "the message is held: {events:?}"
    );
    let blocked = alice.send(bob.account_id(), b"secret").await.unwrap_err();
    assert!(
        matches!(&blocked, SdkError::IdentityChanged { account, device }
            if account == bob.account_id() && *device == bob.device_id()),
        "{blocked:?}"
    );
    assert_eq!(
        alice.safety_number(bob.account_id()).await.unwrap(),
        number,
        "the pinned key is still the old one"
    );
    let pending = alice.pending_safety_number(bob.account_id()).await.unwrap();
    assert_ne!(pending, number);

    // The block is part of the sealed state: a restarted client is still blocked.
    let alice_id = alice.account_id().to_owned();
    drop(alice);
    let alice = Client::open(server.channel(), storage, config())
        .await
        .unwrap();
    assert_eq!(alice.account_id(), alice_id);
    assert!(matches!(
        alice.send(bob.account_id(), b"secret").await,
        Err(SdkError::IdentityChanged { .. })
    ));
    assert!(bodies(&bob.sync().await.unwrap()).is_empty());

    // Accepting pins the new key, releases the held message and unblocks sending.
    let released = alice.accept_identity(bob.account_id()).await.unwrap();
    assert_eq!(bodies(&released), vec!["it is me, bob, new phone"]);
    let changed = alice.safety_number(bob.account_id()).await.unwrap();
    assert_eq!(changed, pending);
    assert_eq!(alice.pending_safety_number(bob.account_id()).await, None);
    assert_ne!(
        changed,
        bob.safety_number(alice.account_id()).await.unwrap(),
        "the real Bob still has his old key: the numbers no longer match"
    );
    alice.send(bob.account_id(), b"accepted").await.unwrap();
}

#[tokio::test]
async fn a_new_device_of_a_known_account_is_reported_and_changes_the_safety_number() {
    let server = server().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    alice.send(bob.account_id(), b"one").await.unwrap();
    bob.sync().await.unwrap();
    let before = alice.safety_number(bob.account_id()).await.unwrap();

    // Alice's cached device list is stale: the repair finds the new device and reports it.
    let bob2 = link(&server, &bob).await;
    let sent = alice.send(bob.account_id(), b"two").await.unwrap();
    assert_eq!(sent.devices, 2);
    let events = alice.sync().await.unwrap();
    let new: Vec<Address> = events
        .iter()
        .filter_map(|e| match e {
            Event::NewDevice { peer } => Some(peer.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(new, vec![address(&bob2)]);
    assert_eq!(bodies(&bob2.sync().await.unwrap()), vec!["two"]);
    let after = alice.safety_number(bob.account_id()).await.unwrap();
    assert_ne!(after, before);
}

fn lax() -> ClientConfig {
    ClientConfig {
        allow_x3dh_fallback: true,
        ..config()
    }
}

#[tokio::test]
async fn an_x3dh_initial_message_is_refused_unless_the_fallback_is_allowed() {
    let server = server().await;
    let strict = register(&server, "strict").await;
    let lax = Client::register(
        server.channel(),
        Storage::Memory,
        lax(),
        &username("lax"),
        PASSWORD,
    )
    .await
    .unwrap();
    let carol = register(&server, "carol").await;
    let old = Impostor::new(&server, &carol).await;
    old.send(strict.account_id(), b"no kem", false).await;
    old.send(lax.account_id(), b"no kem", false).await;

    let events = strict.sync().await.unwrap();
    assert!(bodies(&events).is_empty());
    assert!(
        events.iter().any(|e| matches!(e,
            Event::Undecryptable { reason, .. } if reason.contains("post-quantum"))),
        "{events:?}"
    );
    assert_eq!(bodies(&lax.sync().await.unwrap()), vec!["no kem"]);
}

#[tokio::test]
async fn a_bundle_without_a_kem_prekey_is_refused_unless_the_fallback_is_allowed() {
    let server = server().await;
    let bob = register(&server, "bob").await;
    // A server that withholds KEM prekeys to downgrade new sessions to X3DH.
    let downgrading = mitm::start(server.channel(), |resp| {
        for b in &mut resp.bundles {
            b.kem_prekey = None;
        }
    })
    .await;
    let alice = Client::register(
        downgrading.channel(),
        Storage::Memory,
        config(),
        &username("alice"),
        PASSWORD,
    )
    .await
    .unwrap();
    let refused = alice.send(bob.account_id(), b"hello").await.unwrap_err();
    assert!(
        matches!(&refused, SdkError::PqxdhRequired { account, device }
            if account == bob.account_id() && *device == bob.device_id()),
        "{refused:?}"
    );

    let carol = Client::register(
        downgrading.channel(),
        Storage::Memory,
        lax(),
        &username("carol"),
        PASSWORD,
    )
    .await
    .unwrap();
    // Bob (strict) refuses the X3DH session Carol's lax client starts...
    carol.send(bob.account_id(), b"x3dh").await.unwrap();
    assert!(bodies(&bob.sync().await.unwrap()).is_empty());
    // ...and a lax receiver accepts it.
    let dave = Client::register(
        server.channel(),
        Storage::Memory,
        lax(),
        &username("dave"),
        PASSWORD,
    )
    .await
    .unwrap();
    carol.send(dave.account_id(), b"x3dh").await.unwrap();
    assert_eq!(bodies(&dave.sync().await.unwrap()), vec!["x3dh"]);
}

#[tokio::test]
async fn a_substituted_bundle_for_a_pinned_device_is_refused() {
    let server = server().await;
    let bob = register(&server, "bob").await;
    // A directory that starts handing out the attacker's keys for every device once `lying`
    // is set.
    let lying = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attacker = IdentityKeyPair::generate();
    let spk = guardyn_crypto::SignedPreKey::generate(1, &attacker).public();
    let kem = guardyn_crypto::KemPreKey::generate(1, &attacker).public();
    let switch = lying.clone();
    let directory = mitm::start(server.channel(), move |resp| {
        if !switch.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        for b in &mut resp.bundles {
            b.identity_key = attacker.identity_key().to_bytes().to_vec();
            b.signed_prekey = Some(auth::SignedPreKey {
                key_id: spk.id,
                public_key: spk.key.to_bytes().to_vec(),
                signature: spk.signature.to_vec(),
            });
            b.kem_prekey = Some(auth::KemPreKey {
                key_id: kem.id,
                public_key: kem.key.to_bytes(),
                signature: kem.signature.to_vec(),
            });
            b.one_time_prekey = None;
        }
    })
    .await;
    let alice = Client::register(
        directory.channel(),
        Storage::Memory,
        config(),
        &username("alice"),
        PASSWORD,
    )
    .await
    .unwrap();
    // Alice looks Bob up (and pins his device) before the directory turns.
    let number = alice.safety_number(bob.account_id()).await.unwrap();
    assert_eq!(number, bob.safety_number(alice.account_id()).await.unwrap());

    lying.store(true, std::sync::atomic::Ordering::SeqCst);
    let refused = alice
        .send(bob.account_id(), b"for bob only")
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, SdkError::IdentityChanged { account, device }
            if account == bob.account_id() && *device == bob.device_id()),
        "{refused:?}"
    );
    assert_eq!(
        identity_changed(&alice.sync().await.unwrap()),
        vec![address(&bob)]
    );
    assert_eq!(alice.safety_number(bob.account_id()).await.unwrap(), number);
    assert!(
        bob.sync()
            .await
            .unwrap()
            .iter()
            .all(|e| !matches!(e, Event::Message(_)))
    );
}
