//! Presence at scale: N online accounts heartbeating at the default interval, each watched by
//! S subscribers. Drives the domain core directly (local device table + timing wheel, and the
//! subscriber-side views), plus the core's heartbeat path on real storage and bus.
//!
//! `cargo bench -p guardyn-presence --bench heartbeats` (env: `ACCOUNTS`, default 10000;
//! `SUBSCRIBERS`, default 10; `INTERVALS`, default 100). Prints figures; asserts nothing.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::sync::Arc;

use guardyn_common::clock::{ManualClock, SharedClock};
use guardyn_common::events::presence::{AccountEvent, Change};
use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_presence::testing::{AccountView, LocalTable, Store, TopicKey, Views, Watcher};
use tokio::sync::mpsc;
use uuid::Uuid;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of this thread in nanoseconds (scheduler accounting, ns resolution).
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Resident set size in bytes.
fn rss_bytes() -> u64 {
    let pages: u64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn account(i: usize) -> AccountId {
    AccountId::from_uuid(Uuid::from_u128(0x1000_0000 + i as u128))
}

fn main() {
    let n = env("ACCOUNTS", 10_000);
    let s = env("SUBSCRIBERS", 10);
    let intervals = env("INTERVALS", 100);
    let interval_ms = 30_000u64;
    let expiry_ms = 3 * interval_ms;
    println!(
        "presence bench: {n} accounts (1 device each), {s} subscribers each, {intervals} intervals of 30 s"
    );

    // --- Memory per online device (local table incl. its wheel entry). ---
    let rss0 = rss_bytes();
    let mut table = LocalTable::new(0);
    for i in 0..n {
        table.heartbeat(account(i), DeviceId::FIRST, 0, expiry_ms);
    }
    let rss1 = rss_bytes();
    println!(
        "memory per online device: {:.0} B (RSS delta {} KiB for {n} devices)",
        (rss1.saturating_sub(rss0)) as f64 / n as f64,
        (rss1.saturating_sub(rss0)) / 1024
    );

    // --- Steady state: every device heartbeats once per interval, spread evenly; the wheel
    // is advanced as time passes (as the driver would), at 250 ms steps. ---
    let step_ms = 250u64;
    let steps_per_interval = interval_ms / step_ms;
    let per_step = n.div_ceil(steps_per_interval as usize);
    let mut now = 0u64;
    let mut heartbeats = 0u64;
    let mut expired = 0usize;
    let cpu0 = cpu_ns();
    for _ in 0..intervals {
        for step in 0..steps_per_interval {
            now += step_ms;
            let from = step as usize * per_step;
            for i in from..(from + per_step).min(n) {
                table.heartbeat(account(i), DeviceId::FIRST, now, expiry_ms);
                heartbeats += 1;
            }
            expired += table.expire(now).len();
        }
    }
    let cpu = cpu_ns() - cpu0;
    println!(
        "heartbeat (domain core, incl. timer wheel upkeep): {:.0} ns CPU each over {heartbeats} heartbeats; {expired} spurious expiries; {} timers pending",
        cpu as f64 / heartbeats as f64,
        table.timers()
    );
    println!(
        "  => {:.3} ms of CPU per second for {n} online devices at 30 s",
        cpu as f64 / heartbeats as f64 * n as f64 / 30.0 / 1e6
    );

    // --- Subscriber side: N watched accounts with S watchers each. Heartbeats never reach it
    // (no state change, no event); transitions fan out. ---
    let views = Views::default();
    let mut receivers = Vec::new();
    let mut watcher_id = 0u64;
    for i in 0..n {
        for _ in 0..s {
            watcher_id += 1;
            let (tx, rx) = mpsc::channel(64);
            let w = Arc::new(Watcher::new(
                watcher_id,
                account(n + watcher_id as usize),
                tx,
                1,
            ));
            views.watch(TopicKey::Account(account(i)), &w);
            receivers.push(rx);
        }
        views.install(TopicKey::Account(account(i)), AccountView::default());
    }
    for rx in &mut receivers {
        while rx.try_recv().is_ok() {}
    }
    let instance = Uuid::from_u128(7);
    let cpu0 = cpu_ns();
    for round in 0..4u64 {
        for i in 0..n {
            let change = if round % 2 == 0 {
                Change::DeviceOnline {
                    device: 1,
                    generation: round + 1,
                }
            } else {
                Change::DeviceOffline {
                    device: 1,
                    generation: round,
                }
            };
            let ev = AccountEvent {
                instance,
                at_ms: round * 60_000,
                change,
            };
            // Decoding is part of the subscriber cost.
            let ev = AccountEvent::decode(&ev.encode()).unwrap();
            views.apply(account(i), &ev);
        }
        for rx in &mut receivers {
            while rx.try_recv().is_ok() {}
        }
    }
    let cpu = cpu_ns() - cpu0;
    let transitions = 4 * n as u64;
    println!(
        "transition (decode + aggregate + fan-out to {s} subscribers): {:.0} ns CPU each, {:.0} ns per delivered update",
        cpu as f64 / transitions as f64,
        cpu as f64 / (transitions * s as u64) as f64
    );

    // --- The core's heartbeat on real storage and bus (steady state: in-memory only). ---
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = guardyn_storage_embedded::EmbeddedStore::open(dir.path(), Default::default())
            .await
            .unwrap();
        let bus: Arc<dyn guardyn_events::EventBus> = Arc::new(guardyn_events::InProcessBus::new(
            store.clone(),
            guardyn_events::EventsConfig::default(),
        ));
        let clock = ManualClock::new();
        let shared: SharedClock = Arc::new(clock.clone());
        let core = guardyn_presence::Core::new(
            guardyn_presence::PresenceConfig::default(),
            Store::new(store.clone()),
            bus,
            shared,
            tokio_util::sync::CancellationToken::new(),
            guardyn_common::policy::PolicyCache::new(Default::default()),
        );
        let cpu0 = cpu_ns();
        for i in 0..n {
            core.heartbeat(account(i), DeviceId::FIRST).await.unwrap();
        }
        let first = cpu_ns() - cpu0;
        let rounds = 10;
        let cpu0 = cpu_ns();
        for _ in 0..rounds {
            clock.advance(std::time::Duration::from_secs(30));
            for i in 0..n {
                core.heartbeat(account(i), DeviceId::FIRST).await.unwrap();
            }
        }
        let cpu = cpu_ns() - cpu0;
        println!(
            "core: first heartbeat (online transition: storage write + event) {:.1} us CPU each; steady heartbeat {:.0} ns CPU each ({} online)",
            first as f64 / n as f64 / 1000.0,
            cpu as f64 / (rounds * n) as f64,
            core.local_devices()
        );
        store.close().await;
    });
}
