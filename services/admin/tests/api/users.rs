//! AdminUserService against the real auth service: role checks on every mutation, the account
//! views, suspension, session termination, device removal, deletion, MFA reset, and the audit
//! entry (actor and reason) each action leaves.

use std::sync::Arc;
use std::time::Duration;

use guardyn_audit::AuditKind;
use guardyn_common::clock::ManualClock;
use guardyn_common::error::reason_of;
use guardyn_crypto::IdentityKeyPair;
use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::admin_user_service_client::AdminUserServiceClient;
use guardyn_proto::guardyn::auth::v1 as auth;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_proto::guardyn::auth::v1::device_service_client::DeviceServiceClient;
use guardyn_proto::guardyn::auth::v1::mfa_service_client::MfaServiceClient;
use guardyn_proto::guardyn::messaging::v1::messaging_service_client::MessagingServiceClient;
use guardyn_proto::guardyn::messaging::v1::{ListenRequest, ListenResponse};
use guardyn_testkit::rpc::authed;
use guardyn_testkit::{Options, TestServer};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

pub const PASSWORD: &str = "correct horse battery staple";
/// Generous: the machine is loaded; nothing here measures time.
pub const WAIT: Duration = Duration::from_secs(30);

/// Every service, cheap password hashing, a manual clock.
pub async fn start() -> TestServer {
    start_with_clock().await.0
}

pub async fn start_with_clock() -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let server = TestServer::start_with(Options {
        clock: Some(clock.clone()),
        configure: Some(Box::new(|c| {
            c.auth.argon2.memory_kib = 8;
            c.auth.argon2.iterations = 1;
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    (server, clock)
}

/// A signed-in device of a real account.
#[derive(Clone, Debug)]
pub struct User {
    pub account: String,
    pub username: String,
    pub device: u32,
    pub tokens: auth::Tokens,
}

impl User {
    pub fn token(&self) -> &str {
        &self.tokens.access_token
    }
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

pub fn auth_api(server: &TestServer) -> AuthServiceClient<Channel> {
    AuthServiceClient::new(server.channel())
}

pub fn admin_api(server: &TestServer) -> AdminUserServiceClient<Channel> {
    AdminUserServiceClient::new(server.channel())
}

pub async fn register(server: &TestServer, username: &str) -> User {
    let r = auth_api(server)
        .register(auth::RegisterRequest {
            username: username.into(),
            password: PASSWORD.into(),
            device: Some(new_device("phone")),
        })
        .await
        .unwrap()
        .into_inner();
    User {
        account: r.account_id,
        username: username.into(),
        device: r.device_id,
        tokens: r.tokens.unwrap(),
    }
}

/// A second device of `by`'s account, linked and approved.
pub async fn link(server: &TestServer, by: &User) -> User {
    let mut devices = DeviceServiceClient::new(server.channel());
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
                link_code: ticket.link_code.clone(),
            },
            by.token(),
        ))
        .await
        .unwrap();
    let r = devices
        .link_device(auth::LinkDeviceRequest {
            link_code: ticket.link_code,
            link_secret: ticket.link_secret,
        })
        .await
        .unwrap()
        .into_inner();
    User {
        account: r.account_id,
        username: by.username.clone(),
        device: r.device_id,
        tokens: r.tokens.unwrap(),
    }
}

pub async fn login(server: &TestServer, user: &User) -> Result<auth::Tokens, Status> {
    let r = auth_api(server)
        .login(auth::LoginRequest {
            username: user.username.clone(),
            password: PASSWORD.into(),
            device_id: user.device,
        })
        .await?
        .into_inner();
    match r.outcome {
        Some(auth::login_response::Outcome::Tokens(t)) => Ok(t),
        other => panic!("expected tokens, got {other:?}"),
    }
}

pub async fn refresh(server: &TestServer, user: &User) -> Result<auth::Tokens, Status> {
    Ok(auth_api(server)
        .refresh_session(auth::RefreshSessionRequest {
            refresh_token: user.tokens.refresh_token.clone(),
        })
        .await?
        .into_inner()
        .tokens
        .unwrap())
}

/// Any authenticated call with the user's token (its own session list).
pub async fn call_with(server: &TestServer, token: &str) -> Result<(), Status> {
    auth_api(server)
        .list_sessions(authed(auth::ListSessionsRequest::default(), token))
        .await
        .map(|_| ())
}

/// A token of a made-up account carrying `role`.
pub fn staff(server: &TestServer, role: &str) -> (String, String) {
    let account = guardyn_common::AccountId::random().to_string();
    let token = server.token_with_roles(&account, 1, "staff-session", &[role]);
    (account, token)
}

pub fn reason(status: &Status) -> String {
    reason_of(status).unwrap_or_default()
}

pub async fn open_listen(server: &TestServer, token: &str) -> Streaming<ListenResponse> {
    MessagingServiceClient::new(server.channel())
        .listen(authed(ListenRequest {}, token))
        .await
        .unwrap()
        .into_inner()
}

/// The status the stream ends with (items before it are skipped).
pub async fn stream_end(stream: &mut Streaming<ListenResponse>) -> Status {
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends")
}

pub async fn get(server: &TestServer, token: &str, account: &str) -> pb::AccountSummary {
    admin_api(server)
        .get_account(authed(
            pb::GetAccountRequest {
                account_id: account.into(),
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap()
}

/// The audit entries of `kind` about `account`.
pub async fn audited(
    server: &TestServer,
    kind: AuditKind,
    account: &str,
) -> Vec<guardyn_audit::AuditEntry> {
    guardyn_audit::entries(&*server.kv())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind && e.account_id == account)
        .collect()
}

/// Every mutating RPC of AdminUserService against `target`, with `token`.
async fn every_mutation(
    server: &TestServer,
    token: &str,
    target: &User,
) -> Vec<(&'static str, Status)> {
    let mut api = admin_api(server);
    let acc = target.account.clone();
    let why = "testing".to_owned();
    let mut out = Vec::new();
    let r = api
        .set_roles(authed(
            pb::SetRolesRequest {
                account_id: acc.clone(),
                grant: vec![pb::Role::Auditor.into()],
                revoke: vec![],
                reason: why.clone(),
            },
            token,
        ))
        .await;
    out.push(("SetRoles", r.unwrap_err()));
    let r = api
        .suspend_account(authed(
            pb::SuspendAccountRequest {
                account_id: acc.clone(),
                reason: why.clone(),
            },
            token,
        ))
        .await;
    out.push(("SuspendAccount", r.unwrap_err()));
    let r = api
        .unsuspend_account(authed(
            pb::UnsuspendAccountRequest {
                account_id: acc.clone(),
                reason: why.clone(),
            },
            token,
        ))
        .await;
    out.push(("UnsuspendAccount", r.unwrap_err()));
    let r = api
        .delete_account(authed(
            pb::DeleteAccountRequest {
                account_id: acc.clone(),
                reason: why.clone(),
            },
            token,
        ))
        .await;
    out.push(("DeleteAccount", r.unwrap_err()));
    let r = api
        .reset_mfa(authed(
            pb::ResetMfaRequest {
                account_id: acc.clone(),
                reason: why.clone(),
            },
            token,
        ))
        .await;
    out.push(("ResetMfa", r.unwrap_err()));
    let r = api
        .terminate_sessions(authed(
            pb::TerminateSessionsRequest {
                account_id: acc.clone(),
                session_id: String::new(),
                reason: why.clone(),
            },
            token,
        ))
        .await;
    out.push(("TerminateSessions", r.unwrap_err()));
    let r = api
        .remove_device(authed(
            pb::RemoveDeviceRequest {
                account_id: acc.clone(),
                device_id: target.device,
                reason: why.clone(),
            },
            token,
        ))
        .await;
    out.push(("RemoveDevice", r.unwrap_err()));
    out
}

#[tokio::test]
async fn users_and_auditors_are_refused_every_mutation_and_nothing_changes() {
    let server = start().await;
    let target = register(&server, "target").await;
    let _second = link(&server, &target).await;
    let (_, admin) = staff(&server, "admin");
    let before = get(&server, &admin, &target.account).await;
    for role in ["user", "auditor"] {
        let (_, token) = staff(&server, role);
        let refused = every_mutation(&server, &token, &target).await;
        assert_eq!(refused.len(), 7);
        for (rpc, status) in refused {
            assert_eq!(
                status.code(),
                Code::PermissionDenied,
                "{role} {rpc}: {status:?}"
            );
            assert_eq!(reason(&status), "ROLE_REQUIRED", "{role} {rpc}");
        }
    }
    // The target's own token, a plain `user` of that very account, is refused too.
    for (rpc, status) in every_mutation(&server, target.token(), &target).await {
        assert_eq!(reason(&status), "ROLE_REQUIRED", "self {rpc}");
    }
    assert_eq!(get(&server, &admin, &target.account).await, before);
    assert_eq!(before.device_count, 2);
    assert!(!before.suspended);
    assert_eq!(before.roles, vec![i32::from(pb::Role::User)]);
    call_with(&server, target.token()).await.unwrap();
    login(&server, &target).await.unwrap();
    // An auditor reads.
    let (_, auditor) = staff(&server, "auditor");
    assert_eq!(
        get(&server, &auditor, &target.account).await.username,
        "target"
    );
}

#[tokio::test]
async fn accounts_are_listed_in_pages_by_username_prefix_without_secrets() {
    let server = start().await;
    for name in ["ops_anna", "ops_bert", "ops_carl", "sales_dora"] {
        register(&server, name).await;
    }
    let (_, auditor) = staff(&server, "auditor");
    let mut api = admin_api(&server);
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = api
            .list_accounts(authed(
                pb::ListAccountsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    username_prefix: "OPS_".into(),
                },
                &auditor,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.accounts.len() <= 2);
        seen.extend(page.accounts);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let names: Vec<&str> = seen.iter().map(|a| a.username.as_str()).collect();
    assert_eq!(names, ["ops_anna", "ops_bert", "ops_carl"]);
    for a in &seen {
        assert_eq!(a.device_count, 1);
        assert!(!a.mfa_enabled && !a.suspended);
        assert!(a.created_at.is_some());
    }
    let bad = api
        .list_accounts(authed(
            pb::ListAccountsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            &auditor,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    // A mutation without a reason is refused before anything happens.
    let (_, admin) = staff(&server, "admin");
    let no_reason = api
        .suspend_account(authed(
            pb::SuspendAccountRequest {
                account_id: seen[0].account_id.clone(),
                reason: "  ".into(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(no_reason.code(), Code::InvalidArgument);
    assert!(!get(&server, &admin, &seen[0].account_id).await.suspended);
}

#[tokio::test]
async fn suspension_cuts_streams_and_tokens_at_once_and_login_until_unsuspended() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let (admin_account, admin) = staff(&server, "admin");
    let mut stream = open_listen(&server, alice.token()).await;
    let r = admin_api(&server)
        .suspend_account(authed(
            pb::SuspendAccountRequest {
                account_id: alice.account.clone(),
                reason: "phishing reports".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.sessions_revoked, 1);
    // The very next call is refused: no waiting for a propagation delay.
    let refused = call_with(&server, alice.token()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(reason(&refused), "SESSION_REVOKED");
    let ended = stream_end(&mut stream).await;
    assert_eq!(ended.code(), Code::Unauthenticated);
    assert_eq!(reason(&ended), "SESSION_REVOKED");
    let denied = login(&server, &alice).await.unwrap_err();
    assert_eq!(reason(&denied), "ACCOUNT_SUSPENDED", "{denied:?}");
    let denied = refresh(&server, &alice).await.unwrap_err();
    assert_eq!(reason(&denied), "ACCOUNT_SUSPENDED", "{denied:?}");
    assert!(get(&server, &admin, &alice.account).await.suspended);

    admin_api(&server)
        .unsuspend_account(authed(
            pb::UnsuspendAccountRequest {
                account_id: alice.account.clone(),
                reason: "cleared".into(),
            },
            &admin,
        ))
        .await
        .unwrap();
    let tokens = login(&server, &alice).await.unwrap();
    call_with(&server, &tokens.access_token).await.unwrap();

    let suspended = audited(&server, AuditKind::AccountSuspended, &alice.account).await;
    assert_eq!(suspended.len(), 1);
    assert_eq!(suspended[0].actor.as_deref(), Some(admin_account.as_str()));
    assert_eq!(suspended[0].reason, "phishing reports");
    let lifted = audited(&server, AuditKind::AccountUnsuspended, &alice.account).await;
    assert_eq!(lifted[0].reason, "cleared");
}

#[tokio::test]
async fn terminating_one_session_ends_only_that_one_then_all_end_together() {
    let server = start().await;
    let phone = register(&server, "bob").await;
    let laptop = link(&server, &phone).await;
    let (admin_account, admin) = staff(&server, "admin");
    let sessions = admin_api(&server)
        .list_sessions(authed(
            pb::ListSessionsRequest {
                account_id: phone.account.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(sessions.len(), 2);
    let laptop_session = sessions
        .iter()
        .find(|s| s.device_id == laptop.device)
        .unwrap()
        .session_id
        .clone();
    let mut phone_stream = open_listen(&server, phone.token()).await;
    let mut laptop_stream = open_listen(&server, laptop.token()).await;
    let r = admin_api(&server)
        .terminate_sessions(authed(
            pb::TerminateSessionsRequest {
                account_id: phone.account.clone(),
                session_id: laptop_session.clone(),
                reason: "stolen laptop".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.sessions_revoked, 1);
    assert_eq!(
        reason(&call_with(&server, laptop.token()).await.unwrap_err()),
        "SESSION_REVOKED"
    );
    assert_eq!(
        reason(&stream_end(&mut laptop_stream).await),
        "SESSION_REVOKED"
    );
    call_with(&server, phone.token()).await.unwrap();
    // A session of another account, or one already ended, is not found.
    let again = admin_api(&server)
        .terminate_sessions(authed(
            pb::TerminateSessionsRequest {
                account_id: phone.account.clone(),
                session_id: laptop_session.clone(),
                reason: "again".into(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);

    let entries = audited(&server, AuditKind::SessionsTerminated, &phone.account).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].actor.as_deref(), Some(admin_account.as_str()));
    assert_eq!(entries[0].reason, "stolen laptop");
    assert!(entries[0].detail.contains(&laptop_session));

    let all = admin_api(&server)
        .terminate_sessions(authed(
            pb::TerminateSessionsRequest {
                account_id: phone.account.clone(),
                session_id: String::new(),
                reason: "sign out everywhere".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.sessions_revoked, 1);
    assert_eq!(
        reason(&stream_end(&mut phone_stream).await),
        "SESSION_REVOKED"
    );
    // Unlike a suspension, the account can sign in again.
    login(&server, &phone).await.unwrap();
}

#[tokio::test]
async fn devices_are_removed_mfa_reset_and_accounts_deleted_with_audit_entries() {
    let server = start().await;
    let carol = register(&server, "carol").await;
    let tablet = link(&server, &carol).await;
    let (admin_account, admin) = staff(&server, "admin");
    let mut api = admin_api(&server);
    api.remove_device(authed(
        pb::RemoveDeviceRequest {
            account_id: carol.account.clone(),
            device_id: tablet.device,
            reason: "lost tablet".into(),
        },
        &admin,
    ))
    .await
    .unwrap();
    // The removed device's token stops working at once.
    let refused = call_with(&server, tablet.token()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert_eq!(get(&server, &admin, &carol.account).await.device_count, 1);
    let last = api
        .remove_device(authed(
            pb::RemoveDeviceRequest {
                account_id: carol.account.clone(),
                device_id: carol.device,
                reason: "last".into(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&last), "LAST_DEVICE");
    let removed = audited(&server, AuditKind::DeviceRemovedByAdmin, &carol.account).await;
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].device_id, Some(tablet.device));
    assert_eq!(removed[0].reason, "lost tablet");

    let reset = api
        .reset_mfa(authed(
            pb::ResetMfaRequest {
                account_id: carol.account.clone(),
                reason: "lost authenticator".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!reset.was_enabled);
    let entries = audited(&server, AuditKind::MfaReset, &carol.account).await;
    assert_eq!(entries[0].actor.as_deref(), Some(admin_account.as_str()));
    assert_eq!(entries[0].reason, "lost authenticator");

    api.delete_account(authed(
        pb::DeleteAccountRequest {
            account_id: carol.account.clone(),
            reason: "left the company".into(),
        },
        &admin,
    ))
    .await
    .unwrap();
    assert_ne!(login(&server, &carol).await.unwrap_err().code(), Code::Ok);
    let gone = api
        .get_account(authed(
            pb::GetAccountRequest {
                account_id: carol.account.clone(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    let deleted = audited(&server, AuditKind::AccountDeletedByAdmin, &carol.account).await;
    assert_eq!(deleted[0].reason, "left the company");
    assert_eq!(deleted[0].actor.as_deref(), Some(admin_account.as_str()));
}

/// The current TOTP code of a base32 secret at the server's (manual) clock.
fn totp_now(secret_b32: &str, clock: &ManualClock) -> String {
    use guardyn_common::clock::Clock as _;
    let secret = totp_rs::Secret::try_from_base32(secret_b32).unwrap();
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(secret.as_bytes().to_vec())
        .build_noncompliant()
        .generate(clock.now_ms() / 1000)
        .to_string()
}

#[tokio::test]
async fn reset_mfa_turns_totp_off_so_the_password_alone_signs_in() {
    let (server, clock) = start_with_clock().await;
    let dave = register(&server, "dave").await;
    let mut mfa = MfaServiceClient::new(server.channel());
    let begin = mfa
        .begin_totp_enrollment(authed(
            auth::BeginTotpEnrollmentRequest::default(),
            dave.token(),
        ))
        .await
        .unwrap()
        .into_inner();
    mfa.confirm_totp_enrollment(authed(
        auth::ConfirmTotpEnrollmentRequest {
            totp_code: totp_now(&begin.secret, &clock),
        },
        dave.token(),
    ))
    .await
    .unwrap();
    let (_, admin) = staff(&server, "admin");
    assert!(get(&server, &admin, &dave.account).await.mfa_enabled);
    let challenged = auth_api(&server)
        .login(auth::LoginRequest {
            username: dave.username.clone(),
            password: PASSWORD.into(),
            device_id: dave.device,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        challenged.outcome,
        Some(auth::login_response::Outcome::MfaChallenge(_))
    ));

    let reset = admin_api(&server)
        .reset_mfa(authed(
            pb::ResetMfaRequest {
                account_id: dave.account.clone(),
                reason: "lost phone".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(reset.was_enabled);
    assert!(!get(&server, &admin, &dave.account).await.mfa_enabled);
    let status = mfa
        .get_mfa_status(authed(auth::GetMfaStatusRequest::default(), dave.token()))
        .await
        .unwrap()
        .into_inner();
    assert!(!status.totp_enabled);
    assert_eq!(status.remaining_recovery_codes, 0);
    login(&server, &dave).await.unwrap();
}
