//! Every refused call names its code and reason and stores nothing.

use guardyn_proto::guardyn::common::v1::OffsetMismatch;
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn bad_chunks_and_foreign_or_unknown_uploads_are_refused_without_storing() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    let data = blob(2 * CHUNK + 10, 1);
    let id = env.create(&a, &data).await.unwrap();
    env.chunk(&a, &id, 0, &data[..CHUNK]).await.unwrap();
    let c = CHUNK as u64;
    let before = env.objects().await;
    assert_eq!(before.len(), 1);

    // Wrong offset: OFFSET_MISMATCH with the committed offset as detail.
    let e = env
        .chunk(&a, &id, 2 * c, &data[2 * CHUNK..])
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::FailedPrecondition, "OFFSET_MISMATCH")
    );
    assert_eq!(
        detail::<OffsetMismatch>(&e, "OffsetMismatch").committed_offset,
        c
    );
    // A chunk that is not chunk_size long and does not end at total_size.
    assert_eq!(
        code_reason(env.chunk(&a, &id, c, &data[CHUNK..CHUNK + 100]).await),
        (Code::InvalidArgument, "INVALID_ARGUMENT".into())
    );
    // Larger than chunk_size.
    assert_eq!(
        code_reason(env.chunk(&a, &id, c, &blob(CHUNK + 1, 0)).await),
        (Code::InvalidArgument, "PAYLOAD_TOO_LARGE".into())
    );
    // The final chunk running past total_size.
    env.chunk(&a, &id, c, &data[CHUNK..2 * CHUNK])
        .await
        .unwrap();
    assert_eq!(
        code_reason(env.chunk(&a, &id, 2 * c, &blob(11, 0)).await),
        (Code::InvalidArgument, "PAYLOAD_TOO_LARGE".into())
    );
    assert_eq!(
        code_reason(env.chunk(&a, &id, 2 * c, &[]).await),
        (Code::InvalidArgument, "INVALID_ARGUMENT".into())
    );
    // Another account's upload, an unknown one, a malformed id.
    assert_eq!(
        code_reason(env.chunk(&b, &id, 2 * c, &data[2 * CHUNK..]).await),
        (Code::PermissionDenied, "PERMISSION_DENIED".into())
    );
    assert_eq!(
        code_reason(env.committed(&b, &id).await),
        (Code::PermissionDenied, "PERMISSION_DENIED".into())
    );
    assert_eq!(
        code_reason(env.complete(&b, &id).await),
        (Code::PermissionDenied, "PERMISSION_DENIED".into())
    );
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        code_reason(env.chunk(&a, unknown, 0, &data[..CHUNK]).await),
        (Code::NotFound, "NOT_FOUND".into())
    );
    assert_eq!(
        code_reason(env.chunk(&a, "nope", 0, &data[..CHUNK]).await),
        (Code::InvalidArgument, "INVALID_ARGUMENT".into())
    );
    // Nothing of that was stored.
    assert_eq!(env.committed(&a, &id).await.unwrap(), 2 * c);
    assert_eq!(env.objects().await.len(), 2);
    env.chunks_from(&a, &id, &data, 2 * CHUNK).await;
    let m = env.complete(&a, &id).await.unwrap();
    assert_eq!(env.download(&b, &m.media_id, 0, 0).await.unwrap(), data);
}

#[tokio::test]
async fn bad_create_requests_are_refused() {
    let env = Env::start().await;
    let a = acct(1);
    assert_eq!(
        code_reason(env.create_with(&a, 10, vec![0; 31]).await),
        (Code::InvalidArgument, "INVALID_ARGUMENT".into())
    );
    assert_eq!(
        code_reason(env.create_with(&a, 0, vec![0; 32]).await),
        (Code::InvalidArgument, "INVALID_ARGUMENT".into())
    );
    assert_eq!(
        code_reason(env.create_with(&a, 64 * 1024 + 1, vec![0; 32]).await),
        (Code::InvalidArgument, "PAYLOAD_TOO_LARGE".into())
    );
    assert!(env.keys().await.is_empty());
}

#[tokio::test]
async fn a_checksum_mismatch_discards_the_upload_and_its_bytes() {
    let env = Env::start().await;
    let a = acct(1);
    let data = blob(CHUNK + 5, 2);
    let id = env
        .create_with(&a, data.len() as u64, vec![0; 32])
        .await
        .unwrap();
    env.chunks_from(&a, &id, &data, 0).await;
    assert_eq!(env.objects().await.len(), 2);
    assert_eq!(
        code_reason(env.complete(&a, &id).await),
        (Code::FailedPrecondition, "CHECKSUM_MISMATCH".into())
    );
    assert!(env.objects().await.is_empty());
    assert_eq!(
        code_reason(env.committed(&a, &id).await),
        (Code::NotFound, "NOT_FOUND".into())
    );
    assert_eq!(
        code_reason(env.complete(&a, &id).await),
        (Code::NotFound, "NOT_FOUND".into())
    );
    // The quota came back: the whole 100 KiB is available again.
    assert_eq!(env.keys().await, vec![format!("media/v1/q/{a}")]);
    env.create_with(&a, 64 * 1024, vec![0; 32]).await.unwrap();
    env.create_with(&a, 36 * 1024, vec![0; 32]).await.unwrap();
}

#[tokio::test]
async fn the_quota_counts_open_and_stored_bytes_and_comes_back_on_delete() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    let data = blob(60 * 1024, 4);
    let media_id = env.upload(&a, &data).await;
    let open = env.create_with(&a, 30 * 1024, vec![0; 32]).await.unwrap();
    // 60 + 30 + 11 KiB > 100 KiB.
    assert_eq!(
        code_reason(env.create_with(&a, 11 * 1024, vec![0; 32]).await),
        (Code::ResourceExhausted, "QUOTA_EXCEEDED".into())
    );
    // Per account.
    env.create_with(&b, 11 * 1024, vec![0; 32]).await.unwrap();
    env.media()
        .delete_media(authed(
            guardyn_proto::guardyn::media::v1::DeleteMediaRequest { media_id },
            &env.token(&a),
        ))
        .await
        .unwrap();
    env.create_with(&a, 60 * 1024, vec![0; 32]).await.unwrap();
    assert_eq!(env.committed(&a, &open).await.unwrap(), 0);
}

#[tokio::test]
async fn create_upload_is_rate_limited_per_account() {
    let env =
        Env::start_with(|c| c.media.upload_rate = guardyn_common::ratelimit::RateLimit::new(2, 1))
            .await;
    let (a, b) = (acct(1), acct(2));
    for _ in 0..2 {
        env.create_with(&a, 10, vec![0; 32]).await.unwrap();
    }
    assert_eq!(
        code_reason(env.create_with(&a, 10, vec![0; 32]).await),
        (Code::ResourceExhausted, "RATE_LIMITED".into())
    );
    env.create_with(&b, 10, vec![0; 32]).await.unwrap();
}
