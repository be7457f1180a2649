//! API credentials: issued by an admin, reaching only the RPCs of their scopes through the same
//! auth layer as tokens, refused alike (answer and timing) when unknown or wrong, rate limited
//! on failures, rotated and revoked with immediate effect, also on another instance.

use std::time::{Duration, Instant};

use guardyn::config::{Config, EventsBackend, StorageEngine};
use guardyn_audit::AuditKind;
use guardyn_common::AccountId;
use guardyn_common::ratelimit::RateLimit;
use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::admin_user_service_client::AdminUserServiceClient;
use guardyn_proto::guardyn::admin::v1::credential_service_client::CredentialServiceClient;
use guardyn_proto::guardyn::admin::v1::monitoring_service_client::MonitoringServiceClient;
use guardyn_proto::guardyn::admin::v1::system_notice_service_client::SystemNoticeServiceClient;
use guardyn_storage_postgres::{PostgresConfig, throwaway};
use guardyn_testkit::rpc::authed;
use guardyn_testkit::{NatsServer, Options, TestServer};
use tonic::Code;

fn cheap_hashing(c: &mut Config) {
    c.auth.argon2.memory_kib = 8;
    c.auth.argon2.iterations = 1;
}

fn admin_token(server: &TestServer, role: &str) -> String {
    server.token_with_roles(&AccountId::random().to_string(), 1, "s-1", &[role])
}

async fn issue(server: &TestServer, admin: &str, scopes: &[&str]) -> (String, String) {
    let r = CredentialServiceClient::new(server.channel())
        .issue_credential(authed(
            pb::IssueCredentialRequest {
                name: "ci bot".into(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                valid_for_secs: 3600,
            },
            admin,
        ))
        .await
        .unwrap()
        .into_inner();
    (r.credential.unwrap().credential_id, r.secret)
}

async fn list_accounts(server: &TestServer, bearer: &str) -> Result<(), tonic::Status> {
    AdminUserServiceClient::new(server.channel())
        .list_accounts(authed(pb::ListAccountsRequest::default(), bearer))
        .await
        .map(|_| ())
}

async fn monitoring(server: &TestServer, bearer: &str) -> Result<(), tonic::Status> {
    MonitoringServiceClient::new(server.channel())
        .get_monitoring_data(authed(pb::GetMonitoringDataRequest {}, bearer))
        .await
        .map(|_| ())
}

async fn send_notice(server: &TestServer, bearer: &str) -> Result<String, tonic::Status> {
    SystemNoticeServiceClient::new(server.channel())
        .send_system_notice(authed(
            pb::SendSystemNoticeRequest {
                all_accounts: true,
                severity: pb::SystemNoticeSeverity::Critical.into(),
                text: "Service degraded, we are on it".into(),
                reason: "incident 42".into(),
                ..Default::default()
            },
            bearer,
        ))
        .await
        .map(|r| r.into_inner().notice_id)
}

fn reason(status: &tonic::Status) -> Option<String> {
    guardyn_common::error::reason_of(status)
}

fn assert_refused(result: Result<(), tonic::Status>, code: Code, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notices_send_credential_sends_notices_and_nothing_else_and_is_named_in_the_audit() {
    let server = TestServer::start_with(Options::configure(cheap_hashing))
        .await
        .unwrap();
    let admin = admin_token(&server, "admin");
    let (id, secret) = issue(&server, &admin, &["notices.send"]).await;
    let notice_id = send_notice(&server, &secret).await.unwrap();
    assert_refused(
        list_accounts(&server, &secret).await,
        Code::PermissionDenied,
        "ListAccounts with a notices.send credential",
    );
    assert_refused(
        monitoring(&server, &secret).await,
        Code::PermissionDenied,
        "monitoring with a notices.send credential",
    );
    // Other scopes do not send.
    let (_, watcher) = issue(&server, &admin, &["monitoring", "admin.read"]).await;
    assert_refused(
        send_notice(&server, &watcher).await.map(|_| ()),
        Code::PermissionDenied,
        "SendSystemNotice with a monitoring + admin.read credential",
    );
    // The notice reached users' lists, and the audit names the credential as the sender.
    let user = admin_token(&server, "user");
    let listed = SystemNoticeServiceClient::new(server.channel())
        .list_system_notices(authed(pb::ListSystemNoticesRequest::default(), &user))
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<_> = listed.notices.into_iter().map(|n| n.notice_id).collect();
    assert_eq!(listed, std::slice::from_ref(&notice_id));
    let entries = guardyn_audit::entries(&*server.kv()).await.unwrap();
    let sent: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == AuditKind::SystemNoticeSent)
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0].actor.as_deref(),
        Some(format!("credential:{id}").as_str())
    );
    assert_eq!(sent[0].reason, "incident 42");
    assert!(sent[0].detail.contains(&notice_id));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_reaches_only_its_scopes_is_audited_and_rotation_refuses_the_old_secret() {
    let server = TestServer::start_with(Options::configure(cheap_hashing))
        .await
        .unwrap();
    let admin = admin_token(&server, "admin");
    let api = || CredentialServiceClient::new(server.channel());

    // Only owners and admins issue.
    let auditor = admin_token(&server, "auditor");
    let denied = api()
        .issue_credential(authed(
            pb::IssueCredentialRequest {
                name: "x".into(),
                scopes: vec!["monitoring".into()],
                valid_for_secs: 60,
            },
            &auditor,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let bad_scope = api()
        .issue_credential(authed(
            pb::IssueCredentialRequest {
                name: "x".into(),
                scopes: vec!["admin.write".into()],
                valid_for_secs: 60,
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_scope.code(), Code::InvalidArgument);

    let (id, secret) = issue(&server, &admin, &["admin.read"]).await;
    assert!(secret.starts_with(&format!("gdc_{id}.")), "{secret}");

    // In scope: the read-only admin RPCs.
    list_accounts(&server, &secret).await.unwrap();
    // Out of scope: monitoring, an admin mutation, managing credentials.
    assert_refused(
        monitoring(&server, &secret).await,
        Code::PermissionDenied,
        "monitoring with an admin.read credential",
    );
    let suspend = AdminUserServiceClient::new(server.channel())
        .suspend_account(authed(
            pb::SuspendAccountRequest {
                account_id: AccountId::random().to_string(),
                reason: "no".into(),
            },
            &secret,
        ))
        .await
        .unwrap_err();
    assert_eq!(suspend.code(), Code::PermissionDenied, "{suspend:?}");
    let list_by_bot = api()
        .list_credentials(authed(pb::ListCredentialsRequest {}, &secret))
        .await
        .unwrap_err();
    assert_eq!(list_by_bot.code(), Code::PermissionDenied);

    // Listed without any secret.
    let listed = api()
        .list_credentials(authed(pb::ListCredentialsRequest {}, &admin))
        .await
        .unwrap()
        .into_inner();
    let mine = listed
        .credentials
        .iter()
        .find(|c| c.credential_id == id)
        .unwrap();
    assert_eq!(mine.scopes, ["admin.read"]);
    let secret_part = secret.rsplit('.').next().unwrap();
    assert!(!format!("{listed:?}").contains(secret_part));

    // Rotation: the new secret works, the old one is refused.
    let rotated = api()
        .rotate_credential(authed(
            pb::RotateCredentialRequest {
                credential_id: id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(rotated.secret, secret);
    list_accounts(&server, &rotated.secret).await.unwrap();
    assert_refused(
        list_accounts(&server, &secret).await,
        Code::Unauthenticated,
        "the secret before rotation",
    );

    // Each use is audited with the credential, the admitting scope and the instance.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let entries = guardyn_audit::entries(&*server.kv()).await.unwrap();
        let used = entries.iter().any(|e| {
            e.kind == AuditKind::CredentialUsed
                && e.detail.contains(&format!("credential={id}"))
                && e.detail.contains("scope=admin.read")
                && e.detail.contains("instance=testkit")
        });
        let issued = entries
            .iter()
            .any(|e| e.kind == AuditKind::CredentialIssued && e.detail.contains(&id));
        let refused = entries
            .iter()
            .any(|e| e.kind == AuditKind::CredentialRefused && e.detail.contains(&id));
        if used && issued && refused {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit entries missing: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await.unwrap();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_unknown_secrets_are_refused_alike_in_answer_and_time() {
    let server = TestServer::start_with(Options::configure(|c| {
        cheap_hashing(c);
        c.auth.limits.credential_failures_per_address = RateLimit::new(100_000, 6_000_000);
    }))
    .await
    .unwrap();
    let admin = admin_token(&server, "admin");
    let (id, secret) = issue(&server, &admin, &["monitoring"]).await;
    monitoring(&server, &secret).await.unwrap();
    let wrong_secret =
        |i: usize| format!("gdc_{id}.wrong-secret-{i:04}-AAAAAAAAAAAAAAAAAAAAAAAAAA");
    let unknown = |i: usize| {
        format!(
            "gdc_{}.wrong-secret-{i:04}-AAAAAAAAAAAAAAAAAAAAAAAAAA",
            AccountId::random()
        )
    };

    let first_wrong = monitoring(&server, &wrong_secret(0)).await.unwrap_err();
    let first_unknown = monitoring(&server, &unknown(0)).await.unwrap_err();
    assert_eq!(first_wrong.code(), Code::Unauthenticated);
    assert_eq!(first_wrong.code(), first_unknown.code());
    assert_eq!(first_wrong.message(), first_unknown.message());
    assert_eq!(reason(&first_wrong), reason(&first_unknown));
    assert_eq!(first_wrong.details(), first_unknown.details());

    // Interleaved, so that load on the machine hits both alike.
    let (mut wrong, mut unknown_t) = (Vec::new(), Vec::new());
    for i in 1..=200 {
        let start = Instant::now();
        let w = monitoring(&server, &wrong_secret(i)).await.unwrap_err();
        wrong.push(start.elapsed());
        let start = Instant::now();
        let u = monitoring(&server, &unknown(i)).await.unwrap_err();
        unknown_t.push(start.elapsed());
        assert_eq!((w.code(), w.message()), (u.code(), u.message()));
    }
    let (w, u) = (median(wrong), median(unknown_t));
    let ratio = w.as_secs_f64().max(u.as_secs_f64()) / w.as_secs_f64().min(u.as_secs_f64());
    eprintln!("credential refusal medians: wrong secret {w:?}, unknown id {u:?}, ratio {ratio:.2}");
    assert!(
        ratio < 3.0,
        "median wrong {w:?} vs unknown {u:?}: ratio {ratio:.2}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_one_address_are_rate_limited_even_for_the_right_secret() {
    let server = TestServer::start_with(Options::configure(|c| {
        cheap_hashing(c);
        c.auth.limits.credential_failures_per_address = RateLimit::new(3, 1);
    }))
    .await
    .unwrap();
    let admin = admin_token(&server, "admin");
    let (id, secret) = issue(&server, &admin, &["monitoring"]).await;
    let wrong = format!("gdc_{id}.not-the-secret");
    let mut attempts = 0;
    let limited = loop {
        attempts += 1;
        let status = monitoring(&server, &wrong).await.unwrap_err();
        if status.code() != Code::Unauthenticated {
            break status;
        }
        assert!(attempts < 10, "never rate limited");
    };
    assert_eq!(limited.code(), Code::ResourceExhausted, "{limited:?}");
    assert_eq!(reason(&limited).as_deref(), Some("RATE_LIMITED"));
    assert_eq!(
        attempts, 5,
        "3 allowed failures, the 4th blocks, the 5th is refused"
    );
    // Guessing right now gains nothing.
    let right = monitoring(&server, &secret).await.unwrap_err();
    assert_eq!(right.code(), Code::ResourceExhausted);
    // Tokens are not affected.
    monitoring(&server, &admin).await.unwrap();
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_credential_is_refused_at_once_on_another_instance_and_its_stream_ends() {
    let Some(pg_server) = throwaway::shared_or_skip() else {
        return;
    };
    let Some(nats) = NatsServer::start_or_skip() else {
        return;
    };
    let pg = pg_server.fresh_database().await;
    let secrets = tempfile::tempdir().unwrap();
    let key_file = secrets.path().join("auth-master.key");
    std::fs::write(&key_file, rand_key()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let shared = |pg: PostgresConfig, key: std::path::PathBuf, instance: &'static str| {
        let nats_url = nats.url.clone();
        move |c: &mut Config| {
            cheap_hashing(c);
            c.events.backend = EventsBackend::Nats;
            c.events.nats_url = nats_url;
            c.storage.engine = StorageEngine::Postgres;
            c.storage.postgres = Some(pg);
            c.auth.master_key_file = key;
            c.server.instance_id = instance.to_owned();
        }
    };
    let a = TestServer::start_with(Options::configure(shared(
        pg.clone(),
        key_file.clone(),
        "cred-a",
    )))
    .await
    .unwrap();
    let b = TestServer::start_with(Options {
        services: vec!["auth".into(), "admin".into()],
        ..Options::configure(shared(pg, key_file, "cred-b"))
    })
    .await
    .unwrap();

    let admin = admin_token(&a, "owner");
    let (id, secret) = issue(&a, &admin, &["monitoring", "admin.read"]).await;
    // B verifies what A issued: one store, one pepper (same master key).
    monitoring(&b, &secret).await.unwrap();
    list_accounts(&b, &secret).await.unwrap();
    let mut watch = MonitoringServiceClient::new(b.channel())
        .watch_monitoring(authed(
            pb::WatchMonitoringRequest { interval_secs: 1 },
            &secret,
        ))
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();

    CredentialServiceClient::new(a.channel())
        .revoke_credential(authed(
            pb::RevokeCredentialRequest {
                credential_id: id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap();
    // The very next call on B is refused: every verification reads the record.
    assert_refused(
        monitoring(&b, &secret).await,
        Code::Unauthenticated,
        "a revoked credential on the other instance",
    );
    assert_refused(
        monitoring(&a, &secret).await,
        Code::Unauthenticated,
        "a revoked credential on the issuing instance",
    );
    // A stream opened with it on B ends too (the revocation travels on the bus).
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match watch.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the stream ended without an error"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the watch stream outlived the revocation");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert_eq!(reason(&ended).as_deref(), Some("SESSION_REVOKED"));
    let listed = CredentialServiceClient::new(b.channel())
        .list_credentials(authed(
            pb::ListCredentialsRequest {},
            &admin_token(&b, "admin"),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed
            .credentials
            .iter()
            .any(|c| c.credential_id == id && c.revoked_at.is_some())
    );
    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

fn rand_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        // Distinct per run is not needed: the database is fresh per test.
        *b = u8::try_from(i).unwrap().wrapping_mul(37).wrapping_add(11);
    }
    key
}
