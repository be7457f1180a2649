//! The admin service in its own process (`--service admin`): its account administration is
//! auth's, over the internal contract on auth's mesh listener. The first owner is enrolled
//! with the real command line while both servers run (`guardyn admin bootstrap` writes the
//! code's hash into the admin process's data directory), then suspends an account with
//! `guardyn admin users`: auth ends its session and refuses its sign-in.

use std::path::Path;
use std::process::Output;

use guardyn_testkit::{Options, TestServer};

use super::gateway::{Upstreams, gateway_url};
use super::mesh::{PASSWORD, fast_auth};

const PASSPHRASE: &str = "state passphrase";

/// Run the `guardyn` binary with the client secrets in its environment.
async fn guardyn(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_guardyn"));
    cmd.args(args)
        .env("GDN_PASSWORD", PASSWORD)
        .env("GDN_STATE_PASSPHRASE", PASSPHRASE)
        .stdin(std::process::Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    tokio::time::timeout(std::time::Duration::from_secs(120), cmd.output())
        .await
        .expect("the command finishes")
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn ok(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = guardyn(args, envs).await;
    assert!(out.status.success(), "guardyn {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `register` prints "registered NAME: account id UUID (device N)".
async fn register(url: &str, state: &Path, name: &str) -> String {
    let state = state.to_str().unwrap();
    let out = ok(
        &[
            "register",
            "--server",
            url,
            "--state",
            state,
            "--username",
            name,
        ],
        &[],
    )
    .await;
    out.split("account id ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("an account id")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_alone_administers_auths_accounts_over_the_mesh_from_the_command_line() {
    let a = TestServer::start_with(Options {
        services: vec!["auth".into()],
        configure: Some(Box::new(|c| {
            fast_auth(c);
            c.mesh.listen = "127.0.0.1:0".into();
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    let mesh = a.mesh_addr.expect("A binds its mesh listener");
    let auth_public = a.addr;

    // Without the seam configured, an admin-only process refuses to start and names the key.
    let refused = TestServer::start_with(Options {
        services: vec!["admin".into()],
        configure: Some(Box::new(move |c| {
            c.mesh.auth_addresses = vec![format!("http://{auth_public}")];
        })),
        ..Options::default()
    })
    .await
    .unwrap_err();
    assert!(
        format!("{refused:#}").contains("mesh.account_admin_addresses"),
        "{refused:#}"
    );

    let b = TestServer::start_with(Options {
        services: vec!["admin".into()],
        configure: Some(Box::new(move |c| {
            c.mesh.auth_addresses = vec![format!("http://{auth_public}")];
            c.mesh.account_admin_addresses = vec![format!("http://{mesh}")];
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    assert!(b.hosts("guardyn.admin.v1.AdminUserService"));
    assert!(!b.hosts("guardyn.auth.v1.AuthService"));
    let url = gateway_url(Upstreams {
        auth: vec![a.channel()],
        admin: vec![b.channel()],
        ..Upstreams::default()
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let boss_state = dir.path().join("boss.state");
    let alice_state = dir.path().join("alice.state");
    let pid = std::process::id();
    register(&url, &boss_state, &format!("boss{pid}")).await;
    let alice_name = format!("alice{pid}");
    let alice = register(&url, &alice_state, &alice_name).await;

    // `bootstrap` on the admin process's host, with its configuration, while it runs.
    let config = dir.path().join("guardyn.toml");
    let data_dir = b.data_dir().join("data");
    std::fs::write(
        &config,
        format!("[storage]\ndata_dir = {:?}\n", data_dir.to_str().unwrap()),
    )
    .unwrap();
    let printed = ok(
        &["admin", "bootstrap", "--config", config.to_str().unwrap()],
        &[],
    )
    .await;
    let code = printed.lines().next().unwrap().trim().to_owned();
    assert_eq!(code.len(), 39, "{printed}");

    let boss = [
        "--server",
        url.as_str(),
        "--state",
        boss_state.to_str().unwrap(),
    ];
    let claim: Vec<&str> = ["admin", "claim-owner"].into_iter().chain(boss).collect();
    ok(&claim, &[("GDN_OWNER_CODE", code.as_str())]).await;
    // Single use.
    let again = guardyn(&claim, &[("GDN_OWNER_CODE", code.as_str())]).await;
    assert!(!again.status.success());

    let list: Vec<&str> = ["admin", "users", "list"].into_iter().chain(boss).collect();
    let listed = ok(&list, &[]).await;
    assert!(listed.contains(&alice_name), "{listed}");
    assert!(listed.contains("roles=owner"), "{listed}");

    let suspend: Vec<&str> = ["admin", "users", "suspend", alice.as_str()]
        .into_iter()
        .chain(boss)
        .chain(["--reason", "mesh test"])
        .collect();
    let out = ok(&suspend, &[]).await;
    assert!(out.contains("1 sessions ended"), "{out}");
    let alice_args = [
        "--server",
        url.as_str(),
        "--state",
        alice_state.to_str().unwrap(),
    ];
    let login: Vec<&str> = ["login"].into_iter().chain(alice_args).collect();
    let denied = guardyn(&login, &[]).await;
    assert!(!denied.status.success());
    assert!(
        text(&denied).to_lowercase().contains("suspended"),
        "{}",
        text(&denied)
    );

    let unsuspend: Vec<&str> = ["admin", "users", "unsuspend", alice.as_str()]
        .into_iter()
        .chain(boss)
        .chain(["--reason", "cleared"])
        .collect();
    ok(&unsuspend, &[]).await;
    ok(&login, &[]).await;

    // The admin process audited both actions with the owner as actor and the reasons.
    let entries = guardyn_audit::entries(&*b.kv()).await.unwrap();
    let suspended = entries
        .iter()
        .find(|e| e.kind == guardyn_audit::AuditKind::AccountSuspended)
        .expect("the suspension is audited");
    assert_eq!(suspended.account_id, alice);
    assert_eq!(suspended.reason, "mesh test");
    assert!(suspended.actor.is_some());
}
