//! Background tasks: the expiry driver (timing wheel on the injected clock) and the instance
//! beacon. Both end when the server shuts down. (The bus source of each watched topic is
//! started per topic by [`Core`].)

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use guardyn_common::clock::jumped;
use guardyn_common::events::presence::{Change, decode_beacon};
use guardyn_events::Delivery;

use crate::core::{Core, lock};
use crate::events::{publish_beacon, subscribe_beacons};
use crate::local::Expired;
use crate::model::InstanceId;

/// Fires due timers: wakes for the wheel's next due tick (runtime timer), when the clock jumps
/// (manual clocks), or when an earlier timer was added. Never scans devices.
pub(crate) async fn run_expiry(core: Arc<Core>) {
    let mut jumps = core.clock.jumps();
    loop {
        let now = core.clock.now_ms();
        let (expired, next) = {
            let mut local = lock(&core.local);
            (local.expire(now), local.next_due_ms())
        };
        for e in expired {
            expire(&core, e, now).await;
        }
        let sleep = next.map(|due| Duration::from_millis(due.saturating_sub(now)));
        tokio::select! {
            _ = core.shutdown.cancelled() => return,
            _ = tokio::time::sleep(sleep.unwrap_or(Duration::ZERO)), if sleep.is_some() => {}
            _ = core.wake.notified() => {}
            _ = jumped(&mut jumps) => {}
        }
    }
}

async fn expire(core: &Arc<Core>, expired: Expired, now: u64) {
    match expired {
        Expired::Device {
            account,
            device,
            generation,
        } => {
            if let Err(err) = core
                .store
                .device_offline(account, core.instance, device, generation, now, |i| {
                    core.peers.alive(i)
                })
                .await
            {
                tracing::warn!(%account, error = %err, "device offline not stored");
            }
            core.publish(
                account,
                now,
                Change::DeviceOffline {
                    device: device.get(),
                    generation,
                },
            )
            .await;
        }
        Expired::Typing { sender, target } => {
            core.announce_typing(sender, target, false, now, now).await;
        }
    }
}

/// Publish this instance's beacon, listen to the others', and take the devices of silent
/// instances offline. Runs on real time (see `peers`).
pub(crate) async fn run_beacons(core: Arc<Core>) {
    let interval = Duration::from_secs(core.config.instance_beacon_secs);
    let lease_ms = u64::try_from(core.config.instance_lease().as_millis()).unwrap_or(u64::MAX);
    let mut sub = match subscribe_beacons(&*core.bus).await {
        Ok(s) => Some(s),
        Err(err) => {
            tracing::warn!(error = %err, "presence beacons unavailable");
            None
        }
    };
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = core.shutdown.cancelled() => return,
            _ = tick.tick() => {
                publish_beacon(&*core.bus, core.instance, lease_ms).await;
                for dead in core.peers.sweep() {
                    instance_died(&core, dead);
                }
            }
            Some(d) = async { match sub.as_mut() { Some(s) => s.next().await, None => None } } => {
                if let Delivery::Event(event) = d
                    && let Some((instance, lease)) = decode_beacon(event.payload())
                {
                    core.peers.touch(instance, Some(Duration::from_millis(lease)));
                }
            }
        }
    }
}

fn instance_died(core: &Arc<Core>, dead: InstanceId) {
    let now = core.clock.now_ms();
    // This instance's own devices must not wait for their echo on the bus to keep an account
    // online (see `Core::apply_event`).
    for account in core.views.accounts_on(dead) {
        core.hold_local_devices(account);
    }
    let affected = core.views.drop_instance(dead, now);
    tracing::info!(instance = %dead, accounts = affected.len(), "presence instance went silent");
    for account in affected {
        let core = core.clone();
        tokio::spawn(async move {
            if let Err(err) = core
                .store
                .drop_instance(account, dead, now, |i| core.peers.alive(i))
                .await
            {
                tracing::warn!(%account, error = %err, "stale presence entries not removed");
            }
        });
    }
}
