//! Wake-up jobs end to end: a job on the durable `notification-wake` queue (as messaging
//! enqueues it) becomes one APNs request to a loopback fake that checks what Apple checks;
//! bursts are coalesced, dead tokens pruned, 503 retried, and NONE devices left alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use guardyn_common::clock::{Clock, SystemClock};
use guardyn_common::events::Payload as _;
use guardyn_common::events::notification::{WAKE_QUEUE, WakeJob};
use guardyn_common::{AccountId, DeviceId};
use guardyn_notification::providers::apns::ApnsConfig;
use guardyn_proto::guardyn::notification::v1::{NotificationSettings, PushMode};
use guardyn_testkit::{Options, TestServer};
use serde_json::json;

use super::fakes::{FakeApns, Reply};
use super::tokens::{APNS_TOKEN, Env, TOPIC, acct, apns, eventually, write_p256};

struct Wakes {
    env: Env,
    fake: FakeApns,
}

/// A server whose APNs provider is the fake; 300 ms coalescing, fast retries.
async fn start() -> Wakes {
    let keys = tempfile::tempdir().unwrap();
    let (key_path, public) = write_p256(keys.path(), "AuthKey_KEY1234567.p8");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let fake = FakeApns::start(clock, public, "KEY1234567", "TEAM123456", TOPIC).await;
    let url = fake.server.url();
    let server = TestServer::start_with(Options {
        services: vec!["notification".into()],
        configure: Some(Box::new(move |c| {
            c.notification.apns = Some(ApnsConfig {
                key_path,
                key_id: "KEY1234567".into(),
                team_id: "TEAM123456".into(),
                production_url: url.clone(),
                sandbox_url: url,
                ..ApnsConfig::default()
            });
            c.notification.coalesce_ms = 300;
            c.notification.backoff_base_ms = 50;
            c.notification.backoff_max_ms = 200;
        })),
        metrics: true,
        ..Options::default()
    })
    .await
    .unwrap();
    Wakes {
        env: Env::new(server, keys),
        fake,
    }
}

impl Wakes {
    async fn enqueue(&self, account: &str, device: u32, urgent: bool) {
        let job = WakeJob {
            account: AccountId::parse(account).unwrap(),
            device: DeviceId::new(device).unwrap(),
            urgent,
            queued_at_ms: SystemClock.now_ms(),
        };
        self.env
            .server
            .bus()
            .enqueue(WAKE_QUEUE, job.encode())
            .await
            .unwrap();
    }

    /// The metrics endpoint's text.
    async fn metrics(&self) -> String {
        self.env.server.scrape_metrics().await.unwrap()
    }

    fn pushes(&self) -> usize {
        self.fake.server.requests_to("/3/device/").len()
    }

    /// Wait for `n` pushes, then make sure no more come.
    async fn expect_pushes(&self, n: usize) {
        eventually(async || self.pushes() >= n).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(self.pushes(), n);
    }
}

#[tokio::test]
async fn a_burst_of_mail_wakes_the_device_exactly_once() {
    let t = start().await;
    let mut dev = t.env.dev(&acct(1), 1);
    dev.register(apns(APNS_TOKEN)).await.unwrap();
    let started = Instant::now();
    for i in 0..10 {
        t.enqueue(&acct(1), 1, i == 3).await;
    }
    t.expect_pushes(1).await;
    let push = &t.fake.server.requests_to("/3/device/")[0];
    assert!(push.auth.is_ok(), "{:?}", push.auth);
    assert_eq!(push.path, format!("/3/device/{APNS_TOKEN}"));
    assert_eq!(push.header("apns-topic"), Some(TOPIC));
    eprintln!("burst of 10 → 1 push in {:?}", started.elapsed());
    let m = t.metrics().await;
    assert!(
        m.contains(r#"guardyn_notification_pushes_sent_total{instance="testkit",service="notification",platform="apns"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"guardyn_notification_push_latency_seconds_count{instance="testkit",service="notification"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(
            r#"guardyn_notification_jobs_in_flight{instance="testkit",service="notification"} 0"#
        ),
        "{m}"
    );
    // A device without tokens, or another account's device, is not pushed.
    t.enqueue(&acct(2), 1, true).await;
    t.expect_pushes(1).await;
}

#[tokio::test]
async fn a_dead_token_is_pruned() {
    let t = start().await;
    let mut dev = t.env.dev(&acct(1), 1);
    dev.register(apns(APNS_TOKEN)).await.unwrap();
    t.fake
        .server
        .script([Reply::status(410).json(json!({ "reason": "Unregistered" }))]);
    t.enqueue(&acct(1), 1, false).await;
    eventually(async || dev.list().await.is_empty()).await;
    t.expect_pushes(1).await;
    let m = t.metrics().await;
    assert!(
        m.contains(r#"guardyn_notification_tokens_pruned_total{instance="testkit",service="notification",platform="apns"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_503_is_retried_then_delivered_once() {
    let t = start().await;
    let mut dev = t.env.dev(&acct(1), 1);
    dev.register(apns(APNS_TOKEN)).await.unwrap();
    t.fake.server.script([
        Reply::status(503).json(json!({ "reason": "ServiceUnavailable" })),
        Reply::status(503)
            .header("retry-after", "3")
            .json(json!({ "reason": "ServiceUnavailable" })),
    ]);
    t.enqueue(&acct(1), 1, true).await;
    // While the job waits out the provider's Retry-After it is part of the backlog.
    eventually(async || t.pushes() == 2).await;
    eventually(async || {
        t.metrics().await.contains(
            "guardyn_notification_queue_depth{instance=\"testkit\",service=\"notification\"} 1\n",
        )
    })
    .await;
    t.expect_pushes(3).await;
    eventually(async || {
        t.metrics().await.contains(
            "guardyn_notification_queue_depth{instance=\"testkit\",service=\"notification\"} 0\n",
        )
    })
    .await;
    assert_eq!(dev.list().await.len(), 1, "a retried token is kept");
    let m = t.metrics().await;
    assert!(
        m.contains(r#"guardyn_notification_pushes_failed_total{instance="testkit",service="notification",platform="apns",kind="retry"} 2"#),
        "{m}"
    );
    assert!(
        m.contains(r#"guardyn_notification_pushes_sent_total{instance="testkit",service="notification",platform="apns"} 1"#),
        "{m}"
    );
}

#[tokio::test]
async fn a_device_in_none_mode_is_never_pushed() {
    let t = start().await;
    let mut dev = t.env.dev(&acct(1), 1);
    dev.register(apns(APNS_TOKEN)).await.unwrap();
    dev.set(Some(NotificationSettings {
        mode: PushMode::None.into(),
        mute_until: None,
    }))
    .await
    .unwrap();
    t.enqueue(&acct(1), 1, true).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(t.pushes(), 0);
}
