//! Starts the real Guardyn server in-process for tests: the same [`guardyn::app::App`] the
//! binary runs, on `127.0.0.1:0`, with a temporary data directory, and hands back a connected
//! channel for the generated clients.
//!
//! Test-only crate: nothing in production may depend on it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use guardyn::app::App;
use guardyn::config::Config;
use guardyn_common::auth::{TokenConfig, TokenGrant, TokenSigner};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// A running server. Dropping it stops the server without waiting; [`TestServer::stop`] waits
/// for the graceful shutdown.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    channel: Channel,
    signal: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    signer: TokenSigner,
    hosted: Vec<String>,
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
        config.storage.data_dir = data_dir.path().join("data");
        config.metrics.port = 0;
        config.metrics.enabled = options.metrics;
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
        let app = App::build(config).await?;
        app.ctx.verifier.add_keys([signer.verification_key()]);
        let services = app.services(&options.services)?;
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
            channel,
            signal,
            handle: Some(handle),
            signer,
            hosted,
            data_dir,
        })
    }

    /// Whether the server hosts this fully qualified gRPC service.
    pub fn hosts(&self, service: &str) -> bool {
        self.hosted.iter().any(|s| s == service)
    }

    /// A channel to the server, for any generated client.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// An access token for any identity, signed by a key the server trusts.
    pub fn token(&self, account_id: &str, device_id: u32, session_id: &str) -> String {
        self.signer
            .sign(&TokenGrant {
                account_id: account_id.to_owned(),
                device_id,
                session_id: session_id.to_owned(),
                roles: vec!["user".to_owned()],
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
