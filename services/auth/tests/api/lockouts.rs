//! Persisted lockouts: the second factor per account (across tickets and restarts, growing),
//! and failed logins per (client address, username) with a softer limit per username.

use std::net::IpAddr;
use std::time::Duration;

use guardyn_common::ratelimit::RateLimit;
use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use pb::complete_mfa_login_request::Code as C;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt as _;

use super::helpers::*;
use super::mfa::{challenge, complete, enrol};

fn limit_of(status: &tonic::Status) -> String {
    status
        .get_details_error_info()
        .and_then(|i| i.metadata.get("limit").cloned())
        .unwrap_or_default()
}

fn retry_of(status: &tonic::Status) -> Duration {
    status
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .unwrap_or_default()
}

/// A code that is not the current one (nor, but for a 1e-6 chance, one of its neighbours).
fn wrong_code(secret: &str, env: &Env) -> String {
    let right: u32 = totp_now(secret, &env.clock).parse().unwrap();
    format!("{:06}", (right + 500_000) % 1_000_000)
}

#[tokio::test]
async fn the_second_factor_lockout_spans_tickets_survives_a_restart_and_grows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let configure = |data: std::path::PathBuf| {
        move |c: &mut guardyn::config::Config| {
            c.storage.data_dir = data;
            c.auth.second_factor_lockout.threshold = 3;
            c.auth.second_factor_lockout.base_secs = 60;
            // The in-memory bucket is not what stops the guessing here.
            c.auth.limits.totp_per_account = RateLimit::new(1000, 1000);
        }
    };
    let env = start_with(configure(data.clone())).await;
    let a = env.register("tina", 0).await;
    let (secret, recovery) = enrol(&env, &a).await;

    // Two wrong codes on one ticket, a wrong recovery code on a second: the third failure,
    // whatever its ticket or kind, locks the second factor of the account.
    let t1 = challenge(env.login("tina", 1).await.unwrap());
    for _ in 0..2 {
        let err = complete(&env, &t1, C::TotpCode(wrong_code(&secret, &env)))
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "INVALID_CODE");
    }
    let t2 = challenge(env.login("tina", 1).await.unwrap());
    let err = complete(&env, &t2, C::RecoveryCode("AAAA-BBBB-CCCC-DDDD".into()))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_CODE");
    // Now even the right code (and a right recovery code) is refused, with a retry hint.
    for code in [
        C::TotpCode(totp_now(&secret, &env.clock)),
        C::RecoveryCode(recovery[0].clone()),
    ] {
        let err = complete(&env, &t2, code).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert_eq!(reason(&err), "RATE_LIMITED");
        assert_eq!(limit_of(&err), "mfa_lockout");
        let retry = retry_of(&err);
        assert!(
            retry > Duration::from_secs(50) && retry <= Duration::from_secs(60),
            "{retry:?}"
        );
    }
    env.server.stop().await.unwrap();

    // A restart (new process state, same storage) keeps the lockout.
    let env = start_with(configure(data.clone())).await;
    let t3 = challenge(env.login("tina", 1).await.unwrap());
    let err = complete(&env, &t3, C::TotpCode(totp_now(&secret, &env.clock)))
        .await
        .unwrap_err();
    assert_eq!(limit_of(&err), "mfa_lockout");

    // After it, the next failure locks twice as long.
    env.clock.advance(Duration::from_secs(61));
    let err = complete(&env, &t3, C::TotpCode(wrong_code(&secret, &env)))
        .await
        .unwrap_err();
    assert_eq!(reason(&err), "INVALID_CODE");
    let err = complete(&env, &t3, C::TotpCode(totp_now(&secret, &env.clock)))
        .await
        .unwrap_err();
    assert_eq!(limit_of(&err), "mfa_lockout");
    let retry = retry_of(&err);
    assert!(
        retry > Duration::from_secs(110) && retry <= Duration::from_secs(120),
        "{retry:?}"
    );

    // Once it ends, the right code signs in.
    env.clock.advance(Duration::from_secs(121));
    complete(&env, &t3, C::TotpCode(totp_now(&secret, &env.clock)))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_wrong_codes_cannot_pass_the_threshold_together() {
    let env = start_with(|c| {
        c.auth.second_factor_lockout.threshold = 3;
        c.auth.limits.totp_per_account = RateLimit::new(1000, 1000);
    })
    .await;
    let a = env.register("wendy", 0).await;
    let (secret, _) = enrol(&env, &a).await;
    let mut tickets = Vec::new();
    for _ in 0..4 {
        tickets.push(challenge(env.login("wendy", 1).await.unwrap()));
    }
    let wrong = wrong_code(&secret, &env);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut client = env.auth();
        let ticket = tickets[i % 4].clone();
        let code = wrong.clone();
        tasks.push(tokio::spawn(async move {
            client
                .complete_mfa_login(pb::CompleteMfaLoginRequest {
                    mfa_ticket: ticket,
                    code: Some(C::TotpCode(code)),
                })
                .await
                .unwrap_err()
        }));
    }
    let mut checked = 0;
    for t in tasks {
        let err = t.await.unwrap();
        match reason(&err).as_str() {
            "INVALID_CODE" => checked += 1,
            "RATE_LIMITED" => assert_eq!(limit_of(&err), "mfa_lockout"),
            other => panic!("{other}"),
        }
    }
    // Exactly `threshold` codes were checked; every other guess met the lock.
    assert_eq!(checked, 3);
}

/// A client of the test server whose connections come from `ip` (any 127/8 address works on
/// the loopback interface).
async fn client_from(env: &Env, ip: &str) -> AuthServiceClient<Channel> {
    let ip: IpAddr = ip.parse().unwrap();
    let channel = Endpoint::from_shared(format!("http://{}", env.server.addr))
        .unwrap()
        .local_address(Some(ip))
        .connect()
        .await
        .unwrap();
    AuthServiceClient::new(channel)
}

async fn login_with(
    client: &mut AuthServiceClient<Channel>,
    name: &str,
    password: &str,
) -> Result<pb::LoginResponse, tonic::Status> {
    client
        .login(pb::LoginRequest {
            username: name.into(),
            password: password.into(),
            device_id: 1,
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn failures_from_one_address_do_not_lock_the_owner_out_elsewhere_but_many_do() {
    let env = start_with(|c| {
        c.auth.lockout.threshold = 3;
        c.auth.lockout.global_threshold = 8;
    })
    .await;
    env.register("alice", 0).await;
    let mut attacker = client_from(&env, "127.0.0.2").await;
    for _ in 0..3 {
        let err = login_with(&mut attacker, "alice", "not her password")
            .await
            .unwrap_err();
        assert_eq!(reason(&err), "INVALID_CREDENTIALS");
    }
    // The attacker's address is locked out for alice (even with the right password) and
    // soon out of tokens for her name too...
    let err = login_with(&mut attacker, "alice", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(limit_of(&err), "login_lockout");
    for _ in 0..20 {
        let err = login_with(&mut attacker, "alice", "guess")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
    }
    // ...while alice signs in from her own address.
    let mut owner = client_from(&env, "127.0.0.1").await;
    login_with(&mut owner, "alice", PASSWORD).await.unwrap();

    // Failures from several addresses add up to the softer lock of the name itself.
    for ip in ["127.0.0.3", "127.0.0.4"] {
        let mut other = client_from(&env, ip).await;
        for _ in 0..3 {
            let _ = login_with(&mut other, "alice", "not her password").await;
        }
    }
    let err = login_with(&mut owner, "alice", PASSWORD).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(limit_of(&err), "login_lockout_global");
    assert!(retry_of(&err) > Duration::ZERO);
    env.clock.advance(Duration::from_secs(3601));
    login_with(&mut owner, "alice", PASSWORD).await.unwrap();
}
