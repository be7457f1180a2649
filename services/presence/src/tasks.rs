//! Background tasks: the expiry driver (timing wheel on the injected clock), one bus source per
//! watched topic, and the instance beacon. All end when the server shuts down.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures::StreamExt as _;
use guardyn_events::Delivery;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::events::{
    AccountEvent, BEACONS, Change, TypingSignal, account_subject, beacon_subject, decode_beacon,
    encode_beacon, inbox_subject,
};
use crate::local::Expired;
use crate::views::TopicKey;

/// Resolves when the clock jumps; never for clocks that move with real time.
async fn jumped(rx: &mut Option<watch::Receiver<()>>) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Fires due timers: wakes for the wheel's next due tick (runtime timer), when the clock jumps
/// (manual clocks), or when an earlier timer was added. Never scans devices.
pub async fn run_expiry(engine: Arc<Engine>) {
    let mut jumps = engine.clock.jumps();
    loop {
        let now = engine.clock.now_ms();
        let (expired, next) = {
            let mut local = engine.local.lock().unwrap_or_else(PoisonError::into_inner);
            (local.expire(now), local.next_due_ms())
        };
        for e in expired {
            expire(&engine, e, now).await;
        }
        let sleep = next.map(|due| Duration::from_millis(due.saturating_sub(now)));
        tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            _ = tokio::time::sleep(sleep.unwrap_or(Duration::ZERO)), if sleep.is_some() => {}
            _ = engine.wake.notified() => {}
            _ = jumped(&mut jumps) => {}
        }
    }
}

async fn expire(engine: &Arc<Engine>, expired: Expired, now: u64) {
    match expired {
        Expired::Device {
            account,
            device,
            generation,
        } => {
            if let Err(err) = engine
                .store
                .device_offline(account, engine.instance, device, generation, now, |i| {
                    engine.peers.alive(i)
                })
                .await
            {
                tracing::warn!(%account, error = %err, "device offline not stored");
            }
            engine
                .publish(account, now, Change::DeviceOffline { device, generation })
                .await;
        }
        Expired::Typing { sender, target } => {
            engine
                .announce_typing(sender, target, false, now, now)
                .await;
        }
    }
}

/// The bus source of one topic: subscribe, load the initial state, then apply events until
/// the last watcher leaves (`cancel`) or the server stops.
pub async fn run_topic(
    engine: Arc<Engine>,
    key: TopicKey,
    task_id: u64,
    cancel: CancellationToken,
) {
    let (subject, account) = match key {
        TopicKey::Account(a) => (account_subject(a), a),
        TopicKey::Inbox(a) => (inbox_subject(a), a),
    };
    let mut sub = match engine.bus.subscribe(&subject).await {
        Ok(sub) => sub,
        Err(err) => {
            tracing::warn!(%subject, error = %err, "presence subscription failed");
            engine.topic_failed(key, task_id);
            return;
        }
    };
    let load = |engine: Arc<Engine>| async move {
        match engine.load(account).await {
            Ok(view) => {
                engine.views.install(key, view);
                true
            }
            Err(err) => {
                tracing::warn!(%account, error = %err, "presence state not loaded");
                engine.topic_failed(key, task_id);
                false
            }
        }
    };
    match key {
        TopicKey::Account(_) => {
            if !load(engine.clone()).await {
                return;
            }
        }
        TopicKey::Inbox(_) => engine.views.inbox_ready(account),
    }
    loop {
        let delivery = tokio::select! {
            _ = cancel.cancelled() => return,
            d = sub.next() => d,
        };
        match delivery {
            Some(Delivery::Event(event)) => match key {
                TopicKey::Account(_) => {
                    if let Some(ev) = AccountEvent::decode(event.payload()) {
                        engine.peers.touch(ev.instance, None);
                        engine.views.apply(account, &ev);
                    }
                }
                TopicKey::Inbox(_) => {
                    if let Some(signal) = TypingSignal::decode(event.payload()) {
                        engine.views.deliver_typing(account, &signal);
                    }
                }
            },
            // Events were lost: the stored state is the truth to resynchronise from.
            Some(Delivery::Lagged { .. }) => {
                if matches!(key, TopicKey::Account(_)) && !load(engine.clone()).await {
                    return;
                }
            }
            None => {
                engine.topic_failed(key, task_id);
                return;
            }
        }
    }
}

/// Publish this instance's beacon, listen to the others', and take the devices of silent
/// instances offline. Runs on real time (see `peers`).
pub async fn run_beacons(engine: Arc<Engine>) {
    let interval = Duration::from_secs(engine.config.instance_beacon_secs);
    let lease_ms = u64::try_from(engine.config.instance_lease().as_millis()).unwrap_or(u64::MAX);
    let mut sub = match engine.bus.subscribe(BEACONS).await {
        Ok(s) => Some(s),
        Err(err) => {
            tracing::warn!(error = %err, "presence beacons unavailable");
            None
        }
    };
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = engine.shutdown.cancelled() => return,
            _ = tick.tick() => {
                let beacon = encode_beacon(engine.instance, lease_ms);
                if let Err(err) = engine.bus.publish(&beacon_subject(engine.instance), beacon).await {
                    tracing::warn!(error = %err, "presence beacon not published");
                }
                for dead in engine.peers.sweep() {
                    instance_died(&engine, dead);
                }
            }
            Some(d) = async { match sub.as_mut() { Some(s) => s.next().await, None => None } } => {
                if let Delivery::Event(event) = d
                    && let Some((instance, lease)) = decode_beacon(event.payload())
                {
                    engine.peers.touch(instance, Some(Duration::from_millis(lease)));
                }
            }
        }
    }
}

fn instance_died(engine: &Arc<Engine>, dead: crate::model::InstanceId) {
    let now = engine.clock.now_ms();
    let affected = engine.views.drop_instance(dead, now);
    tracing::info!(instance = %dead, accounts = affected.len(), "presence instance went silent");
    for account in affected {
        let engine = engine.clone();
        tokio::spawn(async move {
            if let Err(err) = engine
                .store
                .drop_instance(account, dead, now, |i| engine.peers.alive(i))
                .await
            {
                tracing::warn!(%account, error = %err, "stale presence entries not removed");
            }
        });
    }
}
