//! Chunked upload, resume, ranged download, and media ids as capabilities.

use guardyn_proto::guardyn::media::v1::{DeleteMediaRequest, GetMediaInfoRequest};
use tonic::Code;

use crate::common::*;

#[tokio::test]
async fn chunked_upload_and_ranged_downloads_round_trip() {
    let env = Env::start().await;
    let a = acct(1);
    let data = blob(3 * CHUNK + 100, 7);
    let media_id = env.upload(&a, &data).await;
    assert_eq!(media_id.len(), 32);
    assert_eq!(env.objects().await.len(), 4, "one object per chunk");

    let info = env
        .media()
        .get_media_info(authed(
            GetMediaInfoRequest {
                media_id: media_id.clone(),
            },
            &env.token(&a),
        ))
        .await
        .unwrap()
        .into_inner()
        .media
        .unwrap();
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.sha256, sha256(&data));
    assert_eq!(info.content_type, "image/png");
    assert!(info.expires_at.unwrap().seconds > info.created_at.unwrap().seconds);

    let n = data.len() as u64;
    for (offset, length) in [
        (0, 0),                       // everything
        (0, 10),                      // inside the first chunk
        (CHUNK as u64 - 6, 20),       // across a chunk boundary
        (CHUNK as u64, CHUNK as u64), // exactly one chunk
        (100, 2 * CHUNK as u64 + 5),  // spanning three chunks
        (n - 5, 1000),                // past the end: truncated
        (n - 1, 0),                   // the last byte
    ] {
        let got = env.download(&a, &media_id, offset, length).await.unwrap();
        let end = if length == 0 {
            n
        } else {
            (offset + length).min(n)
        };
        assert_eq!(
            got,
            data[offset as usize..end as usize],
            "range {offset}+{length}"
        );
    }
    let e = env.download(&a, &media_id, n, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::OutOfRange);
    assert_eq!(reason(&e), "INVALID_ARGUMENT");
}

#[tokio::test]
async fn an_interrupted_upload_resumes_from_the_committed_offset() {
    let env = Env::start().await;
    let a = acct(1);
    let data = blob(4 * CHUNK, 3);
    let id = env.create(&a, &data).await.unwrap();
    env.chunk(&a, &id, 0, &data[..CHUNK]).await.unwrap();
    env.chunk(&a, &id, CHUNK as u64, &data[CHUNK..2 * CHUNK])
        .await
        .unwrap();
    // The client lost its state: GetUpload tells where to resume.
    let resume = env.committed(&a, &id).await.unwrap();
    assert_eq!(resume, 2 * CHUNK as u64);
    // A resent, already committed chunk is a no-op success.
    assert_eq!(
        env.chunk(&a, &id, CHUNK as u64, &data[CHUNK..2 * CHUNK])
            .await
            .unwrap(),
        resume
    );
    let e = env.complete(&a, &id).await.unwrap_err();
    assert_eq!(
        (e.code(), reason(&e).as_str()),
        (Code::FailedPrecondition, "UPLOAD_INCOMPLETE")
    );
    env.chunks_from(&a, &id, &data, resume as usize).await;
    let media = env.complete(&a, &id).await.unwrap();
    // Completing again returns the same blob.
    let again = env.complete(&a, &id).await.unwrap();
    assert_eq!(again.media_id, media.media_id);
    assert_eq!(env.download(&a, &media.media_id, 0, 0).await.unwrap(), data);
}

#[tokio::test]
async fn any_account_may_download_by_id_but_only_the_uploader_deletes() {
    let env = Env::start().await;
    let (a, b) = (acct(1), acct(2));
    let data = blob(CHUNK + 1, 9);
    let media_id = env.upload(&a, &data).await;
    assert_eq!(env.download(&b, &media_id, 0, 0).await.unwrap(), data);

    let delete = |who: &str| {
        let mut client = env.media();
        let req = authed(
            DeleteMediaRequest {
                media_id: media_id.clone(),
            },
            &env.token(who),
        );
        async move { client.delete_media(req).await }
    };
    assert_eq!(
        code_reason(delete(&b).await),
        (Code::PermissionDenied, "PERMISSION_DENIED".into())
    );
    assert_eq!(env.download(&b, &media_id, 0, 0).await.unwrap(), data);
    delete(&a).await.unwrap();
    assert_eq!(
        code_reason(env.download(&b, &media_id, 0, 0).await),
        (Code::NotFound, "NOT_FOUND".into())
    );
    assert_eq!(
        code_reason(delete(&a).await),
        (Code::NotFound, "NOT_FOUND".into())
    );
    assert!(env.objects().await.is_empty());
    // Only the (zero) usage counter is left.
    assert_eq!(env.keys().await, vec![format!("media/v1/q/{a}")]);
    // Unauthenticated calls are refused before any handler.
    let e = env
        .media()
        .get_media_info(GetMediaInfoRequest { media_id })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
}
