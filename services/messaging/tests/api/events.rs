//! Auth's events on the Listen stream, with the real auth service: revoked sessions and
//! removed devices close their streams, removed devices and deleted accounts lose their
//! queues, linked devices and low prekeys become notices.

use std::sync::Arc;
use std::time::Duration;

use guardyn_common::clock::ManualClock;
use guardyn_crypto::IdentityKeyPair;
use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_proto::guardyn::auth::v1::device_service_client::DeviceServiceClient;
use guardyn_proto::guardyn::messaging::v1::{
    DeviceLinked, DeviceRemoved, ListenRequest, ListenResponse, listen_response::Item,
    server_notice::Notice,
};
use guardyn_storage::{Direction, KeyRange};
use guardyn_testkit::{Options, TestServer};
use prost::Message as _;
use tonic::{Code, Streaming};

use crate::common::*;

const PASSWORD: &str = "correct horse battery staple";
const REGISTRATION_ID: u32 = 1234;

/// Every service (auth supplies accounts, tokens, the device directory and the events).
async fn start() -> TestServer {
    TestServer::start_with(Options {
        clock: Some(Arc::new(ManualClock::new())),
        configure: Some(Box::new(|c| {
            c.auth.argon2.memory_kib = 8;
            c.auth.argon2.iterations = 1;
        })),
        ..Options::default()
    })
    .await
    .unwrap()
}

fn new_device(name: &str) -> pb::NewDevice {
    pb::NewDevice {
        name: name.into(),
        registration_id: REGISTRATION_ID,
        identity_key: IdentityKeyPair::generate()
            .identity_key()
            .to_bytes()
            .to_vec(),
        ..Default::default()
    }
}

/// A signed-in device: account, device id, tokens.
struct Device {
    account: String,
    id: u32,
    tokens: pb::Tokens,
}

impl Device {
    fn token(&self) -> &str {
        &self.tokens.access_token
    }
}

async fn register(server: &TestServer, username: &str) -> Device {
    let r = AuthServiceClient::new(server.channel())
        .register(pb::RegisterRequest {
            username: username.into(),
            password: PASSWORD.into(),
            device: Some(new_device("phone")),
        })
        .await
        .unwrap()
        .into_inner();
    Device {
        account: r.account_id,
        id: r.device_id,
        tokens: r.tokens.unwrap(),
    }
}

async fn link(server: &TestServer, by: &Device, name: &str) -> Device {
    let mut devices = DeviceServiceClient::new(server.channel());
    let ticket = devices
        .request_link(pb::RequestLinkRequest {
            device: Some(new_device(name)),
        })
        .await
        .unwrap()
        .into_inner();
    devices
        .approve_link(authed(
            pb::ApproveLinkRequest {
                link_code: ticket.link_code.clone(),
            },
            by.token(),
        ))
        .await
        .unwrap();
    let r = devices
        .link_device(pb::LinkDeviceRequest {
            link_code: ticket.link_code,
            link_secret: ticket.link_secret,
        })
        .await
        .unwrap()
        .into_inner();
    Device {
        account: r.account_id,
        id: r.device_id,
        tokens: r.tokens.unwrap(),
    }
}

async fn listen(server: &TestServer, d: &Device) -> Streaming<ListenResponse> {
    let mut s = messaging(server)
        .listen(authed(ListenRequest {}, d.token()))
        .await
        .unwrap()
        .into_inner();
    expect_queue_empty_after_envelopes(&mut s).await;
    s
}

fn messaging(
    server: &TestServer,
) -> guardyn_proto::guardyn::messaging::v1::messaging_service_client::MessagingServiceClient<
    tonic::transport::Channel,
> {
    guardyn_proto::guardyn::messaging::v1::messaging_service_client::MessagingServiceClient::new(
        server.channel(),
    )
}

async fn expect_queue_empty_after_envelopes(s: &mut Streaming<ListenResponse>) {
    loop {
        match next(s).await {
            Item::QueueEmpty(_) => return,
            Item::Envelope(_) => {}
            other => panic!("expected the backlog, got {other:?}"),
        }
    }
}

async fn next_notice(s: &mut Streaming<ListenResponse>) -> Notice {
    match next(s).await {
        Item::Notice(n) => n.notice.unwrap(),
        other => panic!("expected a notice, got {other:?}"),
    }
}

/// The stream's final status (the stream ends with an error).
async fn end_status(s: &mut Streaming<ListenResponse>) -> tonic::Status {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("stream end within 10 s")
        .expect_err("the stream ends with an error status")
}

/// Wait (bounded) until `check` holds; background purges run after the RPC returned.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not happen within 5 s");
}

async fn send(server: &TestServer, from: &Device, to: &str, devices: &[u32], id: &str) {
    let targets: Vec<(u32, u32)> = devices.iter().map(|d| (*d, REGISTRATION_ID)).collect();
    let req = send_request(to, &targets, id, b"hello", from.account == to);
    messaging(server)
        .send_message(authed(req, from.token()))
        .await
        .unwrap();
}

#[tokio::test]
async fn linking_notifies_other_devices_and_revoking_closes_only_that_session() {
    let server = start().await;
    let phone = register(&server, "alice").await;
    let mut phone_stream = listen(&server, &phone).await;

    let laptop = link(&server, &phone, "laptop").await;
    assert_eq!(
        next_notice(&mut phone_stream).await,
        Notice::DeviceLinked(DeviceLinked {
            device_id: laptop.id,
            name: "laptop".into()
        })
    );

    let mut laptop_stream = listen(&server, &laptop).await;
    AuthServiceClient::new(server.channel())
        .revoke_session(authed(
            pb::RevokeSessionRequest {
                session_id: laptop.tokens.session_id.clone(),
            },
            phone.token(),
        ))
        .await
        .unwrap();
    match next_notice(&mut laptop_stream).await {
        Notice::SessionRevoked(r) => assert_eq!(r.session_id, laptop.tokens.session_id),
        other => panic!("expected SessionRevoked, got {other:?}"),
    }
    let end = end_status(&mut laptop_stream).await;
    assert_eq!(end.code(), Code::Unauthenticated);
    assert_eq!(reason(&end), "SESSION_REVOKED");

    // auth.prekeys.low reaches exactly the named device as a notice.
    let event = pb::PreKeysLowEvent {
        account_id: phone.account.clone(),
        device_id: phone.id,
        one_time_prekeys: 3,
        one_time_kem_prekeys: 4,
        key_packages: 5,
        has_last_resort_kem_prekey: true,
    };
    server
        .bus()
        .publish("auth.prekeys.low", event.encode_to_vec().into())
        .await
        .unwrap();
    match next_notice(&mut phone_stream).await {
        Notice::PrekeysLow(p) => {
            assert_eq!(
                (p.one_time_prekeys, p.one_time_kem_prekeys, p.key_packages),
                (3, 4, 5)
            );
            assert!(p.has_last_resort_kem_prekey);
        }
        other => panic!("expected PreKeysLow, got {other:?}"),
    }
}

#[tokio::test]
async fn removing_a_device_closes_its_stream_and_purges_its_queue() {
    let server = start().await;
    let phone = register(&server, "alice").await;
    let laptop = link(&server, &phone, "laptop").await;
    let bob = register(&server, "bob").await;
    send(&server, &bob, &phone.account, &[1, 2], "m1").await;
    assert_eq!(queued(&server, &phone.account, laptop.id).await, 1);

    let mut laptop_stream = listen(&server, &laptop).await;
    let mut phone_stream = listen(&server, &phone).await;
    DeviceServiceClient::new(server.channel())
        .remove_device(authed(
            pb::RemoveDeviceRequest {
                device_id: laptop.id,
            },
            phone.token(),
        ))
        .await
        .unwrap();
    let removed = Notice::DeviceRemoved(DeviceRemoved {
        device_id: laptop.id,
    });
    assert_eq!(next_notice(&mut laptop_stream).await, removed);
    let end = end_status(&mut laptop_stream).await;
    assert_eq!(end.code(), Code::Unauthenticated);
    assert_eq!(reason(&end), "DEVICE_REMOVED");
    assert_eq!(next_notice(&mut phone_stream).await, removed);
    eventually("the removed device's queue purge", || async {
        queued(&server, &phone.account, laptop.id).await == 0
    })
    .await;
    assert_eq!(
        queued(&server, &phone.account, phone.id).await,
        1,
        "the remaining device keeps its unacknowledged envelope"
    );
}

#[tokio::test]
async fn deleting_an_account_purges_its_queues_and_idempotency_records() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    send(&server, &alice, &bob.account, &[1], "to-bob").await;
    send(&server, &bob, &alice.account, &[1], "to-alice").await;
    let idem_prefix = format!("msg/v1/idem/{}/", alice.account).into_bytes();
    let idem_records = || async {
        server
            .kv()
            .scan(KeyRange::prefix(&idem_prefix), Direction::Forward, 10)
            .await
            .unwrap()
            .len()
    };
    assert_eq!(idem_records().await, 1);
    assert_eq!(queued(&server, &alice.account, 1).await, 1);

    let mut stream = listen(&server, &alice).await;
    AuthServiceClient::new(server.channel())
        .delete_account(authed(
            pb::DeleteAccountRequest {
                password: PASSWORD.into(),
                second_factor: None,
            },
            alice.token(),
        ))
        .await
        .unwrap();
    assert_eq!(
        next_notice(&mut stream).await,
        Notice::DeviceRemoved(DeviceRemoved { device_id: 1 })
    );
    assert_eq!(end_status(&mut stream).await.code(), Code::Unauthenticated);
    eventually("the deleted account's purge", || async {
        queued(&server, &alice.account, 1).await == 0 && idem_records().await == 0
    })
    .await;
    assert_eq!(
        queued(&server, &bob.account, 1).await,
        1,
        "what the deleted account sent to others stays"
    );
}
