//! Messaging in its own process: its device directory is auth's, over the internal contract
//! on auth's mesh listener. Two real servers on loopback (A: auth, B: messaging only) share a
//! NATS bus; SDK clients reach both through a gateway that routes by gRPC service, as an
//! ingress in front of a cluster would.

use std::time::Duration;

use guardyn_common::ratelimit::RateLimit;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_proto::guardyn::auth::v1::{LoginRequest, login_response};
use guardyn_proto::guardyn::internal::v1 as pb;
use guardyn_proto::guardyn::internal::v1::device_directory_service_client::DeviceDirectoryServiceClient;
use guardyn_sdk::{Client, ClientConfig, Event, Inbox, Storage};
use guardyn_testkit::{NatsServer, Options, TestServer};
use tonic::transport::{Channel, Endpoint};

use super::gateway::{Upstreams, gateway};

pub(crate) const PASSWORD: &str = "correct horse battery staple";
const WAIT: Duration = Duration::from_secs(15);

// ---- the two servers --------------------------------------------------------------------------

pub(crate) fn fast_auth(c: &mut guardyn::config::Config) {
    c.auth.argon2.memory_kib = 1024;
    c.auth.argon2.iterations = 1;
    let many = RateLimit::new(10_000, 600_000);
    c.auth.limits.register_per_address = many;
    c.auth.limits.login_per_address = many;
    c.auth.limits.login_per_account = many;
    c.auth.limits.prekey_fetch_per_target = many;
    c.auth.limits.link_code_per_account = many;
}

fn nats(c: &mut guardyn::config::Config, url: &str) {
    c.events.backend = guardyn::config::EventsBackend::Nats;
    c.events.nats_url = url.to_owned();
}

fn sdk_config() -> ClientConfig {
    ClientConfig {
        device_name: "mesh".into(),
        prekey_batch: 4,
        prekey_low_water: 2,
        key_package_batch: 3,
        max_attempts: 5,
        ..ClientConfig::default()
    }
}

pub(crate) async fn register(channel: &Channel, name: &str) -> Client {
    let username = format!("{name}{}", std::process::id());
    Client::register(
        channel.clone(),
        Storage::Memory,
        sdk_config(),
        &username,
        PASSWORD,
    )
    .await
    .unwrap()
}

/// A new session's access token for device 1 of the account registered as `name`.
pub(crate) async fn access_token(channel: &Channel, name: &str) -> String {
    let response = AuthServiceClient::new(channel.clone())
        .login(LoginRequest {
            username: format!("{name}{}", std::process::id()),
            password: PASSWORD.into(),
            device_id: 1,
        })
        .await
        .unwrap()
        .into_inner();
    match response.outcome {
        Some(login_response::Outcome::Tokens(t)) => t.access_token,
        other => panic!("no tokens: {other:?}"),
    }
}

pub(crate) async fn next_body(inbox: &mut Inbox) -> Vec<u8> {
    loop {
        match inbox.next_timeout(WAIT).await {
            Some(Event::Message(m)) => return m.body,
            Some(_) => {}
            None => panic!("no message within {WAIT:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messaging_alone_uses_auths_directory_over_the_mesh_listener() {
    let Some(bus) = NatsServer::start_or_skip() else {
        return;
    };
    let url = bus.url.clone();
    let a = TestServer::start_with(Options {
        services: vec!["auth".into()],
        configure: Some(Box::new(move |c| {
            fast_auth(c);
            nats(c, &url);
            c.mesh.listen = "127.0.0.1:0".into();
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    let mesh = a.mesh_addr.expect("A binds its mesh listener");
    let (auth_public, url) = (a.addr, bus.url.clone());
    let b = TestServer::start_with(Options {
        services: vec!["messaging".into()],
        configure: Some(Box::new(move |c| {
            nats(c, &url);
            c.mesh.auth_addresses = vec![format!("http://{auth_public}")];
            c.mesh.directory_addresses = vec![format!("http://{mesh}")];
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    assert!(b.hosts("guardyn.messaging.v1.MessagingService"));
    assert!(!b.hosts("guardyn.auth.v1.AuthService"));

    let channel = gateway(Upstreams {
        auth: vec![a.channel()],
        messaging: vec![b.channel()],
        ..Upstreams::default()
    })
    .await;
    let alice = register(&channel, "meshalice").await;
    let bob = register(&channel, "meshbob").await;
    let pending = Client::request_link(channel.clone(), Storage::Memory, sdk_config())
        .await
        .unwrap();
    bob.approve_link(pending.code()).await.unwrap();
    let bob2 = pending.finish(WAIT).await.unwrap();

    // 1:1 through B: its envelope check asks A's directory for Bob's two devices (a wrong
    // device list would be DEVICE_MISMATCH, an unreachable directory UNAVAILABLE).
    let mut inbox = bob.listen().await.unwrap();
    let mut inbox2 = bob2.listen().await.unwrap();
    alice
        .send(bob.account_id(), b"over the mesh")
        .await
        .unwrap();
    assert_eq!(next_body(&mut inbox).await, b"over the mesh");
    assert_eq!(next_body(&mut inbox2).await, b"over the mesh");
    bob.send(alice.account_id(), b"and back").await.unwrap();
    let events = alice.sync().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Message(m) if m.body == b"and back")),
        "{events:?}"
    );
    drop((inbox, inbox2));

    // An MLS Add through B: accepted only for KeyPackages A's directory saw claimed and whose
    // signature key it pinned.
    let group = alice.create_group().await.unwrap();
    alice
        .add_to_group(&group, &[bob.account_id()])
        .await
        .unwrap();
    let joined = bob.sync().await.unwrap();
    assert!(
        joined
            .iter()
            .any(|e| matches!(e, Event::GroupJoined { group_id } if *group_id == group)),
        "{joined:?}"
    );
    alice.send_group(&group, b"group hello").await.unwrap();
    let got = bob.sync().await.unwrap();
    assert!(
        got.iter().any(|e| matches!(e,
            Event::GroupMessage { group_id, message } if *group_id == group
                && message.body == b"group hello")),
        "{got:?}"
    );

    // The internal contract answers on A's mesh listener...
    let mut internal = DeviceDirectoryServiceClient::new(
        Endpoint::from_shared(format!("http://{mesh}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let listed = internal
        .list_devices(pb::ListDevicesRequest {
            account_id: bob.account_id().to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.found);
    let mut ids: Vec<u32> = listed.devices.iter().map(|d| d.device_id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [1, 2]);
    let unknown = internal
        .list_devices(pb::ListDevicesRequest {
            account_id: "00000000-0000-4000-8000-000000000000".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!unknown.found && unknown.devices.is_empty());

    // ...and not on its public port, whatever the token.
    let token = a.token(
        alice.account_id(),
        1,
        "00000000-0000-4000-8000-000000000001",
    );
    let mut public = DeviceDirectoryServiceClient::new(a.channel());
    let mut request = tonic::Request::new(pb::ListDevicesRequest {
        account_id: bob.account_id().to_owned(),
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let refused = public.list_devices(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented, "{refused:?}");

    b.stop().await.unwrap();
    a.stop().await.unwrap();
}

#[tokio::test]
async fn messaging_alone_without_a_directory_address_refuses_to_start_naming_the_key() {
    let err = TestServer::start_with(Options {
        services: vec!["messaging".into()],
        ..Options::default()
    })
    .await
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("mesh.directory_addresses"), "{message}");
    assert!(message.contains("device directory"), "{message}");
}

/// With `mesh.tls`, the mesh listener serves only peers with a certificate from the mesh CA.
#[tokio::test]
async fn the_mesh_listener_with_tls_admits_only_peers_with_a_certificate_from_the_ca() {
    use guardyn_common::mesh::directory::RemoteDeviceDirectory;
    use guardyn_common::mesh::{self, DeviceDirectory as _, MeshConfig, MeshTlsConfig};
    guardyn_common::server::install_crypto_provider();
    let pki = super::Pki::new();
    let server_tls = MeshTlsConfig {
        ca_path: pki.path("ca.pem"),
        cert_path: pki.path("server.pem"),
        key_path: pki.path("server.key"),
        domain: String::new(),
        ..MeshTlsConfig::default()
    };
    let a = TestServer::start_with(Options {
        services: vec!["auth".into()],
        configure: Some(Box::new(move |c| {
            c.mesh.listen = "127.0.0.1:0".into();
            c.mesh.tls = server_tls;
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    let mesh_addr = a.mesh_addr.unwrap();
    let peer = |tls: MeshTlsConfig, scheme: &str| {
        let config = MeshConfig {
            max_attempts: 1,
            tls,
            ..MeshConfig::default()
        };
        let addresses = vec![format!("{scheme}://127.0.0.1:{}", mesh_addr.port())];
        async move {
            let channel = mesh::channel(&addresses, &config).await.unwrap();
            RemoteDeviceDirectory::new(channel, &config)
                .devices("00000000-0000-4000-8000-000000000000")
                .await
        }
    };
    let client_tls = MeshTlsConfig {
        ca_path: pki.path("ca.pem"),
        cert_path: pki.path("client.pem"),
        key_path: pki.path("client.key"),
        domain: "localhost".into(),
        ..MeshTlsConfig::default()
    };
    assert_eq!(peer(client_tls.clone(), "https").await.unwrap(), None);

    let without_cert = MeshTlsConfig {
        cert_path: Default::default(),
        key_path: Default::default(),
        ..client_tls
    };
    // The handshake fails (CertificateRequired): a configuration error, not an outage.
    let refused = peer(without_cert, "https").await.unwrap_err();
    assert!(!refused.is_retryable(), "{refused:?}");
    assert!(
        peer(MeshTlsConfig::default(), "http").await.is_err(),
        "a plaintext peer was served"
    );
    a.stop().await.unwrap();
}

/// The binary's own path: `guardyn serve --service messaging` without a directory exits
/// non-zero with one line naming the key.
#[test]
fn the_binary_refuses_messaging_alone_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = super::guardyn()
        .args(["serve", "--service", "messaging"])
        .env("GUARDYN_SERVER__PORT", super::free_port().to_string())
        .env("GUARDYN_METRICS__ENABLED", "false")
        .env("GUARDYN_STORAGE__DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(last.contains("mesh.directory_addresses"), "{stderr}");
}
