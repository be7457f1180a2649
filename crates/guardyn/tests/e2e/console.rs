//! The web admin console in a real browser: `guardyn serve` hosts the built `web/admin` with
//! `admin.console_dir`, the owner is made through the real path (`guardyn admin bootstrap`,
//! `claim-owner`), and `web/admin/test/console.mjs` drives Debian's Chromium headless through
//! playwright-core: a refused sign-in shows its code and reason, the owner signs in, suspends a
//! user (whose CLI session is then refused), verifies the audit chain and watches the live
//! monitoring charts. The screenshots land in `target/console-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const PASSWORD: &str = "correct horse battery staple";
const INSTANCE: &str = "console-node";

fn web_admin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web/admin")
}

/// Node, Chromium and the console's npm packages (`npm ci --prefix web/admin`, done by
/// `.ci/run`); outside CI a missing one skips the test.
fn tools_present() -> bool {
    if !(super::tool("node") && super::tool("chromium")) {
        return false;
    }
    let installed = web_admin().join("node_modules/.bin/esbuild").exists();
    if !installed {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "web/admin/node_modules is required in CI: .ci/run installs it"
        );
        eprintln!("skipping: run `npm ci --prefix web/admin`");
    }
    installed
}

async fn run(mut cmd: tokio::process::Command) -> Output {
    cmd.stdin(Stdio::null());
    tokio::time::timeout(Duration::from_secs(180), cmd.output())
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

/// The `guardyn` client with the test's secrets, against `url` with the state file `state`.
fn client(args: &[&str], url: &str, state: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_guardyn"));
    cmd.args(args)
        .arg("--server")
        .arg(url)
        .arg("--state")
        .arg(state)
        .env("GDN_PASSWORD", PASSWORD)
        .env("GDN_STATE_PASSPHRASE", "a state passphrase");
    cmd
}

async fn ok(cmd: tokio::process::Command) -> String {
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn wait_serving(port: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let serving = async {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
                    .ok()?
                    .connect()
                    .await
                    .ok()?;
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .ok()?
                .into_inner()
                .status;
            Some(status == ServingStatus::Serving as i32)
        };
        if serving.await == Some(true) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never turned SERVING"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_suspends_a_user_verifies_the_audit_chain_and_watches_monitoring_in_chromium() {
    if !tools_present() {
        return;
    }
    // The build generates the TypeScript from proto/ first, so the page matches this tree.
    let mut build = tokio::process::Command::new("node");
    build.arg("build.mjs").current_dir(web_admin());
    ok(build).await;

    let dir = tempfile::tempdir().unwrap();
    let (port, console_port) = (super::free_port(), super::free_port());
    let config = dir.path().join("guardyn.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nport = {port}\ninstance_id = \"{INSTANCE}\"\n\
             [server.cors]\nallowed_origins = [\"http://127.0.0.1:{console_port}\"]\n\
             [metrics]\nenabled = false\n\
             [storage]\ndata_dir = {data:?}\n\
             [monitoring]\nbeacon_interval_secs = 1\n\
             [admin]\nconsole_dir = {dist:?}\nconsole_listen = \"127.0.0.1:{console_port}\"\n\
             [auth.argon2]\nmemory_kib = 1024\niterations = 1\n",
            data = dir.path().join("data").to_str().unwrap(),
            dist = web_admin().join("dist").to_str().unwrap(),
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let _server = super::guardyn()
        .args(["--config", config, "serve"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .unwrap();
    wait_serving(port).await;

    let url = format!("http://127.0.0.1:{port}");
    let pid = std::process::id();
    let (owner, user) = (format!("owner{pid}"), format!("user{pid}"));
    let (owner_state, user_state) = (
        dir.path().join("owner.state"),
        dir.path().join("user.state"),
    );
    ok(client(
        &["register", "--username", &owner],
        &url,
        &owner_state,
    ))
    .await;
    ok(client(
        &["register", "--username", &user],
        &url,
        &user_state,
    ))
    .await;
    let mut bootstrap = tokio::process::Command::new(env!("CARGO_BIN_EXE_guardyn"));
    bootstrap.args(["--config", config, "admin", "bootstrap"]);
    let code = ok(bootstrap)
        .await
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut claim = client(&["admin", "claim-owner"], &url, &owner_state);
    claim.env("GDN_OWNER_CODE", &code);
    ok(claim).await;
    // The user's CLI session works before the browser suspends the account.
    ok(client(&["discoverable", "true"], &url, &user_state)).await;

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let mut browser = tokio::process::Command::new("node");
    browser
        .arg("test/console.mjs")
        .current_dir(web_admin())
        .env("CONSOLE_URL", format!("http://127.0.0.1:{console_port}/"))
        .env("ADMIN_USER", &owner)
        .env("ADMIN_PASSWORD", PASSWORD)
        .env("TARGET_USER", &user)
        .env("INSTANCE_ID", INSTANCE)
        .env("SCREENSHOTS", &shots);
    let out = run(browser).await;
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("CONSOLE OK"), "{report}");
    eprintln!("{report}");

    let refused = run(client(&["discoverable", "true"], &url, &user_state)).await;
    assert!(
        !refused.status.success(),
        "the suspended user's session still works"
    );
    let said = text(&refused);
    assert!(
        said.contains("SESSION_REVOKED") || said.contains("ACCOUNT_SUSPENDED"),
        "{said}"
    );
    let login = run(client(&["login"], &url, &user_state)).await;
    assert!(!login.status.success());
    assert!(
        text(&login).to_lowercase().contains("suspended"),
        "{}",
        text(&login)
    );

    for shot in [
        "01-sign-in-refused.png",
        "02-user-suspended.png",
        "03-audit-verified.png",
        "04-monitoring-live.png",
    ] {
        let len = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 1000, "screenshot {shot} missing or empty");
    }
}

/// The server child, killed when the test ends (also on a failed assertion).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
