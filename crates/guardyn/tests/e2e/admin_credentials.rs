//! API credentials on an admin process without auth (`guardyn serve --service admin`): the
//! credential is checked by auth over the mesh listener, so the admin process admits a valid
//! one to its scopes and refuses a wrong, unknown or revoked one exactly as auth's own process
//! does, with the revocation in force on the next call.

use guardyn_common::AccountId;
use guardyn_proto::guardyn::admin::v1 as pb;
use guardyn_proto::guardyn::admin::v1::admin_user_service_client::AdminUserServiceClient;
use guardyn_proto::guardyn::admin::v1::credential_service_client::CredentialServiceClient;
use guardyn_proto::guardyn::admin::v1::monitoring_service_client::MonitoringServiceClient;
use guardyn_testkit::rpc::authed;
use guardyn_testkit::{Options, TestServer};
use tonic::Code;

use super::mesh::fast_auth;

async fn monitoring(server: &TestServer, bearer: &str) -> Result<(), tonic::Status> {
    MonitoringServiceClient::new(server.channel())
        .get_monitoring_data(authed(pb::GetMonitoringDataRequest {}, bearer))
        .await
        .map(|_| ())
}

/// What a client can tell of a refusal: code, message and ErrorInfo reason.
fn refusal(result: Result<(), tonic::Status>, what: &str) -> (Code, String, Option<String>) {
    let status = result.expect_err(what);
    (
        status.code(),
        status.message().to_owned(),
        guardyn_common::error::reason_of(&status),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_process_without_auth_checks_credentials_with_auth_over_the_mesh() {
    let a = TestServer::start_with(Options {
        services: vec!["auth".into(), "admin".into()],
        configure: Some(Box::new(|c| {
            fast_auth(c);
            c.mesh.listen = "127.0.0.1:0".into();
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    let mesh = a.mesh_addr.expect("A binds its mesh listener");
    let auth_public = a.addr;
    let b = TestServer::start_with(Options {
        services: vec!["admin".into()],
        configure: Some(Box::new(move |c| {
            c.mesh.auth_addresses = vec![format!("http://{auth_public}")];
            c.mesh.account_admin_addresses = vec![format!("http://{mesh}")];
        })),
        ..Options::default()
    })
    .await
    .unwrap();
    assert!(b.hosts("guardyn.admin.v1.MonitoringService"));
    assert!(!b.hosts("guardyn.auth.v1.AuthService"));

    let admin = a.token_with_roles(&AccountId::random().to_string(), 1, "s-1", &["admin"]);
    let issue = |scope: &'static str| {
        let admin = admin.clone();
        let channel = a.channel();
        async move {
            CredentialServiceClient::new(channel)
                .issue_credential(authed(
                    pb::IssueCredentialRequest {
                        name: "ci bot".into(),
                        scopes: vec![scope.into()],
                        valid_for_secs: 3600,
                    },
                    &admin,
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let issued = issue("monitoring").await;
    let id = issued.credential.unwrap().credential_id;
    let secret = issued.secret;

    // Admitted on B, as on A.
    monitoring(&a, &secret).await.unwrap();
    monitoring(&b, &secret).await.unwrap();

    // Out of its scopes on B: the scope check is B's own auth layer, on auth's answer.
    let denied = AdminUserServiceClient::new(b.channel())
        .list_accounts(authed(pb::ListAccountsRequest::default(), &secret))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    // A wrong secret and an unknown id: refused alike, and as A refuses them.
    let (prefix, _) = secret.rsplit_once('.').unwrap();
    let wrong = format!("{prefix}.{}", "x".repeat(43));
    let unknown = format!("gdc_{}.{}", AccountId::random(), "x".repeat(43));
    let expected = refusal(monitoring(&a, &wrong).await, "a wrong secret on A");
    assert_eq!(expected.0, Code::Unauthenticated, "{expected:?}");
    for (what, bearer) in [("a wrong secret", &wrong), ("an unknown id", &unknown)] {
        assert_eq!(
            refusal(monitoring(&b, bearer).await, what),
            expected,
            "{what} on B"
        );
    }

    // Revoked on A: refused by B on the very next call, with the same answer.
    CredentialServiceClient::new(a.channel())
        .revoke_credential(authed(
            pb::RevokeCredentialRequest {
                credential_id: id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap();
    assert_eq!(
        refusal(monitoring(&b, &secret).await, "a revoked credential on B"),
        expected
    );
    assert_eq!(
        refusal(monitoring(&a, &secret).await, "a revoked credential on A"),
        expected
    );

    b.stop().await.unwrap();
    a.stop().await.unwrap();
}
