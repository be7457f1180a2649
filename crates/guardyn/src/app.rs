//! Assembles the selected services, their storage and event bus into one server.
//!
//! Services join [`SERVICES`] as their issues land; nothing is registered that does not work.

use std::sync::Arc;

use anyhow::Context as _;
use guardyn_common::clock::{SharedClock, SystemClock};
use guardyn_common::mesh::{self, RemoteKeySource};
use guardyn_common::server::{self, ServerContext, ServiceSet};
use guardyn_storage::AppendLog;
use guardyn_storage_embedded::EmbeddedStore;
use tokio::net::TcpListener;

use crate::config::{Config, StorageBackend};

/// Services this build can host, by `--service` name.
pub const SERVICES: &[&str] = &["auth", "messaging", "presence"];

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
    pub clock: SharedClock,
    /// The accounts' current devices for messaging. Set by the host (tests inject a double
    /// through the testkit) until auth provides it in-process; without it messaging refuses to
    /// start.
    pub device_directory: Option<Arc<dyn mesh::DeviceDirectory>>,
}

impl App {
    /// Open storage and the bus, and start fetching verification keys when auth is remote.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`App::build`] with a chosen clock (tests move a manual one).
    pub async fn build_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<Self> {
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
        spawn_revocation_listener(bus.clone(), ctx.clone()).await?;
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
            clock,
            device_directory: None,
        })
    }

    /// The gRPC services for a `--service` selection (empty = all), with whatever background
    /// tasks they need started.
    pub async fn services(&self, selected: &[String]) -> anyhow::Result<ServiceSet> {
        check_selection(selected).map_err(anyhow::Error::msg)?;
        #[allow(unused_variables)] // Used as services land.
        let wanted = |name: &str| selected.is_empty() || selected.iter().any(|s| s == name);
        #[allow(unused_mut)]
        let mut set = ServiceSet::new();
        // One block per service, in SERVICES order.
        let mut device_directory = self.device_directory.clone();
        if wanted("auth") {
            let auth = guardyn_auth::register(
                &self.config.auth,
                &self.config.tokens,
                &self.config.server,
                guardyn_auth::Deps {
                    kv: self.store.clone(),
                    log: self.store.clone(),
                    bus: self.bus.clone(),
                    clock: self.clock.clone(),
                    ctx: self.ctx.clone(),
                    data_dir: self.config.storage.data_dir.clone(),
                },
                &mut set,
            )
            .await?;
            device_directory.get_or_insert(auth.directory);
        }
        if wanted("messaging") {
            // Messaging checks every send against auth's device directory; without one it
            // cannot work, so it is not served: an explicit `--service messaging` fails, the
            // implicit "every service" selection leaves it out with an error in the log.
            match device_directory.clone() {
                Some(directory) => {
                    guardyn_messaging::register(
                        &self.config.messaging,
                        &self.config.server,
                        guardyn_messaging::Deps {
                            kv: self.store.clone(),
                            log: self.store.clone(),
                            bus: self.bus.clone(),
                            clock: self.clock.clone(),
                            ctx: self.ctx.clone(),
                            directory,
                        },
                        &mut set,
                    )
                    .await?;
                }
                None if selected.is_empty() => tracing::error!(
                    "messaging is not served: no device directory (auth is not hosted here)"
                ),
                None => anyhow::bail!(
                    "messaging needs the auth service's device directory: host auth in this \
                     process; refusing to start without it"
                ),
            }
        }
        if wanted("presence") {
            guardyn_presence::register(
                &self.config.presence,
                &self.config.server,
                guardyn_presence::Deps {
                    kv: self.store.clone(),
                    log: self.store.clone(),
                    bus: self.bus.clone(),
                    clock: self.clock.clone(),
                    ctx: self.ctx.clone(),
                },
                &mut set,
            )
            .await?;
        }
        Ok(set)
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

/// Every process honours session revocations published on the bus (`auth.session.revoked`),
/// whether or not it hosts auth, so a revoked session's tokens stop working everywhere within
/// seconds. The subscription is taken before serving starts; the task ends at shutdown.
async fn spawn_revocation_listener(
    bus: Arc<dyn guardyn_events::EventBus>,
    ctx: ServerContext,
) -> anyhow::Result<()> {
    use guardyn_proto::guardyn::auth::v1::SessionRevokedEvent;
    use prost::Message as _;
    use tokio_stream::StreamExt as _;
    let mut sub = bus
        .subscribe(guardyn_auth::subjects::SESSION_REVOKED)
        .await
        .context("subscribing to session revocations")?;
    tokio::spawn(async move {
        loop {
            let delivery = tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                d = sub.next() => d,
            };
            match delivery {
                Some(guardyn_events::Delivery::Event(event)) => {
                    match SessionRevokedEvent::decode(event.payload().clone()) {
                        Ok(r) => ctx
                            .verifier
                            .revocations()
                            .revoke(&r.session_id, r.tokens_valid_until),
                        Err(e) => tracing::warn!(error = %e, "undecodable session revocation"),
                    }
                }
                Some(guardyn_events::Delivery::Lagged { missed }) => {
                    tracing::warn!(missed, "missed session revocations (subscriber lagged)");
                }
                None => return,
            }
        }
    });
    Ok(())
}
