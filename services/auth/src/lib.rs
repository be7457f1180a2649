//! Guardyn's auth service: accounts (Argon2id passwords), sessions (EdDSA access tokens with
//! rotating refresh tokens), devices and device linking, TOTP second factor, the key directory
//! (libsignal prekeys and MLS KeyPackages) and the hash-chained audit log.
//!
//! It serves `guardyn.auth.v1.{AuthService, DeviceService, MfaService, KeyDirectoryService}`
//! and `guardyn.admin.v1.CredentialService` (API credentials: their pepper derives from the
//! master key, so they live here), and installs the credential verifier of the auth layer
//! (also served to the mesh as the internal `guardyn.internal.v1.CredentialVerifierService`).
//! It owns every KvStore key under `auth/v1/` (layout in [`store`]) and publishes the events
//! `auth.session.revoked`, `auth.account.deleted`, `auth.device.linked`, `auth.device.removed`
//! and `auth.prekeys.low` (payloads in `guardyn_common::events::auth`, published through
//! `events.rs`). It never holds a private key of a user: only public keys, password hashes and
//! hashes of credentials it issues. The secrets it must read back (TOTP secrets, its
//! token-signing seeds) are sealed with a server master key kept outside the KvStore
//! ([`sealing`]).
//!
//! Depends on the shared crates (common, proto, storage traits, events trait, crypto); it must
//! not depend on another service crate or on a storage engine.

mod accounts;
mod admin_ops;
mod admin_seam;
mod admin_state;
pub use guardyn_audit as audit;
mod config;
mod core;
mod credential_verify;
mod credentials;
pub mod deletion;
mod device_ids;
mod devices;
mod directory;
mod error;
mod events;
mod grpc;
mod keypackages;
mod limits;
mod linking;
mod lookup;
mod mfa;
mod model;
mod notices;
mod policy;
mod prekeys;
pub mod sealing;
mod secrets;
mod session_list;
pub mod signing;
mod stepup;
pub mod store;
mod sweeper;

use std::sync::Arc;

use guardyn_common::auth::{PublicMethods, TokenConfig};
use guardyn_common::server::ServiceSet;
use guardyn_service::{Handles, RegisterError, Seams, Service};

use crate::core::Core;

pub use crate::config::{Argon2Config, AuthConfig, AuthLimits, LockoutConfig, SecondFactorLockout};
pub use crate::directory::AuthDirectory;
pub use crate::error::AuthError;
pub use crate::mfa::totp_code;
pub use crate::signing::KeyStore;

/// The auth service's registration: built from its configuration, registered into a process
/// with [`Service::register`]. Provides the device directory seam, in-process and as the
/// internal `guardyn.internal.v1.DeviceDirectoryService` for the mesh listener.
#[derive(Clone, Debug)]
pub struct Auth {
    config: AuthConfig,
    tokens: TokenConfig,
}

impl Auth {
    pub fn new(config: AuthConfig, tokens: TokenConfig) -> Self {
        Self { config, tokens }
    }
}

#[async_trait::async_trait]
impl Service for Auth {
    fn name(&self) -> &'static str {
        "auth"
    }

    fn public_methods(&self) -> PublicMethods {
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
        public
            .method("/guardyn.auth.v1.DeviceService/RequestLink")
            .method("/guardyn.auth.v1.DeviceService/LinkDevice")
    }

    /// Load (or on first start create) the master key, build the services, install the
    /// signing keys into this process's verifier, start the key rotation task and the storage
    /// sweeper, provide the device directory and add the tonic servers to `set`. Fails when the master key is
    /// missing (explicitly configured) or does not open the stored signing keys.
    async fn register(
        &self,
        handles: &Handles,
        seams: &mut Seams,
        set: &mut ServiceSet,
    ) -> Result<(), RegisterError> {
        let policy = guardyn_service::policy::watch("auth", handles).await?;
        let core = Core::build(&self.config, &self.tokens, handles, policy.cache())
            .await
            .map_err(|e| RegisterError::failed("auth", e))?;
        core.keys.install(&handles.ctx.verifier);
        signing::spawn_refresh(core.keys.clone(), &*handles.bus, handles.ctx.clone())
            .await
            .map_err(|e| RegisterError::failed("auth", e))?;
        let core = Arc::new(core);
        policy.follow();
        sweeper::spawn(core.clone(), handles.ctx.clone());
        let max = handles.server.max_request_bytes;
        set.add(grpc::auth_server(core.clone()).max_decoding_message_size(max));
        set.add(grpc::device_server(core.clone()).max_decoding_message_size(max));
        set.add(grpc::mfa_server(core.clone()).max_decoding_message_size(max));
        set.add(grpc::keys_server(core.clone()).max_decoding_message_size(max));
        let credentials = Arc::new(credentials::Credentials::new(core.clone()));
        // One verifier, so the failure budget per address is shared by this process's auth
        // layer and the processes of the mesh that ask over the internal contract.
        let check = Arc::new(credential_verify::CredentialCheck::new(
            credentials.clone(),
            self.config.limits.credential_failures_per_address,
            &handles.ctx.instance_id,
        ));
        handles.ctx.credentials.install(check.clone());
        set.add_internal(grpc::credential_verifier_server(check));
        set.add(grpc::credential_server(credentials).max_decoding_message_size(max));
        let account_admin = admin_seam::AuthAccountAdmin(core.clone());
        set.add_internal(grpc::account_admin_server(account_admin.clone()));
        seams.account_admin = Some(Arc::new(account_admin));
        let directory = AuthDirectory::new(core);
        set.add_internal(grpc::directory_server(directory.clone()));
        seams.device_directory = Some(Arc::new(directory));
        Ok(())
    }
}
