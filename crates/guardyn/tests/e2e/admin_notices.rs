//! `guardyn admin notices send` and `list` as operators and users run them: a plain user is
//! refused, the owner sends to everyone and to one account, and each account lists only what
//! was addressed to it.

use guardyn_testkit::TestServer;

use super::admin_cli::{Cli, make_owner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_sends_notices_from_the_cli_and_users_list_theirs() {
    let server = TestServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let owner = Cli::new(&server, dir.path().join("owner.state"));
    let user = Cli::new(&server, dir.path().join("user.state"));
    let pid = std::process::id();
    let owner_name = format!("nowner{pid}");
    owner.ok(&["register", "--username", &owner_name]).await;
    user.ok(&["register", "--username", &format!("nuser{pid}")])
        .await;
    let to_all = [
        "admin",
        "notices",
        "send",
        "Upgrade on Sunday",
        "--all",
        "--severity",
        "warning",
        "--reason",
        "maintenance window",
    ];
    user.refused_without_role(&to_all).await;

    make_owner(&server, &owner_name).await;
    owner.ok(&["login"]).await;
    let (ok, out, err) = owner.run(&to_all).await;
    assert!(ok, "{err}");
    assert!(out.contains("sent system notice"), "{out}");
    // A notice to another account does not reach the user.
    let (ok, _, err) = owner
        .run(&[
            "admin",
            "notices",
            "send",
            "Only for someone else",
            "--account",
            "5f0c8a52-4d0e-4a57-9a3b-3b7f2d1c9e11",
            "--reason",
            "targeted",
        ])
        .await;
    assert!(ok, "{err}");

    let (ok, out, err) = user.run(&["admin", "notices", "list"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("Upgrade on Sunday"), "{out}");
    assert!(out.contains("Warning"), "{out}");
    assert!(!out.contains("Only for someone else"), "{out}");
}
