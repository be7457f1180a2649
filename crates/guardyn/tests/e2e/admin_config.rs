//! `guardyn admin config publish` and `show` as an operator runs them: an account made owner
//! through the real path (bootstrap code, ClaimOwner, a new sign-in), then the CLI with its
//! state file.

use std::time::{SystemTime, UNIX_EPOCH};

use guardyn_proto::guardyn::admin::v1 as admin;
use guardyn_proto::guardyn::admin::v1::bootstrap_service_client::BootstrapServiceClient;
use guardyn_proto::guardyn::auth::v1 as auth;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_testkit::TestServer;

use super::guardyn;

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_publishes_and_shows_the_client_configuration_from_the_cli() {
    let server = TestServer::start().await.unwrap();
    let url = format!("http://{}", server.addr);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("owner.state");
    let run = |args: Vec<String>| {
        let mut cmd = guardyn();
        cmd.args(&args)
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
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let username = format!("owner{}", std::process::id());
    let (ok, _, err) = run(args(&["register", "--username", &username])).await;
    assert!(ok, "{err}");
    let file = dir.path().join("config.json");
    std::fs::write(
        &file,
        r#"{"endpoints": ["https://chat.example"], "beta": false}"#,
    )
    .unwrap();
    let publish = args(&[
        "admin",
        "config",
        "publish",
        file.to_str().unwrap(),
        "--reason",
        "first rollout",
    ]);

    // A plain user is refused.
    let (ok, _, err) = run(publish.clone()).await;
    assert!(!ok);
    assert!(
        err.contains("ROLE_REQUIRED") || err.contains("roles"),
        "{err}"
    );

    // Made owner with a bootstrap code, the account signs in again for a token with the role.
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
    let (ok, _, err) = run(args(&["login"])).await;
    assert!(ok, "{err}");

    let (ok, out, err) = run(publish).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("published client configuration version 1"),
        "{out}"
    );
    let (ok, out, err) = run(args(&["admin", "config", "show"])).await;
    assert!(ok, "{err}");
    assert!(out.contains("version 1 published"), "{out}");
    assert!(out.contains("first rollout"), "{out}");
    assert!(
        out.contains(r#"{"beta":false,"endpoints":["https://chat.example"]}"#),
        "{out}"
    );
    let hex_line = out
        .lines()
        .find(|l| l.starts_with("public key (hex"))
        .unwrap();
    assert_eq!(hex_line.rsplit(' ').next().unwrap().len(), 64, "{out}");
}
