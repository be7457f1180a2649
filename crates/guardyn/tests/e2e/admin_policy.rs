//! `guardyn admin policy set`, `show` and `history` as an operator runs them: refused for a
//! plain account, then as an owner made through the real path (bootstrap code, ClaimOwner, a
//! new sign-in), with a bad value refused by the server naming the field.

use std::time::{SystemTime, UNIX_EPOCH};

use guardyn_proto::guardyn::admin::v1 as admin;
use guardyn_proto::guardyn::admin::v1::bootstrap_service_client::BootstrapServiceClient;
use guardyn_proto::guardyn::auth::v1 as auth;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_testkit::TestServer;

use super::guardyn;

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_sets_shows_and_lists_the_policy_from_the_cli() {
    let server = TestServer::start().await.unwrap();
    let url = format!("http://{}", server.addr);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("owner.state");
    let run = |args: &[&str]| {
        let mut cmd = guardyn();
        cmd.args(args)
            .arg("--server")
            .arg(&url)
            .arg("--state")
            .arg(&state)
            .env("GDN_PASSWORD", PASSWORD)
            .env("GDN_STATE_PASSPHRASE", "a state passphrase");
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            let stdout = String::from_utf8(out.stdout).unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (out.status.success(), stdout, stderr)
        }
    };
    let username = format!("policy{}", std::process::id());
    let (ok, _, err) = run(&["register", "--username", &username]).await;
    assert!(ok, "{err}");
    let set = [
        "admin",
        "policy",
        "set",
        "max_devices=3",
        "password.check_breached=true",
        "--reason",
        "fewer devices",
    ];

    let (ok, _, err) = run(&set).await;
    assert!(!ok);
    assert!(
        err.contains("ROLE_REQUIRED") || err.contains("roles"),
        "{err}"
    );

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let issued = guardyn_admin::users_bootstrap::issue(
        &server.data_dir().join("data"),
        u64::try_from(now.as_millis()).unwrap(),
    )
    .unwrap();
    let login = AuthServiceClient::new(server.channel())
        .login(auth::LoginRequest {
            username: username.clone(),
            password: PASSWORD.into(),
            device_id: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let Some(auth::login_response::Outcome::Tokens(tokens)) = login.outcome else {
        panic!("login did not sign in");
    };
    BootstrapServiceClient::new(server.channel())
        .claim_owner(guardyn_testkit::rpc::authed(
            admin::ClaimOwnerRequest { code: issued.code },
            &tokens.access_token,
        ))
        .await
        .unwrap();
    let (ok, _, err) = run(&["login"]).await;
    assert!(ok, "{err}");

    let (ok, out, err) = run(&set).await;
    assert!(ok, "{err}");
    assert!(out.contains("policy version 1 is current"), "{out}");
    let (ok, out, err) = run(&["admin", "policy", "show"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("version 1 set at"), "{out}");
    assert!(out.contains("max_devices = 3"), "{out}");
    assert!(out.contains("password.check_breached = true"), "{out}");
    assert!(out.contains("mfa_required = false"), "{out}");

    let (ok, _, err) = run(&["admin", "policy", "set", "colour=blue", "--reason", "x"]).await;
    assert!(!ok);
    assert!(err.contains("unknown policy value `colour`"), "{err}");
    let (ok, _, err) = run(&["admin", "policy", "set", "max_devices=0", "--reason", "x"]).await;
    assert!(!ok);
    assert!(err.contains("max_devices"), "{err}");

    let (ok, out, err) = run(&["admin", "policy", "history"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("version 1 set at") && out.contains("fewer devices"),
        "{out}"
    );
}
