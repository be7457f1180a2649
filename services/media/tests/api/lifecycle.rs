//! Expiry by the sweeper (on the service clock) and account deletion.

use std::time::Duration;

use guardyn_common::events::Payload as _;
use guardyn_common::events::auth::{ACCOUNT_DELETED, AccountDeleted};
use guardyn_common::{AccountId, DeviceId};
use tonic::Code;

use crate::common::*;

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test]
async fn the_sweeper_removes_expired_uploads_then_expired_media() {
    let env = Env::start().await;
    let a = acct(1);
    let data = blob(2 * CHUNK, 5);
    let media_id = env.upload(&a, &data).await;
    let open = env.create(&a, &data).await.unwrap();
    env.chunk(&a, &open, 0, &data[..CHUNK]).await.unwrap();
    assert_eq!(env.objects().await.len(), 3);

    // 25 hours: the unfinished upload is gone with its chunk, the blob stays.
    env.clock.advance(25 * HOUR);
    env.eventually("the open upload's chunk removed", || async {
        env.objects().await.len() == 2
    })
    .await;
    assert_eq!(
        code_reason(env.committed(&a, &open).await),
        (Code::NotFound, "NOT_FOUND".into())
    );
    assert_eq!(env.download(&a, &media_id, 0, 0).await.unwrap(), data);

    // 30 days after completion: the blob expires too, and the quota is given back.
    env.clock.advance(30 * 24 * HOUR);
    env.eventually("the blob's chunks removed", || async {
        env.objects().await.is_empty()
    })
    .await;
    assert_eq!(
        code_reason(env.download(&a, &media_id, 0, 0).await),
        (Code::NotFound, "NOT_FOUND".into())
    );
    env.eventually("only the usage counter left", || async {
        env.keys().await == vec![format!("media/v1/q/{a}")]
    })
    .await;
    env.create_with(&a, 64 * 1024, vec![0; 32]).await.unwrap();
    env.create_with(&a, 36 * 1024, vec![0; 32]).await.unwrap();
}

#[tokio::test]
async fn deleting_an_account_removes_its_uploads_and_blobs() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    let data = blob(CHUNK + 3, 6);
    let gone = env.upload(&a, &data).await;
    let open = env.create(&a, &data).await.unwrap();
    env.chunk(&a, &open, 0, &data[..CHUNK]).await.unwrap();
    let kept = env.upload(&b, &data).await;
    assert_eq!(env.objects().await.len(), 5);

    let event = AccountDeleted {
        account: AccountId::parse(&a).unwrap(),
        devices: vec![DeviceId::FIRST],
    };
    env.server
        .bus()
        .publish(ACCOUNT_DELETED, event.encode())
        .await
        .unwrap();
    env.eventually("the account's chunks removed", || async {
        env.objects().await.len() == 2
    })
    .await;
    assert_eq!(
        code_reason(env.download(&b, &gone, 0, 0).await),
        (Code::NotFound, "NOT_FOUND".into())
    );
    assert_eq!(env.download(&a, &kept, 0, 0).await.unwrap(), data);
    let keys = env.keys().await;
    assert!(!keys.iter().any(|k| k.contains(&a)), "{keys:?}");
}
