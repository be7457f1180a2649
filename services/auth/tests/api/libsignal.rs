//! External proof: the official libsignal client accepts a bundle served by Guardyn
//! (`crates/testkit/interop/libsignal/bundle.mjs`).

use guardyn_testkit::interop;

use super::helpers::*;

#[tokio::test]
async fn libsignal_accepts_a_bundle_fetched_from_the_server() {
    let Some(project) = interop::libsignal_project() else {
        return;
    };
    let env = start().await;
    interop::run_script(project, "bundle.mjs", env.server.addr)
        .await
        .unwrap();
}
