//! Guardyn's auth service: accounts (Argon2id passwords), sessions (EdDSA access tokens with
//! rotating refresh tokens), devices and device linking, TOTP second factor, the key directory
//! (libsignal prekeys and MLS KeyPackages) and the hash-chained audit log.
//!
//! It serves `guardyn.auth.v1.{AuthService, DeviceService, MfaService, KeyDirectoryService}`.
//! It owns every KvStore key under `auth/v1/` (layout in [`store`]) and publishes the events
//! `auth.session.revoked`, `auth.account.deleted`, `auth.device.linked`, `auth.device.removed`
//! and `auth.prekeys.low` (payloads in `guardyn/auth/v1/events.proto`). It never holds a
//! private key of a user: only public keys, password hashes and hashes of credentials it
//! issues. The secrets it must read back (TOTP secrets, its token-signing seeds) are sealed
//! with a server master key kept outside the KvStore ([`sealing`]).
//!
//! Depends on the shared crates (common, proto, storage traits, events trait, crypto); it must
//! not depend on another service crate or on a storage engine.

mod accounts;
pub mod audit;
mod config;
mod core;
mod devices;
mod directory;
mod error;
mod grpc;
mod keypackages;
mod limits;
mod mfa;
mod model;
mod prekeys;
pub mod sealing;
mod secrets;
pub mod signing;
pub mod store;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use guardyn_common::auth::{PublicMethods, TokenConfig};
use guardyn_common::clock::SharedClock;
use guardyn_common::config::ServerConfig;
use guardyn_common::server::{ServerContext, ServiceSet};
use guardyn_crypto::mls::KeyPackagePolicy;
use guardyn_events::EventBus;
use guardyn_proto::guardyn::auth::v1::auth_service_server::AuthServiceServer;
use guardyn_proto::guardyn::auth::v1::device_service_server::DeviceServiceServer;
use guardyn_proto::guardyn::auth::v1::key_directory_service_server::KeyDirectoryServiceServer;
use guardyn_proto::guardyn::auth::v1::mfa_service_server::MfaServiceServer;
use guardyn_storage::{AppendLog, KvStore};

pub use crate::config::{Argon2Config, AuthConfig, AuthLimits, LockoutConfig};
pub use crate::core::subjects;
pub use crate::directory::AuthDirectory;
pub use crate::error::AuthError;
pub use crate::mfa::totp_code;
pub use crate::signing::KeyStore;

/// What the service needs from the process.
#[derive(Clone, Debug)]
pub struct Deps {
    pub kv: Arc<dyn KvStore>,
    /// Not used yet (audit entries live in the KvStore); kept so the wiring matches every
    /// service.
    pub log: Arc<dyn AppendLog>,
    pub bus: Arc<dyn EventBus>,
    pub clock: SharedClock,
    pub ctx: ServerContext,
    /// The storage data directory: home of the default master key file.
    pub data_dir: PathBuf,
}

/// How often the signing key set is checked for rotation.
const KEY_CHECK_EVERY: Duration = Duration::from_secs(600);

/// Load (or on first start create) the master key, build the services, install the signing
/// keys into this process's verifier, start the key rotation task and add the tonic servers to
/// `set`. Fails when the master key is missing (explicitly configured) or does not open the
/// stored signing keys.
pub async fn register(
    config: &AuthConfig,
    tokens: &TokenConfig,
    server: &ServerConfig,
    deps: Deps,
    set: &mut ServiceSet,
) -> Result<Registered, AuthError> {
    let key_file = config.master_key_file.clone();
    let data_dir = deps.data_dir.clone();
    let master = Arc::new(
        core::blocking(move || sealing::MasterKey::load_or_create(&key_file, &data_dir)).await?,
    );
    let keys = Arc::new(
        KeyStore::open(
            deps.kv.clone(),
            deps.clock.clone(),
            master.clone(),
            tokens.clone(),
            config.signing_key_rotation_secs,
            config.access_token_ttl_secs,
        )
        .await?,
    );
    keys.install(&deps.ctx.verifier);
    spawn_rotation(keys.clone(), deps.ctx.clone());

    let dummy_params = config.argon2.clone();
    let dummy_hash = core::blocking(move || {
        let password = secrets::random_token();
        secrets::hash_password(&password, &dummy_params)
    })
    .await?;
    let auth = Arc::new(core::Auth {
        config: config.clone(),
        kv: deps.kv.clone(),
        bus: deps.bus.clone(),
        clock: deps.clock.clone(),
        verifier: deps.ctx.verifier.clone(),
        keys: keys.clone(),
        master,
        limits: limits::Limiters::new(&config.limits),
        audit: audit::AuditLog::new(deps.kv.clone(), deps.clock.clone()),
        dummy_hash,
        kp_policy: KeyPackagePolicy::default(),
    });

    let max = server.max_request_bytes;
    set.add(AuthServiceServer::new(grpc::AuthApi(auth.clone())).max_decoding_message_size(max));
    set.add(DeviceServiceServer::new(grpc::DeviceApi(auth.clone())).max_decoding_message_size(max));
    set.add(MfaServiceServer::new(grpc::MfaApi(auth.clone())).max_decoding_message_size(max));
    set.add(
        KeyDirectoryServiceServer::new(grpc::KeysApi(auth.clone())).max_decoding_message_size(max),
    );
    let mut public = PublicMethods::new();
    for m in [
        "Register",
        "Login",
        "CompleteMfaLogin",
        "RefreshSession",
        "GetVerificationKeys",
    ] {
        public = public.method(format!("/guardyn.auth.v1.AuthService/{m}"));
    }
    public = public.method("/guardyn.auth.v1.DeviceService/LinkDevice");
    set.allow_public(&public);
    Ok(Registered {
        keys,
        directory: Arc::new(AuthDirectory(auth)),
    })
}

/// Handles the process gets back from [`register`]: the in-process seams.
#[derive(Clone, Debug)]
pub struct Registered {
    /// Token verification keys ([`guardyn_common::mesh::KeySource`]).
    pub keys: Arc<KeyStore>,
    /// The accounts' devices ([`guardyn_common::mesh::DeviceDirectory`]).
    pub directory: Arc<AuthDirectory>,
}

fn spawn_rotation(keys: Arc<KeyStore>, ctx: ServerContext) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(KEY_CHECK_EVERY);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            match keys.refresh().await {
                Ok(published) => ctx.verifier.add_keys(published.into_iter().map(|p| p.key)),
                Err(e) => tracing::warn!(error = %e, "token signing key rotation check failed"),
            }
        }
    });
}
