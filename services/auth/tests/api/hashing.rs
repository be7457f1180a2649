//! The Argon2id bound (`auth.argon2_concurrency`): a login flood is refused with
//! RESOURCE_EXHAUSTED / OVERLOADED instead of piling up hashing work (and memory).

use std::time::Duration;

use guardyn_common::ratelimit::RateLimit;
use guardyn_proto::guardyn::auth::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt as _;

use super::helpers::*;

#[tokio::test]
async fn a_login_flood_beyond_the_hashing_bound_is_refused_with_a_retry_hint() {
    let env = start_with(|c| {
        // Costly enough that 32 concurrent checks cannot all finish inside the queue wait.
        c.auth.argon2.memory_kib = 8192;
        c.auth.argon2.iterations = 2;
        c.auth.argon2_concurrency = 1;
        c.auth.argon2_queue_ms = 5;
        // Only the hashing bound may refuse: no rate limit, no lockout.
        c.auth.limits.login_per_address = RateLimit::new(10_000, 10_000);
        c.auth.limits.login_per_account = RateLimit::new(10_000, 10_000);
        c.auth.lockout.threshold = 10_000;
    })
    .await;
    env.register("alice", 0).await;

    // Known user with a wrong password and unknown user (the dummy hash) alike.
    let logins = (0..32).map(|i| {
        let mut auth = env.auth();
        async move {
            auth.login(pb::LoginRequest {
                username: if i % 2 == 0 { "alice" } else { "nobody" }.into(),
                password: format!("wrong password {i}"),
                device_id: 1,
            })
            .await
        }
    });
    let results = futures::future::join_all(logins).await;
    let (mut invalid, mut overloaded) = (0, 0);
    for r in results {
        let status = r.expect_err("a wrong password never signs in");
        match (status.code(), reason(&status).as_str()) {
            (Code::Unauthenticated, "INVALID_CREDENTIALS") => invalid += 1,
            (Code::ResourceExhausted, "OVERLOADED") => {
                overloaded += 1;
                let retry = status
                    .get_details_retry_info()
                    .and_then(|r| r.retry_delay)
                    .expect("RetryInfo on an OVERLOADED refusal");
                assert!(retry > Duration::ZERO, "{retry:?}");
            }
            other => panic!("unexpected outcome {other:?}: {status:?}"),
        }
    }
    assert!(invalid >= 1, "the slot holder was answered");
    assert!(overloaded >= 1, "no login was refused ({invalid} checked)");

    // The server is still there, and with the flood gone a login goes through.
    let ok = env.login("alice", 1).await.unwrap();
    assert!(ok.outcome.is_some());
}
