//! External proof: two official libsignal clients exchange messages through Guardyn
//! (`crates/testkit/interop/libsignal/exchange.mjs`): a PreKey message from a server-provided
//! bundle via SendMessage, received on Listen, decrypted, acknowledged, and a reply.

use guardyn_testkit::{TestServer, interop};

#[tokio::test]
async fn libsignal_clients_exchange_messages_through_the_server() {
    let Some(project) = interop::libsignal_project() else {
        return;
    };
    // The real auth service supplies accounts, bundles and the device directory.
    let server = TestServer::start().await.unwrap();
    interop::run_script(project, "exchange.mjs", server.addr)
        .await
        .unwrap();
}
