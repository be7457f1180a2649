//! Shared helpers: a server with test-friendly limits and client constructors.

use std::sync::Arc;
use std::time::Duration;

use guardyn_common::clock::SharedClock;
use guardyn_common::ratelimit::RateLimit;
use guardyn_sdk::{Client, ClientConfig, Event, Inbox, Message, Storage};
use guardyn_testkit::{Options, TestServer};

pub const WAIT: Duration = Duration::from_secs(15);
pub const PASSWORD: &str = "correct horse battery staple";

pub fn options(clock: Option<SharedClock>) -> Options {
    let mut o = Options::configure(|c| {
        c.auth.argon2.memory_kib = 1024;
        c.auth.argon2.iterations = 1;
        let many = RateLimit::new(10_000, 600_000);
        c.auth.limits.register_per_address = many;
        c.auth.limits.login_per_address = many;
        c.auth.limits.login_per_account = many;
        c.auth.limits.prekey_fetch_per_target = many;
        c.auth.limits.link_code_per_account = many;
    });
    o.clock = clock;
    o
}

pub async fn server() -> TestServer {
    TestServer::start_with(options(None)).await.unwrap()
}

pub fn config() -> ClientConfig {
    ClientConfig {
        device_name: "test".into(),
        prekey_batch: 4,
        prekey_low_water: 2,
        key_package_batch: 3,
        max_attempts: 5,
        ..ClientConfig::default()
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub fn username(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{prefix}{n}_{}", std::process::id())
}

pub async fn register(server: &TestServer, prefix: &str) -> Client {
    register_with(server, prefix, Storage::Memory).await
}

pub async fn register_with(server: &TestServer, prefix: &str, storage: Storage) -> Client {
    Client::register(
        server.channel(),
        storage,
        config(),
        &username(prefix),
        PASSWORD,
    )
    .await
    .unwrap()
}

pub async fn link(server: &TestServer, existing: &Client) -> Client {
    let pending = Client::request_link(server.channel(), Storage::Memory, config())
        .await
        .unwrap();
    existing.approve_link(pending.code()).await.unwrap();
    pending.finish(WAIT).await.unwrap()
}

/// The next 1:1 message from an inbox, skipping bookkeeping events.
pub async fn next_message(inbox: &mut Inbox) -> Message {
    loop {
        match inbox.next_timeout(WAIT).await {
            Some(Event::Message(m)) => return m,
            Some(Event::CaughtUp | Event::DeviceLinked { .. } | Event::NewDevice { .. }) => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// All 1:1 message bodies in a batch of events, in order.
pub fn bodies(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(String::from_utf8(m.body.clone()).unwrap()),
            _ => None,
        })
        .collect()
}

pub fn manual_clock() -> (Arc<guardyn_common::clock::ManualClock>, SharedClock) {
    let clock = Arc::new(guardyn_common::clock::ManualClock::new());
    (clock.clone(), clock)
}
