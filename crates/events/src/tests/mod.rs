//! One behavioural suite, run against the in-process bus and against a real nats-server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::time::timeout;

use crate::{Delivery, EventError, Job, JobStream, Subscription};
use harness::{ACK_WAIT, BUFFER, Harness, PATIENCE};

async fn next_event(sub: &mut Subscription) -> (String, Bytes) {
    match timeout(PATIENCE, sub.next())
        .await
        .expect("no event arrived")
    {
        Some(Delivery::Event(e)) => (e.subject().to_owned(), e.payload().clone()),
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Collects subjects until the event with payload `end`.
async fn subjects_until_end(sub: &mut Subscription) -> Vec<String> {
    let mut subjects = Vec::new();
    loop {
        let (subject, payload) = next_event(sub).await;
        if payload == "end" {
            return subjects;
        }
        subjects.push(subject);
    }
}

async fn next_job(jobs: &mut JobStream) -> Job {
    timeout(PATIENCE, jobs.next())
        .await
        .expect("no job arrived")
        .expect("job stream ended")
        .expect("job stream failed")
}

/// Asserts that no job is handed out within `within`.
async fn assert_no_job(jobs: &mut JobStream, within: Duration) {
    if let Ok(item) = timeout(within, jobs.next()).await {
        panic!("expected no job, got {item:?}");
    }
}

async fn wildcard_matching(h: impl Harness) {
    let bus = h.bus();
    let mut one = bus.subscribe("chat.*.msg").await.unwrap();
    let mut tail = bus.subscribe("chat.>").await.unwrap();
    let mut exact = bus.subscribe("chat.a.msg").await.unwrap();
    for subject in [
        "chat.a.msg",
        "chat.b.msg",
        "chat.a.typing",
        "other.a.msg",
        "chat",
        "chat.a.msg.x",
    ] {
        bus.publish(subject, Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    bus.publish("chat.a.msg", Bytes::from_static(b"end"))
        .await
        .unwrap();

    assert_eq!(
        subjects_until_end(&mut one).await,
        ["chat.a.msg", "chat.b.msg"]
    );
    assert_eq!(
        subjects_until_end(&mut tail).await,
        ["chat.a.msg", "chat.b.msg", "chat.a.typing", "chat.a.msg.x"]
    );
    assert_eq!(subjects_until_end(&mut exact).await, ["chat.a.msg"]);
}

async fn fan_out_to_every_subscriber_in_order(h: impl Harness) {
    let bus = h.bus();
    let mut subs = Vec::new();
    for _ in 0..3 {
        subs.push(bus.subscribe("room.1").await.unwrap());
    }
    for i in 0..10u8 {
        bus.publish("room.1", Bytes::from(vec![i])).await.unwrap();
    }
    for sub in &mut subs {
        for i in 0..10u8 {
            assert_eq!(
                next_event(sub).await,
                ("room.1".to_owned(), Bytes::from(vec![i]))
            );
        }
    }
}

async fn dropping_a_subscription_unsubscribes(h: impl Harness) {
    let bus = h.bus();
    let before = h.subscription_count().await;
    let sub = bus.subscribe("presence.*").await.unwrap();
    let mut other = bus.subscribe("presence.*").await.unwrap();
    h.wait_for_subscription_count(before + 2).await;
    drop(sub);
    h.wait_for_subscription_count(before + 1).await;
    // The remaining subscriber is unaffected.
    bus.publish("presence.bob", Bytes::from_static(b"on"))
        .await
        .unwrap();
    assert_eq!(next_event(&mut other).await.1, "on");
    drop(other);
    h.wait_for_subscription_count(before).await;
}

async fn invalid_input_is_rejected(h: impl Harness) {
    let bus = h.bus();
    for subject in ["", "a..b", "a b", "a.*", "a.>", "_INBOX.x"] {
        let err = bus.publish(subject, Bytes::new()).await.unwrap_err();
        assert!(
            matches!(err, EventError::InvalidSubject { .. }),
            "{subject:?}: {err}"
        );
    }
    for pattern in ["", "a.>.b", "a b", "a*", "$SYS.>"] {
        let err = bus.subscribe(pattern).await.unwrap_err();
        assert!(
            matches!(err, EventError::InvalidSubject { .. }),
            "{pattern:?}: {err}"
        );
    }
    for queue in ["", "a.b", "a b", "a>"] {
        let err = bus.enqueue(queue, Bytes::new()).await.unwrap_err();
        assert!(
            matches!(err, EventError::InvalidQueue { .. }),
            "{queue:?}: {err}"
        );
        let err = bus.consume(queue).await.unwrap_err();
        assert!(
            matches!(err, EventError::InvalidQueue { .. }),
            "{queue:?}: {err}"
        );
    }
    let huge = Bytes::from(vec![0u8; harness::MAX_PAYLOAD + 1]);
    let err = bus.publish("a.b", huge.clone()).await.unwrap_err();
    assert!(matches!(err, EventError::PayloadTooLarge { .. }), "{err}");
    let err = bus.enqueue("jobs", huge).await.unwrap_err();
    assert!(matches!(err, EventError::PayloadTooLarge { .. }), "{err}");
}

async fn slow_subscriber_lags_without_blocking_others(h: impl Harness) {
    let bus = h.bus();
    let mut slow = bus.subscribe("feed").await.unwrap();
    let mut fast = bus.subscribe("feed").await.unwrap();
    let total = (BUFFER * 10) as u32;
    // The publisher waits for the fast subscriber after every event; the slow one is never
    // polled, so it must overflow instead of holding anyone up.
    for i in 0..total {
        bus.publish("feed", Bytes::from(i.to_be_bytes().to_vec()))
            .await
            .unwrap();
        assert_eq!(
            next_event(&mut fast).await.1,
            Bytes::from(i.to_be_bytes().to_vec())
        );
    }
    bus.publish("feed", Bytes::from_static(b"end"))
        .await
        .unwrap();

    let missed = match timeout(PATIENCE, slow.next()).await.unwrap() {
        Some(Delivery::Lagged { missed }) => missed,
        other => panic!("expected Lagged first, got {other:?}"),
    };
    let mut kept = Vec::new();
    loop {
        let (_, payload) = next_event(&mut slow).await;
        if payload == "end" {
            break;
        }
        kept.push(u32::from_be_bytes(payload[..].try_into().unwrap()));
    }
    // The oldest events were dropped; what is left is the most recent, in order.
    assert_eq!(missed + kept.len() as u64, u64::from(total));
    let expected: Vec<u32> = (total - kept.len() as u32..total).collect();
    assert_eq!(kept, expected);
    assert!(missed > 0 && !kept.is_empty());
}

async fn acked_jobs_are_not_redelivered(h: impl Harness) {
    let bus = h.bus();
    bus.enqueue("mail", Bytes::from_static(b"j1"))
        .await
        .unwrap();
    let mut jobs = bus.consume("mail").await.unwrap();
    bus.enqueue("mail", Bytes::from_static(b"j2"))
        .await
        .unwrap();
    let first = next_job(&mut jobs).await;
    assert_eq!(
        (
            first.payload().as_ref(),
            first.delivery_count(),
            first.queue()
        ),
        (&b"j1"[..], 1, "mail")
    );
    first.ack().await.unwrap();
    let second = next_job(&mut jobs).await;
    assert_eq!(second.payload(), "j2");
    second.ack().await.unwrap();
    assert_no_job(&mut jobs, ACK_WAIT + ACK_WAIT / 2).await;
    // Other queues are independent.
    bus.enqueue("other", Bytes::from_static(b"o"))
        .await
        .unwrap();
    assert_no_job(&mut jobs, ACK_WAIT / 2).await;
}

async fn unacked_job_is_redelivered_after_ack_wait(h: impl Harness) {
    let bus = h.bus();
    let mut jobs = bus.consume("push").await.unwrap();
    bus.enqueue("push", Bytes::from_static(b"p")).await.unwrap();
    let job = next_job(&mut jobs).await;
    assert_eq!(job.delivery_count(), 1);
    drop(job);
    let again = next_job(&mut jobs).await;
    assert_eq!(
        (again.payload().as_ref(), again.delivery_count()),
        (&b"p"[..], 2)
    );
    // An explicit retry comes back after its own delay, not after ack_wait.
    again.retry_after(Duration::ZERO).await.unwrap();
    let third = next_job(&mut jobs).await;
    assert_eq!(
        (third.payload().as_ref(), third.delivery_count()),
        (&b"p"[..], 3)
    );
    third.ack().await.unwrap();
    assert_no_job(&mut jobs, ACK_WAIT + ACK_WAIT / 2).await;
}

async fn queue_depth_counts_jobs_until_they_are_acked(h: impl Harness) {
    let bus = h.bus();
    assert_eq!(bus.queue_depth("depth").await.unwrap(), 0);
    for p in [&b"a"[..], b"b", b"c"] {
        bus.enqueue("depth", Bytes::copy_from_slice(p))
            .await
            .unwrap();
    }
    assert_eq!(bus.queue_depth("depth").await.unwrap(), 3);
    let mut jobs = bus.consume("depth").await.unwrap();
    let first = next_job(&mut jobs).await;
    // Handed out but not acknowledged: still part of the backlog.
    assert_eq!(bus.queue_depth("depth").await.unwrap(), 3);
    first.ack().await.unwrap();
    let depth = async || bus.queue_depth("depth").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while depth().await != 2 {
        assert!(tokio::time::Instant::now() < deadline, "ack not reflected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(bus.queue_depth("other-queue").await.unwrap(), 0);
    assert!(bus.queue_depth("bad queue!").await.is_err());
}

async fn a_job_goes_to_one_consumer_at_a_time(h: impl Harness) {
    let bus = h.bus();
    let mut a = bus.consume("work").await.unwrap();
    let mut b = bus.consume("work").await.unwrap();
    bus.enqueue("work", Bytes::from_static(b"only"))
        .await
        .unwrap();
    let job = next_job(&mut a).await;
    assert_eq!(job.payload(), "only");
    // While `a` holds it, `b` must not get it.
    assert_no_job(&mut b, ACK_WAIT / 2).await;
    job.ack().await.unwrap();

    // Two jobs, two consumers: each gets a different one.
    bus.enqueue("work", Bytes::from_static(b"x")).await.unwrap();
    bus.enqueue("work", Bytes::from_static(b"y")).await.unwrap();
    let ja = next_job(&mut a).await;
    let jb = next_job(&mut b).await;
    let got: HashSet<Bytes> = [ja.payload().clone(), jb.payload().clone()].into();
    assert_eq!(
        got,
        HashSet::from([Bytes::from_static(b"x"), Bytes::from_static(b"y")])
    );
    ja.ack().await.unwrap();
    jb.ack().await.unwrap();
}

async fn jobs_survive_restart(mut h: impl Harness) {
    {
        let bus = h.bus();
        bus.enqueue("durable", Bytes::from_static(b"done"))
            .await
            .unwrap();
        bus.enqueue("durable", Bytes::from_static(b"pending"))
            .await
            .unwrap();
        bus.enqueue("durable", Bytes::from_static(b"queued"))
            .await
            .unwrap();
        let mut jobs = bus.consume("durable").await.unwrap();
        next_job(&mut jobs).await.ack().await.unwrap();
        // Taken but never acked: the crash happens mid-job.
        let pending = next_job(&mut jobs).await;
        assert_eq!(pending.payload(), "pending");
        drop(pending);
    }
    h.restart().await;
    let bus = h.bus();
    let mut jobs = bus.consume("durable").await.unwrap();
    let mut got = HashSet::new();
    while let Ok(Some(job)) = timeout(ACK_WAIT * 2, jobs.next()).await {
        let job = job.unwrap();
        got.insert(job.payload().clone());
        job.ack().await.unwrap();
    }
    // Nothing unacked is lost. Jobs are at-least-once: a backend may deliver an acked job
    // again after a restart (JetStream persists acks asynchronously), never an unknown one.
    assert!(
        got.contains(&b"pending"[..]) && got.contains(&b"queued"[..]),
        "{got:?}"
    );
    let known: [&[u8]; 3] = [b"done", b"pending", b"queued"];
    assert!(got.iter().all(|p| known.contains(&&p[..])), "{got:?}");
}

/// Records spans with OpenTelemetry ids on this thread (where the test body runs), with the
/// W3C propagator that `guardyn_common::telemetry::init` installs.
fn trace_capture() -> (
    tracing::subscriber::DefaultGuard,
    opentelemetry_sdk::trace::SdkTracerProvider,
) {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("events-test")));
    (tracing::subscriber::set_default(subscriber), provider)
}

/// The trace and span id a `TraceContext` names, as a child span created from it sees them.
fn parent_ids(trace: &crate::TraceContext) -> (String, String) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let child = tracing::info_span!("consumer");
    trace.set_parent_of(&child);
    let cx = child.context();
    let span = cx.span();
    let sc = span.span_context();
    assert!(sc.is_valid(), "the consumer span must be recorded");
    let parent = trace
        .fields()
        .find(|(k, _)| *k == "traceparent")
        .map(|(_, v)| v.split('-').nth(2).unwrap_or_default().to_owned())
        .unwrap_or_default();
    (sc.trace_id().to_string(), parent)
}

async fn trace_context_travels_with_events_and_jobs(mut h: impl Harness) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing::Instrument as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let (_capture, _provider) = trace_capture();
    let bus = h.bus();
    let mut sub = bus.subscribe("traced.event").await.unwrap();
    let publisher = tracing::info_span!("publisher");
    let (trace_id, span_id) = {
        let cx = publisher.context();
        let span = cx.span();
        let sc = span.span_context();
        (sc.trace_id().to_string(), sc.span_id().to_string())
    };
    async {
        bus.publish("traced.event", Bytes::from_static(b"traced"))
            .await
            .unwrap();
        bus.enqueue("traced", Bytes::from_static(b"traced job"))
            .await
            .unwrap();
    }
    .instrument(publisher)
    .await;
    // Outside any span: nothing to carry.
    bus.publish("traced.event", Bytes::from_static(b"untraced"))
        .await
        .unwrap();

    let event = match timeout(PATIENCE, sub.next()).await.unwrap() {
        Some(Delivery::Event(e)) => e,
        other => panic!("expected an event, got {other:?}"),
    };
    assert_eq!(event.payload(), "traced");
    assert_eq!(
        parent_ids(event.trace_context()),
        (trace_id.clone(), span_id.clone()),
        "a span started from the event continues the publisher's trace"
    );
    match timeout(PATIENCE, sub.next()).await.unwrap() {
        Some(Delivery::Event(e)) => {
            assert_eq!(e.payload(), "untraced");
            assert!(e.trace_context().is_empty(), "{:?}", e.trace_context());
        }
        other => panic!("expected an event, got {other:?}"),
    }

    // The job's context is stored with it: it survives a restart.
    drop((sub, bus));
    h.restart().await;
    let bus = h.bus();
    let mut jobs = bus.consume("traced").await.unwrap();
    let job = next_job(&mut jobs).await;
    assert_eq!(job.payload(), "traced job");
    assert_eq!(parent_ids(job.trace_context()), (trace_id, span_id));
    job.ack().await.unwrap();
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::harness::InProcess::new().await).await;
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(h) = super::harness::Nats::new().await else { return };
                    super::$name(h).await;
                }
            )*
        }
    };
}

suite!(
    wildcard_matching,
    fan_out_to_every_subscriber_in_order,
    dropping_a_subscription_unsubscribes,
    invalid_input_is_rejected,
    slow_subscriber_lags_without_blocking_others,
    acked_jobs_are_not_redelivered,
    unacked_job_is_redelivered_after_ack_wait,
    a_job_goes_to_one_consumer_at_a_time,
    queue_depth_counts_jobs_until_they_are_acked,
    jobs_survive_restart,
    trace_context_travels_with_events_and_jobs,
);

/// Publish cost on the in-process bus with 10,000 subscriptions (printed, not asserted).
#[tokio::test]
async fn publish_cost_with_10k_subscriptions() {
    use crate::EventBus as _;

    let h = harness::InProcess::new().await;
    let bus = h.in_process_bus().clone();
    let mut subs = Vec::new();
    for i in 0..10_000 {
        let pattern = match i % 10 {
            0 => format!("user.{i}.*"),
            1 => format!("device.{i}.>"),
            _ => format!("user.{i}.inbox"),
        };
        subs.push(bus.subscribe(&pattern).await.unwrap());
    }
    let mut target = bus.subscribe("user.4242.inbox").await.unwrap();
    let rounds = 20_000u32;
    let started = std::time::Instant::now();
    for i in 0..rounds {
        bus.publish(
            &format!("user.{}.inbox", i % 10_000),
            Bytes::from_static(b"m"),
        )
        .await
        .unwrap();
    }
    let per_publish = started.elapsed() / rounds;
    eprintln!("in-process publish with 10,000 subscriptions: {per_publish:?} per publish");
    // The trie delivered to the matching subscriber (and the user.4242.inbox slot).
    assert_eq!(next_event(&mut target).await.0, "user.4242.inbox");
}

#[tokio::test]
async fn unreachable_nats_is_reported_as_unavailable() {
    // A port nobody listens on: bind, remember, release.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nats = crate::NatsConfig {
        url: format!("nats://127.0.0.1:{port}"),
        connect_timeout: Duration::from_secs(1),
        ..crate::NatsConfig::default()
    };
    let err = crate::NatsBus::connect(crate::EventsConfig::default(), nats)
        .await
        .unwrap_err();
    assert!(matches!(err, EventError::Unavailable(_)), "{err}");
}

#[tokio::test]
async fn debug_output_never_shows_payload_bytes() {
    let h = harness::InProcess::new().await;
    let bus = h.bus();
    let mut sub = bus.subscribe("secret").await.unwrap();
    bus.publish("secret", Bytes::from_static(b"ciphertext-XYZ"))
        .await
        .unwrap();
    let delivery = timeout(PATIENCE, sub.next()).await.unwrap().unwrap();
    let shown = format!("{delivery:?}");
    assert!(
        !shown.contains("XYZ") && !shown.contains("88, 89, 90"),
        "{shown}"
    );
    assert!(shown.contains("payload_len: 14"), "{shown}");

    bus.enqueue("q", Bytes::from_static(b"ciphertext-XYZ"))
        .await
        .unwrap();
    let mut jobs = bus.consume("q").await.unwrap();
    let job = next_job(&mut jobs).await;
    let shown = format!("{job:?}");
    assert!(
        !shown.contains("XYZ") && shown.contains("payload_len: 14"),
        "{shown}"
    );
}

/// Events published while NATS is down, or before the server has a subscription again, are
/// gone: every subscription is told so (`Lagged`) once it is back in place, and then receives
/// new events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_reconnection_tells_every_subscription_to_resynchronise() {
    use crate::EventBus as _;
    let Some(mut server) = crate::testing::NatsServer::start_or_skip() else {
        return;
    };
    let bus = harness::connect(&server).await;
    let mut sub = bus.subscribe("resync.test").await.unwrap();
    bus.publish("resync.test", Bytes::from_static(b"before"))
        .await
        .unwrap();
    assert_eq!(next_event(&mut sub).await.1, "before");

    tokio::task::block_in_place(|| server.restart()).unwrap();
    match timeout(PATIENCE * 3, sub.next()).await {
        Ok(Some(Delivery::Lagged { missed: 0 })) => {}
        other => panic!("expected a resynchronisation after the reconnection, got {other:?}"),
    }
    bus.publish("resync.test", Bytes::from_static(b"after"))
        .await
        .unwrap();
    assert_eq!(next_event(&mut sub).await.1, "after");
}
