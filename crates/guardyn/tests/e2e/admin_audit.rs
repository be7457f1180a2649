//! `guardyn admin audit list|verify` and `guardyn admin security-events list|export` as an
//! operator runs them: an owner made through the real path (bootstrap code, ClaimOwner, a new
//! sign-in), then the CLI with its state file.

use guardyn_proto::guardyn::admin::v1 as admin;
use guardyn_proto::guardyn::admin::v1::security_event_service_client::SecurityEventServiceClient;
use guardyn_testkit::TestServer;
use guardyn_testkit::rpc::authed;

use super::admin_cli::{Cli, make_owner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_reads_and_verifies_the_audit_log_and_exports_security_events_from_the_cli() {
    let server = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&server, dir.path().join("owner.state"));
    let username = format!("auditowner{}", std::process::id());
    cli.ok(&["register", "--username", &username]).await;

    // A plain user is refused.
    cli.refused_without_role(&["admin", "audit", "verify"])
        .await;

    let access_token = make_owner(&server, &username).await;
    // A device reports an event (any signed-in device may).
    let event_id = SecurityEventServiceClient::new(server.channel())
        .report_security_event(authed(
            admin::ReportSecurityEventRequest {
                r#type: admin::SecurityEventType::RootDetected.into(),
                severity: admin::SecuritySeverity::High.into(),
                occurred_at: None,
                details: [("check".to_owned(), "su binary".to_owned())].into(),
            },
            &access_token,
        ))
        .await
        .unwrap()
        .into_inner()
        .event_id;
    // The CLI signs in again for a token with the owner role (this ends the session above).
    cli.ok(&["login"]).await;

    let (ok, out, err) = cli.run(&["admin", "audit", "verify"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("audit chain intact"), "{out}");
    let (ok, out, err) = cli
        .run(&[
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

    let (ok, out, err) = cli
        .run(&[
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
    let (ok, out, err) = cli
        .run(&[
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
    let (ok, _, err) = cli
        .run(&[
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
