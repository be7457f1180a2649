//! How a service joins a process: the [`Service`] trait every service crate implements, the
//! shared [`Handles`] it is built from, and the in-process [`Seams`] services provide to each
//! other. The binary assembles a list of services and registers the selected ones in order;
//! `guardyn serve --service NAME` takes the same path for every service.
//!
//! Depends on common and on the storage and event *traits*; never on a service, a storage
//! engine or a bus implementation (the binary chooses those).

pub mod policy;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use guardyn_common::admin::AccountAdmin;
use guardyn_common::auth::PublicMethods;
use guardyn_common::clock::SharedClock;
use guardyn_common::config::ServerConfig;
use guardyn_common::mesh::DeviceDirectory;
use guardyn_common::server::{ServerContext, ServiceSet};
use guardyn_events::EventBus;
use guardyn_storage::Stores;

/// What every service is built from: one set per process, shared by all its services.
#[derive(Clone, Debug)]
pub struct Handles {
    pub stores: Stores,
    pub bus: Arc<dyn EventBus>,
    pub clock: SharedClock,
    pub ctx: ServerContext,
    /// The server settings (request size limit applies to every tonic service).
    pub server: ServerConfig,
    /// The storage data directory (home of files that must live beside the data, such as
    /// auth's default master key).
    pub data_dir: PathBuf,
}

/// Handles one service provides to others (see `guardyn_common::mesh`): a service registered
/// earlier fills in what it implements, a later one takes what it needs. The binary pre-fills
/// remote implementations from the mesh configuration; an in-process provider replaces them.
#[derive(Clone, Debug, Default)]
pub struct Seams {
    /// The accounts' current devices (provided by auth; needed by messaging).
    pub device_directory: Option<Arc<dyn DeviceDirectory>>,
    /// Account administration (provided by auth; needed by admin).
    pub account_admin: Option<Arc<dyn AccountAdmin>>,
}

/// Why a service could not be registered.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// A seam this service needs is neither provided in this process nor configured remotely.
    #[error("{service} needs {seam}: host it in this process or set {config_key}")]
    MissingSeam {
        service: &'static str,
        seam: &'static str,
        /// The configuration key naming the remote provider.
        config_key: &'static str,
    },
    #[error("{service}: {source}")]
    Failed {
        service: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl RegisterError {
    pub fn failed(
        service: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Failed {
            service,
            source: source.into(),
        }
    }
}

/// A service crate's registration: built from its typed config, then registered into a
/// process.
#[async_trait]
pub trait Service: Send + Sync + Debug {
    /// The `--service` name (`auth`, `messaging`, ...).
    fn name(&self) -> &'static str;

    /// Methods callable without a bearer token (login, registration...).
    fn public_methods(&self) -> PublicMethods {
        PublicMethods::new()
    }

    /// Build the tonic services from `handles`, start their background tasks (event
    /// subscriptions are taken before this returns, so nothing published once serving starts is
    /// missed), provide and take `seams`, and add the services to `set`. Each tonic service's
    /// name is also its health-check name.
    async fn register(
        &self,
        handles: &Handles,
        seams: &mut Seams,
        set: &mut ServiceSet,
    ) -> Result<(), RegisterError>;
}
