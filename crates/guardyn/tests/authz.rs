//! The authorization matrix: every RPC of every hosted service, generated from the proto
//! descriptor set, called without a valid token must be refused by the auth layer with
//! `UNAUTHENTICATED` (and the documented reason) before any handler runs; every method the
//! services declare public must be callable without a token. With a valid token of another
//! account, every non-public RPC is classified and checked (`authz/cross_account.rs`): those
//! naming another account's resource are refused, account-scoped ones leak nothing, and the
//! few that reach other accounts by design say why.
//!
//! Methods are called generically (no generated client): an empty protobuf message (zero
//! bytes) goes out and any response bytes are accepted. A new RPC is covered automatically; a
//! new service is covered as soon as the server hosts it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::{Buf as _, BufMut as _, Bytes};
use guardyn::config::Config;
use guardyn_common::auth::{
    AuthLayer, PublicMethods, RevocationList, TokenConfig, TokenGrant, TokenVerifier,
};
use guardyn_common::error::reason_of;
use guardyn_common::ratelimit::RateLimit;
use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_proto::guardyn::auth::v1::device_service_client::DeviceServiceClient;
use guardyn_sdk::{Client, ClientConfig, Storage};
use guardyn_testkit::{Options, TestServer};
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tower::{Layer as _, ServiceExt as _};

#[path = "authz/cross_account.rs"]
mod cross_account;

const PASSWORD: &str = "correct horse battery staple";
/// How long one generic call may take before it counts as "not refused".
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

// ---- a codec over raw bytes ------------------------------------------------------------------

/// Sends the bytes it is given (empty: the default protobuf message) and accepts any response.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

// ---- the contract ------------------------------------------------------------------------------

/// One RPC of the contract.
#[derive(Clone, Debug)]
struct Method {
    service: String,
    /// `/package.Service/Method`.
    path: String,
    server_streaming: bool,
    /// Top-level field names of the request message.
    request_fields: Vec<String>,
}

/// Every method of every service in `guardyn_proto::FILE_DESCRIPTOR_SET`.
fn contract() -> Vec<Method> {
    contract_of(guardyn_proto::FILE_DESCRIPTOR_SET)
}

/// Every method of every service in an encoded descriptor set.
fn contract_of(descriptors: &[u8]) -> Vec<Method> {
    let set =
        prost_types::FileDescriptorSet::decode(descriptors).expect("the descriptor set decodes");
    let mut fields = std::collections::HashMap::new();
    for file in &set.file {
        for msg in &file.message_type {
            let names: Vec<String> = msg.field.iter().map(|f| f.name().to_owned()).collect();
            fields.insert(format!(".{}.{}", file.package(), msg.name()), names);
        }
    }
    let mut methods = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let full = format!("{}.{}", file.package(), service.name());
            for m in &service.method {
                assert!(
                    !m.client_streaming(),
                    "{full}/{}: client streaming is not part of the contract",
                    m.name()
                );
                methods.push(Method {
                    service: full.clone(),
                    path: format!("/{full}/{}", m.name()),
                    server_streaming: m.server_streaming(),
                    request_fields: fields.get(m.input_type()).cloned().unwrap_or_default(),
                });
            }
        }
    }
    methods
}

/// Whether the server's auth layer treats `path` as public: the same [`AuthLayer`], built
/// from the same per-service lists the server uses (`Service::public_methods` of every
/// service in `guardyn::app::catalogue`), probed with a tokenless request.
async fn public_paths(config: &Config, methods: &[Method]) -> BTreeSet<String> {
    let mut public = PublicMethods::new();
    for service in guardyn::app::catalogue(config) {
        public.extend(&service.public_methods());
    }
    let layer = AuthLayer::new(
        TokenVerifier::new(&config.tokens, RevocationList::new()),
        public,
    );
    let inner = tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(()))
    });
    let svc = layer.layer(inner);
    let mut out = BTreeSet::new();
    for m in methods {
        let req = http::Request::post(m.path.as_str()).body(()).unwrap();
        let resp = svc.clone().oneshot(req).await.unwrap();
        // The layer answers a refusal itself, as a trailers-only gRPC status.
        if !resp.headers().contains_key("grpc-status") {
            out.insert(m.path.clone());
        }
    }
    out
}

// ---- generic calls ------------------------------------------------------------------------------

/// Calls `m` with an empty request and this `authorization` header value. `Ok` means the call
/// was not refused (a unary answer, or a stream that opened and yielded or stayed open).
async fn call(channel: &Channel, m: &Method, authorization: Option<&str>) -> Result<(), Status> {
    call_with(channel, m, authorization, Bytes::new())
        .await
        .map(|_| ())
}

/// Calls `m` with `body` (an encoded request message); the answer's bytes (a stream's first
/// message; empty when a stream stayed silent).
async fn call_with(
    channel: &Channel,
    m: &Method,
    authorization: Option<&str>,
    body: Bytes,
) -> Result<Bytes, Status> {
    let attempt = async {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unknown(format!("channel not ready: {e}")))?;
        let path: http::uri::PathAndQuery = m.path.parse().unwrap();
        let mut req = tonic::Request::new(body);
        if let Some(value) = authorization {
            req.metadata_mut()
                .insert("authorization", value.parse().unwrap());
        }
        if m.server_streaming {
            let mut stream = grpc
                .server_streaming(req, path, RawCodec)
                .await?
                .into_inner();
            match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
                Ok(item) => item.map(Option::unwrap_or_default),
                // Open and silent: not refused.
                Err(_) => Ok(Bytes::new()),
            }
        } else {
            grpc.unary(req, path, RawCodec)
                .await
                .map(|r| r.into_inner())
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, attempt)
        .await
        .unwrap_or_else(|_| Err(Status::deadline_exceeded("test: call timed out")))
}

fn describe(outcome: &Result<(), Status>) -> String {
    match outcome {
        Ok(()) => "OK (not refused)".into(),
        Err(s) => format!(
            "{:?} reason={} message={:?}",
            s.code(),
            reason_of(s).unwrap_or_else(|| "-".into()),
            s.message()
        ),
    }
}

/// The auth layer's refusal of a missing or unusable token.
fn layer_refusal(outcome: &Result<(), Status>) -> bool {
    matches!(outcome, Err(s) if s.code() == Code::Unauthenticated
        && reason_of(s).as_deref() == Some("UNAUTHENTICATED"))
}

// ---- identities ---------------------------------------------------------------------------------

fn bearer<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

async fn login(channel: &Channel, username: &str, device_id: u32) -> pb::Tokens {
    let resp = AuthServiceClient::new(channel.clone())
        .login(pb::LoginRequest {
            username: username.to_owned(),
            password: PASSWORD.to_owned(),
            device_id,
        })
        .await
        .unwrap()
        .into_inner();
    match resp.outcome {
        Some(pb::login_response::Outcome::Tokens(t)) => t,
        _ => panic!("login of device {device_id} did not sign in"),
    }
}

/// Real tokens obtained through the API.
struct Identities {
    account_id: String,
    /// Device 1, live session.
    live: pb::Tokens,
    /// Device 3, session ended with Logout.
    logged_out: String,
    /// Device 2, removed with RemoveDevice.
    removed_device: String,
}

/// An account with three devices (registered and linked through the SDK), each signed in
/// with a raw Login; device 2 is then removed and device 3 logs out.
fn sdk_config() -> ClientConfig {
    ClientConfig {
        device_name: "authz".into(),
        prekey_batch: 2,
        prekey_low_water: 1,
        key_package_batch: 1,
        max_attempts: 3,
        ..ClientConfig::default()
    }
}

async fn identities(server: &TestServer) -> Identities {
    let channel = server.channel();
    let config = sdk_config();
    let username = format!("authz{}", std::process::id());
    let first = Client::register(
        channel.clone(),
        Storage::Memory,
        config.clone(),
        &username,
        PASSWORD,
    )
    .await
    .unwrap();
    for _ in 0..2 {
        let pending = Client::request_link(channel.clone(), Storage::Memory, config.clone())
            .await
            .unwrap();
        first.approve_link(pending.code()).await.unwrap();
        pending.finish(CALL_TIMEOUT).await.unwrap();
    }
    let account_id = first.account_id().to_owned();

    let removed = login(&channel, &username, 2).await;
    let logged_out = login(&channel, &username, 3).await;
    let live = login(&channel, &username, 1).await;

    DeviceServiceClient::new(channel.clone())
        .remove_device(bearer(
            pb::RemoveDeviceRequest { device_id: 2 },
            &live.access_token,
        ))
        .await
        .expect("device 1 removes device 2");
    let revoked = AuthServiceClient::new(channel.clone())
        .logout(bearer(
            pb::LogoutRequest {
                all_sessions: false,
            },
            &logged_out.access_token,
        ))
        .await
        .expect("device 3 logs out")
        .into_inner();
    assert_eq!(revoked.revoked_sessions, 1);

    Identities {
        account_id,
        live,
        logged_out: logged_out.access_token,
        removed_device: removed.access_token,
    }
}

/// A token kind the matrix refuses, with the reason the auth layer documents for it.
struct Kind {
    name: &'static str,
    authorization: Option<String>,
    reason: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_non_public_rpc_refuses_calls_without_a_valid_token() {
    let server = TestServer::start_with(Options::configure(|c| {
        // Expired tokens must be refused one second after issue.
        c.tokens.leeway_secs = 0;
        c.auth.argon2.memory_kib = 1024;
        c.auth.argon2.iterations = 1;
        let many = RateLimit::new(10_000, 600_000);
        c.auth.limits.register_per_address = many;
        c.auth.limits.login_per_address = many;
        c.auth.limits.login_per_account = many;
        c.auth.limits.login_per_username = many;
        c.auth.limits.link_code_per_account = many;
        c.auth.limits.password_per_account = many;
    }))
    .await
    .unwrap();
    let channel = server.channel();

    // What the server hosts, and which of it is public.
    let contract = contract();
    let hosted: BTreeSet<&str> = server.hosted().iter().map(String::as_str).collect();
    let in_contract: BTreeSet<&str> = contract.iter().map(|m| m.service.as_str()).collect();
    for s in &hosted {
        assert!(
            in_contract.contains(s),
            "{s} is hosted but not in guardyn_proto::FILE_DESCRIPTOR_SET: it would go unchecked"
        );
    }
    let methods: Vec<&Method> = contract
        .iter()
        .filter(|m| hosted.contains(m.service.as_str()))
        .collect();
    let not_hosted: BTreeSet<&str> = in_contract.difference(&hosted).copied().collect();
    let public = public_paths(&Config::default(), &contract).await;
    let hosted_public: Vec<&Method> = methods
        .iter()
        .copied()
        .filter(|m| public.contains(&m.path))
        .collect();
    assert!(
        public.contains("/guardyn.auth.v1.AuthService/Login"),
        "the public-method probe found no Login: {public:?}"
    );

    // Tokens.
    let ids = identities(&server).await;
    let expired = server.token_with_ttl(&ids.account_id, 1, &ids.live.session_id, Duration::ZERO);
    let expired_at = Instant::now();
    let untrusted = TestServer::untrusted_signer()
        .sign(&TokenGrant {
            account_id: ids.account_id.clone(),
            device_id: 1,
            session_id: ids.live.session_id.clone(),
            roles: vec!["user".into()],
            ttl: Duration::from_secs(900),
        })
        .unwrap();
    // The untrusted token differs from a trusted one only by its key (same kid, issuer and
    // audience).
    let tokens = Config::default().tokens;
    assert_eq!(
        (tokens.issuer, tokens.audience),
        (
            TokenConfig::default().issuer,
            TokenConfig::default().audience
        )
    );

    // Controls: the live token passes the layer, so refusals below are about the token.
    let live = format!("Bearer {}", ids.live.access_token);
    for path in [
        "/guardyn.auth.v1.AuthService/ListSessions",
        "/guardyn.auth.v1.MfaService/GetMfaStatus",
    ] {
        let m = methods
            .iter()
            .find(|m| m.path == path)
            .unwrap_or_else(|| panic!("{path} is not hosted"));
        let outcome = call(&channel, m, Some(&live)).await;
        assert!(
            outcome.is_ok(),
            "{path} with a live token: {}",
            describe(&outcome)
        );
    }
    let health = Method {
        service: "grpc.health.v1.Health".into(),
        path: "/grpc.health.v1.Health/Check".into(),
        server_streaming: false,
        request_fields: Vec::new(),
    };
    let outcome = call(&channel, &health, None).await;
    assert!(
        outcome.is_ok(),
        "health without a token: {}",
        describe(&outcome)
    );

    // The revocations have reached the verifier (Logout and RemoveDevice apply them in-process
    // and publish auth.session.revoked; wait in case they travel through the bus).
    let probe = methods
        .iter()
        .find(|m| m.path == "/guardyn.auth.v1.AuthService/ListSessions")
        .unwrap();
    for token in [&ids.logged_out, &ids.removed_device] {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let outcome = call(&channel, probe, Some(&format!("Bearer {token}"))).await;
            if matches!(&outcome, Err(s) if reason_of(s).as_deref() == Some("SESSION_REVOKED")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a revoked session still works: {}",
                describe(&outcome)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    if let Some(wait) = Duration::from_millis(1_100).checked_sub(expired_at.elapsed()) {
        tokio::time::sleep(wait).await;
    }

    let kinds = [
        Kind {
            name: "no token",
            authorization: None,
            reason: "UNAUTHENTICATED",
        },
        Kind {
            name: "not a bearer token (Basic)",
            authorization: Some("Basic dXNlcjpwYXNzd29yZA==".into()),
            reason: "UNAUTHENTICATED",
        },
        Kind {
            name: "malformed token (Bearer abc)",
            authorization: Some("Bearer abc".into()),
            reason: "UNAUTHENTICATED",
        },
        Kind {
            name: "signed by an untrusted key",
            authorization: Some(format!("Bearer {untrusted}")),
            reason: "UNAUTHENTICATED",
        },
        Kind {
            name: "expired",
            authorization: Some(format!("Bearer {expired}")),
            reason: "TOKEN_EXPIRED",
        },
        Kind {
            name: "session revoked by Logout",
            authorization: Some(format!("Bearer {}", ids.logged_out)),
            reason: "SESSION_REVOKED",
        },
        Kind {
            name: "device removed by RemoveDevice",
            authorization: Some(format!("Bearer {}", ids.removed_device)),
            reason: "SESSION_REVOKED",
        },
    ];

    // The matrix.
    let mut failures = Vec::new();
    let mut checked = Vec::new();
    for m in methods.iter().filter(|m| !public.contains(&m.path)) {
        for kind in &kinds {
            let outcome = call(&channel, m, kind.authorization.as_deref()).await;
            let refused = matches!(&outcome, Err(s) if s.code() == Code::Unauthenticated
                && reason_of(s).as_deref() == Some(kind.reason));
            if !refused {
                failures.push(format!(
                    "{} with {}: expected Unauthenticated/{}, got {}",
                    m.path,
                    kind.name,
                    kind.reason,
                    describe(&outcome)
                ));
            }
        }
        checked.push(m.path.as_str());
    }

    // The internal contract (guardyn.internal.*) is served only on the mesh listener: on the
    // public port every method is unknown, with or without a valid token.
    let internal = contract_of(guardyn_proto::INTERNAL_FILE_DESCRIPTOR_SET);
    assert!(!internal.is_empty());
    for m in &internal {
        for authorization in [None, Some(live.as_str())] {
            let outcome = call(&channel, m, authorization).await;
            let unreachable = match &outcome {
                Err(s) => {
                    s.code() == Code::Unimplemented
                        || (authorization.is_none() && layer_refusal(&outcome))
                }
                Ok(()) => false,
            };
            if !unreachable {
                failures.push(format!(
                    "internal {} is reachable on the public port: {}",
                    m.path,
                    describe(&outcome)
                ));
            }
        }
    }

    // A valid token of another account reaches nothing of the first one.
    failures.extend(cross_account::check(&server, &methods, &public, &sdk_config()).await);

    // Public methods answer without a token (an empty request may be invalid, but the auth
    // layer must not refuse it).
    for m in &hosted_public {
        let outcome = call(&channel, m, None).await;
        if layer_refusal(&outcome) {
            failures.push(format!(
                "{} is declared public but refuses a call without a token: {}",
                m.path,
                describe(&outcome)
            ));
        }
    }

    eprintln!(
        "authorization matrix: {} hosted services, {} methods, {} public, {} checked x {} token kinds",
        hosted.len(),
        methods.len(),
        hosted_public.len(),
        checked.len(),
        kinds.len()
    );
    eprintln!("not hosted (unchecked): {not_hosted:?}");
    for m in &hosted_public {
        eprintln!("  public  {}", m.path);
    }
    for path in &checked {
        eprintln!("  checked {path}");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Generated from the descriptor set: every hosted method is either public or checked.
    assert_eq!(
        checked.len(),
        methods.len() - hosted_public.len(),
        "checked methods vs hosted minus public"
    );
    assert!(!checked.is_empty());
    server.stop().await.unwrap();
}
