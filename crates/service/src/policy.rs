//! A process's view of the admin policy ([`guardyn_common::policy`]) for the services that
//! enforce it: loaded once at registration, then kept current from the bus and by polling.

use futures::StreamExt;
use guardyn_common::events::policy::POLICY_CHANGED;
use guardyn_common::policy::{self, PolicyCache};
use guardyn_events::Subscription;

use crate::{Handles, RegisterError};

/// The loaded policy and its change subscription, not yet followed: a service takes it early
/// in `register` (so no change published once serving starts is missed) and calls
/// [`PolicyWatch::follow`] once registration can no longer fail, so a failed start leaves no
/// task holding the stores open.
#[derive(Debug)]
pub struct PolicyWatch {
    cache: PolicyCache,
    changes: Subscription,
    handles: Handles,
}

/// Load the current policy and subscribe to its changes.
pub async fn watch(service: &'static str, handles: &Handles) -> Result<PolicyWatch, RegisterError> {
    let initial = policy::load(handles.stores.kv.as_ref())
        .await
        .map_err(|e| RegisterError::failed(service, e))?;
    let changes = handles
        .bus
        .subscribe(POLICY_CHANGED)
        .await
        .map_err(|e| RegisterError::failed(service, e))?;
    Ok(PolicyWatch {
        cache: PolicyCache::new(initial),
        changes,
        handles: handles.clone(),
    })
}

impl PolicyWatch {
    /// The cache this watch keeps current (a clone shares the same value).
    pub fn cache(&self) -> PolicyCache {
        self.cache.clone()
    }

    /// Keep the cache current until shutdown.
    pub fn follow(self) -> PolicyCache {
        let cache = self.cache.clone();
        tokio::spawn(self.cache.follow(
            self.handles.stores.kv.clone(),
            self.changes.map(|_| ()),
            self.handles.ctx.shutdown.clone(),
        ));
        cache
    }
}
