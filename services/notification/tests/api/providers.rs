//! The three push senders against their loopback fakes: what each provider requires on the
//! wire, how its answers are classified, and that payloads carry nothing but a wake-up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use guardyn_common::clock::{Clock, ManualClock};
use guardyn_notification::providers::apns::ApnsConfig;
use guardyn_notification::providers::fcm::FcmConfig;
use guardyn_notification::providers::webpush::WebPushConfig;
use guardyn_notification::providers::{
    Outcome, Platform, ProviderError, Providers, ProvidersConfig, Sender, Target, Wake, WebPushKeys,
};
use http::Version;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{Value, json};

use super::fakes::{FakeApns, FakeFcm, FakeWebPush, Reply};

const ALERT: Wake = Wake { alert: true };
const SILENT: Wake = Wake { alert: false };
const DEVICE_TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const TOPIC: &str = "app.guardyn.ios";

fn random_key() -> p256::SecretKey {
    loop {
        if let Ok(key) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            return key;
        }
    }
}

fn public_of(key: &p256::SecretKey) -> Vec<u8> {
    key.public_key().to_encoded_point(false).as_bytes().to_vec()
}

/// A fresh P-256 key written as PKCS#8 PEM; returns its path and public key.
fn write_p256(dir: &Path, name: &str) -> (PathBuf, Vec<u8>) {
    let key = random_key();
    let path = dir.join(name);
    std::fs::write(&path, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    (path, public_of(&key))
}

fn sender(providers: &Providers, platform: Platform) -> Arc<dyn Sender> {
    providers.get(platform).expect("configured").clone()
}

fn retry(secs: u64) -> Outcome {
    Outcome::Retry {
        after: Some(Duration::from_secs(secs)),
    }
}

// ---------------------------------------------------------------------------------------- APNs

struct Apns {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    fake: FakeApns,
    sandbox: FakeApns,
    sender: Arc<dyn Sender>,
}

async fn apns() -> Apns {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, public) = write_p256(dir.path(), "AuthKey_KEY1234567.p8");
    let clock = ManualClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let fake = FakeApns::start(
        shared.clone(),
        public.clone(),
        "KEY1234567",
        "TEAM123456",
        TOPIC,
    )
    .await;
    let sandbox = FakeApns::start(shared.clone(), public, "KEY1234567", "TEAM123456", TOPIC).await;
    let config = ProvidersConfig {
        apns: Some(ApnsConfig {
            key_path,
            key_id: "KEY1234567".into(),
            team_id: "TEAM123456".into(),
            production_url: fake.server.url(),
            sandbox_url: sandbox.server.url(),
            ..ApnsConfig::default()
        }),
        ..ProvidersConfig::default()
    };
    let providers = Providers::from_config_with_clock(&config, shared).unwrap();
    Apns {
        _dir: dir,
        clock,
        sender: sender(&providers, Platform::Apns),
        fake,
        sandbox,
    }
}

fn apns_target(sandbox: bool) -> Target {
    Target {
        platform: Platform::Apns,
        token: DEVICE_TOKEN.into(),
        topic: TOPIC.into(),
        apns_sandbox: sandbox,
        web_push: None,
    }
}

#[tokio::test]
async fn apns_sends_alert_and_silent_wakes_over_http2_with_a_valid_provider_token() {
    let t = apns().await;
    assert_eq!(
        t.sender.send(&apns_target(false), ALERT).await,
        Outcome::Delivered
    );
    assert_eq!(
        t.sender.send(&apns_target(false), SILENT).await,
        Outcome::Delivered
    );

    let requests = t.fake.server.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.version, Version::HTTP_2, "APNs is HTTP/2 only");
        assert_eq!(r.path, format!("/3/device/{DEVICE_TOKEN}"));
        let claims = r.auth.as_ref().expect("the fake verified the ES256 token");
        assert_eq!(claims["iss"], "TEAM123456");
        assert_eq!(r.header("apns-topic"), Some(TOPIC));
        let expiration: u64 = r.header("apns-expiration").unwrap().parse().unwrap();
        assert!(expiration > t.clock.now_ms() / 1000);
    }
    let (alert, silent) = (&requests[0], &requests[1]);
    assert_eq!(alert.header("apns-push-type"), Some("alert"));
    assert_eq!(alert.header("apns-priority"), Some("10"));
    assert_eq!(
        alert.json(),
        json!({"aps": {"alert": {"title": "Guardyn", "body": "New message"}, "sound": "default"}})
    );
    assert_eq!(silent.header("apns-push-type"), Some("background"));
    assert_eq!(silent.header("apns-priority"), Some("5"));
    assert_eq!(silent.json(), json!({"aps": {"content-available": 1}}));
    assert!(t.sandbox.server.requests().is_empty());
}

#[tokio::test]
async fn apns_sandbox_tokens_go_to_the_sandbox_host() {
    let t = apns().await;
    assert_eq!(
        t.sender.send(&apns_target(true), SILENT).await,
        Outcome::Delivered
    );
    assert_eq!(t.sandbox.server.requests().len(), 1);
    assert!(t.fake.server.requests().is_empty());
}

#[tokio::test]
async fn apns_provider_token_is_reused_then_refreshed_before_its_hour() {
    let t = apns().await;
    let target = apns_target(false);
    t.sender.send(&target, SILENT).await;
    t.clock.advance(Duration::from_secs(49 * 60));
    t.sender.send(&target, SILENT).await;
    t.clock.advance(Duration::from_secs(2 * 60));
    assert_eq!(t.sender.send(&target, SILENT).await, Outcome::Delivered);

    let requests = t.fake.server.requests();
    let auth: Vec<&str> = requests
        .iter()
        .map(|r| r.header("authorization").unwrap())
        .collect();
    assert_eq!(auth[0], auth[1], "a 49-minute-old token is reused");
    assert_ne!(auth[1], auth[2], "a 51-minute-old token is re-signed");
    let iat = |i: usize| requests[i].auth.as_ref().unwrap()["iat"].as_u64().unwrap();
    assert_eq!(iat(2) - iat(0), 51 * 60);
}

#[tokio::test]
async fn apns_expired_provider_token_is_refreshed_once() {
    let t = apns().await;
    let target = apns_target(false);
    let expired = || Reply::status(403).json(json!({"reason": "ExpiredProviderToken"}));
    t.fake.server.script([expired(), Reply::status(200)]);
    assert_eq!(t.sender.send(&target, ALERT).await, Outcome::Delivered);
    assert_eq!(t.fake.server.requests().len(), 2);

    t.fake.server.script([expired(), expired()]);
    assert!(matches!(
        t.sender.send(&target, ALERT).await,
        Outcome::Rejected { .. }
    ));
    assert_eq!(t.fake.server.requests().len(), 4, "one refresh, not a loop");

    t.fake
        .server
        .script([Reply::status(403).json(json!({"reason": "InvalidProviderToken"}))]);
    assert!(matches!(
        t.sender.send(&target, ALERT).await,
        Outcome::Rejected { .. }
    ));
    assert_eq!(t.fake.server.requests().len(), 5);
}

#[tokio::test]
async fn apns_dead_tokens_are_gone_and_other_refusals_rejected() {
    let t = apns().await;
    let target = apns_target(false);
    t.fake.server.script([
        Reply::status(410).json(json!({"reason": "Unregistered", "timestamp": 1})),
        Reply::status(400).json(json!({"reason": "BadDeviceToken"})),
        Reply::status(400).json(json!({"reason": "PayloadTooLarge"})),
    ]);
    assert_eq!(t.sender.send(&target, ALERT).await, Outcome::Gone);
    assert_eq!(t.sender.send(&target, ALERT).await, Outcome::Gone);
    match t.sender.send(&target, ALERT).await {
        Outcome::Rejected { reason } => assert!(reason.contains("PayloadTooLarge"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn apns_503_then_200_is_retry_then_delivered_honouring_retry_after() {
    let t = apns().await;
    let target = apns_target(false);
    t.fake.server.script([
        Reply::status(503).header("retry-after", "7"),
        Reply::status(200),
        Reply::status(429),
    ]);
    assert_eq!(t.sender.send(&target, ALERT).await, retry(7));
    assert_eq!(t.sender.send(&target, ALERT).await, Outcome::Delivered);
    assert_eq!(
        t.sender.send(&target, ALERT).await,
        Outcome::Retry { after: None }
    );
}

#[tokio::test]
async fn apns_refuses_tokens_that_are_not_hex_without_a_request() {
    let t = apns().await;
    let mut target = apns_target(false);
    target.token = "../../v1/other".into();
    assert!(matches!(
        t.sender.send(&target, ALERT).await,
        Outcome::Rejected { .. }
    ));
    let mut target = apns_target(false);
    target.topic = "app.guardyn\r\nx-evil: 1".into();
    assert!(matches!(
        t.sender.send(&target, ALERT).await,
        Outcome::Rejected { .. }
    ));
    assert!(t.fake.server.requests().is_empty());
}

#[tokio::test]
async fn transport_failures_are_retried() {
    let t = apns().await;
    // Nothing listens at the production URL any more.
    drop(t.fake);
    assert_eq!(
        t.sender.send(&apns_target(false), ALERT).await,
        Outcome::Retry { after: None }
    );
}

// ----------------------------------------------------------------------------------------- FCM

const CLIENT_EMAIL: &str = "push@guardyn-test.iam.gserviceaccount.com";
const PROJECT: &str = "guardyn-test";

struct Fcm {
    _dir: tempfile::TempDir,
    clock: ManualClock,
    fake: FakeFcm,
    sender: Arc<dyn Sender>,
}

fn keys_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/keys")
}

async fn fcm() -> Fcm {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let public = std::fs::read(keys_dir().join("test-only-fcm-service-account.pub.pem")).unwrap();
    let private =
        std::fs::read_to_string(keys_dir().join("test-only-fcm-service-account.pem")).unwrap();
    let fake = FakeFcm::start(shared.clone(), &public, CLIENT_EMAIL, PROJECT).await;
    let account = dir.path().join("service-account.json");
    let json = json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "test-key-1",
        "private_key": private,
        "client_email": CLIENT_EMAIL,
        "token_uri": fake.token_uri(),
    });
    std::fs::write(&account, json.to_string()).unwrap();
    let config = ProvidersConfig {
        fcm: Some(FcmConfig {
            service_account_path: account,
            endpoint: fake.server.url(),
            ..FcmConfig::default()
        }),
        ..ProvidersConfig::default()
    };
    let providers = Providers::from_config_with_clock(&config, shared).unwrap();
    Fcm {
        _dir: dir,
        clock,
        sender: sender(&providers, Platform::Fcm),
        fake,
    }
}

fn fcm_target() -> Target {
    Target {
        platform: Platform::Fcm,
        token: "fcm-registration-token:APA91b-test".into(),
        topic: String::new(),
        apns_sandbox: false,
        web_push: None,
    }
}

const SEND_PATH: &str = "/v1/projects/guardyn-test/messages:send";

#[tokio::test]
async fn fcm_sends_data_only_wakes_with_a_cached_oauth_token() {
    let t = fcm().await;
    assert_eq!(
        t.sender.send(&fcm_target(), ALERT).await,
        Outcome::Delivered
    );
    assert_eq!(
        t.sender.send(&fcm_target(), SILENT).await,
        Outcome::Delivered
    );

    let grants = t.fake.server.requests_to("/token");
    assert_eq!(grants.len(), 1, "the access token is cached");
    let assertion = grants[0]
        .auth
        .as_ref()
        .expect("the fake verified the RS256 assertion");
    assert_eq!(assertion["iss"], CLIENT_EMAIL);
    assert_eq!(assertion["aud"], t.fake.token_uri());

    let sends = t.fake.server.requests_to(SEND_PATH);
    assert_eq!(sends.len(), 2);
    for s in &sends {
        assert_eq!(s.header("authorization"), Some("Bearer fake-access-1"));
        let message = &s.json()["message"];
        assert_eq!(message["token"], "fcm-registration-token:APA91b-test");
        assert!(message.get("notification").is_none(), "data-only");
        let keys: Vec<&String> = message["data"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["alert", "guardyn"], "nothing but the wake marker");
        assert_eq!(message["data"]["guardyn"], "wake");
    }
    assert_eq!(sends[0].json()["message"]["android"]["priority"], "HIGH");
    assert_eq!(sends[1].json()["message"]["android"]["priority"], "NORMAL");
}

#[tokio::test]
async fn fcm_access_token_is_refreshed_before_it_expires() {
    let t = fcm().await;
    t.sender.send(&fcm_target(), SILENT).await;
    t.clock.advance(Duration::from_secs(3400));
    t.sender.send(&fcm_target(), SILENT).await;
    assert_eq!(t.fake.issued().len(), 1);
    t.clock.advance(Duration::from_secs(160));
    assert_eq!(
        t.sender.send(&fcm_target(), SILENT).await,
        Outcome::Delivered
    );
    assert_eq!(t.fake.issued().len(), 2, "refreshed 40 s before expiry");
    let sends = t.fake.server.requests_to(SEND_PATH);
    assert_eq!(
        sends[2].header("authorization"),
        Some("Bearer fake-access-2")
    );
}

#[tokio::test]
async fn fcm_short_lived_tokens_are_refreshed_at_half_life() {
    let t = fcm().await;
    t.fake.set_expires_in(100);
    t.sender.send(&fcm_target(), SILENT).await;
    t.clock.advance(Duration::from_secs(49));
    t.sender.send(&fcm_target(), SILENT).await;
    assert_eq!(t.fake.issued().len(), 1);
    t.clock.advance(Duration::from_secs(2));
    t.sender.send(&fcm_target(), SILENT).await;
    assert_eq!(t.fake.issued().len(), 2);
}

#[tokio::test]
async fn fcm_refused_grant_is_rejected_without_a_send() {
    let t = fcm().await;
    // The token endpoint refuses every assertion once the key no longer matches.
    t.fake
        .set_client_email("someone-else@example.iam.gserviceaccount.com");
    assert!(matches!(
        t.sender.send(&fcm_target(), ALERT).await,
        Outcome::Rejected { .. }
    ));
    assert!(t.fake.server.requests_to("/token")[0].auth.is_err());
    assert!(t.fake.server.requests_to(SEND_PATH).is_empty());
}

#[tokio::test]
async fn fcm_401_fetches_a_new_token_once() {
    let t = fcm().await;
    t.sender.send(&fcm_target(), SILENT).await;
    t.fake.revoke_all();
    assert_eq!(
        t.sender.send(&fcm_target(), SILENT).await,
        Outcome::Delivered
    );
    assert_eq!(t.fake.issued().len(), 2);
    let sends = t.fake.server.requests_to(SEND_PATH);
    assert_eq!(sends.len(), 3);
    assert!(sends[1].auth.is_err());
    assert_eq!(
        sends[2].header("authorization"),
        Some("Bearer fake-access-2")
    );
}

#[tokio::test]
async fn fcm_unregistered_is_gone_and_unavailable_is_retried() {
    let t = fcm().await;
    let error = |code: u16, status: &str, detail: &str| {
        Reply::status(code).json(json!({"error": {"code": code, "status": status, "details": [
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": detail}
        ]}}))
    };
    t.fake.server.script([
        error(404, "NOT_FOUND", "UNREGISTERED"),
        error(400, "INVALID_ARGUMENT", "UNREGISTERED"),
        error(503, "UNAVAILABLE", "UNAVAILABLE").header("retry-after", "30"),
        Reply::status(200),
        error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
    ]);
    assert_eq!(t.sender.send(&fcm_target(), ALERT).await, Outcome::Gone);
    assert_eq!(t.sender.send(&fcm_target(), ALERT).await, Outcome::Gone);
    assert_eq!(t.sender.send(&fcm_target(), ALERT).await, retry(30));
    assert_eq!(
        t.sender.send(&fcm_target(), ALERT).await,
        Outcome::Delivered
    );
    assert!(matches!(
        t.sender.send(&fcm_target(), ALERT).await,
        Outcome::Rejected { .. }
    ));
}

// ------------------------------------------------------------------------------------ Web Push

struct WebPush {
    _dir: tempfile::TempDir,
    fake: FakeWebPush,
    sender: Arc<dyn Sender>,
}

async fn web_push(allow_http: bool) -> WebPush {
    let dir = tempfile::tempdir().unwrap();
    let (vapid_key_path, public) = write_p256(dir.path(), "vapid.pem");
    let shared: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let fake = FakeWebPush::start(shared.clone(), public).await;
    let config = ProvidersConfig {
        web_push: Some(WebPushConfig {
            vapid_key_path,
            subject: "mailto:ops@guardyn.test".into(),
            allow_http,
            ..WebPushConfig::default()
        }),
        ..ProvidersConfig::default()
    };
    let providers = Providers::from_config_with_clock(&config, shared).unwrap();
    WebPush {
        _dir: dir,
        sender: sender(&providers, Platform::WebPush),
        fake,
    }
}

/// A browser's (or UnifiedPush distributor's) subscription: its private key stays here.
struct Subscription {
    secret: p256::SecretKey,
    auth: [u8; 16],
    target: Target,
}

fn subscribe(endpoint: String) -> Subscription {
    let secret = random_key();
    let auth: [u8; 16] = rand::random();
    let target = Target {
        platform: Platform::WebPush,
        token: endpoint,
        topic: String::new(),
        apns_sandbox: false,
        web_push: Some(WebPushKeys {
            p256dh: public_of(&secret),
            auth: auth.to_vec(),
        }),
    };
    Subscription {
        secret,
        auth,
        target,
    }
}

const DECRYPT: &str = r#"
import base64, sys, http_ece
from cryptography.hazmat.primitives.asymmetric import ec
d = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
body, secret, auth = (d(a) for a in sys.argv[1:4])
key = ec.derive_private_key(int.from_bytes(secret, "big"), ec.SECP256R1())
sys.stdout.write(http_ece.decrypt(body, private_key=key, auth_secret=auth, version="aes128gcm").decode())
"#;

/// Decrypts with Python's `http_ece` (an independent RFC 8291 implementation). `None` when it
/// is not installed outside CI; in CI its absence fails the test.
fn http_ece_decrypt(body: &[u8], sub: &Subscription) -> Option<String> {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import http_ece"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "python3 with http_ece is required in CI (pip install http-ece)"
        );
        eprintln!("SKIPPED: Web Push decryption check needs `pip install http-ece`");
        return None;
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            DECRYPT,
            &B64.encode(body),
            &B64.encode(sub.secret.to_bytes()),
            &B64.encode(sub.auth),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "http_ece could not decrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

#[tokio::test]
async fn web_push_payload_is_rfc8291_encrypted_vapid_signed_and_content_free() {
    let t = web_push(true).await;
    // A UnifiedPush distributor's endpoint is an ordinary Web Push endpoint.
    let browser = subscribe(t.fake.endpoint("browser-sub-1"));
    let unified = subscribe(t.fake.endpoint("up/ntfy-topic?up=1"));
    assert_eq!(
        t.sender.send(&browser.target, ALERT).await,
        Outcome::Delivered
    );
    assert_eq!(
        t.sender.send(&unified.target, SILENT).await,
        Outcome::Delivered
    );

    let requests = t.fake.server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].path, "/push/up/ntfy-topic?up=1");
    for r in &requests {
        let claims = r.auth.as_ref().expect("the fake verified the VAPID token");
        assert_eq!(claims["aud"], t.fake.server.url());
        assert_eq!(claims["sub"], "mailto:ops@guardyn.test");
        assert_eq!(r.header("content-encoding"), Some("aes128gcm"));
        assert_eq!(r.header("ttl"), Some("86400"));
    }
    assert_eq!(requests[0].header("urgency"), Some("high"));
    assert_eq!(requests[1].header("urgency"), Some("normal"));
    assert_eq!(
        requests[0].body.len(),
        requests[1].body.len(),
        "alert and silent wakes look alike on the wire"
    );

    for (r, sub, alert) in [(&requests[0], &browser, 1), (&requests[1], &unified, 0)] {
        let Some(plaintext) = http_ece_decrypt(&r.body, sub) else {
            return;
        };
        let payload: Value = serde_json::from_str(&plaintext).unwrap();
        assert_eq!(
            payload,
            json!({"wake": 1, "alert": alert}),
            "only a wake-up"
        );
    }
}

#[tokio::test]
async fn web_push_dead_subscriptions_are_gone_and_503_is_retried() {
    let t = web_push(true).await;
    let sub = subscribe(t.fake.endpoint("s"));
    t.fake.server.script([
        Reply::status(410),
        Reply::status(404),
        Reply::status(503).header("retry-after", "5"),
        Reply::status(201),
        Reply::status(413),
        Reply::status(429),
    ]);
    assert_eq!(t.sender.send(&sub.target, ALERT).await, Outcome::Gone);
    assert_eq!(t.sender.send(&sub.target, ALERT).await, Outcome::Gone);
    assert_eq!(t.sender.send(&sub.target, ALERT).await, retry(5));
    assert_eq!(t.sender.send(&sub.target, ALERT).await, Outcome::Delivered);
    assert!(matches!(
        t.sender.send(&sub.target, ALERT).await,
        Outcome::Rejected { .. }
    ));
    assert_eq!(
        t.sender.send(&sub.target, ALERT).await,
        Outcome::Retry { after: None }
    );
}

#[tokio::test]
async fn web_push_refuses_plain_http_endpoints_unless_allowed() {
    let t = web_push(false).await;
    let sub = subscribe(t.fake.endpoint("s"));
    assert!(matches!(
        t.sender.send(&sub.target, ALERT).await,
        Outcome::Rejected { .. }
    ));
    assert!(t.fake.server.requests().is_empty());
}

#[tokio::test]
async fn web_push_refuses_endpoints_on_internal_addresses() {
    // An https endpoint a client registered that points inside the network (a literal
    // internal address, or a name resolving to one) is refused without a request.
    let t = web_push(false).await;
    for endpoint in [
        "https://127.0.0.1:9/push/x",
        "https://[::1]:9/push/x",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost:9/push/x",
    ] {
        let sub = subscribe(endpoint.to_owned());
        let outcome = t.sender.send(&sub.target, ALERT).await;
        assert!(
            matches!(&outcome, Outcome::Rejected { reason } if reason.contains("public")),
            "{endpoint}: {outcome:?}"
        );
    }
}

// ------------------------------------------------------------------------------ configuration

#[test]
fn no_provider_configured_means_no_sender() {
    let providers = Providers::from_config(&ProvidersConfig::default()).unwrap();
    for platform in [Platform::Apns, Platform::Fcm, Platform::WebPush] {
        assert!(providers.get(platform).is_none());
    }
}

#[test]
fn missing_or_bad_key_files_name_the_config_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = ProvidersConfig {
        apns: Some(ApnsConfig {
            key_path: dir.path().join("missing.p8"),
            key_id: "K".into(),
            team_id: "T".into(),
            ..ApnsConfig::default()
        }),
        ..ProvidersConfig::default()
    };
    let err = Providers::from_config(&config).unwrap_err();
    assert!(matches!(err, ProviderError::Read { .. }));
    assert!(
        err.to_string().starts_with("notification.apns.key_path"),
        "{err}"
    );

    let not_a_key = dir.path().join("vapid.pem");
    std::fs::write(
        &not_a_key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let config = ProvidersConfig {
        web_push: Some(WebPushConfig {
            vapid_key_path: not_a_key,
            subject: "mailto:ops@guardyn.test".into(),
            ..WebPushConfig::default()
        }),
        ..ProvidersConfig::default()
    };
    let err = Providers::from_config(&config).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("notification.web_push.vapid_key_path"),
        "{err}"
    );
}
