//! Monitoring: beacons of two instances on one NATS bus, the cluster view, silent instances
//! dropped, alerts once per crossing (event, metric, audit), roles, the watch stream, and the
//! `x-guardyn-instance` header on every response of the public and the mesh listener.

use std::time::Duration;

use futures::StreamExt as _;
use guardyn::config::{Config, EventsBackend};
use guardyn_audit::AuditKind;
use guardyn_common::AccountId;
use guardyn_common::events::Payload as _;
use guardyn_common::events::monitoring::{ALERT, AlertRaised, BEACON, InstanceReport, Resource};
use guardyn_events::Delivery;
use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::monitoring_service_client::MonitoringServiceClient;
use guardyn_testkit::rpc::authed;
use guardyn_testkit::{NatsServer, Options, TestServer};
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

fn api(server: &TestServer) -> MonitoringServiceClient<Channel> {
    MonitoringServiceClient::new(server.channel())
}

fn token(server: &TestServer, role: &str) -> String {
    server.token_with_roles(&AccountId::random().to_string(), 1, "s-1", &[role])
}

fn fast_beacons(c: &mut Config, instance: &str) {
    c.server.instance_id = instance.to_owned();
    c.monitoring.beacon_interval_secs = 1;
}

async fn snapshot(server: &TestServer, token: &str) -> pb::MonitoringSnapshot {
    api(server)
        .get_monitoring_data(authed(pb::GetMonitoringDataRequest {}, token))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap()
}

/// Poll the monitoring data until `done` holds.
async fn snapshot_until(
    server: &TestServer,
    token: &str,
    what: &str,
    done: impl Fn(&pb::MonitoringSnapshot) -> bool,
) -> pb::MonitoringSnapshot {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = snapshot(server, token).await;
        if done(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last snapshot: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ids(s: &pb::MonitoringSnapshot) -> Vec<&str> {
    s.instances.iter().map(|i| i.instance_id.as_str()).collect()
}

fn reason(status: &tonic::Status) -> Option<String> {
    guardyn_common::error::reason_of(status)
}

fn instance_header(metadata: &tonic::metadata::MetadataMap) -> Option<&str> {
    metadata
        .get("x-guardyn-instance")
        .and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn two_instances_report_through_the_bus_and_a_silent_one_is_dropped() {
    let Some(nats) = NatsServer::start_or_skip() else {
        return;
    };
    let on_nats = |url: String, instance: &'static str| {
        move |c: &mut Config| {
            c.events.backend = EventsBackend::Nats;
            c.events.nats_url = url;
            fast_beacons(c, instance);
        }
    };
    let a = TestServer::start_with(Options::configure(on_nats(nats.url.clone(), "mon-a")))
        .await
        .unwrap();
    let b = TestServer::start_with(Options {
        services: vec!["presence".into()],
        ..Options::configure(on_nats(nats.url.clone(), "mon-b"))
    })
    .await
    .unwrap();
    let admin = token(&a, "auditor");

    let s = snapshot_until(&a, &admin, "both instances", |s| {
        ids(s) == ["mon-a", "mon-b"]
    })
    .await;
    let (ia, ib) = (&s.instances[0], &s.instances[1]);
    assert!(ia.services.iter().any(|n| n == "admin"), "{ia:?}");
    assert!(ia.services.iter().any(|n| n == "messaging"), "{ia:?}");
    assert_eq!(ib.services, ["presence"]);
    for i in [ia, ib] {
        assert_eq!(i.version, env!("CARGO_PKG_VERSION"));
        assert_eq!(i.beacon_interval_secs, 1);
        assert!(i.memory_total_bytes > 0 && i.memory_used_bytes > 0, "{i:?}");
        assert!(i.process_rss_bytes > 0, "{i:?}");
        assert!(
            i.disk_total_bytes >= i.disk_used_bytes && i.disk_total_bytes > 0,
            "{i:?}"
        );
        // Both use the embedded engine in their own data directory.
        assert!(i.storage_bytes.unwrap() > 0, "{i:?}");
        // The wake queue is JetStream's: both see the same (empty) backlog.
        assert_eq!(i.push_backlog, Some(0), "{i:?}");
        assert_eq!(i.queue_depths[0].queue, "notification-wake");
    }
    let c = s.cluster.unwrap();
    assert_eq!(c.instances, 2);
    assert_eq!(
        c.memory_total_bytes,
        ia.memory_total_bytes + ib.memory_total_bytes
    );
    assert_eq!(
        c.process_rss_bytes,
        ia.process_rss_bytes + ib.process_rss_bytes
    );
    assert_eq!(c.push_backlog, Some(0));

    // B stops beaconing: after three of its intervals A forgets it.
    b.stop().await.unwrap();
    let s = snapshot_until(&a, &admin, "mon-b dropped", |s| ids(s) == ["mon-a"]).await;
    assert_eq!(s.cluster.unwrap().instances, 1);
}

async fn next_alert(sub: &mut guardyn_events::Subscription) -> AlertRaised {
    loop {
        match tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap()
        {
            Delivery::Event(e) => return AlertRaised::decode(e.payload()).unwrap(),
            Delivery::Lagged { .. } => continue,
        }
    }
}

async fn alert_entries(server: &TestServer) -> Vec<guardyn_audit::AuditEntry> {
    guardyn_audit::entries(&*server.kv())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == AuditKind::MonitoringAlert)
        .collect()
}

async fn scrape(server: &TestServer) -> String {
    server.scrape_metrics().await.unwrap()
}

/// A beacon of `instance` using `memory_percent` of its memory.
fn beacon(instance: &str, memory_percent: u64, at_ms: u64) -> prost::bytes::Bytes {
    InstanceReport {
        instance_id: instance.into(),
        version: "test".into(),
        interval_secs: 60,
        reported_at_ms: at_ms,
        memory_used_bytes: memory_percent,
        memory_total_bytes: 100,
        ..InstanceReport::default()
    }
    .encode()
}

#[tokio::test]
async fn a_crossed_threshold_raises_one_alert_per_crossing() {
    // Memory above 0 % is always true: the instance's own beacons cross it at once. CPU and
    // disk never go above 100 %: whatever the machine's load, they raise nothing.
    let server = TestServer::start_with(Options {
        metrics: true,
        ..Options::configure(|c| {
            fast_beacons(c, "mon-alerts");
            c.admin.monitoring.memory_percent = 0;
            c.admin.monitoring.cpu_percent = 100;
            c.admin.monitoring.disk_percent = 100;
        })
    })
    .await
    .unwrap();
    let admin = token(&server, "admin");
    let s = snapshot_until(&server, &admin, "the memory alert", |s| {
        s.alerts.iter().any(|a| a.instance_id == "mon-alerts")
    })
    .await;
    let alert = s
        .alerts
        .iter()
        .find(|a| a.instance_id == "mon-alerts")
        .unwrap();
    assert_eq!(alert.resource(), pb::MonitoredResource::Memory);
    assert_eq!(alert.threshold_percent, 0);
    assert!(alert.value_percent > 0.0);

    // Three more beacons stay above the threshold: still one audit entry.
    let seen = s.instances[0].reported_at.unwrap().seconds;
    snapshot_until(&server, &admin, "three more beacons", |s| {
        s.instances[0].reported_at.unwrap().seconds >= seen + 3
    })
    .await;
    let entries = alert_entries(&server).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(
        entries[0].detail.contains("instance=mon-alerts"),
        "{entries:?}"
    );
    assert!(entries[0].detail.contains("resource=memory"), "{entries:?}");
    assert!(entries[0].reason.contains("threshold"), "{entries:?}");

    // Beacons of another instance: memory crosses, stays above, falls back, crosses again.
    let bus = server.bus();
    let mut alerts = bus.subscribe(ALERT).await.unwrap();
    for (used, at) in [(50, 1), (60, 2), (70, 3)] {
        bus.publish(BEACON, beacon("fake-node", used, at))
            .await
            .unwrap();
    }
    let first = next_alert(&mut alerts).await;
    assert_eq!(
        (
            first.instance_id.as_str(),
            first.resource,
            first.threshold_percent
        ),
        ("fake-node", Resource::Memory, 0)
    );
    assert_eq!(first.value_percent, 50.0);
    bus.publish(BEACON, beacon("fake-node", 0, 4))
        .await
        .unwrap();
    bus.publish(BEACON, beacon("fake-node", 30, 5))
        .await
        .unwrap();
    let second = next_alert(&mut alerts).await;
    assert_eq!(
        (second.resource, second.value_percent),
        (Resource::Memory, 30.0)
    );
    // Nothing else was raised for fake-node in between.
    let entries = alert_entries(&server).await;
    let fake: Vec<_> = entries
        .iter()
        .filter(|e| e.detail.contains("instance=fake-node"))
        .collect();
    assert_eq!(fake.len(), 2, "{entries:?}");
    let metrics = scrape(&server).await;
    assert!(
        metrics.contains(
            "guardyn_admin_monitoring_alerts_total{instance=\"mon-alerts\",service=\"admin\",monitored_instance=\"fake-node\",resource=\"memory\"} 2\n"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "guardyn_admin_monitoring_alerts_total{instance=\"mon-alerts\",service=\"admin\",monitored_instance=\"mon-alerts\",resource=\"memory\"} 1\n"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn users_are_refused_and_auditors_admitted() {
    let server = TestServer::start_with(Options::configure(|c| fast_beacons(c, "mon-roles")))
        .await
        .unwrap();
    let user = token(&server, "user");
    let e = api(&server)
        .get_monitoring_data(authed(pb::GetMonitoringDataRequest {}, &user))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(reason(&e).as_deref(), Some("ROLE_REQUIRED"));
    let e = api(&server)
        .watch_monitoring(authed(
            pb::WatchMonitoringRequest { interval_secs: 1 },
            &user,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert_eq!(reason(&e).as_deref(), Some("ROLE_REQUIRED"));
    for role in ["auditor", "admin", "owner"] {
        snapshot(&server, &token(&server, role)).await;
    }
}

#[tokio::test]
async fn watch_streams_snapshots_that_count_the_open_stream() {
    let server = TestServer::start_with(Options::configure(|c| fast_beacons(c, "mon-watch")))
        .await
        .unwrap();
    let admin = token(&server, "admin");
    let e = api(&server)
        .watch_monitoring(authed(
            pb::WatchMonitoringRequest { interval_secs: 301 },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let mut stream = api(&server)
        .watch_monitoring(authed(
            pb::WatchMonitoringRequest { interval_secs: 1 },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut taken = Vec::new();
    let mut counted = false;
    // Snapshots keep coming; once a beacon taken after the stream opened arrives, the
    // instance reports this stream among its open streams.
    while taken.len() < 3 || !counted {
        let s = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("a snapshot within the wait")
            .unwrap()
            .unwrap()
            .snapshot
            .unwrap();
        taken.push(s.taken_at.unwrap());
        counted |= s
            .instances
            .iter()
            .any(|i| i.instance_id == "mon-watch" && i.open_streams >= 1);
        assert!(taken.len() < 60, "the watch stream never counted itself");
    }
    assert!(
        taken
            .windows(2)
            .all(|w| (w[0].seconds, w[0].nanos) <= (w[1].seconds, w[1].nanos))
    );
    drop(stream);
    // The closed stream is counted out by a later beacon.
    snapshot_until(&server, &admin, "the stream counted out", |s| {
        s.instances.iter().any(|i| i.open_streams == 0)
    })
    .await;
}

#[tokio::test]
async fn every_response_names_the_instance_that_answered() {
    let server = TestServer::start_with(Options::configure(|c| {
        fast_beacons(c, "mon-header");
        c.mesh.listen = "127.0.0.1:0".into();
    }))
    .await
    .unwrap();
    let admin = token(&server, "admin");
    let ok = api(&server)
        .get_monitoring_data(authed(pb::GetMonitoringDataRequest {}, &admin))
        .await
        .unwrap();
    assert_eq!(instance_header(ok.metadata()), Some("mon-header"));
    // The layer sets `date` itself (never HPACK-indexed); clients still get a valid one.
    let date = ok.metadata().get("date").and_then(|v| v.to_str().ok());
    assert!(
        date.and_then(|d| httpdate::parse_http_date(d).ok())
            .is_some(),
        "{date:?}"
    );
    // Refused by the handler, and by the auth layer before any handler runs.
    let denied = api(&server)
        .get_monitoring_data(authed(
            pb::GetMonitoringDataRequest {},
            &token(&server, "user"),
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(instance_header(denied.metadata()), Some("mon-header"));
    let anonymous = api(&server)
        .get_monitoring_data(pb::GetMonitoringDataRequest {})
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    assert_eq!(instance_header(anonymous.metadata()), Some("mon-header"));

    // The mesh listener too, on success and on error.
    use guardyn_proto::guardyn::internal::v1::ListDevicesRequest;
    use guardyn_proto::guardyn::internal::v1::device_directory_service_client::DeviceDirectoryServiceClient;
    let mesh =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.mesh_addr.unwrap()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut directory = DeviceDirectoryServiceClient::new(mesh.clone());
    let ok = directory
        .list_devices(ListDevicesRequest {
            account_id: AccountId::random().to_string(),
        })
        .await
        .unwrap();
    assert_eq!(instance_header(ok.metadata()), Some("mon-header"));
    // Public services are not routed on the mesh listener.
    let bad = MonitoringServiceClient::new(mesh)
        .get_monitoring_data(pb::GetMonitoringDataRequest {})
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::Unimplemented);
    assert_eq!(instance_header(bad.metadata()), Some("mon-header"));
}

#[tokio::test]
async fn listen_streams_count_their_devices_as_connected() {
    use guardyn_proto::guardyn::messaging::v1::ListenRequest;
    use guardyn_proto::guardyn::messaging::v1::messaging_service_client::MessagingServiceClient;
    let server = TestServer::start_with(Options::configure(|c| fast_beacons(c, "mon-listen")))
        .await
        .unwrap();
    let admin = token(&server, "admin");
    let account = AccountId::random().to_string();
    let mut messaging = MessagingServiceClient::new(server.channel());
    let mut streams = Vec::new();
    for device in [1, 2] {
        let t = server.token(&account, device, &format!("s-{device}"));
        let mut s = messaging
            .listen(authed(ListenRequest {}, &t))
            .await
            .unwrap()
            .into_inner();
        // The backlog marker: the stream is registered.
        tokio::time::timeout(WAIT, s.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        streams.push(s);
    }
    let counts = |s: &pb::MonitoringSnapshot| {
        s.instances
            .first()
            .map(|i| (i.connected_devices, i.listen_streams, i.open_streams))
    };
    snapshot_until(&server, &admin, "two connected devices", |s| {
        counts(s) == Some((2, 2, 2))
    })
    .await;
    drop(streams.pop());
    let s = snapshot_until(&server, &admin, "one connected device", |s| {
        counts(s) == Some((1, 1, 1))
    })
    .await;
    assert_eq!(s.cluster.unwrap().connected_devices, 1);
}
