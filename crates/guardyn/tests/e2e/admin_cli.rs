//! What the `guardyn admin …` end-to-end tests share: the CLI run against a test server with
//! the client secrets in its environment, and an account made owner through the real path
//! (bootstrap code, ClaimOwner).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use guardyn_proto::guardyn::admin::v1 as admin;
use guardyn_proto::guardyn::admin::v1::bootstrap_service_client::BootstrapServiceClient;
use guardyn_proto::guardyn::auth::v1 as auth;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_testkit::TestServer;
use guardyn_testkit::rpc::authed;

use super::guardyn;

pub(super) const PASSWORD: &str = "correct horse battery staple";

/// The `guardyn` client against one server with one state file.
pub(super) struct Cli {
    url: String,
    state: PathBuf,
}

impl Cli {
    pub(super) fn new(server: &TestServer, state: PathBuf) -> Self {
        Self {
            url: format!("http://{}", server.addr),
            state,
        }
    }

    /// Runs `guardyn ARGS --server URL --state STATE`: whether it succeeded, its stdout and
    /// its stderr.
    pub(super) async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = guardyn();
        cmd.args(args)
            .arg("--server")
            .arg(&self.url)
            .arg("--state")
            .arg(&self.state)
            .env("GDN_PASSWORD", PASSWORD)
            .env("GDN_STATE_PASSPHRASE", "a state passphrase");
        let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), stdout, stderr)
    }

    /// Runs `args`, which must succeed.
    pub(super) async fn ok(&self, args: &[&str]) {
        let (ok, _, err) = self.run(args).await;
        assert!(ok, "{err}");
    }

    /// Runs `args`, which the server must refuse for want of a role.
    pub(super) async fn refused_without_role(&self, args: &[&str]) {
        let (ok, _, err) = self.run(args).await;
        assert!(!ok, "{args:?} succeeded without a role");
        assert!(
            err.contains("ROLE_REQUIRED") || err.contains("roles"),
            "{err}"
        );
    }
}

/// Makes `username` (password [`PASSWORD`]) the owner with a bootstrap code and ClaimOwner;
/// returns the access token of the sign-in used for the claim.
pub(super) async fn make_owner(server: &TestServer, username: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let issued = guardyn_admin::users_bootstrap::issue(
        &server.data_dir().join("data"),
        u64::try_from(now.as_millis()).unwrap(),
    )
    .unwrap();
    let login = AuthServiceClient::new(server.channel())
        .login(auth::LoginRequest {
            username: username.to_owned(),
            password: PASSWORD.into(),
            device_id: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let Some(auth::login_response::Outcome::Tokens(tokens)) = login.outcome else {
        panic!("login did not sign in");
    };
    BootstrapServiceClient::new(server.channel())
        .claim_owner(authed(
            admin::ClaimOwnerRequest { code: issued.code },
            &tokens.access_token,
        ))
        .await
        .unwrap();
    tokens.access_token
}
