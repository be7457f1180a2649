//! `guardyn serve`'s start-up order: a process started before its dependencies waits for them
//! instead of failing, so services can start in any order (a Kubernetes rollout, a reboot).
//!
//! The public and metrics ports are bound first and answer `grpc.health.v1` with NOT_SERVING
//! (overall and per hosted service): liveness is "the process answers", readiness is SERVING.
//! Storage, the NATS bus and the mesh peers are then retried with capped exponential backoff
//! ([`Waiter`]), one log line per dependency at most every [`LOG_EVERY`] naming its config key,
//! until `server.startup_timeout_secs` passes (exit non-zero naming what never appeared) or a
//! signal arrives (clean exit). Then the services register and health turns SERVING.

use std::time::Duration;

use guardyn_common::server::{self, ServerContext};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;

use crate::app::{App, SERVICES};
use crate::config::Config;
use crate::wait::Waiter;
pub use crate::wait::{LOG_EVERY, Stopped};

/// How long the start-up health server may take to hand its connections over; a client
/// watching health keeps its stream on it (the statuses it reports are the same).
const HANDOVER: Duration = Duration::from_secs(1);

/// `guardyn serve`: bind, answer health NOT_SERVING while the dependencies are awaited,
/// register the `selected` services (empty = all), serve until `signal`.
pub async fn serve(
    config: Config,
    selected: Vec<String>,
    signal: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let bind = |addr: std::net::SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))
    };
    let (listener, early_listener) = bind_shared(config.server.addr())?;
    let metrics_listener = match config.metrics.enabled {
        true => Some(bind(config.metrics.addr()).await?),
        false => None,
    };
    let ctx = ServerContext::new(&config.tokens, &config.server.effective_instance_id());
    let announced = not_serving(&ctx, &selected).await;
    if let Some(l) = metrics_listener {
        tracing::info!(addr = %l.local_addr()?, "metrics listening");
        tokio::spawn(guardyn_common::metrics::serve_metrics(
            l,
            ctx.metrics.clone(),
            ctx.shutdown.clone(),
        ));
    }
    // The console is the admin service's page: one image (and one configuration) serves every
    // service, so only a process hosting admin opens the console port.
    let hosts_admin = selected.is_empty() || selected.iter().any(|s| s == "admin");
    if !config.admin.console_dir.as_os_str().is_empty() && hosts_admin {
        let l = bind(config.admin.console_listen).await?;
        let https = config.admin.console_tls();
        tracing::info!(addr = %l.local_addr()?, dir = %config.admin.console_dir.display(), https, "admin console listening");
        let console = crate::console::Console {
            dir: config.admin.console_dir.clone(),
            api_url: config.admin.console_api_url.clone(),
            api_port: listener.local_addr()?.port(),
            api_tls: config.server.tls.enabled,
        };
        let tls = https.then(|| crate::console::ConsoleTls {
            cert: config.admin.console_tls_cert_path.clone(),
            key: config.admin.console_tls_key_path.clone(),
            reload: Duration::from_secs(config.server.tls.reload_secs.max(1)),
        });
        crate::console::serve(l, console, tls, ctx.shutdown.clone())
            .map_err(|e| anyhow::anyhow!("admin.console_tls_cert_path: {e}"))?;
    }
    // A signal from now on cancels the shutdown token: the waiter gives up, or the server drains.
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        signal.await;
        shutdown.cancel();
    });
    let ready = CancellationToken::new();
    let early = {
        let (config, listener) = (config.server.clone(), early_listener);
        let (health, ready) = (ctx.health.clone(), ready.clone());
        tokio::spawn(
            async move { server::serve_health_only(&config, listener, health, ready).await },
        )
    };
    tracing::info!(
        addr = %listener.local_addr()?,
        instance = %ctx.instance_id,
        "guardyn starting: health NOT_SERVING until the dependencies answer"
    );

    let waiter = Waiter::new(config.server.startup_timeout_secs, ctx.shutdown.clone());
    let built = async {
        let mut app = App::build_waiting(config, ctx.clone(), &waiter).await?;
        let services = app.services(&selected).await?;
        anyhow::Ok((app, services))
    }
    .await;
    ready.cancel();
    match tokio::time::timeout(HANDOVER, early).await {
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "start-up health server failed"),
        Ok(_) => {}
        Err(_) => tracing::debug!("start-up health connections left open"),
    }
    let (app, services) = match built {
        Ok(built) => built,
        Err(e) if e.is::<Stopped>() => {
            tracing::info!("{e}");
            return Ok(());
        }
        Err(e) => {
            ctx.shutdown.cancel();
            return Err(e);
        }
    };
    // A service left out of the implicit "every service" selection is not reported at all.
    for name in announced {
        if !services.names().contains(&name.as_str()) {
            ctx.health.clone().clear_service_status(&name).await;
        }
    }
    tracing::info!(
        addr = %listener.local_addr()?,
        mesh = ?app.mesh_addr(),
        services = ?services.names(),
        "guardyn serving"
    );
    // The signal already cancels the shutdown token, which the server drains on.
    app.serve(listener, None, services, std::future::pending())
        .await
}

/// Report NOT_SERVING overall and for every gRPC service the selection will host; returns the
/// per-service names.
async fn not_serving(ctx: &ServerContext, selected: &[String]) -> Vec<String> {
    let names: Vec<String> = SERVICES
        .iter()
        .filter(|s| selected.is_empty() || selected.iter().any(|n| n == *s))
        .flat_map(|s| server::services_in_package(&format!("guardyn.{s}.v1")))
        .collect();
    for name in &names {
        ctx.health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
    ctx.health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    names
}

/// Bind `addr` and return two handles on the one listening socket: the real server's, and
/// the start-up health server's (dropped when it stops; the socket stays bound throughout, so
/// connections queue in the backlog during the hand-over instead of being refused).
fn bind_shared(addr: std::net::SocketAddr) -> anyhow::Result<(TcpListener, TcpListener)> {
    let bound =
        std::net::TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
    bound.set_nonblocking(true)?;
    let second = bound.try_clone()?;
    Ok((
        TcpListener::from_std(bound)?,
        TcpListener::from_std(second)?,
    ))
}
