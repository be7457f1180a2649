//! The audit log through AuditService: filtered pages in both orders, VerifyAuditLog on an
//! intact, an altered and a pruned chain, role checks, and the retention sweeper.

use std::sync::Arc;
use std::time::Duration;

use guardyn_audit::{AuditKind, AuditLog, AuditRecord};
use guardyn_common::AccountId;
use guardyn_common::clock::{Clock, ManualClock, SharedClock};
use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::audit_service_client::AuditServiceClient;
use guardyn_testkit::rpc::authed;
use guardyn_testkit::{Options, TestServer};
use tonic::Code;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

async fn server(clock: Option<SharedClock>) -> TestServer {
    TestServer::start_with(Options {
        clock,
        ..Options::default()
    })
    .await
    .unwrap()
}

fn api(server: &TestServer) -> AuditServiceClient<Channel> {
    AuditServiceClient::new(server.channel())
}

fn token(server: &TestServer, role: &str) -> String {
    server.token_with_roles(&AccountId::random().to_string(), 1, "s-1", &[role])
}

fn account() -> String {
    AccountId::random().to_string()
}

/// Appends through a second writer on the server's store, as another service would.
async fn append(server: &TestServer, records: Vec<AuditRecord>) {
    let log = AuditLog::new(server.kv(), Arc::new(guardyn_common::clock::SystemClock));
    for r in records {
        log.append(r).await.unwrap();
    }
}

async fn list_all(
    server: &TestServer,
    token: &str,
    mut request: pb::ListAuditEntriesRequest,
) -> Vec<pb::AuditEntry> {
    let mut out = Vec::new();
    loop {
        let page = api(server)
            .list_audit_entries(authed(request.clone(), token))
            .await
            .unwrap()
            .into_inner();
        out.extend(page.entries);
        if page.next_page_token.is_empty() {
            return out;
        }
        request.page_token = page.next_page_token;
    }
}

async fn verify(server: &TestServer, token: &str) -> pb::VerifyAuditLogResponse {
    api(server)
        .verify_audit_log(authed(pb::VerifyAuditLogRequest {}, token))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn entries_are_listed_by_account_actor_kind_and_time_in_pages_both_ways() {
    let server = server(None).await;
    let (alice, bob, boss) = (account(), account(), account());
    append(
        &server,
        vec![
            AuditRecord::new(
                AuditKind::LoginSucceeded,
                alice.clone(),
                Some(1),
                "from 10.0.0.1",
            ),
            AuditRecord::new(AuditKind::AccountSuspended, alice.clone(), None, "")
                .by(boss.clone(), "phishing reports"),
            AuditRecord::new(AuditKind::RoleChanged, bob.clone(), None, "user -> auditor")
                .by(boss.clone(), "compliance team"),
            AuditRecord::new(AuditKind::AccountUnsuspended, alice.clone(), None, "")
                .by(boss.clone(), "cleared"),
        ],
    )
    .await;
    let auditor = token(&server, "auditor");

    let all = list_all(
        &server,
        &auditor,
        pb::ListAuditEntriesRequest {
            page_size: 1,
            ..Default::default()
        },
    )
    .await;
    // The server may append entries of its own meanwhile (a monitoring alert on a busy host).
    let ours = |e: &pb::AuditEntry| e.account_id == alice || e.account_id == bob;
    let all: Vec<pb::AuditEntry> = all.into_iter().filter(ours).collect();
    assert_eq!(all.len(), 4);
    assert!(all.windows(2).all(|w| w[0].seq > w[1].seq), "newest first");
    let oldest = list_all(
        &server,
        &auditor,
        pb::ListAuditEntriesRequest {
            page_size: 3,
            order: pb::ListOrder::OldestFirst.into(),
            ..Default::default()
        },
    )
    .await;
    let oldest: Vec<pb::AuditEntry> = oldest.into_iter().filter(ours).collect();
    let reversed: Vec<u64> = all.iter().rev().map(|e| e.seq).collect();
    assert_eq!(oldest.iter().map(|e| e.seq).collect::<Vec<_>>(), reversed);
    let suspended = &oldest[1];
    assert_eq!(suspended.kind, "ACCOUNT_SUSPENDED");
    assert_eq!(suspended.account_id, alice);
    assert_eq!(suspended.actor_account_id, boss);
    assert_eq!(suspended.reason, "phishing reports");
    assert_eq!(oldest[0].device_id, 1);
    assert_eq!(oldest[0].actor_account_id, "");

    let kinds = |req: pb::ListAuditEntriesRequest| {
        let (server, auditor) = (&server, &auditor);
        async move {
            list_all(
                server,
                auditor,
                pb::ListAuditEntriesRequest {
                    order: pb::ListOrder::OldestFirst.into(),
                    ..req
                },
            )
            .await
            .into_iter()
            .map(|e| e.kind)
            .collect::<Vec<_>>()
        }
    };
    let of_alice = kinds(pb::ListAuditEntriesRequest {
        account_id: alice.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        of_alice,
        [
            "LOGIN_SUCCEEDED",
            "ACCOUNT_SUSPENDED",
            "ACCOUNT_UNSUSPENDED"
        ]
    );
    let by_boss_about_alice = kinds(pb::ListAuditEntriesRequest {
        account_id: alice.clone(),
        actor_account_id: boss.clone(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        by_boss_about_alice,
        ["ACCOUNT_SUSPENDED", "ACCOUNT_UNSUSPENDED"]
    );
    let role_changes = kinds(pb::ListAuditEntriesRequest {
        kinds: vec!["role_changed".into(), "MFA_RESET".into()],
        ..Default::default()
    })
    .await;
    assert_eq!(role_changes, ["ROLE_CHANGED"]);
    let after_all = kinds(pb::ListAuditEntriesRequest {
        since: Some(guardyn_common::wire::timestamp(
            guardyn_common::clock::SystemClock.now_ms() + 60_000,
        )),
        ..Default::default()
    })
    .await;
    assert!(after_all.is_empty());
    let before_all = kinds(pb::ListAuditEntriesRequest {
        until: Some(guardyn_common::wire::timestamp(1_000)),
        ..Default::default()
    })
    .await;
    assert!(before_all.is_empty());

    for bad in [
        pb::ListAuditEntriesRequest {
            kinds: vec!["NOT_A_KIND".into()],
            ..Default::default()
        },
        pb::ListAuditEntriesRequest {
            actor_account_id: "boss".into(),
            ..Default::default()
        },
        pb::ListAuditEntriesRequest {
            page_token: "x".into(),
            ..Default::default()
        },
    ] {
        let err = api(&server)
            .list_audit_entries(authed(bad, &auditor))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
}

#[tokio::test]
async fn users_cannot_read_or_verify_the_log() {
    let server = server(None).await;
    let user = token(&server, "user");
    let err = api(&server)
        .list_audit_entries(authed(pb::ListAuditEntriesRequest::default(), &user))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        guardyn_common::error::reason_of(&err).as_deref(),
        Some("ROLE_REQUIRED")
    );
    let err = api(&server)
        .verify_audit_log(authed(pb::VerifyAuditLogRequest {}, &user))
        .await
        .unwrap_err();
    assert_eq!(
        guardyn_common::error::reason_of(&err).as_deref(),
        Some("ROLE_REQUIRED")
    );
}

#[tokio::test]
async fn verify_audit_log_finds_an_altered_entry_and_a_removed_one() {
    let server = server(None).await;
    append(
        &server,
        (0..5)
            .map(|i| AuditRecord::new(AuditKind::LoginFailed, account(), None, format!("n {i}")))
            .collect(),
    )
    .await;
    let admin = token(&server, "admin");
    let ok = verify(&server, &admin).await;
    assert!(ok.ok, "{ok:?}");
    assert_eq!((ok.first_seq, ok.entries_checked), (1, ok.last_seq));
    assert!(ok.last_seq >= 5);

    let kv = server.kv();
    let key = guardyn_audit::entry_key(3);
    let original = kv.get(&key).await.unwrap().unwrap();
    let mut altered = original.clone();
    // A byte of the detail, in the middle of the record.
    let at = altered.len() / 2;
    altered[at] ^= 0x20;
    kv.put(&key, &altered).await.unwrap();
    let broken = verify(&server, &admin).await;
    assert!(!broken.ok);
    let link = broken.broken.unwrap();
    assert_eq!(link.seq, 3);
    assert!(
        matches!(
            link.problem(),
            pb::AuditProblem::Altered | pb::AuditProblem::Undecodable
        ),
        "{link:?}"
    );

    kv.put(&key, &original).await.unwrap();
    assert!(verify(&server, &admin).await.ok);
    kv.delete(&key).await.unwrap();
    let link = verify(&server, &admin).await.broken.unwrap();
    assert_eq!((link.seq, link.problem()), (3, pb::AuditProblem::Missing));
}

#[tokio::test]
async fn the_sweeper_prunes_entries_past_retention_and_the_chain_still_verifies() {
    let clock = Arc::new(ManualClock::new());
    let server = server(Some(clock.clone())).await;
    let log = AuditLog::new(server.kv(), clock.clone());
    let old = account();
    for i in 0..5 {
        log.append(AuditRecord::new(
            AuditKind::LoginSucceeded,
            old.clone(),
            None,
            format!("{i}"),
        ))
        .await
        .unwrap();
    }
    let retention = guardyn_common::policy::load(&*server.kv())
        .await
        .unwrap()
        .retention
        .audit_secs;
    clock.advance(Duration::from_secs(retention + 60));
    let recent = account();
    log.append(AuditRecord::new(
        AuditKind::LoginSucceeded,
        recent.clone(),
        None,
        "new",
    ))
    .await
    .unwrap();

    let admin = token(&server, "admin");
    let deadline = tokio::time::Instant::now() + WAIT;
    let left = loop {
        let left = list_all(
            &server,
            &admin,
            pb::ListAuditEntriesRequest {
                order: pb::ListOrder::OldestFirst.into(),
                ..Default::default()
            },
        )
        .await;
        // The prune is audited right after it commits.
        if left.iter().all(|e| e.account_id != old) && left.iter().any(|e| e.kind == "AUDIT_PRUNED")
        {
            break left;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "old entries still stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(left.iter().any(|e| e.account_id == recent));
    let pruned = left.iter().find(|e| e.kind == "AUDIT_PRUNED").unwrap();
    assert_eq!(pruned.actor_account_id, "");

    let v = verify(&server, &admin).await;
    assert!(v.ok, "{v:?}");
    assert!(v.first_seq >= 6, "{v:?}");
    assert_eq!(v.first_seq, left[0].seq);
    assert_eq!(v.last_seq, left.last().unwrap().seq);
    // The first entry after the checkpoint is still checked against it.
    server
        .kv()
        .delete(&guardyn_audit::entry_key(v.first_seq))
        .await
        .unwrap();
    let link = verify(&server, &admin).await.broken.unwrap();
    assert_eq!(
        (link.seq, link.problem()),
        (v.first_seq, pb::AuditProblem::Missing)
    );
}
