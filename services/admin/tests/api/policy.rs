//! PolicyService through the public API: who may read and change the policy, validation with
//! one field violation per bad value, versioned history with its audit trail, and each rule
//! enforced by the service that owns it on the next call (password rules, MFA required, device
//! limit, heartbeat range, message and attachment sizes, message retention).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use guardyn_audit::AuditKind;
use guardyn_common::AccountId;
use guardyn_common::clock::{Clock as _, ManualClock};
use guardyn_common::error::{reason_of, violations_of};
use guardyn_crypto::IdentityKeyPair;
use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::policy_service_client::PolicyServiceClient;
use guardyn_proto::guardyn::auth::v1 as auth;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_proto::guardyn::auth::v1::device_service_client::DeviceServiceClient;
use guardyn_proto::guardyn::auth::v1::mfa_service_client::MfaServiceClient;
use guardyn_proto::guardyn::media::v1 as media;
use guardyn_proto::guardyn::media::v1::media_service_client::MediaServiceClient;
use guardyn_proto::guardyn::messaging::v1 as msg;
use guardyn_proto::guardyn::messaging::v1::messaging_service_client::MessagingServiceClient;
use guardyn_proto::guardyn::presence::v1 as presence;
use guardyn_proto::guardyn::presence::v1::presence_service_client::PresenceServiceClient;
use guardyn_testkit::rpc::authed;
use guardyn_testkit::{Options, TestServer};
use tonic::transport::Channel;
use tonic::{Code, Status};

const PASSWORD: &str = "correct horse battery staple";
/// Generous: the machine is loaded. Only a bound on waiting for the policy to reach a
/// service, never a measured time.
const WAIT: Duration = Duration::from_secs(30);

struct Env {
    server: TestServer,
    clock: ManualClock,
    admin: String,
}

/// Every service, cheap hashing, a manual clock, generous per-address limits (the tests sign
/// in repeatedly while a change propagates), and an admin token.
async fn start() -> Env {
    let clock = ManualClock::new();
    let server = TestServer::start_with(Options {
        clock: Some(Arc::new(clock.clone())),
        configure: Some(Box::new(|c| {
            c.auth.argon2.memory_kib = 8;
            c.auth.argon2.iterations = 1;
            let many = guardyn_common::ratelimit::RateLimit::new(10_000, 600_000);
            c.auth.limits.register_per_address = many;
            c.auth.limits.login_per_address = many;
            c.auth.limits.login_per_account = many;
            c.auth.limits.link_code_per_account = many;
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    let admin = token(&server, "admin");
    Env {
        server,
        clock,
        admin,
    }
}

fn token(server: &TestServer, role: &str) -> String {
    server.token_with_roles(&AccountId::random().to_string(), 1, "s-1", &[role])
}

fn api(env: &Env) -> PolicyServiceClient<Channel> {
    PolicyServiceClient::new(env.server.channel())
}

fn reason(status: &Status) -> String {
    reason_of(status).unwrap_or_default()
}

/// `f` until it yields a value; the policy reaches each service's cache through the bus.
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn current(env: &Env) -> pb::Policy {
    api(env)
        .get_policy(authed(pb::GetPolicyRequest {}, &env.admin))
        .await
        .unwrap()
        .into_inner()
        .current
        .unwrap()
        .policy
        .unwrap()
}

/// SetPolicy with the current policy changed by `change`.
async fn set(
    env: &Env,
    token: &str,
    reason: &str,
    change: impl FnOnce(&mut pb::Policy),
) -> Result<pb::PolicyVersion, Status> {
    let mut policy = current(env).await;
    change(&mut policy);
    api(env)
        .set_policy(authed(
            pb::SetPolicyRequest {
                policy: Some(policy),
                reason: reason.into(),
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().current.unwrap())
}

fn new_device(name: &str) -> auth::NewDevice {
    auth::NewDevice {
        name: name.into(),
        registration_id: 1234,
        identity_key: IdentityKeyPair::generate()
            .identity_key()
            .to_bytes()
            .to_vec(),
        ..Default::default()
    }
}

async fn register(
    env: &Env,
    username: &str,
    password: &str,
) -> Result<auth::RegisterResponse, Status> {
    AuthServiceClient::new(env.server.channel())
        .register(auth::RegisterRequest {
            username: username.into(),
            password: password.into(),
            device: Some(new_device("phone")),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn login(env: &Env, username: &str) -> auth::LoginResponse {
    AuthServiceClient::new(env.server.channel())
        .login(auth::LoginRequest {
            username: username.into(),
            password: PASSWORD.into(),
            device_id: 1,
        })
        .await
        .unwrap()
        .into_inner()
}

fn totp_code(secret_b32: &str, now_s: u64) -> String {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(totp_rs::Secret::try_from_base32(secret_b32).unwrap())
        .build_noncompliant()
        .generate(now_s)
        .to_string()
}

#[tokio::test]
async fn only_managers_change_the_policy_and_auditors_may_read_it() {
    let env = start().await;
    for role in ["user", "auditor"] {
        let err = set(&env, &token(&env.server, role), "tighten", |p| {
            p.mfa_required = true;
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{role}");
        assert_eq!(reason(&err), "ROLE_REQUIRED", "{role}");
    }
    let user = token(&env.server, "user");
    let err = api(&env)
        .get_policy(authed(pb::GetPolicyRequest {}, &user))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "ROLE_REQUIRED");
    let err = api(&env)
        .list_policy_versions(authed(pb::ListPolicyVersionsRequest::default(), &user))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "ROLE_REQUIRED");

    // Nothing was changed by the refused calls: the defaults are today's settings.
    let auditor = token(&env.server, "auditor");
    let got = api(&env)
        .get_policy(authed(pb::GetPolicyRequest {}, &auditor))
        .await
        .unwrap()
        .into_inner()
        .current
        .unwrap();
    let p = got.policy.unwrap();
    assert_eq!(p.version, 0);
    assert!(!p.mfa_required);
    // The defaults add no limit to the server settings (auth.max_devices = 6 and
    // auth.password_min_length = 12 still apply).
    assert_eq!(p.max_devices, 127);
    assert_eq!(p.password.unwrap().min_length, 8);
    let r = p.retention.unwrap();
    assert_eq!(r.realtime_secs, 24 * 3600);
    assert_eq!(r.historical_secs, 90 * 24 * 3600);
    assert_eq!(r.audit_secs, 365 * 24 * 3600);
    assert_eq!(r.security_events_secs, 2 * 365 * 24 * 3600);
    assert!(got.set_by.is_empty());

    let owner = token(&env.server, "owner");
    let v = set(&env, &owner, "owners manage too", |p| p.max_devices = 5)
        .await
        .unwrap();
    assert_eq!(v.policy.unwrap().version, 1);
}

#[tokio::test]
async fn history_lists_every_version_in_order_with_who_and_why_and_each_is_audited() {
    let env = start().await;
    let admin_account = AccountId::random().to_string();
    let admin = env
        .server
        .token_with_roles(&admin_account, 1, "s-2", &["admin"]);
    for (i, devices) in [5, 4, 3].into_iter().enumerate() {
        let v = set(&env, &admin, &format!("step {i}"), |p| {
            p.max_devices = devices;
        })
        .await
        .unwrap();
        assert_eq!(v.policy.as_ref().unwrap().version, i as u64 + 1);
        assert_eq!(v.set_by, admin_account);
        assert!(v.set_at.is_some());
    }
    let auditor = token(&env.server, "auditor");
    let first = api(&env)
        .list_policy_versions(authed(
            pb::ListPolicyVersionsRequest {
                page_size: 2,
                page_token: String::new(),
            },
            &auditor,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.next_page_token.is_empty());
    let rest = api(&env)
        .list_policy_versions(authed(
            pb::ListPolicyVersionsRequest {
                page_size: 2,
                page_token: first.next_page_token.clone(),
            },
            &auditor,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(rest.next_page_token.is_empty());
    let all: Vec<_> = first.versions.into_iter().chain(rest.versions).collect();
    let seen: Vec<(u64, u32, String)> = all
        .iter()
        .map(|v| {
            let p = v.policy.as_ref().unwrap();
            (p.version, p.max_devices, v.reason.clone())
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, 5, "step 0".to_owned()),
            (2, 4, "step 1".to_owned()),
            (3, 3, "step 2".to_owned())
        ]
    );
    assert_eq!(current(&env).await.max_devices, 3);

    let entries: Vec<_> = guardyn_audit::entries(env.server.kv().as_ref())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == AuditKind::PolicyChanged)
        .collect();
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[2].actor.as_deref(), Some(admin_account.as_str()));
    assert_eq!(entries[2].reason, "step 2");
    assert!(
        entries[2].detail.contains("max_devices 4→3"),
        "{}",
        entries[2].detail
    );

    let err = api(&env)
        .list_policy_versions(authed(
            pb::ListPolicyVersionsRequest {
                page_size: 2,
                page_token: "not-a-token".into(),
            },
            &auditor,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn invalid_values_are_refused_with_a_violation_for_each_field() {
    let env = start().await;
    let err = set(&env, &env.admin, "  ", |p| {
        p.password.as_mut().unwrap().min_length = 4;
        p.max_devices = 0;
        p.heartbeat_min_secs = 200;
        p.heartbeat_max_secs = 100;
        p.max_message_bytes = 10;
        p.retention.as_mut().unwrap().audit_secs = 60;
    })
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut fields: Vec<String> = violations_of(&err).into_iter().map(|v| v.field).collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "policy.heartbeat_min_secs",
            "policy.max_devices",
            "policy.max_message_bytes",
            "policy.password.min_length",
            "policy.retention.audit_secs",
            "reason",
        ]
    );
    let err = api(&env)
        .set_policy(authed(
            pb::SetPolicyRequest {
                policy: Some(pb::Policy::default()),
                reason: "no sections".into(),
            },
            &env.admin,
        ))
        .await
        .unwrap_err();
    let fields: Vec<String> = violations_of(&err).into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["policy.password", "policy.retention"]);
    assert_eq!(current(&env).await.version, 0, "nothing was stored");
}

#[tokio::test]
async fn mfa_required_limits_the_next_login_to_totp_enrollment_until_enrolled() {
    let env = start().await;
    let alice = register(&env, "alice", PASSWORD).await.unwrap();
    assert!(!alice.tokens.unwrap().mfa_enrollment_required);
    set(&env, &env.admin, "second factor for everyone", |p| {
        p.mfa_required = true;
    })
    .await
    .unwrap();

    let limited = until("login limited to enrolment", || async {
        match login(&env, "alice").await.outcome {
            Some(auth::login_response::Outcome::Tokens(t)) if t.mfa_enrollment_required => Some(t),
            _ => None,
        }
    })
    .await;
    let limited = limited.access_token;
    // Every other call, of any service, is refused before its handler runs.
    let err = DeviceServiceClient::new(env.server.channel())
        .list_devices(authed(auth::ListDevicesRequest::default(), &limited))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "MFA_ENROLLMENT_REQUIRED");
    let err = PresenceServiceClient::new(env.server.channel())
        .heartbeat(authed(presence::HeartbeatRequest {}, &limited))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "MFA_ENROLLMENT_REQUIRED");
    let err = api(&env)
        .get_policy(authed(pb::GetPolicyRequest {}, &limited))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "MFA_ENROLLMENT_REQUIRED");

    // Enrolment works with the limited session (sign-in counts as the step-up).
    let mut mfa = MfaServiceClient::new(env.server.channel());
    let begin = mfa
        .begin_totp_enrollment(authed(auth::BeginTotpEnrollmentRequest {}, &limited))
        .await
        .unwrap()
        .into_inner();
    let now_s = env.clock.now_ms() / 1000;
    mfa.confirm_totp_enrollment(authed(
        auth::ConfirmTotpEnrollmentRequest {
            totp_code: totp_code(&begin.secret, now_s),
        },
        &limited,
    ))
    .await
    .unwrap();

    // The next login is a normal two-step one, and its session is not limited.
    env.clock.advance(Duration::from_secs(30));
    let ticket = match login(&env, "alice").await.outcome {
        Some(auth::login_response::Outcome::MfaChallenge(c)) => c.mfa_ticket,
        other => panic!("expected an MFA challenge, got {other:?}"),
    };
    let done = AuthServiceClient::new(env.server.channel())
        .complete_mfa_login(auth::CompleteMfaLoginRequest {
            mfa_ticket: ticket,
            code: Some(auth::complete_mfa_login_request::Code::TotpCode(totp_code(
                &begin.secret,
                env.clock.now_ms() / 1000,
            ))),
        })
        .await
        .unwrap()
        .into_inner();
    let tokens = done.tokens.unwrap();
    assert!(!tokens.mfa_enrollment_required);
    DeviceServiceClient::new(env.server.channel())
        .list_devices(authed(
            auth::ListDevicesRequest::default(),
            &tokens.access_token,
        ))
        .await
        .unwrap();
}

/// Request a link for a new device and have `by` approve it.
async fn approve_new_device(env: &Env, by: &str) -> Result<(), Status> {
    let mut devices = DeviceServiceClient::new(env.server.channel());
    let ticket = devices
        .request_link(auth::RequestLinkRequest {
            device: Some(new_device("laptop")),
        })
        .await
        .unwrap()
        .into_inner();
    devices
        .approve_link(authed(
            auth::ApproveLinkRequest {
                link_code: ticket.link_code,
            },
            by,
        ))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn the_device_limit_applies_to_the_next_link() {
    let env = start().await;
    let bob = register(&env, "bob", PASSWORD).await.unwrap();
    let bob_token = bob.tokens.unwrap().access_token;
    approve_new_device(&env, &bob_token).await.unwrap();
    set(&env, &env.admin, "two devices each", |p| p.max_devices = 2)
        .await
        .unwrap();
    let err = until("the link refused", || async {
        approve_new_device(&env, &bob_token).await.err()
    })
    .await;
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err), "DEVICE_LIMIT_REACHED");
    let listed = DeviceServiceClient::new(env.server.channel())
        .list_devices(authed(auth::ListDevicesRequest::default(), &bob_token))
        .await
        .unwrap()
        .into_inner()
        .devices
        .len();
    assert!(
        listed < 6,
        "refused below auth.max_devices (6): the policy's limit, not the server's ({listed})"
    );
}

#[tokio::test]
async fn password_rules_apply_to_registration_and_password_changes() {
    let env = start().await;
    set(&env, &env.admin, "no common passwords", |p| {
        p.password.as_mut().unwrap().check_breached = true;
    })
    .await
    .unwrap();
    // Each attempt takes a fresh name: one that got through before the policy arrived is taken.
    let n = std::sync::atomic::AtomicU32::new(0);
    let name = |base: &str| {
        format!(
            "{base}{}",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    };
    let err = until("a common password refused", || async {
        let r = register(&env, &name("carol"), "1qaz2wsx3EDC").await;
        r.err().filter(|e| reason(e) == "WEAK_PASSWORD")
    })
    .await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(reason(&err), "WEAK_PASSWORD");
    let fields: Vec<String> = violations_of(&err).into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["password"]);

    set(&env, &env.admin, "longer passwords", |p| {
        p.password.as_mut().unwrap().min_length = 20;
    })
    .await
    .unwrap();
    let err = until("a 16-byte password refused", || async {
        let r = register(&env, &name("erin"), "sixteen bytes ok").await;
        r.err().filter(|e| reason(e) == "WEAK_PASSWORD")
    })
    .await;
    assert_eq!(reason(&err), "WEAK_PASSWORD");
    register(&env, "dave", PASSWORD).await.unwrap();

    let tokens = match login(&env, "dave").await.outcome {
        Some(auth::login_response::Outcome::Tokens(t)) => t,
        other => panic!("expected tokens, got {other:?}"),
    };
    let err = AuthServiceClient::new(env.server.channel())
        .change_password(authed(
            auth::ChangePasswordRequest {
                old_password: PASSWORD.into(),
                new_password: "sixteen bytes ok".into(),
            },
            &tokens.access_token,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "WEAK_PASSWORD");
}

#[tokio::test]
async fn heartbeat_range_and_size_limits_follow_the_policy() {
    let env = start().await;
    set(
        &env,
        &env.admin,
        "slower heartbeats, smaller payloads",
        |p| {
            p.heartbeat_min_secs = 60;
            p.heartbeat_max_secs = 120;
            p.max_message_bytes = 1024;
            p.max_attachment_bytes = 2048;
        },
    )
    .await
    .unwrap();
    let user = token(&env.server, "user");

    // presence.heartbeat_interval_secs is 30: raised into the policy's range.
    until("the heartbeat interval in range", || async {
        let r = PresenceServiceClient::new(env.server.channel())
            .heartbeat(authed(presence::HeartbeatRequest {}, &user))
            .await
            .unwrap()
            .into_inner();
        (r.interval.unwrap().seconds == 60).then_some(())
    })
    .await;

    let send = |bytes: usize| {
        let channel = env.server.channel();
        let user = user.clone();
        async move {
            MessagingServiceClient::new(channel)
                .send_message(authed(
                    msg::SendMessageRequest {
                        destination_account_id: AccountId::random().to_string(),
                        client_message_id: uuid_like(),
                        envelopes: vec![msg::Envelope {
                            destination_device_id: 1,
                            destination_registration_id: 1,
                            r#type: msg::EnvelopeType::Ciphertext as i32,
                            content: vec![7; bytes],
                        }],
                        ..Default::default()
                    },
                    &user,
                ))
                .await
        }
    };
    let err = until("a 2 KiB message refused", || async {
        send(2048)
            .await
            .err()
            .filter(|e| reason(e) == "PAYLOAD_TOO_LARGE")
    })
    .await;
    assert_eq!(err.code(), Code::InvalidArgument);
    let small = send(1000).await.unwrap_err();
    assert_ne!(reason(&small), "PAYLOAD_TOO_LARGE", "{small:?}");

    let upload = |size: u64| {
        let channel = env.server.channel();
        let user = user.clone();
        async move {
            MediaServiceClient::new(channel)
                .create_upload(authed(
                    media::CreateUploadRequest {
                        total_size: size,
                        sha256: vec![0; 32],
                        ..Default::default()
                    },
                    &user,
                ))
                .await
        }
    };
    let err = until("a 4 KiB attachment refused", || async {
        upload(4096).await.err()
    })
    .await;
    assert_eq!(reason(&err), "PAYLOAD_TOO_LARGE");
    upload(2048).await.unwrap();
}

fn uuid_like() -> String {
    AccountId::random().to_string()
}

async fn send_to(env: &Env, from: &str, to: &str, content: Vec<u8>) -> Result<(), Status> {
    MessagingServiceClient::new(env.server.channel())
        .send_message(authed(
            msg::SendMessageRequest {
                destination_account_id: to.into(),
                client_message_id: uuid_like(),
                envelopes: vec![msg::Envelope {
                    destination_device_id: 1,
                    destination_registration_id: 1234,
                    r#type: msg::EnvelopeType::Ciphertext as i32,
                    content,
                }],
                ..Default::default()
            },
            from,
        ))
        .await
        .map(|_| ())
}

/// The contents delivered on a new Listen stream before its QueueEmpty marker.
async fn backlog(env: &Env, token: &str) -> Vec<Vec<u8>> {
    let mut stream = MessagingServiceClient::new(env.server.channel())
        .listen(authed(msg::ListenRequest {}, token))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    loop {
        let item = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("the backlog ends")
            .unwrap()
            .expect("the stream stays open");
        match item.item {
            Some(msg::listen_response::Item::Envelope(e)) => {
                out.push(e.content);
            }
            Some(msg::listen_response::Item::QueueEmpty(_)) => return out,
            _ => {}
        }
    }
}

#[tokio::test]
async fn queued_messages_older_than_the_historical_retention_are_not_delivered() {
    let env = start().await;
    let alice = register(&env, "alice", PASSWORD).await.unwrap();
    let bob = register(&env, "bob", PASSWORD).await.unwrap();
    let bob_token = bob.tokens.unwrap().access_token;
    set(&env, &env.admin, "keep messages one hour", |p| {
        p.retention.as_mut().unwrap().historical_secs = 3600;
        p.max_message_bytes = 1024;
    })
    .await
    .unwrap();
    // The size limit shows the policy reached messaging.
    until("messaging applies the policy", || async {
        send_to(&env, &bob_token, &alice.account_id, vec![1; 2048])
            .await
            .err()
            .filter(|e| reason(e) == "PAYLOAD_TOO_LARGE")
    })
    .await;
    send_to(&env, &bob_token, &alice.account_id, b"old".to_vec())
        .await
        .unwrap();
    // messaging.retention_secs is 30 days: only the policy makes this one expire.
    env.clock.advance(Duration::from_secs(3601));
    send_to(&env, &bob_token, &alice.account_id, b"new".to_vec())
        .await
        .unwrap();
    let alice_token = alice.tokens.unwrap().access_token;
    assert_eq!(backlog(&env, &alice_token).await, [b"new".to_vec()]);
}
