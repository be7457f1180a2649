//! Starts the real Guardyn server in-process for tests: the same [`guardyn::app::App`] the
//! binary runs, on `127.0.0.1:0`, with a temporary data directory, and hands back a connected
//! channel for the generated clients.
//!
//! Test-only crate: nothing in production may depend on it.

pub mod child;
pub mod interop;
pub mod rpc;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use guardyn::app::App;
use guardyn::config::Config;
use std::sync::Arc;

use guardyn_common::auth::{TokenConfig, TokenGrant, TokenSigner};
use guardyn_common::clock::SharedClock;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// A real `nats-server` on a free loopback port (skips or fails per the CI rule).
pub use guardyn_events::testing::NatsServer;

/// A running server. Dropping it stops the server without waiting; [`TestServer::stop`] waits
/// for the graceful shutdown.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// The mesh listener (internal services), when `mesh.listen` is set.
    pub mesh_addr: Option<SocketAddr>,
    channel: Channel,
    signal: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    signer: TokenSigner,
    hosted: Vec<String>,
    stores: guardyn_storage::Stores,
    bus: Arc<dyn guardyn_events::EventBus>,
    // Kept last so the directory outlives the server task's handles.
    data_dir: TempDir,
}

/// A configuration tweak applied before the server starts.
pub type ConfigureFn = Box<dyn FnOnce(&mut Config) + Send>;

/// How to start a [`TestServer`].
#[derive(Default)]
pub struct Options {
    /// `--service` selection; empty = every service.
    pub services: Vec<String>,
    /// Adjust the configuration (after the test defaults are applied).
    pub configure: Option<ConfigureFn>,
    /// Serve the metrics endpoint on a free port.
    pub metrics: bool,
    /// The server's clock; a `ManualClock` lets tests move time.
    pub clock: Option<SharedClock>,
    /// The device directory messaging checks sends against ([`App::device_directory`]); a
    /// test double until auth provides it in-process.
    pub directory: Option<Arc<dyn guardyn_common::mesh::DeviceDirectory>>,
    /// Serve from this existing data directory instead of a fresh temporary one, so a test can
    /// restart a server on the data a previous one left (the previous one must be stopped).
    pub data_dir: Option<std::path::PathBuf>,
    /// Serve without the engine's joint store ([`guardyn_storage::Stores::joint`]), as on an
    /// engine that lacks one (TiKV beside ScyllaDB): services take their stepwise write paths.
    pub without_joint: bool,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("services", &self.services)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Default options with a configuration tweak.
    pub fn configure(f: impl FnOnce(&mut Config) + Send + 'static) -> Self {
        Self {
            configure: Some(Box::new(f)),
            ..Self::default()
        }
    }
}

impl TestServer {
    /// Every service, default test configuration.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir().context("temp data dir")?;
        let mut config = Config::default();
        config.server.port = 0;
        config.server.shutdown_grace_ms = 2_000;
        config.storage.data_dir = options
            .data_dir
            .unwrap_or_else(|| data_dir.path().join("data"));
        config.metrics.port = 0;
        config.metrics.enabled = options.metrics;
        // A fixed `instance` label, so tests can name whole metric lines.
        config.server.instance_id = "testkit".to_owned();
        if let Some(f) = options.configure {
            f(&mut config);
        }
        let tls = config.server.tls.enabled;
        let listener = tokio::net::TcpListener::bind(config.server.addr()).await?;
        let addr = listener.local_addr()?;
        let metrics_listener = if config.metrics.enabled {
            Some(tokio::net::TcpListener::bind(config.metrics.addr()).await?)
        } else {
            None
        };
        let metrics_addr = metrics_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;

        let signer = TokenSigner::generate("testkit", &config.tokens);
        let clock = options
            .clock
            .unwrap_or_else(|| Arc::new(guardyn_common::clock::SystemClock));
        let mut app = App::build_with_clock(config, clock).await?;
        if options.directory.is_some() {
            app.seams.device_directory = options.directory;
        }
        if options.without_joint {
            app.handles.stores.joint = None;
        }
        let stores = app.handles.stores.clone();
        let bus = app.handles.bus.clone();
        app.handles
            .ctx
            .verifier
            .add_keys([signer.verification_key()]);
        let services = app.services(&options.services).await?;
        let mesh_addr = app.mesh_addr();
        let hosted = services.names().iter().map(|s| (*s).to_owned()).collect();
        let signal = CancellationToken::new();
        let stop = signal.clone();
        let handle = tokio::spawn(async move {
            app.serve(listener, metrics_listener, services, async move {
                stop.cancelled().await
            })
            .await
        });

        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(5));
        // A TLS server needs the test's own client configuration: hand out a lazy plaintext
        // channel the test will not use.
        let channel = if tls {
            endpoint.connect_lazy()
        } else {
            endpoint
                .connect()
                .await
                .context("connecting to the test server")?
        };
        Ok(Self {
            addr,
            metrics_addr,
            mesh_addr,
            channel,
            signal,
            handle: Some(handle),
            signer,
            hosted,
            stores,
            bus,
            data_dir,
        })
    }

    /// Whether the server hosts this fully qualified gRPC service.
    pub fn hosts(&self, service: &str) -> bool {
        self.hosted.iter().any(|s| s == service)
    }

    /// Fully qualified names of the hosted gRPC services (health and reflection excluded).
    pub fn hosted(&self) -> &[String] {
        &self.hosted
    }

    /// A channel to the server, for any generated client.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The metrics endpoint's text (the server must have `metrics.enabled`).
    pub async fn scrape_metrics(&self) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let addr = self.metrics_addr.context("metrics are not enabled")?;
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        Ok(body)
    }

    /// The server's key-value store, for tests that inspect or plant what is persisted.
    pub fn kv(&self) -> Arc<dyn guardyn_storage::KvStore> {
        self.stores.kv.clone()
    }

    /// The server's storage handle.
    pub fn stores(&self) -> guardyn_storage::Stores {
        self.stores.clone()
    }

    /// The server's append log.
    pub fn log(&self) -> Arc<dyn guardyn_storage::AppendLog> {
        self.stores.log.clone()
    }

    /// The server's event bus, to observe or inject events.
    pub fn bus(&self) -> Arc<dyn guardyn_events::EventBus> {
        self.bus.clone()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// An access token for any identity, signed by a key the server trusts.
    pub fn token(&self, account_id: &str, device_id: u32, session_id: &str) -> String {
        self.token_with_ttl(account_id, device_id, session_id, Duration::from_secs(900))
    }

    /// [`TestServer::token`] with a chosen lifetime. `Duration::ZERO` mints a token that is
    /// expired once a second has passed beyond the server's `tokens.leeway_secs`.
    pub fn token_with_ttl(
        &self,
        account_id: &str,
        device_id: u32,
        session_id: &str,
        ttl: Duration,
    ) -> String {
        self.signer
            .sign(&TokenGrant {
                account_id: account_id.to_owned(),
                device_id,
                session_id: session_id.to_owned(),
                roles: vec!["user".to_owned()],
                ttl,
            })
            .unwrap_or_else(|e| panic!("testkit signer failed: {e}"))
    }

    /// An access token carrying `roles` (claim values such as "admin"), for tests of
    /// role-gated RPCs that do not exercise how roles are granted.
    pub fn token_with_roles(
        &self,
        account_id: &str,
        device_id: u32,
        session_id: &str,
        roles: &[&str],
    ) -> String {
        self.signer
            .sign(&TokenGrant {
                account_id: account_id.to_owned(),
                device_id,
                session_id: session_id.to_owned(),
                roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                ttl: Duration::from_secs(900),
            })
            .unwrap_or_else(|e| panic!("testkit signer failed: {e}"))
    }

    /// A signer trusted by nobody, for forged-token tests.
    pub fn untrusted_signer() -> TokenSigner {
        TokenSigner::generate("testkit", &TokenConfig::default())
    }

    /// Trigger graceful shutdown and wait for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.signal.cancel();
        match self.handle.take() {
            Some(h) => h.await.context("server task panicked")?,
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.signal.cancel();
    }
}
