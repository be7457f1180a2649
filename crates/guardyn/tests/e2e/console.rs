//! The web admin console in a real browser: `guardyn serve` hosts the built `web/admin` with
//! `admin.console_dir`, the owner is made through the real path (`guardyn admin bootstrap`,
//! `claim-owner`, TOTP enrolled through the SDK), and `web/admin/test/console.mjs` drives
//! Debian's Chromium headless through playwright-core: a refused sign-in shows its code and
//! reason, a wrong TOTP code is refused on screen, the owner signs in with password and TOTP,
//! suspends a user (whose CLI session is then refused), verifies the audit chain and watches
//! the live monitoring charts, the message rate rising while this harness sends messages with
//! the CLI. The screenshots land in `target/console-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

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

/// Unpadded RFC 4648 base32, as BeginTotpEnrollment returns the secret.
fn base32(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .unwrap() as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    out
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Enrol TOTP for the account of the CLI state `state` (through the SDK on the same state
/// file); returns the secret. The enrolment is confirmed with the previous step's code (one
/// step of skew is accepted), so every code of the current step is still unused for sign-in.
async fn enrol_totp(url: &str, state: &Path) -> Vec<u8> {
    let channel = guardyn_sdk::connect(url).await.unwrap();
    let owner = guardyn_sdk::Client::open(
        channel,
        guardyn_sdk::Storage::File {
            path: state.to_owned(),
            key: guardyn_sdk::StateKey::Passphrase(zeroize::Zeroizing::new(
                "a state passphrase".into(),
            )),
        },
        guardyn_sdk::ClientConfig::default(),
    )
    .await
    .unwrap();
    owner.step_up(PASSWORD, None).await.unwrap();
    let secret = base32(&owner.begin_totp_enrollment().await.unwrap().secret);
    let previous = guardyn_auth::totp_code(&secret, now_s() - 30);
    owner.confirm_totp_enrollment(&previous).await.unwrap();
    secret
}

/// A six-digit code valid at no step the server accepts now.
fn wrong_code(secret: &[u8]) -> String {
    let now = now_s();
    let valid = [now - 30, now, now + 30].map(|t| guardyn_auth::totp_code(secret, t));
    (0..)
        .map(|n| format!("{n:06}"))
        .find(|c| !valid.contains(c))
        .unwrap()
}

/// Run `web/admin/test/console.mjs`, answering its `NEED` lines: TOTP codes on its stdin, and
/// `messages` by sending messages from `sender` to `@peer` with the CLI until it exits.
/// Returns its exit status, everything else it printed, and how many messages were sent.
async fn drive_browser(
    mut browser: tokio::process::Command,
    secret: &[u8],
    send: impl Fn() -> tokio::process::Command + Send + Sync + 'static,
) -> (bool, String, u32) {
    let mut child = browser
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU32::new(0));
    let send = Arc::new(send);
    let mut printed = String::new();
    let talk = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let answer = match line.as_str() {
                "NEED totp" => Some(guardyn_auth::totp_code(secret, now_s())),
                "NEED totp-wrong" => Some(wrong_code(secret)),
                "NEED messages" => {
                    let (stop, sent, send) = (stop.clone(), sent.clone(), send.clone());
                    // One send at a time, at most 60: the rate only has to show.
                    tokio::spawn(async move {
                        while !stop.load(Ordering::Relaxed) && sent.load(Ordering::Relaxed) < 60 {
                            let out = run(send()).await;
                            assert!(out.status.success(), "send: {}", text(&out));
                            sent.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                    None
                }
                _ => {
                    printed.push_str(&line);
                    printed.push('\n');
                    None
                }
            };
            if let Some(answer) = answer {
                stdin
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .unwrap();
                stdin.flush().await.unwrap();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(400), talk)
        .await
        .expect("the browser test finishes");
    stop.store(true, Ordering::Relaxed);
    drop(stdin);
    let status = child.wait().await.unwrap();
    printed.push_str(&errors.await.unwrap());
    (status.success(), printed, sent.load(Ordering::Relaxed))
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
    let (sender, peer) = (format!("sender{pid}"), format!("peer{pid}"));
    let (sender_state, peer_state) = (
        dir.path().join("sender.state"),
        dir.path().join("peer.state"),
    );
    for (name, state) in [(&sender, &sender_state), (&peer, &peer_state)] {
        ok(client(&["register", "--username", name], &url, state)).await;
    }
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
    let secret = enrol_totp(&url, &owner_state).await;

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
    let send = {
        let (url, to) = (url.clone(), format!("@{peer}"));
        move || {
            client(
                &["send", &to, "a message the console charts"],
                &url,
                &sender_state,
            )
        }
    };
    let (passed, report, sent) = drive_browser(browser, &secret, send).await;
    assert!(passed, "{report}");
    assert!(report.contains("CONSOLE OK"), "{report}");
    assert!(sent > 0, "no message was sent");
    eprintln!("{report}\nmessages sent while the page watched: {sent}");

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
        "02-totp-refused.png",
        "03-user-suspended.png",
        "04-audit-verified.png",
        "05-monitoring-live.png",
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
