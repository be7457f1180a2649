//! Reactions to the auth service's events (`proto/guardyn/auth/v1/events.proto`): a removed
//! device goes offline at once, a deleted account's presence is purged.
//!
//! Every instance subscribes (live fan-out reaches all of them), so each one takes the device
//! out of its own local table, views and streams; the storage clean-up is idempotent and may
//! run on every instance at once (conditioned writes, retried). The events are at-most-once:
//! a removed device that an instance missed still goes offline when its heartbeats stop (its
//! sessions are revoked, so they do) after the usual expiry.

use std::sync::Arc;

use futures::StreamExt as _;
use guardyn_events::{Delivery, EventBus, EventError, Subscription};
use guardyn_proto::guardyn::auth::v1::{AccountDeletedEvent, DeviceRemovedEvent};
use prost::Message as _;

use crate::engine::{Engine, lock};
use crate::error::PresenceError;
use crate::events::Change;
use crate::model::AccountId;

/// Published by auth when a device is removed from its account.
pub const DEVICE_REMOVED: &str = "auth.device.removed";
/// Published by auth when an account is deleted.
pub const ACCOUNT_DELETED: &str = "auth.account.deleted";

/// Device ids are 1..=127: the token verifier rejects others, so no other id can be online.
const MAX_DEVICE_ID: u32 = 127;

/// The two subscriptions, taken before the service starts serving so that no event published
/// after startup is missed.
#[derive(Debug)]
pub(crate) struct AuthEvents {
    removed: Subscription,
    deleted: Subscription,
}

pub(crate) async fn subscribe(bus: &dyn EventBus) -> Result<AuthEvents, EventError> {
    Ok(AuthEvents {
        removed: bus.subscribe(DEVICE_REMOVED).await?,
        deleted: bus.subscribe(ACCOUNT_DELETED).await?,
    })
}

/// Apply auth's events until the server shuts down. One event at a time, in arrival order.
pub(crate) async fn run(engine: Arc<Engine>, subs: AuthEvents) {
    let AuthEvents {
        mut removed,
        mut deleted,
    } = subs;
    loop {
        tokio::select! {
            () = engine.shutdown.cancelled() => return,
            Some(d) = removed.next() => match d {
                Delivery::Event(ev) => match DeviceRemovedEvent::decode(ev.payload().as_ref()) {
                    Ok(e) => match AccountId::parse(&e.account_id) {
                        Some(account) => report(engine.device_removed(account, e.device_id).await),
                        None => tracing::warn!("auth.device.removed with a malformed account id"),
                    },
                    Err(err) => tracing::warn!(error = %err, "malformed auth.device.removed"),
                },
                Delivery::Lagged { missed } => lagged(DEVICE_REMOVED, missed),
            },
            Some(d) = deleted.next() => match d {
                Delivery::Event(ev) => match AccountDeletedEvent::decode(ev.payload().as_ref()) {
                    Ok(e) => match AccountId::parse(&e.account_id) {
                        Some(account) => report(engine.account_deleted(account).await),
                        None => tracing::warn!("auth.account.deleted with a malformed account id"),
                    },
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

impl Engine {
    /// A device was removed from `account`: offline at once. Dropped from the local table if
    /// connected here (and the offline change published, as on expiry), its stream here ended,
    /// its stored entries of every instance deleted, and every view here updated. When it was
    /// the account's last online device, last seen is recorded as usual.
    pub async fn device_removed(
        &self,
        account: AccountId,
        device: u32,
    ) -> Result<(), PresenceError> {
        let now = self.clock.now_ms();
        let local = lock(&self.local).remove_device(account, device);
        self.end_stream(account, device);
        let stored = self
            .store
            .remove_device(account, device, now, |i| self.peers.alive(i))
            .await;
        if let Some(generation) = local {
            self.publish(account, now, Change::DeviceOffline { device, generation })
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
            for device in 1..=MAX_DEVICE_ID {
                local.remove_device(account, device);
            }
            local.remove_typing_of(account)
        };
        for device in 1..=MAX_DEVICE_ID {
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
