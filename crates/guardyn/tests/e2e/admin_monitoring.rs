//! `guardyn admin monitoring` as an operator runs it: refused to a plain user, then, for an
//! owner made through the real path (bootstrap code, ClaimOwner, a new sign-in), the instance's
//! figures, the cluster line and an alert crossed on purpose (memory above 0 %).

use guardyn_testkit::{Options, TestServer};

use super::admin_cli::{Cli, make_owner};

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
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli::new(&server, dir.path().join("owner.state"));
    let username = format!("monowner{}", std::process::id());
    cli.ok(&["register", "--username", &username]).await;

    cli.refused_without_role(&["admin", "monitoring"]).await;

    make_owner(&server, &username).await;
    cli.ok(&["login"]).await;

    // The first beacon is published at start; the alert follows it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let out = loop {
        let (ok, out, err) = cli.run(&["admin", "monitoring"]).await;
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
