//! Presence on the event bus: publishing this instance's events and taking the subscriptions
//! it reads. The subjects and payloads themselves live in `guardyn_common::events` (presence's
//! own and auth's), shared with every other publisher and subscriber; this module only moves
//! them over an [`EventBus`].

use guardyn_common::events::auth::{ACCOUNT_DELETED, DEVICE_REMOVED};
use guardyn_common::events::presence::{
    AccountEvent, BEACONS, Change, TypingSignal, account_subject, beacon_subject, encode_beacon,
    inbox_subject,
};
use guardyn_events::{EventBus, EventError, Subscription};

use crate::model::{AccountId, InstanceId};

/// Publish a change of `account` made on `instance`.
pub(crate) async fn publish_change(
    bus: &dyn EventBus,
    instance: InstanceId,
    account: AccountId,
    at_ms: u64,
    change: Change,
) {
    let event = AccountEvent {
        instance,
        at_ms,
        change,
    };
    // Live events are at-most-once by contract; the durable state is already written and
    // a watcher that missed the event resynchronises on its next subscribe.
    if let Err(err) = bus.publish(&account_subject(account), event.encode()).await {
        tracing::warn!(%account, error = %err, "presence event not published");
    }
}

/// Send a typing indicator to every stream of `to`.
pub(crate) async fn publish_typing(bus: &dyn EventBus, to: AccountId, signal: &TypingSignal) {
    if let Err(err) = bus.publish(&inbox_subject(to), signal.encode()).await {
        tracing::warn!(error = %err, "typing indicator not published");
    }
}

/// Tell the other instances that `instance` is alive for `lease_ms`.
pub(crate) async fn publish_beacon(bus: &dyn EventBus, instance: InstanceId, lease_ms: u64) {
    let beacon = encode_beacon(instance, lease_ms);
    if let Err(err) = bus.publish(&beacon_subject(instance), beacon).await {
        tracing::warn!(error = %err, "presence beacon not published");
    }
}

/// Every instance's beacon (decode with `decode_beacon`).
pub(crate) async fn subscribe_beacons(bus: &dyn EventBus) -> Result<Subscription, EventError> {
    bus.subscribe(BEACONS).await
}

/// The subscriptions to auth's events, taken before the service starts serving so that no
/// event published after startup is missed.
#[derive(Debug)]
pub(crate) struct AuthEvents {
    pub(crate) removed: Subscription,
    pub(crate) deleted: Subscription,
}

pub(crate) async fn subscribe_auth(bus: &dyn EventBus) -> Result<AuthEvents, EventError> {
    Ok(AuthEvents {
        removed: bus.subscribe(DEVICE_REMOVED).await?,
        deleted: bus.subscribe(ACCOUNT_DELETED).await?,
    })
}
