//! Background subscriptions: auth's session/device/account/prekey events, admin's client
//! configuration versions and system notices, and other instances' Listen claims, releases and
//! stream announcements (which devices stream elsewhere, [`crate::remote`]).
//!
//! Every instance consumes auth's events itself and applies them to the streams it holds, so
//! notices need no cross-instance routing.

use std::sync::Arc;

use futures::StreamExt as _;
use guardyn_common::events::Payload;
use guardyn_common::events::auth::{
    ACCOUNT_DELETED, AccountDeleted, DEVICE_LINKED, DEVICE_REMOVED, DeviceLinked, DeviceRemoved,
    PREKEYS_LOW, PreKeysLow, SESSION_REVOKED, SessionRevoked,
};
use guardyn_common::events::client_config::{CLIENT_CONFIG_PUBLISHED, ClientConfigPublished};
use guardyn_common::events::messaging::{
    GROUP_ALL, GroupMail, LISTEN_ALL, ListenClaim, ListenRelease, STREAMS_ALL, StreamAnnounce,
    UNLISTEN_ALL, parse_listen_subject, parse_unlisten_subject,
};
use guardyn_common::events::notices::{SYSTEM_NOTICE_SENT, SystemNoticeSent};
use guardyn_common::{AccountId, DeviceId};
use guardyn_events::{Delivery, EventError};
use guardyn_storage::{Direction, KeyRange, Txn};

use crate::core::Core;
use crate::store;
use crate::streams::Notice;

/// The payload of an event delivery, or `None` (logged) when it is a lag marker or does not
/// decode.
fn payload<P: Payload>(d: Delivery) -> Option<P> {
    match d {
        Delivery::Event(ev) => match P::decode(ev.payload()) {
            Ok(p) => Some(p),
            Err(err) => {
                tracing::warn!(error = %err, "ignoring a malformed event");
                None
            }
        },
        // Notices are hints and stream closes are re-checked by the token layer; nothing to
        // resynchronise.
        Delivery::Lagged { .. } => None,
    }
}

/// Start the subscriptions; they end when the server shuts down.
pub(crate) async fn spawn(core: Arc<Core>) -> Result<(), EventError> {
    let mut revoked = core.bus.subscribe(SESSION_REVOKED).await?;
    let mut removed = core.bus.subscribe(DEVICE_REMOVED).await?;
    let mut deleted = core.bus.subscribe(ACCOUNT_DELETED).await?;
    let mut linked = core.bus.subscribe(DEVICE_LINKED).await?;
    let mut prekeys = core.bus.subscribe(PREKEYS_LOW).await?;
    let mut claims = core.bus.subscribe(LISTEN_ALL).await?;
    let mut releases = core.bus.subscribe(UNLISTEN_ALL).await?;
    let mut announces = core.bus.subscribe(STREAMS_ALL).await?;
    let mut configs = core.bus.subscribe(CLIENT_CONFIG_PUBLISHED).await?;
    let mut notices = core.bus.subscribe(SYSTEM_NOTICE_SENT).await?;
    let mut groups = core.bus.subscribe(GROUP_ALL).await?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = core.shutdown.cancelled() => return,
                Some(d) = revoked.next() => if let Some(e) = payload::<SessionRevoked>(d) {
                    on_revoked(&core, &e).await;
                },
                Some(d) = removed.next() => if let Some(e) = payload::<DeviceRemoved>(d) {
                    core.registry.remove_device(e.account, e.device);
                    let notice = Notice::DeviceRemoved { device: e.device };
                    let now = core.clock.now_ms();
                    core.registry.notify(e.account, |d| d != e.device, now, &notice);
                    purge_queue(&core, e.account, e.device).await;
                },
                Some(d) = deleted.next() => if let Some(e) = payload::<AccountDeleted>(d) {
                    purge_account(&core, &e).await;
                },
                Some(d) = linked.next() => if let Some(e) = payload::<DeviceLinked>(d) {
                    let notice = Notice::DeviceLinked {
                        device: e.device,
                        name: e.device_name,
                    };
                    let now = core.clock.now_ms();
                    core.registry.notify(e.account, |d| d != e.device, now, &notice);
                },
                Some(d) = prekeys.next() => if let Some(e) = payload::<PreKeysLow>(d) {
                    let notice = Notice::PreKeysLow {
                        one_time_prekeys: e.one_time_prekeys,
                        one_time_kem_prekeys: e.one_time_kem_prekeys,
                        has_last_resort_kem_prekey: e.has_last_resort_kem_prekey,
                        key_packages: e.key_packages,
                    };
                    let now = core.clock.now_ms();
                    core.registry.notify(e.account, |d| d == e.device, now, &notice);
                },
                Some(d) = configs.next() => if let Some(e) = payload::<ClientConfigPublished>(d) {
                    let notice = Notice::ClientConfigChanged { version: e.version };
                    core.registry.notify_all(core.clock.now_ms(), &notice);
                },
                Some(d) = notices.next() => if let Some(e) = payload::<SystemNoticeSent>(d) {
                    on_system_notice(&core, e);
                },
                Some(d) = groups.next() => match d {
                    // Missed group events: every group stream re-reads.
                    Delivery::Lagged { .. } => core.registry.wake_all_groups(),
                    d => if let Some(e) = payload::<GroupMail>(d)
                        && e.instance != core.registry.instance
                    {
                        core.registry.wake_group(&e.group);
                    },
                },
                Some(d) = claims.next() => if let Delivery::Event(ev) = d {
                    on_claim(&core, ev.subject(), ev.payload());
                },
                Some(d) = releases.next() => if let Delivery::Event(ev) = d {
                    on_release(&core, ev.subject(), ev.payload());
                },
                Some(d) = announces.next() => if let Some(a) = payload::<StreamAnnounce>(d) {
                    let lease = std::time::Duration::from_millis(a.lease_ms);
                    core.remote.announced(a.instance, lease, &a.streams);
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
async fn on_revoked(core: &Core, e: &SessionRevoked) {
    if !core
        .registry
        .has_session(e.account, e.device, &e.session_id)
    {
        return;
    }
    if crate::listen::device_removed(core, e.account, e.device).await {
        core.registry.remove_device(e.account, e.device);
    } else {
        core.registry
            .revoke_session(e.account, e.device, &e.session_id);
    }
}

/// Show an operator's notice on the open streams of its audience. Every instance receives the
/// event and tells the streams it holds, so a notice reaches each connected device once.
fn on_system_notice(core: &Core, e: SystemNoticeSent) {
    let now = core.clock.now_ms();
    let all = e.notice.all_accounts;
    let notice = Notice::SystemNotice(e.notice);
    if all {
        core.registry.notify_all(now, &notice);
        return;
    }
    let accounts = e.accounts.into_iter().collect();
    core.registry.notify_accounts(&accounts, now, &notice);
}

fn on_claim(core: &Core, subject: &str, payload: &[u8]) {
    let Ok(claim) = ListenClaim::decode(payload) else {
        tracing::warn!("malformed listen claim");
        return;
    };
    if claim.instance == core.registry.instance {
        return;
    }
    if let Some((account, device)) = parse_listen_subject(subject) {
        core.registry.claimed_elsewhere(account, device);
        core.remote
            .claimed(account, device, claim.instance, claim.stream);
    }
}

fn on_release(core: &Core, subject: &str, payload: &[u8]) {
    let Ok(release) = ListenRelease::decode(payload) else {
        tracing::warn!("malformed listen release");
        return;
    };
    if let Some((account, device)) = parse_unlisten_subject(subject) {
        core.remote
            .released(account, device, release.instance, release.stream);
    }
}

async fn purge_queue(core: &Core, account: AccountId, device: DeviceId) {
    if let Err(e) = core
        .log
        .delete_through(&store::queue_partition(account, device), u64::MAX)
        .await
    {
        tracing::warn!(error = %e, "could not purge a removed device's queue");
    }
    // After the entries: a usage record deleted first could be rebuilt from them meanwhile.
    if let Err(e) = core.kv.delete(&store::usage_key(account, device)).await {
        tracing::warn!(error = %e, "could not purge a removed device's queue usage");
    }
    // A device id is reused after a removal: the next device must not read these groups.
    let memberships = store::membership_prefix(account, device);
    purge_prefix(core, &memberships, "group memberships").await;
}

/// Delete every KV record under `prefix`.
async fn purge_prefix(core: &Core, prefix: &[u8], what: &str) {
    loop {
        let batch = match core
            .kv
            .scan(KeyRange::prefix(prefix), Direction::Forward, 500)
            .await
        {
            Ok(b) => b,
            Err(err) => {
                tracing::warn!(error = %err, what, "could not purge records");
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
            tracing::warn!(error = %err, what, "could not purge records");
            return;
        }
    }
}

async fn purge_account(core: &Core, e: &AccountDeleted) {
    core.registry.remove_account(e.account);
    let devices: Vec<DeviceId> = if e.devices.is_empty() {
        DeviceId::all().collect()
    } else {
        e.devices.clone()
    };
    for d in devices {
        purge_queue(core, e.account, d).await;
    }
    let prefix = store::idempotency_prefix(e.account);
    purge_prefix(core, &prefix, "idempotency records").await;
}
