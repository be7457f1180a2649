//! `guardyn admin policy set`, `show` and `history` as an operator runs them: refused for a
//! plain account, then as an owner made through the real path (bootstrap code, ClaimOwner, a
//! new sign-in), with a bad value refused by the server naming the field.

use guardyn_testkit::TestServer;

use super::admin_cli::{Cli, make_owner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_sets_shows_and_lists_the_policy_from_the_cli() {
    let server = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&server, dir.path().join("owner.state"));
    let username = format!("policy{}", std::process::id());
    cli.ok(&["register", "--username", &username]).await;
    let set = [
        "admin",
        "policy",
        "set",
        "max_devices=3",
        "password.check_breached=true",
        "--reason",
        "fewer devices",
    ];

    cli.refused_without_role(&set).await;

    make_owner(&server, &username).await;
    cli.ok(&["login"]).await;

    let (ok, out, err) = cli.run(&set).await;
    assert!(ok, "{err}");
    assert!(out.contains("policy version 1 is current"), "{out}");
    let (ok, out, err) = cli.run(&["admin", "policy", "show"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("version 1 set at"), "{out}");
    assert!(out.contains("max_devices = 3"), "{out}");
    assert!(out.contains("password.check_breached = true"), "{out}");
    assert!(out.contains("mfa_required = false"), "{out}");

    let (ok, _, err) = cli
        .run(&["admin", "policy", "set", "colour=blue", "--reason", "x"])
        .await;
    assert!(!ok);
    assert!(err.contains("unknown policy value `colour`"), "{err}");
    let (ok, _, err) = cli
        .run(&["admin", "policy", "set", "max_devices=0", "--reason", "x"])
        .await;
    assert!(!ok);
    assert!(err.contains("max_devices"), "{err}");

    let (ok, out, err) = cli.run(&["admin", "policy", "history"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.contains("version 1 set at") && out.contains("fewer devices"),
        "{out}"
    );
}
