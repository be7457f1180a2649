//! Test support: the PostgreSQL every test of a process shares.
//!
//! `GUARDYN_TEST_POSTGRES_URL` names an existing server (a database the tests may create
//! databases in); otherwise the first caller starts a throw-away cluster on loopback with
//! `initdb` and `postgres` from `PATH`, `/usr/local/bin` or `/usr/lib/postgresql/*/bin`, as
//! `nobody` when running as root (initdb refuses root). The server runs under a small shell
//! that holds a pipe from this process: when the test process exits, however it exits, the
//! pipe closes, the shell stops the server (fast shutdown) and removes its directory.
//!
//! A machine without PostgreSQL skips these tests with a notice ([`shared_or_skip`]), except
//! in CI (`CI=true`, where `.ci/run` installs it): there it is a failure, never a skip.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::PostgresConfig;

/// The shared server: its admin URL (database `postgres`) and what keeps it alive.
#[derive(Debug)]
pub struct Server {
    url: String,
    _keepalive: Option<Mutex<(Child, ChildStdin)>>,
}

impl Server {
    /// URL of the server's default database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A configuration for the default database, with a small pool.
    pub fn config(&self) -> PostgresConfig {
        config_for(&self.url)
    }

    /// Create an empty database of its own for one test and return a configuration for it.
    pub async fn fresh_database(&self) -> PostgresConfig {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "guardyn_t{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connecting to the test PostgreSQL");
        let conn = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creating a test database");
        drop(client);
        let _ = conn.await;
        config_for(&with_database(&self.url, &name))
    }
}

/// `url` with its database (path) replaced by `name`, query kept.
fn with_database(url: &str, name: &str) -> String {
    let (main, query) = url
        .split_once('?')
        .map_or((url, None), |(m, q)| (m, Some(q)));
    let authority = main.find("://").map_or(0, |i| i + 3);
    let base = main[authority..]
        .find('/')
        .map_or(main, |i| &main[..authority + i]);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

fn config_for(url: &str) -> PostgresConfig {
    PostgresConfig {
        url: url.to_owned(),
        pool_size: 4,
        purge_interval_ms: 500,
        ..PostgresConfig::default()
    }
}

/// The server every test of this process uses, started on first use; `None` (after a notice)
/// when PostgreSQL is not installed outside CI. A server that is installed but fails to start
/// panics.
pub fn shared_or_skip() -> Option<&'static Server> {
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    let server = SERVER.get_or_init(|| match std::env::var("GUARDYN_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(Server {
            url,
            _keepalive: None,
        }),
        _ if find("initdb").is_none() && std::env::var("CI").as_deref() != Ok("true") => None,
        _ => Some(start().unwrap_or_else(|e| {
            panic!(
                "no PostgreSQL for the tests: {e}. Install it (Debian: apt-get install -y \
                 postgresql) or set GUARDYN_TEST_POSTGRES_URL"
            )
        })),
    });
    if server.is_none() {
        eprintln!("skipping: PostgreSQL (initdb) is not installed and CI is not set");
    }
    server.as_ref()
}

fn find(binary: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/usr/local/bin"));
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut found: Vec<PathBuf> = versions
            .filter_map(Result::ok)
            .map(|v| v.path().join("bin"))
            .collect();
        found.sort();
        found.reverse();
        dirs.extend(found);
    }
    dirs.into_iter()
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args...`, through `runuser -u nobody --` when running as root.
fn as_server_user(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn start() -> Result<Server, String> {
    let initdb = find("initdb").ok_or("initdb not found")?;
    let postgres = find("postgres").ok_or("postgres not found")?;
    let root = is_root();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("guardyn-pg-{}-{nanos:x}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    if root {
        let ok = Command::new("chown")
            .arg("nobody")
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(format!("chown nobody {}", dir.display()));
        }
    }
    let data = dir.join("data");
    let out = as_server_user(root, &initdb)
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--no-locale",
            "-E",
            "UTF8",
        ])
        .output()
        .map_err(|e| format!("running initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))?
        .port();
    // The shell waits for EOF on its stdin (this process's end of the pipe), then stops the
    // server and removes the directory.
    let script = r#"
        "$1" -D "$2/data" -k "$2" -p "$3" -c listen_addresses=127.0.0.1 \
             -c max_connections=300 -c shared_buffers=32MB >"$2/server.log" 2>&1 &
        pid=$!
        read _unused
        kill -INT "$pid"
        wait "$pid"
        rm -rf "$2"
    "#;
    let mut child = as_server_user(root, Path::new("/bin/sh"))
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&postgres)
        .arg(&dir)
        .arg(port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting postgres: {e}"))?;
    let stdin = child.stdin.take().ok_or("no stdin pipe")?;
    let pid_file = data.join("postmaster.pid");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The postmaster writes "ready" into its pid file once it accepts connections.
        let ready = std::fs::read_to_string(&pid_file)
            .is_ok_and(|s| s.lines().any(|l| l.trim() == "ready"));
        if ready {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(format!("postgres exited ({status}): {log}"));
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            return Err(format!("postgres did not become ready within 60 s: {log}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Server {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        _keepalive: Some(Mutex::new((child, stdin))),
    })
}
