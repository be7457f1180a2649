//! `guardyn admin monitoring` as an operator runs it: refused to a plain user, then, for an
//! owner made through the real path (bootstrap code, ClaimOwner, a new sign-in), the instance's
//! figures, the cluster line and an alert crossed on purpose (memory above 0 %).

use std::time::{SystemTime, UNIX_EPOCH};

use guardyn_proto::guardyn::admin::v1 as admin;
use guardyn_proto::guardyn::admin::v1::bootstrap_service_client::BootstrapServiceClient;
use guardyn_proto::guardyn::auth::v1 as auth;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_testkit::rpc::authed;
use guardyn_testkit::{Options, TestServer};

use super::guardyn;

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_reads_the_monitoring_data_from_the_cli() {
    let server = TestServer::start_with(Options::configure(|c| {
        c.server.instance_id = "cli-node".into();
        c.monitoring.beacon_interval_secs = 1;
        c.admin.monitoring.memory_percent = 0;
        c.admin.monitoring.cpu_percent = 100;
        c.admin.monitoring.disk_percent = 100;
    }))
    .await
    .unwrap();
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
    let username = format!("monowner{}", std::process::id());
    let (ok, _, err) = run(&["register", "--username", &username]).await;
    assert!(ok, "{err}");

    let (ok, _, err) = run(&["admin", "monitoring"]).await;
    assert!(!ok, "a plain user read the monitoring data");
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
        .claim_owner(authed(
            admin::ClaimOwnerRequest { code: issued.code },
            &tokens.access_token,
        ))
        .await
        .unwrap();
    let (ok, _, err) = run(&["login"]).await;
    assert!(ok, "{err}");

    // The first beacon is published at start; the alert follows it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let out = loop {
        let (ok, out, err) = run(&["admin", "monitoring"]).await;
        assert!(ok, "{err}");
        if out.contains("ALERT cli-node memory") {
            break out;
        }
        assert!(tokio::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let instance = out
        .lines()
        .find(|l| l.starts_with("cli-node v"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        instance.contains("admin,auth,media,messaging,notification,presence"),
        "{out}"
    );
    assert!(out.contains("cluster: 1 instance(s)"), "{out}");
    assert!(out.contains("above 0 %"), "{out}");
}
