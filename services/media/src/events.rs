//! Bus subscriptions: auth's account deletions purge the account's uploads and blobs.

use std::sync::Arc;

use futures::StreamExt as _;
use guardyn_common::events::Payload;
use guardyn_common::events::auth::{ACCOUNT_DELETED, AccountDeleted};
use guardyn_events::{Delivery, EventError};

use crate::core::Core;

/// Subscribe (before this returns, so no deletion published once serving starts is missed)
/// and apply deletions until the server shuts down.
pub(crate) async fn spawn(core: Arc<Core>) -> Result<(), EventError> {
    let mut deleted = core.bus.subscribe(ACCOUNT_DELETED).await?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = core.shutdown.cancelled() => return,
                d = deleted.next() => match d {
                    Some(Delivery::Event(ev)) => match AccountDeleted::decode(ev.payload()) {
                        Ok(e) => {
                            if let Err(err) = core.purge_account(e.account).await {
                                tracing::warn!(account = %e.account, error = %err,
                                    "could not purge a deleted account's media");
                            }
                        }
                        Err(err) => tracing::warn!(error = %err, "ignoring a malformed event"),
                    },
                    Some(Delivery::Lagged { missed }) => {
                        // Missed deletions leave media that still expires with its retention.
                        tracing::warn!(missed, "missed account deletions (subscriber lagged)");
                    }
                    None => return,
                },
            }
        }
    });
    Ok(())
}
