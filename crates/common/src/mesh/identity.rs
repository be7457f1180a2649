//! A mesh client's certificate that follows its files. Tonic fixes a channel's client
//! certificate when the channel is built, so the channel is rebuilt (connections open lazily)
//! whenever [`crate::tls_reload`] loads a new certificate and key: new calls go over
//! connections presenting the new certificate, calls in flight finish on the connection they
//! started on, which closes once its last user drops the old channel.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use tonic::transport::Channel;

use crate::tls_reload::{ClientIdentity, Reloading};

/// Builds the balanced channel presenting one identity (a configuration error as text).
pub(crate) type Rebuild = Box<dyn Fn(&ClientIdentity) -> Result<Channel, String> + Send + Sync>;

/// The channel for the identity in force, shared by every clone of a [`super::MeshChannel`].
pub struct FollowingIdentity {
    identity: Arc<Reloading<ClientIdentity>>,
    rebuild: Rebuild,
    /// The identity last seen and the channel built for it (the previous channel when that
    /// identity could not be used, so a bad pair is reported once, not per call).
    built: Mutex<(Arc<ClientIdentity>, Channel)>,
}

impl fmt::Debug for FollowingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FollowingIdentity").finish_non_exhaustive()
    }
}

impl FollowingIdentity {
    /// Starting from `channel`, built for `first` (the identity in force).
    pub(crate) fn new(
        identity: Arc<Reloading<ClientIdentity>>,
        first: Arc<ClientIdentity>,
        channel: Channel,
        rebuild: Rebuild,
    ) -> Arc<Self> {
        Arc::new(Self {
            identity,
            rebuild,
            built: Mutex::new((first, channel)),
        })
    }

    /// The identity in force and its channel, when it is not `held` (the one the caller's
    /// channel was built for); `None` when nothing changed. Cheap on the unchanged path: one
    /// read lock and a pointer comparison per call.
    pub(crate) fn newer_than(
        &self,
        held: &Arc<ClientIdentity>,
    ) -> Option<(Arc<ClientIdentity>, Channel)> {
        let now = self.identity.current();
        if Arc::ptr_eq(&now, held) {
            return None;
        }
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&built.0, &now) {
            match (self.rebuild)(&now) {
                Ok(channel) => {
                    tracing::info!("mesh client presents its reloaded certificate");
                    *built = (now, channel);
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "mesh client certificate reloaded but unusable: keeping the previous one"
                    );
                    built.0 = now;
                }
            }
        }
        Some(built.clone())
    }
}
