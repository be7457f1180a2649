//! Push tokens and settings through NotificationService on a real server: registration per
//! platform with its validation, the per-device limit, isolation between devices and accounts,
//! unconfigured platforms, and deletion with the device or the account.

use std::path::Path;
use std::time::{Duration, Instant};

use guardyn_common::AccountId;
use guardyn_common::DeviceId;
use guardyn_common::error::{reason_of, violations_of};
use guardyn_common::events::Payload as _;
use guardyn_common::events::auth::{
    ACCOUNT_DELETED, AccountDeleted, DEVICE_REMOVED, DeviceRemoved,
};
use guardyn_notification::providers::apns::ApnsConfig;
use guardyn_notification::providers::webpush::WebPushConfig;
use guardyn_proto::guardyn::notification::v1::{
    ApnsEnvironment, GetNotificationSettingsRequest, ListPushTokensRequest, NotificationSettings,
    PushMode, PushPlatform, PushTokenInfo, RegisterPushTokenRequest,
    SetNotificationSettingsRequest, UnregisterPushTokenRequest, WebPushKeys,
    notification_service_client::NotificationServiceClient,
};
use guardyn_testkit::rpc::authed;
use guardyn_testkit::{Options, TestServer};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use tonic::transport::Channel;
use tonic::{Code, Status};

pub const APNS_TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
pub const TOPIC: &str = "app.guardyn.ios";

pub struct Env {
    pub server: TestServer,
    _keys: tempfile::TempDir,
}

/// A fresh P-256 key written as PKCS#8 PEM; returns its path and uncompressed public key.
pub fn write_p256(dir: &Path, name: &str) -> (std::path::PathBuf, Vec<u8>) {
    let key = loop {
        if let Ok(key) = p256::SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
            break key;
        }
    };
    let path = dir.join(name);
    std::fs::write(&path, key.to_pkcs8_pem(LineEnding::LF).unwrap().as_bytes()).unwrap();
    let public = key.public_key().to_encoded_point(false).as_bytes().to_vec();
    (path, public)
}

/// A server hosting notification with APNs and Web Push configured (loopback `http://`
/// endpoints allowed) and FCM left out.
async fn start() -> Env {
    start_with(|_| {}).await
}

async fn start_with(extra: impl FnOnce(&mut guardyn::config::Config) + Send + 'static) -> Env {
    let keys = tempfile::tempdir().unwrap();
    let (apns_key, _) = write_p256(keys.path(), "AuthKey_KEY1234567.p8");
    let (vapid_key, _) = write_p256(keys.path(), "vapid.pem");
    let server = TestServer::start_with(Options {
        services: vec!["notification".into()],
        configure: Some(Box::new(move |c| {
            c.notification.apns = Some(ApnsConfig {
                key_path: apns_key,
                key_id: "KEY1234567".into(),
                team_id: "TEAM123456".into(),
                ..ApnsConfig::default()
            });
            c.notification.web_push = Some(WebPushConfig {
                vapid_key_path: vapid_key,
                subject: "mailto:ops@example.com".into(),
                allow_http: true,
                ..WebPushConfig::default()
            });
            c.notification.max_tokens_per_device = 4;
            extra(c);
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    Env {
        server,
        _keys: keys,
    }
}

pub fn acct(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// One device's view of the service.
pub struct Dev {
    client: NotificationServiceClient<Channel>,
    token: String,
}

impl Env {
    /// `server`, keeping the key files in `keys` alive with it.
    pub fn new(server: TestServer, keys: tempfile::TempDir) -> Self {
        Self {
            server,
            _keys: keys,
        }
    }

    pub fn dev(&self, account: &str, device: u32) -> Dev {
        Dev {
            client: NotificationServiceClient::new(self.server.channel()),
            token: self
                .server
                .token(account, device, &format!("s-{account}-{device}")),
        }
    }
}

pub fn apns(token: &str) -> RegisterPushTokenRequest {
    RegisterPushTokenRequest {
        platform: PushPlatform::Apns.into(),
        token: token.into(),
        topic: TOPIC.into(),
        apns_environment: ApnsEnvironment::Sandbox.into(),
        web_push_keys: None,
    }
}

fn web_push(endpoint: &str) -> RegisterPushTokenRequest {
    let secret = p256::SecretKey::from_slice(&[7; 32]).unwrap();
    let p256dh = secret
        .public_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    RegisterPushTokenRequest {
        platform: PushPlatform::WebPush.into(),
        token: endpoint.into(),
        topic: String::new(),
        apns_environment: ApnsEnvironment::Unspecified.into(),
        web_push_keys: Some(WebPushKeys {
            p256dh,
            auth: vec![9; 16],
        }),
    }
}

impl Dev {
    pub async fn register(&mut self, r: RegisterPushTokenRequest) -> Result<String, Status> {
        Ok(self
            .client
            .register_push_token(authed(r, &self.token))
            .await?
            .into_inner()
            .push_token_id)
    }

    pub async fn list(&mut self) -> Vec<PushTokenInfo> {
        self.client
            .list_push_tokens(authed(ListPushTokensRequest {}, &self.token))
            .await
            .unwrap()
            .into_inner()
            .push_tokens
    }

    async fn unregister(&mut self, id: &str) -> Result<(), Status> {
        self.client
            .unregister_push_token(authed(
                UnregisterPushTokenRequest {
                    push_token_id: id.into(),
                },
                &self.token,
            ))
            .await
            .map(|_| ())
    }

    pub async fn set(
        &mut self,
        s: Option<NotificationSettings>,
    ) -> Result<NotificationSettings, Status> {
        Ok(self
            .client
            .set_notification_settings(authed(
                SetNotificationSettingsRequest { settings: s },
                &self.token,
            ))
            .await?
            .into_inner()
            .settings
            .unwrap())
    }

    async fn get(&mut self) -> NotificationSettings {
        self.client
            .get_notification_settings(authed(GetNotificationSettingsRequest {}, &self.token))
            .await
            .unwrap()
            .into_inner()
            .settings
            .unwrap()
    }
}

fn violation(status: &Status) -> String {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let v = violations_of(status);
    assert_eq!(v.len(), 1, "{status:?}");
    v[0].field.clone()
}

#[tokio::test]
async fn tokens_register_list_and_unregister_without_revealing_the_token() {
    let env = start().await;
    let mut dev = env.dev(&acct(1), 1);
    let id = dev.register(apns(APNS_TOKEN)).await.unwrap();
    // The same token again (an app refreshing its registration) keeps its id.
    assert_eq!(dev.register(apns(APNS_TOKEN)).await.unwrap(), id);
    let endpoint = "http://127.0.0.1:9/push/up/ntfy-topic-1";
    let wp = dev.register(web_push(endpoint)).await.unwrap();
    assert_ne!(wp, id);

    let listed = dev.list().await;
    assert_eq!(listed.len(), 2);
    let a = listed.iter().find(|t| t.push_token_id == id).unwrap();
    assert_eq!(a.platform, PushPlatform::Apns as i32);
    assert_eq!(a.token_hint, &APNS_TOKEN[APNS_TOKEN.len() - 6..]);
    assert_eq!(a.topic, TOPIC);
    assert_eq!(a.apns_environment, ApnsEnvironment::Sandbox as i32);
    assert!(a.registered_at.is_some());
    let w = listed.iter().find(|t| t.push_token_id == wp).unwrap();
    assert_eq!(w.token_hint, "opic-1");
    let wire = format!("{listed:?}");
    assert!(!wire.contains(APNS_TOKEN) && !wire.contains(endpoint));

    dev.unregister(&id).await.unwrap();
    let listed = dev.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].push_token_id, wp);
    assert_eq!(
        dev.unregister(&id).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn malformed_registrations_name_the_field() {
    let env = start().await;
    let mut dev = env.dev(&acct(1), 1);
    let mut cases: Vec<(RegisterPushTokenRequest, &str)> = Vec::new();
    let mut r = apns(APNS_TOKEN);
    r.platform = PushPlatform::Unspecified.into();
    cases.push((r, "platform"));
    cases.push((apns(&APNS_TOKEN[..62]), "token"));
    cases.push((apns(&"zz".repeat(32)), "token"));
    let mut r = apns(APNS_TOKEN);
    r.topic.clear();
    cases.push((r, "topic"));
    let mut r = apns(APNS_TOKEN);
    r.web_push_keys = web_push("https://push.example.com/x").web_push_keys;
    cases.push((r, "web_push_keys"));
    cases.push((web_push("http://push.example.com/x"), "token"));
    cases.push((web_push("ftp://push.example.com/x"), "token"));
    cases.push((web_push("https://user:pw@push.example.com/x"), "token"));
    let mut r = web_push("https://push.example.com/x");
    r.web_push_keys = None;
    cases.push((r, "web_push_keys"));
    let mut r = web_push("https://push.example.com/x");
    r.web_push_keys.as_mut().unwrap().p256dh.pop();
    cases.push((r, "web_push_keys.p256dh"));
    let mut r = web_push("https://push.example.com/x");
    r.web_push_keys.as_mut().unwrap().p256dh[0] = 0x02;
    cases.push((r, "web_push_keys.p256dh"));
    let mut r = web_push("https://push.example.com/x");
    r.web_push_keys.as_mut().unwrap().p256dh[64] ^= 1;
    cases.push((r, "web_push_keys.p256dh"));
    let mut r = web_push("https://push.example.com/x");
    r.web_push_keys.as_mut().unwrap().auth.push(0);
    cases.push((r, "web_push_keys.auth"));
    let mut r = web_push("https://push.example.com/x");
    r.topic = "a-topic".into();
    cases.push((r, "topic"));
    for (request, field) in cases {
        let err = dev.register(request).await.unwrap_err();
        assert_eq!(violation(&err), field, "{err:?}");
    }
    let huge = format!("https://push.example.com/{}", "a".repeat(4096));
    let err = dev.register(web_push(&huge)).await.unwrap_err();
    assert_eq!(reason_of(&err).as_deref(), Some("PAYLOAD_TOO_LARGE"));
    assert_eq!(violation(&err), "token");
    let err = dev.unregister("not-an-id").await.unwrap_err();
    assert_eq!(violation(&err), "push_token_id");
    assert!(dev.list().await.is_empty(), "nothing was stored");
}

#[tokio::test]
async fn an_unconfigured_platform_is_refused_with_a_clear_reason() {
    let env = start().await;
    let mut dev = env.dev(&acct(1), 1);
    let err = dev
        .register(RegisterPushTokenRequest {
            platform: PushPlatform::Fcm.into(),
            token: "fcm-registration-token".into(),
            ..RegisterPushTokenRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        reason_of(&err).as_deref(),
        Some("PUSH_PLATFORM_UNAVAILABLE")
    );
    assert!(err.message().contains("fcm"), "{}", err.message());
}

#[tokio::test]
async fn a_device_holds_at_most_four_tokens() {
    let env = start().await;
    let mut dev = env.dev(&acct(1), 1);
    let token = |i: u8| format!("{:064x}", u128::from(i) + 1);
    for i in 0..4 {
        dev.register(apns(&token(i))).await.unwrap();
    }
    let err = dev.register(apns(&token(4))).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason_of(&err).as_deref(), Some("QUOTA_EXCEEDED"));
    // Refreshing a registered token is not a new one.
    dev.register(apns(&token(2))).await.unwrap();
    // The limit is per device.
    env.dev(&acct(1), 2)
        .register(apns(&token(4)))
        .await
        .unwrap();
    assert_eq!(dev.list().await.len(), 4);
}

#[tokio::test]
async fn other_devices_and_accounts_neither_see_nor_remove_tokens() {
    let env = start().await;
    let mut owner = env.dev(&acct(1), 1);
    let id = owner.register(apns(APNS_TOKEN)).await.unwrap();
    for (account, device) in [(acct(1), 2), (acct(2), 1)] {
        let mut other = env.dev(&account, device);
        assert!(other.list().await.is_empty());
        assert_eq!(
            other.unregister(&id).await.unwrap_err().code(),
            Code::NotFound
        );
        assert_eq!(other.get().await.mode, PushMode::Alert as i32);
        // The same token registered elsewhere is a separate registration.
        assert_ne!(other.register(apns(APNS_TOKEN)).await.unwrap(), id);
    }
    owner
        .set(Some(NotificationSettings {
            mode: PushMode::None.into(),
            mute_until: None,
        }))
        .await
        .unwrap();
    assert_eq!(
        env.dev(&acct(1), 2).get().await.mode,
        PushMode::Alert as i32
    );
    assert_eq!(owner.list().await.len(), 1);
}

#[tokio::test]
async fn settings_are_stored_per_device() {
    let env = start().await;
    let mut dev = env.dev(&acct(1), 1);
    let defaults = dev.get().await;
    assert_eq!(defaults.mode, PushMode::Alert as i32);
    assert_eq!(defaults.mute_until, None);
    let mute_until = prost_types::Timestamp {
        seconds: 4_000_000_000,
        nanos: 0,
    };
    let stored = dev
        .set(Some(NotificationSettings {
            mode: PushMode::Silent.into(),
            mute_until: Some(mute_until),
        }))
        .await
        .unwrap();
    assert_eq!(stored.mode, PushMode::Silent as i32);
    assert_eq!(stored.mute_until, Some(mute_until));
    assert_eq!(dev.get().await, stored);
    // UNSPECIFIED means ALERT; an unset mute_until unmutes.
    let stored = dev
        .set(Some(NotificationSettings {
            mode: PushMode::Unspecified.into(),
            mute_until: None,
        }))
        .await
        .unwrap();
    assert_eq!(stored.mode, PushMode::Alert as i32);
    assert_eq!(dev.get().await.mute_until, None);

    assert_eq!(violation(&dev.set(None).await.unwrap_err()), "settings");
    let err = dev
        .set(Some(NotificationSettings {
            mode: 42,
            mute_until: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(violation(&err), "settings.mode");
    let err = dev
        .set(Some(NotificationSettings {
            mode: PushMode::Alert.into(),
            mute_until: Some(prost_types::Timestamp {
                seconds: -5,
                nanos: 0,
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(violation(&err), "settings.mute_until");
}

/// Poll `check` until it holds (events are applied asynchronously).
pub async fn eventually<F: AsyncFnMut() -> bool>(mut check: F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "condition not reached in 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn device_removal_and_account_deletion_delete_tokens_and_settings() {
    let env = start().await;
    let (a, b) = (acct(1), acct(2));
    let mut a1 = env.dev(&a, 1);
    let mut a2 = env.dev(&a, 2);
    let mut b1 = env.dev(&b, 1);
    for d in [&mut a1, &mut a2, &mut b1] {
        d.register(apns(APNS_TOKEN)).await.unwrap();
        d.set(Some(NotificationSettings {
            mode: PushMode::Silent.into(),
            mute_until: None,
        }))
        .await
        .unwrap();
    }
    let account = AccountId::parse(&a).unwrap();
    let removed = DeviceRemoved {
        account,
        device: DeviceId::new(1).unwrap(),
    };
    env.server
        .bus()
        .publish(DEVICE_REMOVED, removed.encode())
        .await
        .unwrap();
    eventually(async || a1.list().await.is_empty()).await;
    assert_eq!(
        a1.get().await.mode,
        PushMode::Alert as i32,
        "settings went too"
    );
    assert_eq!(
        a2.list().await.len(),
        1,
        "the account's other device keeps its tokens"
    );

    env.server
        .bus()
        .publish(
            ACCOUNT_DELETED,
            AccountDeleted {
                account,
                devices: vec![DeviceId::new(2).unwrap()],
            }
            .encode(),
        )
        .await
        .unwrap();
    eventually(async || a2.list().await.is_empty()).await;
    assert_eq!(a2.get().await.mode, PushMode::Alert as i32);
    assert_eq!(b1.list().await.len(), 1, "another account is untouched");
    assert_eq!(b1.get().await.mode, PushMode::Silent as i32);
    // Nothing of account A is left in storage.
    let left = env
        .server
        .kv()
        .scan(
            guardyn_storage::KeyRange::prefix(format!("notif/v1/d/{a}/").as_bytes()),
            guardyn_storage::Direction::Forward,
            10,
        )
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn token_and_settings_changes_are_rate_limited_per_device() {
    let env = start_with(|c| {
        c.notification.write_rate = guardyn_common::ratelimit::RateLimit::new(2, 1);
    })
    .await;
    let mut dev = env.dev(&acct(1), 1);
    dev.register(apns(APNS_TOKEN)).await.unwrap();
    dev.set(Some(NotificationSettings::default()))
        .await
        .unwrap();
    let err = dev.register(apns(APNS_TOKEN)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason_of(&err).as_deref(), Some("RATE_LIMITED"));
    // Reads are not limited; another device has its own budget.
    assert_eq!(dev.list().await.len(), 1);
    env.dev(&acct(1), 2)
        .register(apns(APNS_TOKEN))
        .await
        .unwrap();
}
