//! An envelope acknowledged by SendMessage survives SIGKILL of the server process.
//!
//! The server process is this test binary itself, re-run with only [`child_server`] selected
//! (ignored in normal runs): it serves messaging on the given data directory and prints its
//! address and tokens. The guardyn binary cannot host messaging alone yet (it needs auth's
//! device directory), so the child injects the test directory double like every other test.

use guardyn_proto::guardyn::messaging::v1::messaging_service_client::MessagingServiceClient;
use guardyn_proto::guardyn::messaging::v1::{ListenRequest, SendMessageRequest};
use tokio::process::Child;

use crate::common::*;

const CHILD_DIR: &str = "GUARDYN_MESSAGING_TEST_CHILD_DIR";

#[tokio::test]
#[ignore = "server process for an_acknowledged_send_survives_sigkill, which runs it"]
#[allow(clippy::print_stdout)] // The parent test reads the address and tokens from stdout.
async fn child_server() {
    let dir = std::path::PathBuf::from(std::env::var(CHILD_DIR).unwrap());
    let env = Env::start_with(move |c| c.storage.data_dir = dir).await;
    env.dir.set(&acct(1), &[(1, 100)]);
    env.dir.set(&acct(2), &[(1, 201)]);
    println!(
        "CHILD {} {} {}",
        env.server.addr,
        env.token(&acct(1), 1),
        env.token(&acct(2), 1)
    );
    std::future::pending::<()>().await;
}

/// Start the child; returns it with the words it printed (address, tokens).
async fn spawn(dir: &std::path::Path) -> (Child, String, String, String) {
    let (child, w) = guardyn_testkit::child::spawn("durability::child_server", CHILD_DIR, dir)
        .await
        .unwrap();
    (child, w[0].clone(), w[1].clone(), w[2].clone())
}

async fn client(addr: &str) -> MessagingServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    MessagingServiceClient::new(channel)
}

#[tokio::test]
async fn an_acknowledged_send_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr, token_a, _) = spawn(dir.path()).await;
    let req: SendMessageRequest = send_request(&acct(2), &[(1, 201)], "durable", b"kept", false);
    client(&addr)
        .await
        .send_message(authed(req, &token_a))
        .await
        .unwrap();
    child.kill().await.unwrap(); // SIGKILL: no shutdown, no flush.

    let (_child, addr, _, token_b) = spawn(dir.path()).await;
    let mut s = client(&addr)
        .await
        .listen(authed(ListenRequest {}, &token_b))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next_envelope(&mut s).await.content, b"kept\x01");
    expect_queue_empty(&mut s).await;
}
