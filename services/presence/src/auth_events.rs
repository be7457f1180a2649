//! Reactions to the auth service's events (`guardyn_common::events::auth`): a removed
//! device goes offline at once, a deleted account's presence is purged.
//!
//! Every instance subscribes (live fan-out reaches all of them), so each one takes the device
//! out of its own local table, views and streams; the storage clean-up is idempotent and may
//! run on every instance at once (conditioned writes, retried). The events are at-most-once:
//! a removed device that an instance missed still goes offline when its heartbeats stop (its
//! sessions are revoked, so they do) after the usual expiry.

use std::sync::Arc;

use futures::StreamExt as _;
use guardyn_common::events::Payload as _;
use guardyn_common::events::auth::{
    ACCOUNT_DELETED, AccountDeleted, DEVICE_REMOVED, DeviceRemoved,
};
use guardyn_common::events::presence::Change;
use guardyn_events::{Delivery, Event};
use tracing::Instrument as _;

use crate::core::{Core, lock};
use crate::error::PresenceError;
use crate::events::AuthEvents;
use crate::model::{AccountId, DeviceId};

/// Apply auth's events until the server shuts down. One event at a time, in arrival order.
pub(crate) async fn run(core: Arc<Core>, subs: AuthEvents) {
    let AuthEvents {
        mut removed,
        mut deleted,
    } = subs;
    loop {
        tokio::select! {
            () = core.shutdown.cancelled() => return,
            Some(d) = removed.next() => match d {
                Delivery::Event(ev) => match DeviceRemoved::decode(ev.payload()) {
                    Ok(e) => report(
                        core.device_removed(e.account, e.device)
                            .instrument(event_span(DEVICE_REMOVED, &ev))
                            .await,
                    ),
                    Err(err) => tracing::warn!(error = %err, "malformed auth.device.removed"),
                },
                Delivery::Lagged { missed } => lagged(DEVICE_REMOVED, missed),
            },
            Some(d) = deleted.next() => match d {
                Delivery::Event(ev) => match AccountDeleted::decode(ev.payload()) {
                    Ok(e) => report(
                        core.account_deleted(e.account)
                            .instrument(event_span(ACCOUNT_DELETED, &ev))
                            .await,
                    ),
                    Err(err) => tracing::warn!(error = %err, "malformed auth.account.deleted"),
                },
                Delivery::Lagged { missed } => lagged(ACCOUNT_DELETED, missed),
            },
            else => {
                tracing::warn!("auth event subscriptions ended");
                return;
            }
        }
    }
}

/// The span of applying `ev`: in the trace of the auth request that published it.
fn event_span(subject: &str, ev: &Event) -> tracing::Span {
    let span = tracing::info_span!("auth_event", otel.name = subject, otel.kind = "consumer");
    ev.trace_context().set_parent_of(&span);
    span
}

fn report(result: Result<(), PresenceError>) {
    if let Err(err) = result {
        tracing::warn!(error = %err, "auth event not fully applied to presence");
    }
}

fn lagged(subject: &str, missed: u64) {
    // Nothing durable to resynchronise from: removed devices still expire once their
    // (revoked) sessions stop heartbeating.
    tracing::warn!(subject, missed, "auth events lost");
}

impl Core {
    /// A device was removed from `account`: offline at once. Dropped from the local table if
    /// connected here (and the offline change published, as on expiry), its stream here ended,
    /// its stored entries of every instance deleted, and every view here updated. When it was
    /// the account's last online device, last seen is recorded as usual.
    pub async fn device_removed(
        &self,
        account: AccountId,
        device: DeviceId,
    ) -> Result<(), PresenceError> {
        let now = self.clock.now_ms();
        let local = lock(&self.local).remove_device(account, device);
        self.end_stream(account, device);
        let stored = self
            .store
            .remove_device(account, device, now, |i| self.peers.alive(i))
            .await;
        if let Some(generation) = local {
            self.publish(
                account,
                now,
                Change::DeviceOffline {
                    device: device.get(),
                    generation,
                },
            )
            .await;
        }
        self.views.remove_device(account, device, now);
        stored
    }

    /// `account` was deleted: its devices here are dropped without an offline event (that
    /// would record a last seen), its streams here end, its typing indicators are withdrawn,
    /// its stored record and device entries are deleted, and watchers here see it offline with
    /// no last seen. Other accounts' allow lists may still name it (see [`crate::store`]).
    pub async fn account_deleted(&self, account: AccountId) -> Result<(), PresenceError> {
        let now = self.clock.now_ms();
        let typing = {
            let mut local = lock(&self.local);
            // Device ids are 1..=127 (the token verifier rejects others): no other id can be
            // online.
            for device in DeviceId::all() {
                local.remove_device(account, device);
            }
            local.remove_typing_of(account)
        };
        for device in DeviceId::all() {
            self.end_stream(account, device);
        }
        let stored = self.store.purge_account(account).await;
        self.views.account_deleted(account);
        for target in typing {
            self.announce_typing(account, target, false, now, now).await;
        }
        stored
    }
}
