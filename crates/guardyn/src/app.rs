//! Assembles the selected services, their storage and event bus into one server.
//!
//! Services join [`catalogue`] as their issues land; nothing is registered that does not work.

use std::sync::Arc;

use anyhow::Context as _;
use guardyn_common::auth::load_revocations;
use guardyn_common::clock::{SharedClock, SystemClock};
use guardyn_common::events::Payload as _;
use guardyn_common::events::auth::{
    SESSION_REVOKED, SIGNING_KEY_REVOKED, SessionRevoked, SigningKeyRevoked,
};
use guardyn_common::mesh::account_admin::RemoteAccountAdmin;
use guardyn_common::mesh::credentials::RemoteCredentialVerifier;
use guardyn_common::mesh::directory::RemoteDeviceDirectory;
use guardyn_common::mesh::{self, KeySource as _, RemoteKeySource};
use guardyn_common::server::{self, ServerContext, ServiceSet};
use guardyn_service::{Handles, RegisterError, Seams, Service};
use tokio::net::TcpListener;

use crate::config::{Config, EventsBackend, StorageConfig, StorageEngine};
use crate::wait::Waiter;

/// Services this build can host, by `--service` name, in registration order (a service that
/// provides a seam comes before those that take it).
pub const SERVICES: &[&str] = &[
    "auth",
    "messaging",
    "presence",
    "media",
    "notification",
    "admin",
];

/// Every service this build can host, built from its typed configuration, in [`SERVICES`]
/// order.
pub fn catalogue(config: &Config) -> Vec<Box<dyn Service>> {
    vec![
        Box::new(guardyn_auth::Auth::new(
            config.auth.clone(),
            config.tokens.clone(),
        )),
        Box::new(guardyn_messaging::Messaging::new(config.messaging.clone())),
        Box::new(guardyn_presence::Presence::new(config.presence.clone())),
        Box::new(guardyn_media::Media::new(config.media.clone())),
        Box::new(guardyn_notification::Notification::new(
            config.notification.clone(),
        )),
        Box::new(guardyn_admin::Admin::new(config.admin.clone())),
    ]
}

/// Check a `--service` selection against [`SERVICES`].
pub fn check_selection(selected: &[String]) -> Result<(), String> {
    for name in selected {
        if !SERVICES.contains(&name.as_str()) {
            return Err(format!(
                "unknown service {name:?} (available: {})",
                SERVICES.join(", ")
            ));
        }
    }
    Ok(())
}

/// A process's shared handles, built once before serving.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub handles: Handles,
    /// Seams provided before any service registers: remote implementations from `mesh`
    /// (an in-process provider replaces them), or test doubles.
    pub seams: Seams,
    /// The mesh listener (`mesh.listen`), bound at build time; serves the internal services.
    pub mesh_listener: Option<TcpListener>,
}

impl App {
    /// Open storage and the bus, start fetching verification keys when auth is remote, connect
    /// the remote seams `mesh` names and bind the mesh listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`App::build`] with a chosen clock (tests move a manual one). Every dependency is tried
    /// once; mesh peers are not awaited (keys arrive with the first successful refresh).
    pub async fn build_with_clock(config: Config, clock: SharedClock) -> anyhow::Result<Self> {
        let ctx = ServerContext::new(&config.tokens, &config.server.effective_instance_id());
        Self::assemble(config, clock, ctx, None).await
    }

    /// The binary's build: storage, the bus and mesh peers are retried through `waiter` until
    /// they answer (see [`crate::startup`]), on the context the start-up health server reports
    /// through.
    pub async fn build_waiting(
        config: Config,
        ctx: ServerContext,
        waiter: &Waiter,
    ) -> anyhow::Result<Self> {
        Self::assemble(config, Arc::new(SystemClock), ctx, Some(waiter)).await
    }

    async fn assemble(
        config: Config,
        clock: SharedClock,
        ctx: ServerContext,
        waiter: Option<&Waiter>,
    ) -> anyhow::Result<Self> {
        // The embedded engine and the in-process bus have nothing to wait for: a failure there
        // is local (a locked or unreadable directory) and stops start-up at once.
        let stores = match (waiter, storage_key(&config.storage)) {
            (Some(w), Some(key)) => {
                w.until(key, "storage", || crate::stores::open(&config.storage))
                    .await?
            }
            _ => crate::stores::open(&config.storage).await?,
        };
        // Every service writes through these, so the counts are the whole process's writes
        // (`guardyn bench --metrics` divides them by the messages it sent).
        let (stores, write_counts) = guardyn_storage::count_writes(stores);
        ctx.metrics.register_storage_writes(write_counts);
        let events = config.events.to_events_config();
        let connect = || async {
            guardyn_events::connect(&events, stores.log.clone())
                .await
                .context("connecting the event bus")
        };
        let bus = match waiter {
            Some(w) if config.events.backend == EventsBackend::Nats => {
                w.until("events.nats_url", "the NATS event bus", connect)
                    .await?
            }
            _ => connect().await?,
        };
        spawn_revocation_listener(bus.clone(), stores.kv.clone(), ctx.clone()).await?;
        if !config.mesh.auth_addresses.is_empty() {
            let channel = mesh::channel(&config.mesh.auth_addresses, &config.mesh).await?;
            let source = Arc::new(RemoteKeySource::new(channel, &config.mesh));
            // Without auth's keys no token verifies: serving before they arrive would refuse
            // every call.
            if let Some(w) = waiter {
                let keys = w
                    .until(
                        "mesh.auth_addresses",
                        "auth's token verification keys",
                        || source.verification_keys(),
                    )
                    .await?;
                ctx.verifier.replace_keys(keys);
            }
            mesh::spawn_key_refresh(
                source,
                ctx.verifier.clone(),
                std::time::Duration::from_secs(config.mesh.key_refresh_secs),
                ctx.shutdown.clone(),
            );
        }
        let mut seams = Seams::default();
        if !config.mesh.directory_addresses.is_empty() {
            let channel = mesh::channel(&config.mesh.directory_addresses, &config.mesh)
                .await
                .context("mesh.directory_addresses")?;
            if let Some(w) = waiter {
                w.until(
                    "mesh.directory_addresses",
                    "the device directory (auth's mesh listener)",
                    || mesh::check_serving(channel.clone()),
                )
                .await?;
            }
            seams.device_directory =
                Some(Arc::new(RemoteDeviceDirectory::new(channel, &config.mesh)));
        }
        if !config.mesh.account_admin_addresses.is_empty() {
            let channel = mesh::channel(&config.mesh.account_admin_addresses, &config.mesh)
                .await
                .context("mesh.account_admin_addresses")?;
            if let Some(w) = waiter {
                w.until(
                    "mesh.account_admin_addresses",
                    "account administration (auth's mesh listener)",
                    || mesh::check_serving(channel.clone()),
                )
                .await?;
            }
            // API credentials presented to this process are checked by auth too (their hashes
            // are keyed with auth's pepper); an in-process auth installs its own verifier over
            // this one when it registers.
            ctx.credentials
                .install(Arc::new(RemoteCredentialVerifier::new(
                    channel.clone(),
                    &config.mesh,
                )));
            seams.account_admin = Some(Arc::new(RemoteAccountAdmin::new(channel, &config.mesh)));
        }
        let mesh_listener = match config.mesh.listen.as_str() {
            "" => None,
            listen => {
                let addr = config.mesh.listen_addr().with_context(|| {
                    format!("mesh.listen: {listen:?} is not an ip:port address")
                })?;
                Some(
                    TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("mesh.listen: binding {addr}"))?,
                )
            }
        };
        let handles = Handles {
            stores,
            bus,
            clock,
            ctx,
            server: config.server.clone(),
            data_dir: config.storage.data_dir.clone(),
        };
        Ok(Self {
            config,
            handles,
            seams,
            mesh_listener,
        })
    }

    /// Register the services of a `--service` selection (empty = all) in [`SERVICES`] order,
    /// with whatever background tasks they need started.
    pub async fn services(&mut self, selected: &[String]) -> anyhow::Result<ServiceSet> {
        check_selection(selected).map_err(anyhow::Error::msg)?;
        let mut set = ServiceSet::new();
        for service in catalogue(&self.config) {
            let name = service.name();
            if !selected.is_empty() && !selected.iter().any(|s| s == name) {
                continue;
            }
            match service
                .register(&self.handles, &mut self.seams, &mut set)
                .await
            {
                Ok(()) => {
                    set.allow_public(&service.public_methods());
                }
                // The implicit "every service" selection leaves out a service whose seam no
                // hosted service provides (logged); an explicit selection refuses to start.
                Err(e @ RegisterError::MissingSeam { .. }) if selected.is_empty() => {
                    tracing::error!(error = %e, "{name} is not served");
                }
                Err(e) => return Err(e).context(format!("starting {name}")),
            }
        }
        Ok(set)
    }

    /// The bound address of the mesh listener, if `mesh.listen` is set.
    pub fn mesh_addr(&self) -> Option<std::net::SocketAddr> {
        self.mesh_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serve until `signal`, then shut down gracefully and close storage. The internal
    /// services go to the mesh listener only; without one they are not served.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        mut services: ServiceSet,
        signal: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let ctx = &self.handles.ctx;
        let internal = services.take_internal();
        let mesh_server = self.mesh_listener.take().map(|l| {
            let mesh = self.config.mesh.clone();
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let result = server::serve_internal(&mesh, l, ctx.clone(), internal).await;
                if let Err(e) = &result {
                    // Peers depend on it: stop the process rather than run half-reachable.
                    tracing::error!(error = %e, "mesh listener failed; shutting down");
                    ctx.shutdown.cancel();
                }
                result
            })
        });
        tokio::spawn(
            crate::beacon::Beacon {
                bus: self.handles.bus.clone(),
                clock: self.handles.clock.clone(),
                ctx: ctx.clone(),
                interval_secs: self.config.monitoring.beacon_interval_secs,
                services: crate::beacon::service_names(services.names()),
                data_dir: self.config.storage.data_dir.clone(),
                embedded: self.config.storage.engine == StorageEngine::Embedded,
            }
            .run(),
        );
        if let Some(l) = metrics_listener {
            tokio::spawn(guardyn_common::metrics::serve_metrics(
                l,
                ctx.metrics.clone(),
                ctx.shutdown.clone(),
            ));
        }
        let result =
            server::serve(&self.config.server, listener, ctx.clone(), services, signal).await;
        ctx.shutdown.cancel();
        let mesh_result = match mesh_server {
            Some(task) => task.await.context("mesh listener task")?,
            None => Ok(()),
        };
        self.handles.stores.close().await;
        result.context("gRPC server")?;
        mesh_result.context("mesh listener")
    }
}

/// The key naming a networked storage engine, which start-up waits for; `None` for the
/// embedded engine.
fn storage_key(storage: &StorageConfig) -> Option<&'static str> {
    match storage.engine {
        StorageEngine::Embedded => None,
        StorageEngine::Postgres => Some("storage.postgres"),
        StorageEngine::TikvScylla => Some("storage.tikv / storage.scylla"),
    }
}

/// Every process honours session revocations, whether or not it hosts auth, so a revoked
/// session's tokens stop working everywhere within seconds and stay refused across restarts:
/// the persisted revocations are loaded before serving starts, the bus
/// (`auth.session.revoked`) brings new ones, and a lagged subscription reloads from storage
/// (the events it missed are there). Emergency signing-key revocations
/// (`auth.signing_key.revoked`) drop the key from the verifier at once. The subscriptions are
/// taken before the load, so nothing falls between the two; the task ends at shutdown.
async fn spawn_revocation_listener(
    bus: Arc<dyn guardyn_events::EventBus>,
    kv: Arc<dyn guardyn_storage::KvStore>,
    ctx: ServerContext,
) -> anyhow::Result<()> {
    use guardyn_events::Delivery;
    use tokio_stream::StreamExt as _;
    let mut sessions = bus
        .subscribe(SESSION_REVOKED)
        .await
        .context("subscribing to session revocations")?;
    let mut keys = bus
        .subscribe(SIGNING_KEY_REVOKED)
        .await
        .context("subscribing to signing key revocations")?;
    let list = ctx.verifier.revocations().clone();
    let loaded = load_revocations(&*kv, &list)
        .await
        .context("loading persisted session revocations")?;
    tracing::debug!(loaded, "session revocations loaded");
    // Weak: a process that fails to start must not keep its storage open through this task
    // (it ends when the bus goes, as the subscriptions then close).
    let kv = Arc::downgrade(&kv);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                d = sessions.next() => match d {
                    Some(Delivery::Event(event)) => match SessionRevoked::decode(event.payload()) {
                        Ok(r) => list.revoke(&r.session_id, r.tokens_valid_until),
                        Err(e) => tracing::warn!(error = %e, "undecodable session revocation"),
                    },
                    Some(Delivery::Lagged { missed }) => {
                        tracing::warn!(missed, "session revocations missed; reloading them from storage");
                        let Some(kv) = kv.upgrade() else { return };
                        if let Err(e) = load_revocations(&*kv, &list).await {
                            tracing::error!(error = %e, "could not reload session revocations");
                        }
                    }
                    None => return,
                },
                d = keys.next() => match d {
                    Some(Delivery::Event(event)) => match SigningKeyRevoked::decode(event.payload()) {
                        Ok(r) => {
                            tracing::warn!(kid = %r.kid, "token signing key revoked");
                            ctx.verifier.revoke_key(&r.kid);
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable signing key revocation"),
                    },
                    // A refresh replaces the set, without the revoked key.
                    Some(Delivery::Lagged { missed }) => {
                        tracing::warn!(missed, "signing key revocations missed; refreshing keys");
                        ctx.verifier.request_refresh();
                    }
                    None => return,
                },
            }
        }
    });
    Ok(())
}
