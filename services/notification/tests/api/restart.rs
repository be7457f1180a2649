//! A wake-up survives SIGKILL of the server: a push cut short by the kill is sent after the
//! restart, and a push that went out is not sent again by the next restart.
//!
//! The server process is this test binary itself, re-run with only [`child_server`] selected
//! (ignored in normal runs). It reads its APNs URL from `<dir>/apns_url`, serves notification
//! on `<dir>/data`, prints its address and a token, and enqueues one wake-up for account 1,
//! device 1 whenever `<dir>/enqueue` appears (as messaging would).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use guardyn_common::clock::{Clock, SystemClock};
use guardyn_common::events::Payload as _;
use guardyn_common::events::notification::{WAKE_QUEUE, WakeJob};
use guardyn_common::{AccountId, DeviceId};
use guardyn_notification::providers::apns::ApnsConfig;
use guardyn_proto::guardyn::notification::v1::RegisterPushTokenRequest;
use guardyn_proto::guardyn::notification::v1::notification_service_client::NotificationServiceClient;
use guardyn_testkit::rpc::authed;
use guardyn_testkit::{Options, TestServer};
use tokio::process::Child;

use super::fakes::FakeApns;
use super::tokens::{APNS_TOKEN, TOPIC, acct, apns, eventually, write_p256};

const CHILD_DIR: &str = "GUARDYN_NOTIFICATION_TEST_CHILD_DIR";

#[tokio::test]
#[ignore = "server process for a_wake_cut_short_by_sigkill_is_pushed_after_restart_once, which runs it"]
#[allow(clippy::print_stdout)] // The parent test reads the address and token from stdout.
async fn child_server() {
    let dir = PathBuf::from(std::env::var(CHILD_DIR).unwrap());
    let url = std::fs::read_to_string(dir.join("apns_url")).unwrap();
    let (key_path, data) = (dir.join("apns.p8"), dir.join("data"));
    let server = TestServer::start_with(Options {
        services: vec!["notification".into()],
        configure: Some(Box::new(move |c| {
            c.storage.data_dir = data;
            c.notification.apns = Some(ApnsConfig {
                key_path,
                key_id: "KEY1234567".into(),
                team_id: "TEAM123456".into(),
                production_url: url.clone(),
                sandbox_url: url,
                timeout_ms: 60_000,
                ..ApnsConfig::default()
            });
            // A crashed sender's hold on the device lapses quickly.
            c.notification.claim_ms = 1_000;
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    println!(
        "CHILD {} {}",
        server.addr,
        server.token(&acct(1), 1, "child-session")
    );
    let trigger = dir.join("enqueue");
    loop {
        if std::fs::remove_file(&trigger).is_ok() {
            let job = WakeJob {
                account: AccountId::parse(&acct(1)).unwrap(),
                device: DeviceId::new(1).unwrap(),
                urgent: true,
                queued_at_ms: SystemClock.now_ms(),
            };
            server
                .bus()
                .enqueue(WAKE_QUEUE, job.encode())
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn spawn(dir: &Path, apns_url: &str) -> (Child, String, String) {
    std::fs::write(dir.join("apns_url"), apns_url).unwrap();
    let (child, w) = guardyn_testkit::child::spawn("api::restart::child_server", CHILD_DIR, dir)
        .await
        .unwrap();
    (child, w[0].clone(), w[1].clone())
}

#[tokio::test]
async fn a_wake_cut_short_by_sigkill_is_pushed_after_restart_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_, public) = write_p256(dir.path(), "apns.p8");

    // 1. The provider accepts the connection and never answers: the push is in flight when
    //    the server is killed.
    let stuck = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stuck_url = format!("http://{}", stuck.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = stuck.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    let (mut child, addr, token) = spawn(dir.path(), &stuck_url).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = NotificationServiceClient::new(channel);
    let request: RegisterPushTokenRequest = apns(APNS_TOKEN);
    client
        .register_push_token(authed(request, &token))
        .await
        .unwrap();
    std::fs::write(dir.path().join("enqueue"), b"").unwrap();
    eventually(async || connections.load(Ordering::SeqCst) > 0).await;
    child.kill().await.unwrap(); // SIGKILL: no shutdown, no ack.
    holder.abort();

    // 2. Restarted with a working provider: the job comes back and is pushed.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let fake = FakeApns::start(clock, public, "KEY1234567", "TEAM123456", TOPIC).await;
    let (mut child, _, _) = spawn(dir.path(), &fake.server.url()).await;
    let pushes = || fake.server.requests_to("/3/device/");
    eventually(async || !pushes().is_empty()).await;
    assert!(pushes()[0].auth.is_ok());
    tokio::time::sleep(Duration::from_millis(300)).await;
    child.kill().await.unwrap();

    // 3. Another restart: the push went out, so nothing is sent again.
    let (_child, _, _) = spawn(dir.path(), &fake.server.url()).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_eq!(pushes().len(), 1);
}
