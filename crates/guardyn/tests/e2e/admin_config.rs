//! `guardyn admin config publish` and `show` as an operator runs them: an account made owner
//! through the real path (bootstrap code, ClaimOwner, a new sign-in), then the CLI with its
//! state file.

use guardyn_testkit::TestServer;

use super::admin_cli::{Cli, make_owner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_publishes_and_shows_the_client_configuration_from_the_cli() {
    let server = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&server, dir.path().join("owner.state"));
    let username = format!("owner{}", std::process::id());
    cli.ok(&["register", "--username", &username]).await;
    let file = dir.path().join("config.json");
    std::fs::write(
        &file,
        r#"{"endpoints": ["https://chat.example"], "beta": false}"#,
    )
    .unwrap();
    let publish = [
        "admin",
        "config",
        "publish",
        file.to_str().unwrap(),
        "--reason",
        "first rollout",
    ];

    // A plain user is refused.
    cli.refused_without_role(&publish).await;

    // Made owner with a bootstrap code, the account signs in again for a token with the role.
    make_owner(&server, &username).await;
    cli.ok(&["login"]).await;

    let (ok, out, err) = cli.run(&publish).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("published client configuration version 1"),
        "{out}"
    );
    let (ok, out, err) = cli.run(&["admin", "config", "show"]).await;
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
