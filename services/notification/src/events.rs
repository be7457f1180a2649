//! Bus subscriptions: auth's device removals and account deletions delete the device's (or
//! every device of the account's) tokens, settings, push state and dead letters.

use std::sync::Arc;

use futures::StreamExt as _;
use guardyn_common::events::Payload;
use guardyn_common::events::auth::{
    ACCOUNT_DELETED, AccountDeleted, DEVICE_REMOVED, DeviceRemoved,
};
use guardyn_events::{Delivery, EventError};
use guardyn_storage::{Direction, KeyRange, StorageError, Txn};

use crate::core::Core;
use crate::store;

/// Keys one purge transaction deletes.
const PURGE_BATCH: usize = 128;

/// Subscribe (before this returns, so nothing published once serving starts is missed) and
/// apply removals until the server shuts down.
pub(crate) async fn spawn(core: Arc<Core>) -> Result<(), EventError> {
    let mut removed = core.bus.subscribe(DEVICE_REMOVED).await?;
    let mut deleted = core.bus.subscribe(ACCOUNT_DELETED).await?;
    tokio::spawn(async move {
        loop {
            let prefix = tokio::select! {
                () = core.shutdown.cancelled() => return,
                d = removed.next() => match d {
                    Some(d) => decode::<DeviceRemoved>(d)
                        .map(|e| store::device_prefix(e.account, e.device)),
                    None => return,
                },
                d = deleted.next() => match d {
                    Some(d) => decode::<AccountDeleted>(d).map(|e| store::account_prefix(e.account)),
                    None => return,
                },
            };
            if let Some(prefix) = prefix
                && let Err(err) = purge(&core, &prefix).await
            {
                tracing::warn!(error = %err, "could not delete a removed device's push tokens");
            }
        }
    });
    Ok(())
}

fn decode<P: Payload>(d: Delivery) -> Option<P> {
    match d {
        Delivery::Event(ev) => match P::decode(ev.payload()) {
            Ok(e) => Some(e),
            Err(err) => {
                tracing::warn!(error = %err, "ignoring a malformed event");
                None
            }
        },
        Delivery::Lagged { missed } => {
            // A missed removal leaves tokens of a device that can no longer sign in; pushes
            // to them wake nobody and stop when the provider declares them dead.
            tracing::warn!(missed, "missed device removals (subscriber lagged)");
            None
        }
    }
}

/// Delete every key under `prefix`.
async fn purge(core: &Core, prefix: &[u8]) -> Result<(), StorageError> {
    loop {
        let batch = core
            .kv
            .scan(KeyRange::prefix(prefix), Direction::Forward, PURGE_BATCH)
            .await?;
        if batch.is_empty() {
            return Ok(());
        }
        let txn = batch
            .into_iter()
            .fold(Txn::new(), |txn, pair| txn.delete(pair.key));
        let _ = core.kv.commit(txn).await?;
    }
}
