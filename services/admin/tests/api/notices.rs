//! System notices: who may send them, what a request must hold, the audit entry, the Listen
//! notice reaching only the addressed accounts' devices, the list devices read on reconnect
//! (paged, newest first), and expiry.

use std::sync::Arc;
use std::time::Duration;

use guardyn_audit::AuditKind;
use guardyn_common::AccountId;
use guardyn_common::clock::{Clock as _, ManualClock};
use guardyn_common::error::violations_of;
use guardyn_common::ratelimit::RateLimit;
use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::system_notice_service_client::SystemNoticeServiceClient;
use guardyn_sdk::{Client, ClientConfig, Event, Inbox, NoticeSeverity, Storage};
use guardyn_testkit::rpc::authed;
use guardyn_testkit::{Options, TestServer};
use tonic::Code;
use tonic::transport::Channel;

/// Generous: the machine is loaded. Only a bound on waiting, never a measured time.
const WAIT: Duration = Duration::from_secs(30);

fn options() -> Options {
    Options::configure(|c| {
        c.auth.argon2.memory_kib = 1024;
        c.auth.argon2.iterations = 1;
        let many = RateLimit::new(10_000, 600_000);
        c.auth.limits.register_per_address = many;
        c.auth.limits.login_per_address = many;
    })
}

fn api(server: &TestServer) -> SystemNoticeServiceClient<Channel> {
    SystemNoticeServiceClient::new(server.channel())
}

fn token(server: &TestServer, role: &str) -> String {
    server.token_with_roles(&AccountId::random().to_string(), 1, "s-1", &[role])
}

fn to_accounts(ids: &[&str], text: &str) -> pb::SendSystemNoticeRequest {
    pb::SendSystemNoticeRequest {
        account_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        severity: pb::SystemNoticeSeverity::Warning.into(),
        text: text.into(),
        reason: "planned maintenance".into(),
        ..Default::default()
    }
}

fn to_all(text: &str) -> pb::SendSystemNoticeRequest {
    pb::SendSystemNoticeRequest {
        all_accounts: true,
        severity: pb::SystemNoticeSeverity::Info.into(),
        text: text.into(),
        reason: "release announcement".into(),
        ..Default::default()
    }
}

async fn send(
    server: &TestServer,
    bearer: &str,
    request: pb::SendSystemNoticeRequest,
) -> Result<pb::SendSystemNoticeResponse, tonic::Status> {
    api(server)
        .send_system_notice(authed(request, bearer))
        .await
        .map(tonic::Response::into_inner)
}

async fn list(
    server: &TestServer,
    bearer: &str,
    page_size: u32,
    page_token: &str,
) -> Result<pb::ListSystemNoticesResponse, tonic::Status> {
    api(server)
        .list_system_notices(authed(
            pb::ListSystemNoticesRequest {
                page_size,
                page_token: page_token.into(),
            },
            bearer,
        ))
        .await
        .map(tonic::Response::into_inner)
}

fn ids(r: &pb::ListSystemNoticesResponse) -> Vec<String> {
    r.notices.iter().map(|n| n.notice_id.clone()).collect()
}

async fn device(server: &TestServer) -> Client {
    let config = ClientConfig {
        device_name: "test".into(),
        prekey_batch: 4,
        prekey_low_water: 2,
        key_package_batch: 3,
        ..ClientConfig::default()
    };
    let name = format!(
        "ntc{}",
        &AccountId::random().to_string().replace('-', "")[..12]
    );
    Client::register(
        server.channel(),
        Storage::Memory,
        config,
        &name,
        "correct horse battery staple",
    )
    .await
    .unwrap()
}

/// A device's open stream, once registered (its backlog delivered).
async fn listening(client: &Client) -> Inbox {
    let mut inbox = client.listen().await.unwrap();
    loop {
        match inbox.next_timeout(WAIT).await {
            Some(Event::CaughtUp) => return inbox,
            Some(_) => {}
            None => panic!("no CaughtUp"),
        }
    }
}

async fn next_notice(inbox: &mut Inbox) -> guardyn_sdk::SystemNotice {
    loop {
        match inbox.next_timeout(WAIT).await {
            Some(Event::SystemNotice(n)) => return n,
            Some(_) => {}
            None => panic!("no SystemNotice on the stream"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_to_one_account_reaches_its_device_and_list_and_no_other_account() {
    let server = TestServer::start_with(options()).await.unwrap();
    let admin = token(&server, "admin");
    let alice = device(&server).await;
    let bob = device(&server).await;
    let mut alice_inbox = listening(&alice).await;
    let mut bob_inbox = listening(&bob).await;

    let sent = send(
        &server,
        &admin,
        to_accounts(&[alice.account_id()], "  Maintenance tonight at 02:00 UTC "),
    )
    .await
    .unwrap();
    let seen = next_notice(&mut alice_inbox).await;
    assert_eq!(seen.notice_id, sent.notice_id);
    assert_eq!(seen.text, "Maintenance tonight at 02:00 UTC");
    assert_eq!(seen.severity, NoticeSeverity::Warning);
    assert!(!seen.all_accounts);
    assert!(seen.expires_at_ms > seen.sent_at_ms);

    // A notice to everyone follows; it is the first Bob sees, so the first never reached him.
    let everyone = send(&server, &admin, to_all("Version 2 is out"))
        .await
        .unwrap();
    let bob_seen = next_notice(&mut bob_inbox).await;
    assert_eq!(bob_seen.notice_id, everyone.notice_id);
    assert!(bob_seen.all_accounts);
    assert_eq!(
        next_notice(&mut alice_inbox).await.notice_id,
        everyone.notice_id
    );

    // After reconnecting, a device reads the notices in force: newest first, only its own.
    let (alice_list, next) = alice.system_notices(0, "").await.unwrap();
    let alice_ids: Vec<_> = alice_list.iter().map(|n| n.notice_id.clone()).collect();
    assert_eq!(
        alice_ids,
        [everyone.notice_id.clone(), sent.notice_id.clone()]
    );
    assert_eq!(alice_list[1], seen);
    assert!(next.is_empty());
    let (bob_list, _) = bob.system_notices(0, "").await.unwrap();
    let bob_ids: Vec<_> = bob_list.iter().map(|n| n.notice_id.clone()).collect();
    assert_eq!(bob_ids, [everyone.notice_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_owners_and_admins_send_and_sending_is_audited_with_sender_and_reason() {
    let server = TestServer::start_with(options()).await.unwrap();
    for role in ["user", "auditor"] {
        let err = send(&server, &token(&server, role), to_all("hi"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{role}");
        assert_eq!(
            guardyn_common::error::reason_of(&err).as_deref(),
            Some("ROLE_REQUIRED"),
            "{role}"
        );
    }
    // Nothing was stored by the refused calls.
    let user = token(&server, "user");
    assert!(
        list(&server, &user, 0, "")
            .await
            .unwrap()
            .notices
            .is_empty()
    );

    let owner_id = AccountId::random().to_string();
    let owner = server.token_with_roles(&owner_id, 1, "s-1", &["owner"]);
    let target = AccountId::random().to_string();
    let sent = send(&server, &owner, to_accounts(&[&target], "Please update"))
        .await
        .unwrap();
    let entries = guardyn_audit::entries(&*server.kv()).await.unwrap();
    let entry = entries
        .iter()
        .find(|e| e.kind == AuditKind::SystemNoticeSent)
        .expect("SYSTEM_NOTICE_SENT entry");
    assert_eq!(entry.actor.as_deref(), Some(owner_id.as_str()));
    assert_eq!(entry.reason, "planned maintenance");
    assert!(entry.detail.contains(&sent.notice_id), "{}", entry.detail);
    assert!(entry.detail.contains(&target), "{}", entry.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_refused_naming_the_field() {
    let server = TestServer::start_with(options()).await.unwrap();
    let admin = token(&server, "admin");
    let someone = AccountId::random().to_string();
    let too_many: Vec<String> = (0..1001).map(|_| AccountId::random().to_string()).collect();
    let cases: Vec<(pb::SendSystemNoticeRequest, &str)> = vec![
        (to_accounts(&[], "hi"), "account_ids"),
        (
            pb::SendSystemNoticeRequest {
                account_ids: vec![someone.clone()],
                ..to_all("hi")
            },
            "account_ids",
        ),
        (
            pb::SendSystemNoticeRequest {
                account_ids: too_many,
                ..to_accounts(&[], "hi")
            },
            "account_ids",
        ),
        (
            to_accounts(&[&someone, "not-an-id"], "hi"),
            "account_ids[1]",
        ),
        (to_all("   "), "text"),
        (to_all(&"x".repeat(1001)), "text"),
        (
            pb::SendSystemNoticeRequest {
                severity: 0,
                ..to_all("hi")
            },
            "severity",
        ),
        (
            pb::SendSystemNoticeRequest {
                reason: String::new(),
                ..to_all("hi")
            },
            "reason",
        ),
        (
            pb::SendSystemNoticeRequest {
                expires_at: Some(prost_types::Timestamp {
                    seconds: 1,
                    nanos: 0,
                }),
                ..to_all("hi")
            },
            "expires_at",
        ),
    ];
    for (request, field) in cases {
        let err = send(&server, &admin, request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert_eq!(violations_of(&err)[0].field, field, "{err:?}");
    }
    for (size, token) in [(101, ""), (0, "garbage")] {
        let err = list(&server, &admin, size, token).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    // None of them was stored.
    assert!(
        list(&server, &admin, 0, "")
            .await
            .unwrap()
            .notices
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_paged_newest_first_and_expired_notices_disappear() {
    let clock = ManualClock::new();
    let server = TestServer::start_with(Options {
        clock: Some(Arc::new(clock.clone())),
        ..Options::default()
    })
    .await
    .unwrap();
    let admin = token(&server, "admin");
    let reader = AccountId::random().to_string();
    let reader_token = server.token(&reader, 1, "s-1");
    let soon = clock.now_ms() + 60_000;
    let short = send(
        &server,
        &admin,
        pb::SendSystemNoticeRequest {
            expires_at: Some(guardyn_common::wire::timestamp(soon)),
            ..to_accounts(&[&reader], "short-lived")
        },
    )
    .await
    .unwrap();
    let mut sent = vec![short.notice_id];
    for i in 0..3 {
        clock.advance(Duration::from_millis(5));
        let r = if i % 2 == 0 {
            send(&server, &admin, to_all(&format!("to all {i}"))).await
        } else {
            send(
                &server,
                &admin,
                to_accounts(&[&reader], &format!("to one {i}")),
            )
            .await
        };
        sent.push(r.unwrap().notice_id);
    }
    // Another account's notice never shows up in the reader's pages.
    send(
        &server,
        &admin,
        to_accounts(&[&AccountId::random().to_string()], "other"),
    )
    .await
    .unwrap();
    sent.reverse();

    let first = list(&server, &reader_token, 3, "").await.unwrap();
    assert_eq!(ids(&first), sent[..3]);
    assert!(!first.next_page_token.is_empty());
    let second = list(&server, &reader_token, 3, &first.next_page_token)
        .await
        .unwrap();
    assert_eq!(ids(&second), sent[3..]);
    assert!(second.next_page_token.is_empty());

    // Once expired the notice is no longer listed, and the sweeper deletes it.
    clock.advance(Duration::from_secs(61));
    let now = list(&server, &reader_token, 0, "").await.unwrap();
    assert_eq!(ids(&now), sent[..3]);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stored = server
            .kv()
            .scan(
                guardyn_storage::KeyRange::prefix(b"system_notice/v1/notice/"),
                guardyn_storage::Direction::Forward,
                100,
            )
            .await
            .unwrap();
        if stored.len() == 4 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expired notice still stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
