//! Roles end to end: the bootstrap code makes the first owner (once), roles reach tokens on
//! the next refresh, only owners hand out owner and admin, removing a role ends the account's
//! sessions, the last owner stays, and wrong codes are refused and rate limited.

use guardyn_admin::users_bootstrap;
use guardyn_audit::AuditKind;
use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::bootstrap_service_client::BootstrapServiceClient;
use guardyn_testkit::TestServer;
use guardyn_testkit::rpc::authed;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::users::{
    User, admin_api, audited, call_with, get, login, reason, refresh, register, start,
};

fn bootstrap_api(server: &TestServer) -> BootstrapServiceClient<Channel> {
    BootstrapServiceClient::new(server.channel())
}

/// What `guardyn admin bootstrap` does on the server host: a code into the data directory.
fn issue_code(server: &TestServer) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    users_bootstrap::issue(&server.data_dir().join("data"), now)
        .unwrap()
        .code
}

async fn claim(server: &TestServer, user: &User, code: &str) -> Result<(), Status> {
    bootstrap_api(server)
        .claim_owner(authed(
            pb::ClaimOwnerRequest { code: code.into() },
            user.token(),
        ))
        .await
        .map(|_| ())
}

/// `user` after a refresh: its new token carries its current roles.
async fn refreshed(server: &TestServer, user: &User) -> User {
    let tokens = refresh(server, user).await.unwrap();
    User {
        tokens,
        ..user.clone()
    }
}

async fn set_roles(
    server: &TestServer,
    by: &User,
    target: &User,
    grant: &[pb::Role],
    revoke: &[pb::Role],
) -> Result<Vec<i32>, Status> {
    admin_api(server)
        .set_roles(authed(
            pb::SetRolesRequest {
                account_id: target.account.clone(),
                grant: grant.iter().map(|r| i32::from(*r)).collect(),
                revoke: revoke.iter().map(|r| i32::from(*r)).collect(),
                reason: "staffing".into(),
            },
            by.token(),
        ))
        .await
        .map(|r| r.into_inner().roles)
}

/// The first owner through the real path: bootstrap code, claim, refresh.
pub async fn owner(server: &TestServer, name: &str) -> User {
    let user = register(server, name).await;
    claim(server, &user, &issue_code(server)).await.unwrap();
    refreshed(server, &user).await
}

#[tokio::test]
async fn the_bootstrap_code_makes_one_owner_whose_next_token_carries_the_role() {
    let server = start().await;
    let alice = register(&server, "alice").await;
    let code = issue_code(&server);
    let stored =
        std::fs::read_to_string(server.data_dir().join("data").join(users_bootstrap::FILE))
            .unwrap();
    assert!(!stored.contains(&code), "only the hash is stored");

    let wrong = claim(&server, &alice, "0123-4567-89ab-cdef-0123-4567-89ab-cdef")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(reason(&wrong), "INVALID_CODE");

    claim(&server, &alice, &code).await.unwrap();
    // The token from before the claim still says `user`.
    let old = admin_api(&server)
        .list_accounts(authed(pb::ListAccountsRequest::default(), alice.token()))
        .await
        .unwrap_err();
    assert_eq!(reason(&old), "ROLE_REQUIRED");
    let alice = refreshed(&server, &alice).await;
    let page = admin_api(&server)
        .list_accounts(authed(pb::ListAccountsRequest::default(), alice.token()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.accounts.len(), 1);
    assert!(page.accounts[0].roles.contains(&i32::from(pb::Role::Owner)));
    let claimed = audited(&server, AuditKind::OwnerClaimed, &alice.account).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].actor.as_deref(), Some(alice.account.as_str()));

    // The code was single use, and a fresh one makes no second owner.
    let bob = register(&server, "bob").await;
    assert_eq!(
        reason(&claim(&server, &bob, &code).await.unwrap_err()),
        "INVALID_CODE"
    );
    let second = claim(&server, &bob, &issue_code(&server))
        .await
        .unwrap_err();
    assert_eq!(second.code(), Code::AlreadyExists);
    let bob = refreshed(&server, &bob).await;
    assert_eq!(
        reason(
            &admin_api(&server)
                .list_accounts(authed(pb::ListAccountsRequest::default(), bob.token()))
                .await
                .unwrap_err()
        ),
        "ROLE_REQUIRED"
    );
}

#[tokio::test]
async fn wrong_codes_are_rate_limited() {
    let server = start().await;
    let mallory = register(&server, "mallory").await;
    issue_code(&server);
    let mut limited = None;
    for _ in 0..20 {
        match claim(&server, &mallory, "ffff-ffff-ffff-ffff").await {
            Err(s) if s.code() == Code::ResourceExhausted => {
                limited = Some(s);
                break;
            }
            Err(s) => assert_eq!(reason(&s), "INVALID_CODE"),
            Ok(()) => panic!("a wrong code was accepted"),
        }
    }
    assert_eq!(reason(&limited.expect("rate limited")), "RATE_LIMITED");
}

#[tokio::test]
async fn only_owners_grant_admin_and_removing_a_role_ends_the_sessions() {
    let server = start().await;
    let boss = owner(&server, "boss").await;
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;

    let roles = set_roles(&server, &boss, &bob, &[pb::Role::Admin], &[])
        .await
        .unwrap();
    assert!(roles.contains(&i32::from(pb::Role::Admin)));
    let bob = refreshed(&server, &bob).await;
    // An admin manages users but hands out neither admin nor owner.
    let denied = set_roles(&server, &bob, &carol, &[pb::Role::Admin], &[])
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(reason(&denied), "ROLE_REQUIRED");
    assert!(
        set_roles(&server, &bob, &carol, &[pb::Role::Owner], &[])
            .await
            .is_err()
    );
    set_roles(&server, &bob, &carol, &[pb::Role::Auditor], &[])
        .await
        .unwrap();
    let carol = refreshed(&server, &carol).await;
    // An auditor reads and changes nothing.
    get(&server, carol.token(), &bob.account).await;
    assert_eq!(
        reason(
            &set_roles(&server, &carol, &bob, &[pb::Role::Auditor], &[])
                .await
                .unwrap_err()
        ),
        "ROLE_REQUIRED"
    );

    // Removing bob's admin role ends his sessions at once; his next sign-in is a plain user.
    set_roles(&server, &boss, &bob, &[], &[pb::Role::Admin])
        .await
        .unwrap();
    assert_eq!(
        reason(&call_with(&server, bob.token()).await.unwrap_err()),
        "SESSION_REVOKED"
    );
    assert!(refresh(&server, &bob).await.is_err());
    let tokens = login(&server, &bob).await.unwrap();
    let bob = User { tokens, ..bob };
    assert_eq!(
        reason(
            &set_roles(&server, &bob, &carol, &[], &[pb::Role::Auditor])
                .await
                .unwrap_err()
        ),
        "ROLE_REQUIRED"
    );
    let changes = audited(&server, AuditKind::RoleChanged, &bob.account).await;
    assert_eq!(changes.len(), 2);
    assert!(
        changes
            .iter()
            .all(|e| e.actor.as_deref() == Some(boss.account.as_str()))
    );
    assert!(changes.iter().all(|e| e.reason == "staffing"));
}

#[tokio::test]
async fn the_last_owner_cannot_be_removed_suspended_or_deleted() {
    let server = start().await;
    let boss = owner(&server, "boss").await;
    let last = set_roles(&server, &boss, &boss, &[], &[pb::Role::Owner])
        .await
        .unwrap_err();
    assert_eq!(last.code(), Code::FailedPrecondition);
    assert_eq!(reason(&last), "LAST_OWNER");
    let suspend = admin_api(&server)
        .suspend_account(authed(
            pb::SuspendAccountRequest {
                account_id: boss.account.clone(),
                reason: "oops".into(),
            },
            boss.token(),
        ))
        .await
        .unwrap_err();
    assert_eq!(reason(&suspend), "LAST_OWNER");
    // With a second owner, the first may step down.
    let deputy = register(&server, "deputy").await;
    set_roles(&server, &boss, &deputy, &[pb::Role::Owner], &[])
        .await
        .unwrap();
    let roles = set_roles(&server, &boss, &boss, &[], &[pb::Role::Owner])
        .await
        .unwrap();
    assert_eq!(roles, vec![i32::from(pb::Role::User)]);
    call_with(&server, boss.token()).await.unwrap_err();
}
