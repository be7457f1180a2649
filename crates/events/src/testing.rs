//! Test support (feature `testing`): a throwaway `nats-server` with JetStream.
//!
//! ```ignore
//! let Some(server) = NatsServer::start_or_skip() else { return };
//! let config = NatsConfig { url: server.url.clone(), ..NatsConfig::default() };
//! ```

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for a freshly started server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `nats-server` child process on loopback, with JetStream storing into a temporary
/// directory. Killed (and its storage removed) on drop.
#[derive(Debug)]
pub struct NatsServer {
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    pub port: u16,
    /// HTTP monitoring port (`/varz`, `/subsz`, ...).
    pub monitor_port: u16,
    binary: PathBuf,
    store: tempfile::TempDir,
    child: Child,
}

impl NatsServer {
    /// Locates the `nats-server` binary: `$NATS_SERVER_BIN`, then `$PATH`, then the Debian
    /// package's `/usr/sbin`.
    pub fn binary() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
            let path = PathBuf::from(path);
            return path.is_file().then_some(path);
        }
        let path_dirs = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .unwrap_or_default();
        path_dirs
            .into_iter()
            .chain([
                "/usr/sbin".into(),
                "/usr/local/bin".into(),
                "/usr/bin".into(),
            ])
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    }

    /// Starts a server and waits until it accepts connections.
    pub fn start() -> io::Result<Self> {
        Self::start_on(free_port()?)
    }

    /// [`NatsServer::start`] on a chosen client port, e.g. one a process under test was told
    /// about before the server existed.
    pub fn start_on(port: u16) -> io::Result<Self> {
        let binary = Self::binary().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "nats-server not found: install it (`apt-get install nats-server`) or set NATS_SERVER_BIN",
            )
        })?;
        let store = tempfile::tempdir()?;
        let monitor_port = free_port()?;
        let child = spawn(&binary, port, monitor_port, store.path())?;
        let mut server = Self {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            monitor_port,
            binary,
            store,
            child,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Like [`NatsServer::start`], but when `nats-server` is not installed: panics if the
    /// environment variable `CI` is `true` (CI must install it), otherwise prints a notice and
    /// returns `None` so the calling test can return early.
    pub fn start_or_skip() -> Option<Self> {
        if Self::binary().is_none() {
            let msg = "nats-server is not installed (apt-get install nats-server, or set NATS_SERVER_BIN)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}; it is required when CI=true");
            }
            eprintln!("NOTICE: skipping NATS test: {msg}");
            return None;
        }
        match Self::start() {
            Ok(server) => Some(server),
            Err(e) => panic!("cannot start nats-server: {e}"),
        }
    }

    /// Stops the server gracefully (SIGTERM, so JetStream flushes its state) and starts it again
    /// on the same ports with the same JetStream storage, like a rolling restart in production.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.start_again()
    }

    /// Stops the server gracefully (SIGTERM) and waits until it exited: an outage until
    /// [`NatsServer::start_again`].
    pub fn stop(&mut self) {
        self.terminate();
    }

    /// Starts a [stopped](NatsServer::stop) server again on the same ports with the same
    /// JetStream storage.
    pub fn start_again(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        // The old process may hold the port for a moment after it died.
        loop {
            self.child = spawn(
                &self.binary,
                self.port,
                self.monitor_port,
                self.store.path(),
            )?;
            match self.wait_ready() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    self.kill();
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Total number of subscriptions the server knows (from `/subsz`), internal ones included.
    pub fn subscription_count(&self) -> io::Result<u64> {
        let body = http_get(self.monitor_port, "/subsz")?;
        let key = "\"num_subscriptions\":";
        let start = body
            .find(key)
            .ok_or_else(|| io::Error::other("no num_subscriptions in /subsz"))?
            + key.len();
        body[start..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| io::Error::other("bad num_subscriptions in /subsz"))
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "nats-server exited early: {status}"
                )));
            }
            // JetStream is ready once the monitoring endpoint answers, which happens after
            // the client port opened.
            if TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok()
                && http_get(self.monitor_port, "/healthz").is_ok_and(|b| b.contains("ok"))
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "nats-server did not start",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL if the server has not exited within [`START_TIMEOUT`].
    fn terminate(&mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if sent {
            let deadline = Instant::now() + START_TIMEOUT;
            while Instant::now() < deadline {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn(binary: &Path, port: u16, monitor_port: u16, store: &Path) -> io::Result<Child> {
    Command::new(binary)
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &monitor_port.to_string(),
        ])
        .arg("-js")
        .arg("-sd")
        .arg(store)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

/// A port that was free a moment ago (the usual bind-to-0 trick; a collision is possible but
/// shows up as a start failure, not as a wrong server).
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn http_get(port: u16, path: &str) -> io::Result<String> {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let mut stream = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}
