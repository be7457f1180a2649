//! `guardyn admin audit list|verify` and `guardyn admin security-events list|export` as an
//! operator runs them: an owner made through the real path (bootstrap code, ClaimOwner, a new
//! sign-in), then the CLI with its state file.

use std::time::{SystemTime, UNIX_EPOCH};

use guardyn_proto::guardyn::admin::v1 as admin;
use guardyn_proto::guardyn::admin::v1::bootstrap_service_client::BootstrapServiceClient;
use guardyn_proto::guardyn::admin::v1::security_event_service_client::SecurityEventServiceClient;
use guardyn_proto::guardyn::auth::v1 as auth;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_testkit::TestServer;
use guardyn_testkit::rpc::authed;

use super::guardyn;

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_reads_and_verifies_the_audit_log_and_exports_security_events_from_the_cli() {
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
    let username = format!("auditowner{}", std::process::id());
    let (ok, _, err) = run(&["register", "--username", &username]).await;
    assert!(ok, "{err}");

    // A plain user is refused.
    let (ok, _, err) = run(&["admin", "audit", "verify"]).await;
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
        .claim_owner(authed(
            admin::ClaimOwnerRequest { code: issued.code },
            &tokens.access_token,
        ))
        .await
        .unwrap();
    // A device reports an event (any signed-in device may).
    let event_id = SecurityEventServiceClient::new(server.channel())
        .report_security_event(authed(
            admin::ReportSecurityEventRequest {
                r#type: admin::SecurityEventType::RootDetected.into(),
                severity: admin::SecuritySeverity::High.into(),
                occurred_at: None,
                details: [("check".to_owned(), "su binary".to_owned())].into(),
            },
            &tokens.access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .event_id;
    // The CLI signs in again for a token with the owner role (this ends the session above).
    let (ok, _, err) = run(&["login"]).await;
    assert!(ok, "{err}");

    let (ok, out, err) = run(&["admin", "audit", "verify"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("audit chain intact"), "{out}");
    let (ok, out, err) = run(&[
        "admin",
        "audit",
        "list",
        "--kind",
        "OWNER_CLAIMED",
        "--kind",
        "SECURITY_EVENT_REPORTED",
        "--oldest-first",
    ])
    .await;
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains("OWNER_CLAIMED"), "{out}");
    assert!(
        lines[1].contains("SECURITY_EVENT_REPORTED") && lines[1].contains(&event_id),
        "{out}"
    );

    let (ok, out, err) = run(&[
        "admin",
        "security-events",
        "list",
        "--type",
        "root-detected",
        "--min-severity",
        "medium",
    ])
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&event_id) && out.contains("SECURITY_EVENT_TYPE_ROOT_DETECTED"),
        "{out}"
    );
    let (ok, out, err) = run(&[
        "admin",
        "security-events",
        "list",
        "--type",
        "tamper-detected",
    ])
    .await;
    assert!(ok, "{err}");
    assert!(out.is_empty(), "{out}");

    let file = dir.path().join("events.jsonl");
    let (ok, _, err) = run(&[
        "admin",
        "security-events",
        "export",
        "--output",
        file.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["event_id"], event_id.as_str());
    assert_eq!(lines[0]["type"], "ROOT_DETECTED");
    assert_eq!(lines[0]["details"]["check"], "su binary");
}
