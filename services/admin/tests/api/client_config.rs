//! Signed client configuration: publishing (roles, validation, audit, concurrent versions),
//! GetClientConfig with "not modified", the Listen notice, and the SDK's checks (signature,
//! key, version).

use std::collections::BTreeSet;
use std::time::Duration;

use guardyn_common::AccountId;
use guardyn_common::ratelimit::RateLimit;
use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::client_config_service_client::ClientConfigServiceClient;
use guardyn_sdk::{Client, ClientConfig, ConfigRefusal, Event, SdkError, Storage};
use guardyn_testkit::rpc::authed;
use guardyn_testkit::{Options, TestServer};
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(20);

async fn server() -> TestServer {
    TestServer::start_with(Options::configure(|c| {
        c.auth.argon2.memory_kib = 1024;
        c.auth.argon2.iterations = 1;
        let many = RateLimit::new(10_000, 600_000);
        c.auth.limits.register_per_address = many;
        c.auth.limits.login_per_address = many;
    }))
    .await
    .unwrap()
}

fn api(server: &TestServer) -> ClientConfigServiceClient<Channel> {
    ClientConfigServiceClient::new(server.channel())
}

/// A token of a fresh account carrying `role`.
fn token(server: &TestServer, role: &str) -> (String, String) {
    let account = AccountId::random().to_string();
    let token = server.token_with_roles(&account, 1, "s-1", &[role]);
    (account, token)
}

async fn publish(
    server: &TestServer,
    token: &str,
    payload: &str,
) -> Result<pb::PublishClientConfigResponse, tonic::Status> {
    api(server)
        .publish_client_config(authed(
            pb::PublishClientConfigRequest {
                payload_json: payload.into(),
                reason: "roll out the new endpoints".into(),
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

fn reason(status: &tonic::Status) -> Option<String> {
    guardyn_common::error::reason_of(status)
}

/// The key the server signs with, as ListClientConfigVersions shows it to admins.
async fn pinned_key(server: &TestServer) -> [u8; 32] {
    let (_, admin) = token(server, "admin");
    let list = api(server)
        .list_client_config_versions(authed(
            pb::ListClientConfigVersionsRequest::default(),
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let key: [u8; 32] = list.public_key.as_slice().try_into().unwrap();
    assert_eq!(list.key_id, guardyn_sdk::config_key_id(&key));
    key
}

async fn sdk_client(server: &TestServer, key: Option<[u8; 32]>) -> Client {
    let config = ClientConfig {
        device_name: "test".into(),
        prekey_batch: 4,
        prekey_low_water: 2,
        key_package_batch: 3,
        client_config_key: key,
        ..ClientConfig::default()
    };
    let name = format!("cfg{}", rand_suffix());
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

fn rand_suffix() -> String {
    AccountId::random().to_string().replace('-', "")[..12].to_owned()
}

#[tokio::test]
async fn only_owners_and_admins_publish_and_auditors_may_list() {
    let server = server().await;
    for role in ["user", "auditor"] {
        let (_, t) = token(&server, role);
        let err = publish(&server, &t, r#"{"a":1}"#).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{role}");
        assert_eq!(reason(&err).as_deref(), Some("ROLE_REQUIRED"), "{role}");
    }
    let (_, user) = token(&server, "user");
    let err = api(&server)
        .list_client_config_versions(authed(
            pb::ListClientConfigVersionsRequest::default(),
            &user,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("ROLE_REQUIRED"));
    // Nothing was published by the refused calls.
    let (_, auditor) = token(&server, "auditor");
    let list = api(&server)
        .list_client_config_versions(authed(
            pb::ListClientConfigVersionsRequest::default(),
            &auditor,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(list.versions.is_empty());
    let err = api(&server)
        .get_client_config(authed(pb::GetClientConfigRequest::default(), &user))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // An owner may publish.
    let (_, owner) = token(&server, "owner");
    assert_eq!(publish(&server, &owner, "{}").await.unwrap().version, 1);
}

#[tokio::test]
async fn publishes_are_validated_versioned_audited_and_listed_newest_first() {
    let server = server().await;
    let (admin_id, admin) = token(&server, "admin");
    for bad in ["[1]", "not json", ""] {
        let err = publish(&server, &admin, bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
    }
    let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(70_000));
    let err = publish(&server, &admin, &big).await.unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("PAYLOAD_TOO_LARGE"));
    let err = api(&server)
        .publish_client_config(authed(
            pb::PublishClientConfigRequest {
                payload_json: "{}".into(),
                reason: " ".into(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    for n in 1..=3u64 {
        let r = publish(&server, &admin, &format!(r#"{{"n": {n}, "flag": true}}"#))
            .await
            .unwrap();
        assert_eq!(r.version, n);
    }
    let page = |token: String| {
        let mut c = api(&server);
        let admin = admin.clone();
        async move {
            c.list_client_config_versions(authed(
                pb::ListClientConfigVersionsRequest {
                    page_size: 2,
                    page_token: token,
                },
                &admin,
            ))
            .await
            .unwrap()
            .into_inner()
        }
    };
    let first = page(String::new()).await;
    let versions: Vec<u64> = first.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, vec![3, 2]);
    assert_eq!(first.versions[0].payload_json, r#"{"flag":true,"n":3}"#);
    assert_eq!(first.versions[0].published_by, admin_id);
    assert_eq!(first.versions[0].reason, "roll out the new endpoints");
    let second = page(first.next_page_token.clone()).await;
    assert_eq!(
        second
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert!(second.next_page_token.is_empty());

    // Each publish is in the audit log with its actor and reason.
    let entries = guardyn_audit::entries(&*server.kv()).await.unwrap();
    let published: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == guardyn_audit::AuditKind::ClientConfigPublished)
        .collect();
    assert_eq!(published.len(), 3);
    assert!(
        published
            .iter()
            .all(|e| e.actor.as_deref() == Some(admin_id.as_str())
                && e.reason == "roll out the new endpoints")
    );
    assert_eq!(published[2].detail, "version 3");
}

#[tokio::test]
async fn get_answers_not_modified_for_the_latest_version_only() {
    let server = server().await;
    let (_, admin) = token(&server, "admin");
    publish(&server, &admin, r#"{"v":1}"#).await.unwrap();
    publish(&server, &admin, r#"{"v":2}"#).await.unwrap();
    let (_, user) = token(&server, "user");
    let get = |known_version| {
        let mut c = api(&server);
        let user = user.clone();
        async move {
            c.get_client_config(authed(pb::GetClientConfigRequest { known_version }, &user))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let latest = get(2).await;
    assert!(latest.not_modified);
    assert!(latest.config.is_none());
    let key = pinned_key(&server).await;
    for known in [0, 1, 7] {
        let r = get(known).await;
        assert!(!r.not_modified);
        let applied =
            guardyn_sdk::verify_client_config(&r.config.unwrap(), &key, 0, now_ms()).unwrap();
        assert_eq!(
            (applied.version, applied.payload_json.as_str()),
            (2, r#"{"v":2}"#)
        );
        assert!(applied.expires_at_ms > now_ms());
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn concurrent_publishes_get_distinct_versions() {
    let server = server().await;
    let (_, admin) = token(&server, "admin");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let mut c = api(&server);
            let admin = admin.clone();
            tokio::spawn(async move {
                c.publish_client_config(authed(
                    pb::PublishClientConfigRequest {
                        payload_json: format!(r#"{{"i":{i}}}"#),
                        reason: "race".into(),
                    },
                    &admin,
                ))
                .await
                .unwrap()
                .into_inner()
                .version
            })
        })
        .collect();
    let mut versions = BTreeSet::new();
    for t in tasks {
        assert!(
            versions.insert(t.await.unwrap()),
            "a version was given twice"
        );
    }
    assert_eq!(versions, (1..=8).collect());
}

#[tokio::test]
async fn the_sdk_refuses_a_tampered_document_a_wrong_key_and_an_older_version() {
    let server = server().await;
    let (_, admin) = token(&server, "admin");
    let key = pinned_key(&server).await;
    let v1 = publish(&server, &admin, r#"{"v":1}"#).await.unwrap();
    publish(&server, &admin, r#"{"v":2}"#).await.unwrap();

    let client = sdk_client(&server, Some(key)).await;
    let applied = client.fetch_client_config().await.unwrap().unwrap();
    assert_eq!(
        (applied.version, applied.payload_json.as_str()),
        (2, r#"{"v":2}"#)
    );
    // Not modified: the applied one stays.
    assert_eq!(
        client.fetch_client_config().await.unwrap(),
        Some(applied.clone())
    );

    // A tampered document (one byte of the payload changed) does not verify.
    let mut tampered = v1.config.clone().unwrap();
    let at = tampered.document.len() - 2;
    tampered.document[at] ^= 0x01;
    assert_eq!(
        guardyn_sdk::verify_client_config(&tampered, &key, 0, now_ms()),
        Err(ConfigRefusal::BadSignature)
    );

    // A client pinning another key refuses the server's documents and applies nothing.
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]).verifying_key();
    let other = sdk_client(&server, Some(other_key.to_bytes())).await;
    let err = other.fetch_client_config().await.unwrap_err();
    assert!(
        matches!(
            err,
            SdkError::ClientConfigRefused(ConfigRefusal::WrongKey { .. })
        ),
        "{err:?}"
    );
    assert_eq!(other.client_config().await, None);
    // Without a pinned key nothing is fetched.
    let unpinned = sdk_client(&server, None).await;
    assert!(matches!(
        unpinned.fetch_client_config().await,
        Err(SdkError::ClientConfigRefused(ConfigRefusal::NoPinnedKey))
    ));

    // An older version, validly signed: offered by a server rolled back to version 1 (its
    // head record rewritten: version tag 1, postcard varint 1).
    assert_eq!(
        guardyn_sdk::verify_client_config(&v1.config.unwrap(), &key, 2, now_ms()),
        Err(ConfigRefusal::Downgrade {
            applied: 2,
            offered: 1
        })
    );
    server
        .kv()
        .put(b"client_config/v1/head", &[1, 1])
        .await
        .unwrap();
    let err = client.fetch_client_config().await.unwrap_err();
    assert!(
        matches!(
            err,
            SdkError::ClientConfigRefused(ConfigRefusal::Downgrade {
                applied: 2,
                offered: 1
            })
        ),
        "{err:?}"
    );
    assert_eq!(client.client_config().await, Some(applied));
}

#[tokio::test]
async fn an_open_listen_stream_is_told_of_a_new_version() {
    let server = server().await;
    let key = pinned_key(&server).await;
    let client = sdk_client(&server, Some(key)).await;
    let mut inbox = client.listen().await.unwrap();
    // The stream is registered once its backlog is delivered.
    loop {
        match inbox.next_timeout(WAIT).await {
            Some(Event::CaughtUp) => break,
            Some(_) => {}
            None => panic!("no CaughtUp"),
        }
    }
    let (_, admin) = token(&server, "admin");
    let published = publish(&server, &admin, r#"{"feature":"on"}"#)
        .await
        .unwrap();
    let version = loop {
        match inbox.next_timeout(WAIT).await {
            Some(Event::ClientConfigChanged { version }) => break version,
            Some(_) => {}
            None => panic!("no ClientConfigChanged notice"),
        }
    };
    assert_eq!(version, published.version);
    let applied = client.fetch_client_config().await.unwrap().unwrap();
    assert_eq!(applied.version, version);
    assert_eq!(applied.payload_json, r#"{"feature":"on"}"#);
}

#[tokio::test]
async fn a_configured_key_file_signs_what_the_server_serves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client-config.key");
    std::fs::write(&path, [5u8; 32]).unwrap();
    let expected = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32])
        .verifying_key()
        .to_bytes();
    let configured = path.clone();
    let server = TestServer::start_with(Options::configure(move |c| {
        c.admin.client_config.signing_key_path = configured;
    }))
    .await
    .unwrap();
    assert_eq!(pinned_key(&server).await, expected);
    let (_, admin) = token(&server, "admin");
    let published = publish(&server, &admin, r#"{"k":1}"#).await.unwrap();
    let applied =
        guardyn_sdk::verify_client_config(&published.config.unwrap(), &expected, 0, now_ms())
            .unwrap();
    assert_eq!(applied.version, 1);
    // The key file is used as is: nothing is generated in the data directory.
    assert!(
        !server
            .data_dir()
            .join("data/client-config-signing.key")
            .exists()
    );
}
