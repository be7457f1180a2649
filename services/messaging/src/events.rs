//! Background subscriptions: auth's session/device/account/prekey events and other instances'
//! Listen claims.
//!
//! Every instance consumes auth's events itself and applies them to the streams it holds, so
//! notices need no cross-instance routing.

use std::sync::Arc;

use futures::StreamExt as _;
use guardyn_events::{Delivery, EventError};
use guardyn_proto::guardyn::auth::v1::{
    AccountDeletedEvent, DeviceLinkedEvent, DeviceRemovedEvent, PreKeysLowEvent,
    SessionRevokedEvent,
};
use guardyn_proto::guardyn::messaging::v1::server_notice::Notice;
use guardyn_proto::guardyn::messaging::v1::{DeviceLinked, DeviceRemoved, PreKeysLow};
use guardyn_storage::{Direction, KeyRange, Txn};
use prost::Message as _;

use crate::Core;
use crate::store::{self, ListenClaim};

/// Start the subscriptions; they end when the server shuts down.
pub(crate) async fn spawn(core: Arc<Core>) -> Result<(), EventError> {
    let mut revoked = core.bus.subscribe("auth.session.revoked").await?;
    let mut removed = core.bus.subscribe("auth.device.removed").await?;
    let mut deleted = core.bus.subscribe("auth.account.deleted").await?;
    let mut linked = core.bus.subscribe("auth.device.linked").await?;
    let mut prekeys = core.bus.subscribe("auth.prekeys.low").await?;
    let mut claims = core.bus.subscribe("messaging.listen.>").await?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = core.shutdown.cancelled() => return,
                Some(d) = revoked.next() => if let Delivery::Event(ev) = d {
                    match SessionRevokedEvent::decode(ev.payload().as_ref()) {
                        Ok(e) => on_revoked(&core, &e).await,
                        Err(err) => tracing::warn!(error = %err, "malformed auth.session.revoked"),
                    }
                },
                Some(d) = removed.next() => if let Delivery::Event(ev) = d {
                    match DeviceRemovedEvent::decode(ev.payload().as_ref()) {
                        Ok(e) => {
                            core.registry.remove_device(&e.account_id, e.device_id);
                            let notice = Notice::DeviceRemoved(DeviceRemoved { device_id: e.device_id });
                            let now = core.clock.now_ms();
                            core.registry.notify(&e.account_id, |d| d != e.device_id, now, &notice);
                            purge_queue(&core, &e.account_id, e.device_id).await;
                        }
                        Err(err) => tracing::warn!(error = %err, "malformed auth.device.removed"),
                    }
                },
                Some(d) = deleted.next() => if let Delivery::Event(ev) = d {
                    match AccountDeletedEvent::decode(ev.payload().as_ref()) {
                        Ok(e) => purge_account(&core, &e).await,
                        Err(err) => tracing::warn!(error = %err, "malformed auth.account.deleted"),
                    }
                },
                Some(d) = linked.next() => if let Delivery::Event(ev) = d {
                    match DeviceLinkedEvent::decode(ev.payload().as_ref()) {
                        Ok(e) => {
                            let notice = Notice::DeviceLinked(DeviceLinked {
                                device_id: e.device_id,
                                name: e.device_name,
                            });
                            let now = core.clock.now_ms();
                            core.registry.notify(&e.account_id, |d| d != e.device_id, now, &notice);
                        }
                        Err(err) => tracing::warn!(error = %err, "malformed auth.device.linked"),
                    }
                },
                Some(d) = prekeys.next() => if let Delivery::Event(ev) = d {
                    match PreKeysLowEvent::decode(ev.payload().as_ref()) {
                        Ok(e) => {
                            let notice = Notice::PrekeysLow(PreKeysLow {
                                one_time_prekeys: e.one_time_prekeys,
                                one_time_kem_prekeys: e.one_time_kem_prekeys,
                                has_last_resort_kem_prekey: e.has_last_resort_kem_prekey,
                                key_packages: e.key_packages,
                            });
                            let now = core.clock.now_ms();
                            core.registry.notify(&e.account_id, |d| d == e.device_id, now, &notice);
                        }
                        Err(err) => tracing::warn!(error = %err, "malformed auth.prekeys.low"),
                    }
                },
                Some(d) = claims.next() => if let Delivery::Event(ev) = d {
                    on_claim(&core, ev.subject(), ev.payload());
                },
                else => return,
            }
        }
    });
    Ok(())
}

/// Close the session's stream. Auth deletes a removed device (and a deleted account) before it
/// revokes its sessions, so a revocation whose device is gone from the directory is a removal:
/// the stream then ends with DeviceRemoved, whichever of the two events arrives first.
async fn on_revoked(core: &Core, e: &SessionRevokedEvent) {
    if !core
        .registry
        .has_session(&e.account_id, e.device_id, &e.session_id)
    {
        return;
    }
    let removed = match core.directory.devices(&e.account_id).await {
        Ok(Some(devices)) => !devices.iter().any(|d| d.device_id == e.device_id),
        Ok(None) => true,
        Err(err) => {
            tracing::warn!(error = %err, "device directory unavailable; closing as revoked");
            false
        }
    };
    if removed {
        core.registry.remove_device(&e.account_id, e.device_id);
    } else {
        core.registry
            .revoke_session(&e.account_id, e.device_id, &e.session_id);
    }
}

fn on_claim(core: &Core, subject: &str, payload: &[u8]) {
    let Ok(claim) = ListenClaim::decode(payload) else {
        tracing::warn!("malformed listen claim");
        return;
    };
    if claim.instance == core.registry.instance {
        return;
    }
    // messaging.listen.<account>.<device>
    let mut parts = subject.rsplitn(2, '.');
    let device = parts.next().and_then(|d| d.parse::<u32>().ok());
    let account = parts
        .next()
        .and_then(|p| p.strip_prefix("messaging.listen."));
    if let (Some(account), Some(device)) = (account, device) {
        core.registry.claimed_elsewhere(account, device);
    }
}

async fn purge_queue(core: &Core, account: &str, device: u32) {
    if let Err(e) = core
        .log
        .delete_through(&store::queue_partition(account, device), u64::MAX)
        .await
    {
        tracing::warn!(error = %e, "could not purge a removed device's queue");
    }
}

async fn purge_account(core: &Core, e: &AccountDeletedEvent) {
    core.registry.remove_account(&e.account_id);
    let devices: Vec<u32> = if e.device_ids.is_empty() {
        (1..=127).collect()
    } else {
        e.device_ids.clone()
    };
    for d in devices {
        purge_queue(core, &e.account_id, d).await;
    }
    let prefix = store::idempotency_prefix(&e.account_id);
    loop {
        let batch = match core
            .kv
            .scan(KeyRange::prefix(&prefix), Direction::Forward, 500)
            .await
        {
            Ok(b) => b,
            Err(err) => {
                tracing::warn!(error = %err, "could not purge idempotency records");
                return;
            }
        };
        if batch.is_empty() {
            return;
        }
        let txn = batch
            .iter()
            .fold(Txn::new(), |t, p| t.delete(p.key.clone()));
        if let Err(err) = core.kv.commit(txn).await {
            tracing::warn!(error = %err, "could not purge idempotency records");
            return;
        }
    }
}
