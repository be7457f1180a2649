//! From a sent message to a provider request through the whole server: messaging stores the
//! envelope, sees that the device has no open Listen stream, enqueues a wake job; the
//! notification service coalesces it and pushes a content-free wake-up to a fake APNs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use guardyn_common::clock::{Clock, SystemClock};
use guardyn_common::ratelimit::RateLimit;
use guardyn_notification::providers::apns::ApnsConfig;
use guardyn_proto::guardyn::messaging::v1::messaging_service_client::MessagingServiceClient;
use guardyn_proto::guardyn::messaging::v1::{ListenRequest, ListenResponse, listen_response};
use guardyn_proto::guardyn::notification::v1::{NotificationSettings, PushMode};
use guardyn_sdk::{Client, ClientConfig, Storage};
use guardyn_testkit::rpc::authed;
use guardyn_testkit::{Options, TestServer};

use super::fakes::FakeApns;
use super::tokens::{APNS_TOKEN, Env, TOPIC, apns, eventually, write_p256};

const PASSWORD: &str = "correct horse battery staple";

struct World {
    env: Env,
    fake: FakeApns,
}

/// Auth, messaging and notification in one server; APNs is the fake.
async fn start(messaging_coalesce_ms: u64, notification_coalesce_ms: u64) -> World {
    let keys = tempfile::tempdir().unwrap();
    let (key_path, public) = write_p256(keys.path(), "AuthKey_KEY1234567.p8");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let fake = FakeApns::start(clock, public, "KEY1234567", "TEAM123456", TOPIC).await;
    let url = fake.server.url();
    let server = TestServer::start_with(Options {
        services: vec!["auth".into(), "messaging".into(), "notification".into()],
        configure: Some(Box::new(move |c| {
            c.auth.argon2.memory_kib = 1024;
            c.auth.argon2.iterations = 1;
            let many = RateLimit::new(100_000, 6_000_000);
            c.auth.limits.register_per_address = many;
            c.auth.limits.login_per_address = many;
            c.auth.limits.prekey_fetch_per_target = many;
            c.messaging.limits.send_per_account = many;
            c.messaging.wake_coalesce_ms = messaging_coalesce_ms;
            c.notification.coalesce_ms = notification_coalesce_ms;
            c.notification.apns = Some(ApnsConfig {
                key_path,
                key_id: "KEY1234567".into(),
                team_id: "TEAM123456".into(),
                production_url: url.clone(),
                sandbox_url: url,
                ..ApnsConfig::default()
            });
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    World {
        env: Env::new(server, keys),
        fake,
    }
}

impl World {
    async fn client(&self, name: &str) -> Client {
        let config = ClientConfig {
            device_name: "e2e".into(),
            prekey_batch: 4,
            key_package_batch: 1,
            ..ClientConfig::default()
        };
        let username = format!("{name}{}", rand::random::<u32>());
        Client::register(
            self.env.server.channel(),
            Storage::Memory,
            config,
            &username,
            PASSWORD,
        )
        .await
        .unwrap()
    }

    fn pushes(&self) -> Vec<super::fakes::Recorded> {
        self.fake.server.requests_to("/3/device/")
    }

    /// A Listen stream of device 1 of `account`, read up to its queue-empty marker.
    async fn listen(&self, account: &str) -> tonic::Streaming<ListenResponse> {
        let token = self.env.server.token(account, 1, "listen-session");
        let mut stream = MessagingServiceClient::new(self.env.server.channel())
            .listen(authed(ListenRequest {}, &token))
            .await
            .unwrap()
            .into_inner();
        loop {
            let item = stream.message().await.unwrap().unwrap();
            if matches!(item.item, Some(listen_response::Item::QueueEmpty(_))) {
                return stream;
            }
        }
    }
}

#[tokio::test]
async fn an_offline_device_is_woken_once_per_burst_and_a_connected_one_never() {
    let w = start(2_000, 300).await;
    let alice = w.client("alice").await;
    let bob = w.client("bob").await;
    let mut push_settings = w.env.dev(bob.account_id(), 1);
    push_settings.register(apns(APNS_TOKEN)).await.unwrap();

    // Connected: the messages arrive on the stream and nothing is pushed.
    let stream = w.listen(bob.account_id()).await;
    for i in 0..3 {
        alice
            .send(bob.account_id(), format!("online {i}").as_bytes())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(w.pushes().is_empty(), "a connected device was pushed");

    // Offline: a burst of five wakes it exactly once.
    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let secret = "the secret plan";
    for _ in 0..5 {
        alice
            .send(bob.account_id(), secret.as_bytes())
            .await
            .unwrap();
    }
    eventually(async || !w.pushes().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let pushes = w.pushes();
    assert_eq!(pushes.len(), 1, "one push for a burst");
    let push = &pushes[0];
    assert!(push.auth.is_ok(), "{:?}", push.auth);
    assert_eq!(push.path, format!("/3/device/{APNS_TOKEN}"));
    // Content-free: no text, no sender, no recipient, nothing but the wake-up.
    let body = String::from_utf8(push.body.to_vec()).unwrap();
    for leak in [secret, alice.account_id(), bob.account_id()] {
        assert!(!body.contains(leak), "push body carries {leak:?}: {body}");
    }
    assert!(body.contains("\"aps\""), "{body}");

    // A device that asked for no pushes is left alone.
    push_settings
        .set(Some(NotificationSettings {
            mode: PushMode::None.into(),
            mute_until: None,
        }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    alice.send(bob.account_id(), b"quiet").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(w.pushes().len(), 1);
}

/// CPU seconds this process has used (all threads).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let hz: f64 = String::from_utf8(
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    ticks / hz
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Push latency (send → provider request, loopback) and CPU per push, against a baseline of
/// the same sends to a connected device (no wake) in the same run. Not a pass/fail test:
/// `cargo test --release -p guardyn-notification --test api -- --ignored --nocapture push_latency`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --ignored --nocapture"]
async fn push_latency_and_cost() {
    const N: usize = 500;
    // No coalescing, so every message is one push.
    let w = start(0, 0).await;
    let alice = w.client("alice").await;
    let bob = w.client("bob").await;
    w.env
        .dev(bob.account_id(), 1)
        .register(apns(APNS_TOKEN))
        .await
        .unwrap();
    // Warm up sessions and connections.
    alice.send(bob.account_id(), b"warm").await.unwrap();
    eventually(async || w.pushes().len() == 1).await;

    // Baseline: the device is connected, so the same sends wake nothing.
    let stream = w.listen(bob.account_id()).await;
    let cpu = cpu_seconds();
    let started = Instant::now();
    for _ in 0..N {
        alice.send(bob.account_id(), b"x").await.unwrap();
    }
    let base_wall = started.elapsed();
    let base_cpu = cpu_seconds() - cpu;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Offline: each send is followed by its push.
    let mut latencies = Vec::with_capacity(N);
    let cpu = cpu_seconds();
    let started = Instant::now();
    for i in 0..N {
        let sent = Instant::now();
        alice.send(bob.account_id(), b"x").await.unwrap();
        let arrived = loop {
            match w.fake.server.count_to("/3/device/") {
                (n, Some(at)) if n >= i + 2 => break at,
                _ => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        };
        latencies.push(arrived - sent);
    }
    let push_wall = started.elapsed();
    let push_cpu = cpu_seconds() - cpu;
    latencies.sort();
    eprintln!(
        "push latency, send start → APNs request on loopback, {N} pushes: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies[N - 1]
    );
    eprintln!(
        "CPU: {:.1} µs per send to a connected device (baseline), {:.1} µs per send with a push; \
         {:.1} µs per push (whole process: client, server and fake APNs); wall {:?} vs {:?}",
        base_cpu / N as f64 * 1e6,
        push_cpu / N as f64 * 1e6,
        (push_cpu - base_cpu) / N as f64 * 1e6,
        base_wall,
        push_wall
    );
}
