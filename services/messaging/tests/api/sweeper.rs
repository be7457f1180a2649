//! The idempotency record sweeper.

use std::time::Duration;

use guardyn_storage::{Direction, KeyRange};

use crate::common::*;

async fn idem_keys(env: &Env) -> Vec<String> {
    env.server
        .kv()
        .scan(KeyRange::prefix(b"msg/v1/idem/"), Direction::Forward, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|p| String::from_utf8_lossy(&p.key).into_owned())
        .collect()
}

#[tokio::test]
async fn expired_idempotency_records_are_swept_and_live_ones_kept() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    env.dir.set(&a, &[(1, 100)]);
    env.dir.set(&b, &[(1, 201)]);
    env.send((&a, 1), &b, &[(1, 201)], "old", b"one")
        .await
        .unwrap();
    env.clock.advance(Duration::from_secs(12 * 3600));
    env.send((&a, 1), &b, &[(1, 201)], "new", b"two")
        .await
        .unwrap();
    assert_eq!(idem_keys(&env).await.len(), 2);
    // "old" is past messaging.idempotency_secs (one day), "new" is not.
    env.clock.advance(Duration::from_secs(12 * 3600 + 1));
    let mut left = Vec::new();
    for _ in 0..200 {
        left = idem_keys(&env).await;
        if left.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with("/new"), "{left:?}");
    // The kept record still answers a retry as a duplicate.
    let r = env
        .send((&a, 1), &b, &[(1, 201)], "new", b"two")
        .await
        .unwrap();
    assert!(r.duplicate);
}
