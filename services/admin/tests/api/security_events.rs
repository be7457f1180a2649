//! Client security events: reports (bounds, rate limit, audit), listing with filters, the
//! JSON-lines export, role checks and the retention sweeper.

use std::sync::Arc;
use std::time::Duration;

use guardyn_common::AccountId;
use guardyn_common::clock::{ManualClock, SharedClock};
use guardyn_common::ratelimit::RateLimit;
use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::security_event_service_client::SecurityEventServiceClient;
use guardyn_testkit::rpc::authed;
use guardyn_testkit::{Options, TestServer};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

use pb::SecurityEventType as T;
use pb::SecuritySeverity as S;

const WAIT: Duration = Duration::from_secs(30);

async fn server_with(clock: Option<SharedClock>, report_rate: RateLimit) -> TestServer {
    let mut options = Options::configure(move |c| {
        c.admin.security_events.report_rate = report_rate;
    });
    options.clock = clock;
    TestServer::start_with(options).await.unwrap()
}

async fn server() -> TestServer {
    server_with(None, RateLimit::new(10_000, 600_000)).await
}

fn api(server: &TestServer) -> SecurityEventServiceClient<Channel> {
    SecurityEventServiceClient::new(server.channel())
}

/// A token of a fresh account's device 1 carrying `role`.
fn token(server: &TestServer, role: &str) -> (String, String) {
    let account = AccountId::random().to_string();
    let token = server.token_with_roles(&account, 1, "s-1", &[role]);
    (account, token)
}

fn reason(status: &tonic::Status) -> Option<String> {
    guardyn_common::error::reason_of(status)
}

fn report(t: T, s: S, details: &[(&str, &str)]) -> pb::ReportSecurityEventRequest {
    pb::ReportSecurityEventRequest {
        r#type: t.into(),
        severity: s.into(),
        occurred_at: None,
        details: details
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

async fn send(
    server: &TestServer,
    token: &str,
    r: pb::ReportSecurityEventRequest,
) -> Result<String, tonic::Status> {
    api(server)
        .report_security_event(authed(r, token))
        .await
        .map(|r| r.into_inner().event_id)
}

async fn list(
    server: &TestServer,
    token: &str,
    filter: pb::SecurityEventFilter,
    page_size: u32,
    order: pb::ListOrder,
) -> Vec<pb::SecurityEvent> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = api(server)
            .list_security_events(authed(
                pb::ListSecurityEventsRequest {
                    page_size,
                    page_token: page_token.clone(),
                    filter: Some(filter.clone()),
                    order: order.into(),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.events.len() <= page_size as usize);
        out.extend(page.events);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

async fn export(
    server: &TestServer,
    token: &str,
    filter: pb::SecurityEventFilter,
) -> Result<Vec<Vec<u8>>, tonic::Status> {
    let mut stream = api(server)
        .export_security_events(authed(
            pb::ExportSecurityEventsRequest {
                filter: Some(filter),
            },
            token,
        ))
        .await?
        .into_inner();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.message().await? {
        chunks.push(chunk.chunk);
    }
    Ok(chunks)
}

#[tokio::test]
async fn reports_are_stored_audited_and_listed_by_filter_and_page() {
    let server = server().await;
    let (alice, alice_t) = token(&server, "user");
    let (bob, bob_t) = token(&server, "user");
    let mut ids = Vec::new();
    for (t, s) in [
        (T::FailedUnlock, S::Low),
        (T::RootDetected, S::High),
        (T::FailedUnlock, S::Medium),
    ] {
        ids.push(
            send(&server, &alice_t, report(t, s, &[("attempts", "5")]))
                .await
                .unwrap(),
        );
    }
    ids.push(
        send(&server, &bob_t, report(T::TamperDetected, S::Critical, &[]))
            .await
            .unwrap(),
    );
    let (_, auditor) = token(&server, "auditor");

    // Everything, newest first, two per page: the reverse of the report order.
    let all = list(
        &server,
        &auditor,
        Default::default(),
        2,
        pb::ListOrder::Unspecified,
    )
    .await;
    let listed: Vec<&str> = all.iter().map(|e| e.event_id.as_str()).collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    let first = all.last().unwrap();
    assert_eq!(first.account_id, alice);
    assert_eq!(first.device_id, 1);
    assert_eq!(first.r#type(), T::FailedUnlock);
    assert_eq!(first.details.get("attempts").map(String::as_str), Some("5"));
    // Oldest first, one per page.
    let oldest: Vec<String> = list(
        &server,
        &auditor,
        Default::default(),
        1,
        pb::ListOrder::OldestFirst,
    )
    .await
    .into_iter()
    .map(|e| e.event_id)
    .collect();
    assert_eq!(oldest, ids);

    // By account, by type, by minimum severity.
    let of = |f: pb::SecurityEventFilter| {
        let (server, auditor) = (&server, &auditor);
        async move {
            list(server, auditor, f, 10, pb::ListOrder::OldestFirst)
                .await
                .into_iter()
                .map(|e| e.event_id)
                .collect::<Vec<_>>()
        }
    };
    let bobs = of(pb::SecurityEventFilter {
        account_id: bob.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(bobs, [ids[3].clone()]);
    let unlocks = of(pb::SecurityEventFilter {
        types: vec![T::FailedUnlock.into()],
        ..Default::default()
    })
    .await;
    assert_eq!(unlocks, [ids[0].clone(), ids[2].clone()]);
    let severe = of(pb::SecurityEventFilter {
        min_severity: S::High.into(),
        ..Default::default()
    })
    .await;
    assert_eq!(severe, [ids[1].clone(), ids[3].clone()]);
    let future = of(pb::SecurityEventFilter {
        since: Some(prost_types::Timestamp {
            seconds: i64::MAX / 2000,
            nanos: 0,
        }),
        ..Default::default()
    })
    .await;
    assert!(future.is_empty());

    // Each report landed in the audit log against its account and device.
    let audited = guardyn_audit::entries(&*server.kv()).await.unwrap();
    let reported: Vec<_> = audited
        .iter()
        .filter(|e| e.kind == guardyn_audit::AuditKind::SecurityEventReported)
        .collect();
    assert_eq!(reported.len(), 4);
    assert!(
        reported
            .iter()
            .any(|e| e.account_id == bob && e.device_id == Some(1) && e.detail.contains(&ids[3]))
    );
}

#[tokio::test]
async fn malformed_reports_are_refused_naming_the_field() {
    let server = server().await;
    let (_, t) = token(&server, "user");
    let err = send(&server, &t, report(T::Unspecified, S::Low, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = send(&server, &t, report(T::FailedUnlock, S::Unspecified, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let long = "x".repeat(257);
    let err = send(
        &server,
        &t,
        report(
            T::FailedUnlock,
            S::Low,
            &[("ok", "fine"), ("blob", long.as_str())],
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = err
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["details[blob]"]);
    let keys: Vec<String> = (0..17).map(|i| format!("k{i}")).collect();
    let many: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "v")).collect();
    let err = send(&server, &t, report(T::FailedUnlock, S::Low, &many))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Exactly at the bounds is fine.
    let max = "y".repeat(256);
    let full: Vec<(&str, &str)> = keys[..16]
        .iter()
        .map(|k| (k.as_str(), max.as_str()))
        .collect();
    send(&server, &t, report(T::FailedUnlock, S::Low, &full))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_report_flood_is_rate_limited_per_device() {
    let server = server_with(None, RateLimit::new(3, 1)).await;
    let account = AccountId::random().to_string();
    let phone = server.token_with_roles(&account, 1, "s-1", &["user"]);
    let laptop = server.token_with_roles(&account, 2, "s-2", &["user"]);
    for _ in 0..3 {
        send(&server, &phone, report(T::FailedUnlock, S::Low, &[]))
            .await
            .unwrap();
    }
    let err = send(&server, &phone, report(T::FailedUnlock, S::Low, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(reason(&err).as_deref(), Some("RATE_LIMITED"));
    let retry = err.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert!(retry > Duration::from_secs(1), "{retry:?}");
    // Another device of the account has its own budget; the refused report was not stored.
    send(&server, &laptop, report(T::FailedUnlock, S::Low, &[]))
        .await
        .unwrap();
    let (_, admin) = token(&server, "admin");
    let stored = list(
        &server,
        &admin,
        pb::SecurityEventFilter {
            account_id: account,
            ..Default::default()
        },
        50,
        pb::ListOrder::Unspecified,
    )
    .await;
    assert_eq!(stored.len(), 4);
}

#[tokio::test]
async fn users_cannot_list_or_export_and_bad_filters_are_refused() {
    let server = server().await;
    let (_, user) = token(&server, "user");
    send(&server, &user, report(T::SuspiciousLogin, S::High, &[]))
        .await
        .unwrap();
    let err = api(&server)
        .list_security_events(authed(pb::ListSecurityEventsRequest::default(), &user))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(reason(&err).as_deref(), Some("ROLE_REQUIRED"));
    let err = export(&server, &user, Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(reason(&err).as_deref(), Some("ROLE_REQUIRED"));

    let (_, admin) = token(&server, "admin");
    for (filter, token) in [
        (
            pb::SecurityEventFilter {
                account_id: "not-a-uuid".into(),
                ..Default::default()
            },
            "",
        ),
        (
            pb::SecurityEventFilter {
                since: Some(prost_types::Timestamp {
                    seconds: 20,
                    nanos: 0,
                }),
                until: Some(prost_types::Timestamp {
                    seconds: 10,
                    nanos: 0,
                }),
                ..Default::default()
            },
            "",
        ),
        (Default::default(), "garbage"),
    ] {
        let err = api(&server)
            .list_security_events(authed(
                pb::ListSecurityEventsRequest {
                    filter: Some(filter),
                    page_token: token.into(),
                    ..Default::default()
                },
                &admin,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    }
}

#[tokio::test]
async fn export_streams_every_matching_event_as_json_lines_in_whole_line_chunks() {
    let server = server().await;
    let (account, user) = token(&server, "user");
    let (_, other) = token(&server, "user");
    let value = "v".repeat(256);
    let keys: Vec<String> = (0..16).map(|i| format!("key{i:02}")).collect();
    let details: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), value.as_str())).collect();
    // About 4.5 KB per line: 40 events are several chunks.
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(
            send(
                &server,
                &user,
                report(T::CertificatePinningFailure, S::High, &details),
            )
            .await
            .unwrap(),
        );
    }
    send(
        &server,
        &other,
        report(T::FailedUnlock, S::Low, &[("quote", "a \"b\"\n")]),
    )
    .await
    .unwrap();
    let (_, auditor) = token(&server, "auditor");
    let chunks = export(
        &server,
        &auditor,
        pb::SecurityEventFilter {
            account_id: account.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(chunks.len() > 1, "{} chunks", chunks.len());
    let mut exported = Vec::new();
    for chunk in &chunks {
        let text = std::str::from_utf8(chunk).unwrap();
        assert!(text.ends_with('\n'), "a chunk splits a line");
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["account_id"], account.as_str());
            assert_eq!(v["device_id"], 1);
            assert_eq!(v["type"], "CERTIFICATE_PINNING_FAILURE");
            assert_eq!(v["severity"], "HIGH");
            assert_eq!(v["details"]["key07"], value.as_str());
            let at = v["received_at"].as_str().unwrap();
            assert!(at.len() == 24 && at.ends_with('Z'), "{at}");
            exported.push(v["event_id"].as_str().unwrap().to_owned());
        }
    }
    // Oldest first, each once.
    assert_eq!(exported, ids);

    // Escaping: the other account's detail with a quote and a newline survives.
    let chunks = export(
        &server,
        &auditor,
        pb::SecurityEventFilter {
            types: vec![T::FailedUnlock.into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let text = String::from_utf8(chunks.concat()).unwrap();
    assert_eq!(text.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(v["details"]["quote"], "a \"b\"\n");
}

#[tokio::test]
async fn the_sweeper_deletes_events_past_their_retention() {
    let clock = Arc::new(ManualClock::new());
    let server = server_with(Some(clock.clone()), RateLimit::new(10_000, 600_000)).await;
    let (_, user) = token(&server, "user");
    let old = [
        send(&server, &user, report(T::RootDetected, S::High, &[]))
            .await
            .unwrap(),
        send(&server, &user, report(T::TamperDetected, S::High, &[]))
            .await
            .unwrap(),
    ];
    let retention = guardyn_common::policy::load(&*server.kv())
        .await
        .unwrap()
        .retention
        .security_events_secs;
    // Just inside the retention: nothing goes.
    clock.advance(Duration::from_secs(retention - 60));
    let recent = send(&server, &user, report(T::FailedUnlock, S::Low, &[]))
        .await
        .unwrap();
    let (_, admin) = token(&server, "admin");
    let ids = |events: Vec<pb::SecurityEvent>| -> Vec<String> {
        events.into_iter().map(|e| e.event_id).collect()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = ids(list(
        &server,
        &admin,
        Default::default(),
        50,
        pb::ListOrder::OldestFirst,
    )
    .await);
    assert_eq!(all, [old[0].clone(), old[1].clone(), recent.clone()]);
    // Past it: the two old events are deleted, the recent one stays.
    clock.advance(Duration::from_secs(120));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let left = ids(list(
            &server,
            &admin,
            Default::default(),
            50,
            pb::ListOrder::OldestFirst,
        )
        .await);
        if left == [recent.clone()] {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still stored: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
