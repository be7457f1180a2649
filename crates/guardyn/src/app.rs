//! Assembles the selected services, their storage and event bus into one server.
//!
//! Services join [`SERVICES`] as their issues land; nothing is registered that does not work.

use std::sync::Arc;

use anyhow::Context as _;
use guardyn_common::mesh::{self, RemoteKeySource};
use guardyn_common::server::{self, ServerContext, ServiceSet};
use guardyn_storage::AppendLog;
use guardyn_storage_embedded::EmbeddedStore;
use tokio::net::TcpListener;

use crate::config::{Config, StorageBackend};

/// Services this build can host, by `--service` name.
pub const SERVICES: &[&str] = &[];

/// Check a `--service` selection against [`SERVICES`].
pub fn check_selection(selected: &[String]) -> Result<(), String> {
    for name in selected {
        if !SERVICES.contains(&name.as_str()) {
            let available = if SERVICES.is_empty() {
                "none yet".to_owned()
            } else {
                SERVICES.join(", ")
            };
            return Err(format!("unknown service {name:?} (available: {available})"));
        }
    }
    Ok(())
}

/// A process's shared handles, built once before serving.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub ctx: ServerContext,
    pub store: Arc<EmbeddedStore>,
    pub bus: Arc<dyn guardyn_events::EventBus>,
}

impl App {
    /// Open storage and the bus, and start fetching verification keys when auth is remote.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let store = match config.storage.backend {
            StorageBackend::Embedded => {
                EmbeddedStore::open(&config.storage.data_dir, Default::default())
                    .await
                    .with_context(|| {
                        format!(
                            "opening embedded storage in {}",
                            config.storage.data_dir.display()
                        )
                    })?
            }
        };
        let log: Arc<dyn AppendLog> = store.clone();
        let bus = guardyn_events::connect(&config.events.to_events_config(), log)
            .await
            .context("connecting the event bus")?;
        let ctx = ServerContext::new(&config.tokens);
        if !config.mesh.auth_addresses.is_empty() {
            let channel = mesh::channel(&config.mesh.auth_addresses, &config.mesh).await?;
            mesh::spawn_key_refresh(
                Arc::new(RemoteKeySource::new(channel, &config.mesh)),
                ctx.verifier.clone(),
                std::time::Duration::from_secs(config.mesh.key_refresh_secs),
                ctx.shutdown.clone(),
            );
        }
        Ok(Self {
            config,
            ctx,
            store,
            bus,
        })
    }

    /// The gRPC services for a `--service` selection (empty = all).
    pub fn services(&self, selected: &[String]) -> anyhow::Result<ServiceSet> {
        check_selection(selected).map_err(anyhow::Error::msg)?;
        Ok(ServiceSet::new())
    }

    /// Serve until `signal`, then shut down gracefully and close storage.
    pub async fn serve(
        self,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        services: ServiceSet,
        signal: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        if let Some(l) = metrics_listener {
            tokio::spawn(guardyn_common::metrics::serve_metrics(
                l,
                self.ctx.metrics.clone(),
                self.ctx.shutdown.clone(),
            ));
        }
        let result = server::serve(
            &self.config.server,
            listener,
            self.ctx.clone(),
            services,
            signal,
        )
        .await;
        self.ctx.shutdown.cancel();
        self.store.close().await;
        result.context("gRPC server")
    }
}
