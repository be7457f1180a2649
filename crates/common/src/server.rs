//! Server assembly used by every service: one function turns a set of gRPC services into a
//! listening server with health, reflection (v1 and v1alpha), gRPC-web with CORS, optional
//! (mutual) TLS, request ids, metrics, authentication, deadlines and load shedding, and graceful
//! shutdown.
//!
//! Layer order, outermost first: CORS → instance header and stream count → gRPC-web translation → request id / span → metrics →
//! deadlines and load shedding → request size limit → authentication → routes. CORS answers browser preflights before
//! anything else; metrics see every call including shed and unauthenticated ones.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::Service;

use crate::auth::{AuthLayer, PublicMethods, RevocationList, TokenConfig, TokenVerifier};
use crate::config::ServerConfig;
use crate::metrics::{Metrics, MetricsLayer};
use crate::middleware::{BodyLimitLayer, LimitLayer, Limits, RequestIdLayer};
use crate::stats::ProcessStats;
use crate::tls_reload::{self, ServerTlsFiles};

mod cors;
mod date;
mod instance;
pub use instance::{INSTANCE_HEADER, InstanceLayer};

/// Handles shared by the server and the services it hosts.
#[derive(Clone, Debug)]
pub struct ServerContext {
    /// Cancelled when shutdown begins: long-lived streams watch it and end cleanly.
    pub shutdown: CancellationToken,
    pub verifier: TokenVerifier,
    pub metrics: Metrics,
    pub health: HealthReporter,
    /// This process's name among the instances of its services (`server.instance_id`, or
    /// derived): the `instance` label of every metric.
    pub instance_id: String,
    /// Live counters (open streams, connected devices) the monitoring beacon reports.
    pub stats: ProcessStats,
    /// The API-credential verifier the service owning credentials installs (auth).
    pub credentials: crate::auth::CredentialHook,
}

impl ServerContext {
    /// A context for the process named `instance_id`
    /// ([`ServerConfig::effective_instance_id`]).
    pub fn new(tokens: &TokenConfig, instance_id: &str) -> Self {
        Self {
            shutdown: CancellationToken::new(),
            verifier: TokenVerifier::new(tokens, RevocationList::new()),
            metrics: Metrics::new(instance_id),
            health: HealthReporter::new(),
            instance_id: instance_id.to_owned(),
            stats: ProcessStats::new(),
            credentials: crate::auth::CredentialHook::default(),
        }
    }
}

/// The gRPC services one server hosts, with the methods callable without a token, and the
/// internal services its mesh listener serves.
#[derive(Debug, Default)]
pub struct ServiceSet {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    public: PublicMethods,
    internal: RoutesBuilder,
    internal_names: Vec<&'static str>,
}

impl ServiceSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Host a tonic service. Its health status follows the server's.
    pub fn add<S>(&mut self, service: S) -> &mut Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Host an internal service (`guardyn.internal.*`): served only on the mesh listener
    /// ([`serve_internal`]), never on the public port.
    pub fn add_internal<S>(&mut self, service: S) -> &mut Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.internal_names.push(S::NAME);
        self.internal.add_service(service);
        self
    }

    /// Fully qualified names of the hosted internal services.
    pub fn internal_names(&self) -> &[&'static str] {
        &self.internal_names
    }

    /// Take the internal services out, for [`serve_internal`].
    pub fn take_internal(&mut self) -> InternalServices {
        InternalServices {
            routes: std::mem::take(&mut self.internal),
            names: std::mem::take(&mut self.internal_names),
        }
    }

    /// Methods or services callable without a bearer token.
    pub fn allow_public(&mut self, public: &PublicMethods) -> &mut Self {
        self.public.extend(public);
        self
    }

    /// Fully qualified names of the hosted services.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

/// The internal services of a [`ServiceSet`], served by [`serve_internal`].
#[derive(Debug, Default)]
pub struct InternalServices {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
}

impl InternalServices {
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

/// Serve the internal services on the mesh listener until `ctx.shutdown`. Peers are other
/// services, not end users: there is no bearer-token layer, no CORS or gRPC-web; with
/// `mesh.tls.ca_path` the listener requires a client certificate from that CA (mutual TLS) and
/// presents `mesh.tls.cert_path`, otherwise configuration validation has limited it to
/// loopback unless `mesh.allow_plaintext`. Health is served here too, so peers and
/// orchestrators can probe the mesh side.
pub async fn serve_internal(
    mesh: &crate::mesh::MeshConfig,
    listener: TcpListener,
    ctx: ServerContext,
    services: InternalServices,
) -> Result<(), ServeError> {
    install_crypto_provider();
    let mut routes = services.routes;
    routes.add_service(tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(ctx.health.clone()),
    ));
    let mut builder = Server::builder()
        .timeout(Duration::from_millis(mesh.call_timeout_ms))
        .layer(
            tower::ServiceBuilder::new()
                // The calling process's span becomes the parent of this call's span.
                .layer(InstanceLayer::new(
                    &ctx.instance_id,
                    ctx.stats.clone(),
                    Vec::new(),
                ))
                .layer(RequestIdLayer)
                .layer(MetricsLayer::new(ctx.metrics.clone()))
                .into_inner(),
        );
    let tls = &mesh.tls;
    let reloading = if tls.ca_path.as_os_str().is_empty() {
        None
    } else {
        let files = ServerTlsFiles {
            cert: tls.cert_path.clone(),
            key: tls.key_path.clone(),
            client_ca: Some(tls.ca_path.clone()),
            crl: tls.crl(),
            alpn: vec![b"h2".to_vec()],
        };
        Some(
            tls_reload::server_config("mesh.tls", files, tls.reload_every())
                .map_err(|e| ServeError::MeshTls(e.to_string()))?,
        )
    };
    let shutdown = ctx.shutdown.clone();
    let router = builder.add_routes(routes.routes());
    let until = async move { shutdown.cancelled().await };
    match reloading {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls_reload::incoming(tls, listener), until)
                .await?
        }
        None => {
            router
                .serve_with_incoming_shutdown(plain_incoming(listener), until)
                .await?
        }
    }
    Ok(())
}

/// Accepted plaintext connections (see `serve` on nodelay and keepalive).
fn plain_incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
}

/// Failure to start or run the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid configuration: server.tls: {0}")]
    Tls(String),
    #[error("invalid configuration: mesh.tls: {0}")]
    MeshTls(String),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

pub use crate::tls_reload::install_crypto_provider;

/// Answer health on `listener` while the process waits for its dependencies, until `until` is
/// cancelled (then the real server takes the listener over). Only health (and reflection of
/// it) is routed: every other call is UNIMPLEMENTED, as no service has registered yet. Orchestrators see the process alive
/// (it answers) and not ready (NOT_SERVING, set by the caller).
pub async fn serve_health_only(
    config: &ServerConfig,
    listener: TcpListener,
    health: HealthReporter,
    until: CancellationToken,
) -> Result<(), ServeError> {
    install_crypto_provider();
    let mut builder = Server::builder().accept_http1(true);
    let tls = server_tls(config)?;
    // Reflection describes health only, so `grpcurl ... grpc.health.v1.Health/Check` works.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health")
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let router = builder
        .add_service(tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health),
        ))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let until = async move { until.cancelled().await };
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(tls_reload::incoming(tls, listener), until)
                .await?
        }
        None => {
            router
                .serve_with_incoming_shutdown(plain_incoming(listener), until)
                .await?
        }
    }
    Ok(())
}

/// Fully qualified names of the public gRPC services of a proto package (`guardyn.auth.v1`),
/// from the descriptor set: the health names of a service before it has registered.
pub fn services_in_package(package: &str) -> Vec<String> {
    use prost::Message;
    let Ok(set) = prost_types::FileDescriptorSet::decode(guardyn_proto::FILE_DESCRIPTOR_SET) else {
        return Vec::new();
    };
    set.file
        .into_iter()
        .filter(|f| f.package.as_deref() == Some(package))
        .flat_map(|f| f.service)
        .map(|s| format!("{package}.{}", s.name.unwrap_or_default()))
        .collect()
}

/// Calls clients make in bursts, with `server.max_concurrent_requests` of their own
/// ([`crate::middleware::Limits::bulk_methods`]): a group message sent to 10,000 connected
/// members brings 10,000 acknowledgements at once, and they must not shed the next send.
const BULK_METHODS: &[&str] = &["/guardyn.messaging.v1.MessagingService/Ack"];

/// Names of server-streaming methods, from the descriptor sets: they get no server deadline.
fn streaming_methods() -> Vec<String> {
    crate::methods::all()
        .iter()
        .filter(|m| m.streaming)
        .map(|m| m.path.clone())
        .collect()
}

/// The public listener's TLS, following its files (`server.tls`); `None` = plaintext.
fn server_tls(
    config: &ServerConfig,
) -> Result<Option<Arc<tls_reload::Reloading<rustls::ServerConfig>>>, ServeError> {
    let tls = &config.tls;
    if !tls.enabled {
        return Ok(None);
    }
    let files = ServerTlsFiles {
        cert: tls.cert_path.clone(),
        key: tls.key_path.clone(),
        client_ca: tls.mutual().then(|| tls.client_ca_path.clone()),
        crl: (!tls.crl_path.as_os_str().is_empty()).then(|| tls.crl_path.clone()),
        // gRPC over HTTP/2, gRPC-web from browsers over either.
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    tls_reload::server_config(
        "server.tls",
        files,
        Duration::from_secs(tls.reload_secs.max(1)),
    )
    .map(Some)
    .map_err(|e| ServeError::Tls(e.to_string()))
}

/// Serve `services` on `listener` until `signal` completes, then shut down gracefully:
/// health turns NOT_SERVING, the listener closes, [`ServerContext::shutdown`] is cancelled so
/// streams end, and in-flight calls get `server.shutdown_grace_ms` to finish before the
/// remaining connections are dropped.
pub async fn serve(
    config: &ServerConfig,
    listener: TcpListener,
    ctx: ServerContext,
    mut services: ServiceSet,
    signal: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    install_crypto_provider();

    for name in services.names.clone() {
        ctx.health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }
    ctx.health
        .set_service_status("", ServingStatus::Serving)
        .await;

    // Reflection advertises exactly the hosted services (plus health and reflection in both
    // versions), never the whole contract: a listed service must answer.
    let mut advertised: Vec<&str> = services.names.clone();
    advertised.extend([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]);
    let reflection = || {
        advertised.iter().fold(
            tonic_reflection::server::Builder::configure()
                .include_reflection_service(false)
                .register_encoded_file_descriptor_set(guardyn_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // google.rpc error details, so grpcurl can decode ErrorInfo and BadRequest.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                ),
            |b, name| b.with_service_name(*name),
        )
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let public = PublicMethods::new()
        .service("grpc.health.v1.Health")
        .service("grpc.reflection.v1.ServerReflection")
        .service("grpc.reflection.v1alpha.ServerReflection");
    services.allow_public(&public);
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(ctx.health.clone()),
    );
    services
        .add(health_service)
        .add(reflection_v1)
        .add(reflection_v1alpha);

    let limits = Limits {
        max_concurrent: config.max_concurrent_requests,
        default_timeout: config.request_timeout(),
        method_timeouts: Default::default(),
        streaming_methods: streaming_methods(),
        bulk_methods: BULK_METHODS.iter().map(|m| (*m).to_owned()).collect(),
    };
    let stack = tower::ServiceBuilder::new()
        .layer(cors::layer(config))
        .layer(InstanceLayer::new(
            &ctx.instance_id,
            ctx.stats.clone(),
            limits.streaming_methods.clone(),
        ))
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(RequestIdLayer)
        .layer(MetricsLayer::new(ctx.metrics.clone()))
        .layer(LimitLayer::new(limits))
        .layer(BodyLimitLayer::new(config.max_request_bytes))
        .layer(
            AuthLayer::new(ctx.verifier.clone(), services.public.clone())
                .with_credentials(ctx.credentials.clone()),
        )
        .into_inner();

    let tls = server_tls(config)?;
    let router = Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(Some(config.max_streams_per_connection))
        .layer(stack)
        .add_routes(services.routes.routes());
    let shutdown = ctx.shutdown.clone();
    let health = ctx.health.clone();
    let names = services.names.clone();
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let graceful = async move {
        tokio::select! {
            _ = signal => {},
            _ = shutdown.cancelled() => {},
        }
        tracing::info!("shutting down: draining in-flight calls");
        for name in names {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        shutdown.cancel();
        let _ = signalled_tx.send(());
    };
    // Small request/response frames on long-lived HTTP/2 connections: without TCP_NODELAY,
    // Nagle's algorithm and the peer's delayed ACK add ~40 ms to a send that shares a
    // connection with a busy stream. Keepalive finds dead peers of idle streams.
    let server: std::pin::Pin<
        Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>,
    > = match tls {
        Some(tls) => Box::pin(
            router.serve_with_incoming_shutdown(tls_reload::incoming(tls, listener), graceful),
        ),
        None => Box::pin(router.serve_with_incoming_shutdown(plain_incoming(listener), graceful)),
    };
    tokio::pin!(server);
    let grace = config.shutdown_grace();
    let deadline = async move {
        // Only a signal starts the grace period; a dropped sender means the server ended.
        if signalled_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = &mut server => result?,
        _ = deadline => {
            tracing::warn!(?grace, "shutdown grace period over: dropping remaining connections");
        }
    }
    tracing::info!("server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_bulk_methods_are_served_unary_methods() {
        for bulk in super::BULK_METHODS {
            let found = crate::methods::all().iter().find(|m| m.path == *bulk);
            assert!(found.is_some_and(|m| !m.streaming), "{bulk}");
        }
    }
}
