//! Shared helpers: server start-up with small chunks, authenticated requests, whole uploads
//! and downloads.

use std::sync::Arc;
use std::time::Duration;

use guardyn_common::clock::ManualClock;
use guardyn_proto::guardyn::media::v1::{
    CompleteUploadRequest, CreateUploadRequest, DownloadRequest, GetUploadRequest, MediaInfo,
    UploadChunkRequest, media_service_client::MediaServiceClient,
};
pub use guardyn_testkit::rpc::{authed, detail};
use guardyn_testkit::{Options, TestServer};
use sha2::{Digest as _, Sha256};
use tonic::Status;
use tonic::transport::Channel;

/// Chunk size of the test configuration.
pub const CHUNK: usize = 4096;

pub struct Env {
    pub server: TestServer,
    pub clock: ManualClock,
}

pub fn acct(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// Test configuration: 4 KiB chunks, 64 KiB blobs, 100 KiB quota.
pub fn small(c: &mut guardyn::config::Config) {
    c.media.chunk_size = CHUNK as u32;
    c.media.max_blob_bytes = 64 * 1024;
    c.media.quota_bytes = 100 * 1024;
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(
        configure: impl FnOnce(&mut guardyn::config::Config) + Send + 'static,
    ) -> Env {
        let clock = ManualClock::new();
        let server = TestServer::start_with(Options {
            services: vec!["media".into()],
            configure: Some(Box::new(move |c| {
                small(c);
                configure(c);
            })),
            clock: Some(Arc::new(clock.clone())),
            ..Options::default()
        })
        .await
        .unwrap();
        Env { server, clock }
    }

    pub fn token(&self, account: &str) -> String {
        self.server.token(account, 1, &format!("session-{account}"))
    }

    pub fn media(&self) -> MediaServiceClient<Channel> {
        MediaServiceClient::new(self.server.channel())
    }

    pub async fn create(&self, account: &str, data: &[u8]) -> Result<String, Status> {
        self.create_with(account, data.len() as u64, sha256(data))
            .await
    }

    pub async fn create_with(
        &self,
        account: &str,
        total_size: u64,
        sha256: Vec<u8>,
    ) -> Result<String, Status> {
        let r = self
            .media()
            .create_upload(authed(
                CreateUploadRequest {
                    total_size,
                    sha256,
                    content_type: "image/png".into(),
                },
                &self.token(account),
            ))
            .await?
            .into_inner();
        assert_eq!(r.chunk_size as usize, CHUNK);
        Ok(r.upload_id)
    }

    pub async fn chunk(
        &self,
        account: &str,
        upload_id: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<u64, Status> {
        Ok(self
            .media()
            .upload_chunk(authed(
                UploadChunkRequest {
                    upload_id: upload_id.into(),
                    offset,
                    data: data.to_vec(),
                },
                &self.token(account),
            ))
            .await?
            .into_inner()
            .committed_offset)
    }

    /// Upload chunks of `data` from `from` to the end.
    pub async fn chunks_from(&self, account: &str, upload_id: &str, data: &[u8], from: usize) {
        let mut off = from;
        while off < data.len() {
            let end = (off + CHUNK).min(data.len());
            let committed = self
                .chunk(account, upload_id, off as u64, &data[off..end])
                .await
                .unwrap();
            assert_eq!(committed, end as u64);
            off = end;
        }
    }

    pub async fn committed(&self, account: &str, upload_id: &str) -> Result<u64, Status> {
        Ok(self
            .media()
            .get_upload(authed(
                GetUploadRequest {
                    upload_id: upload_id.into(),
                },
                &self.token(account),
            ))
            .await?
            .into_inner()
            .committed_offset)
    }

    pub async fn complete(&self, account: &str, upload_id: &str) -> Result<MediaInfo, Status> {
        Ok(self
            .media()
            .complete_upload(authed(
                CompleteUploadRequest {
                    upload_id: upload_id.into(),
                },
                &self.token(account),
            ))
            .await?
            .into_inner()
            .media
            .unwrap())
    }

    /// A whole upload; returns the media id.
    pub async fn upload(&self, account: &str, data: &[u8]) -> String {
        let id = self.create(account, data).await.unwrap();
        self.chunks_from(account, &id, data, 0).await;
        self.complete(account, &id).await.unwrap().media_id
    }

    /// Download a range as `account`; checks the pieces are in order, contiguous and at most
    /// one chunk each.
    pub async fn download(
        &self,
        account: &str,
        media_id: &str,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, Status> {
        let mut s = self
            .media()
            .download(authed(
                DownloadRequest {
                    media_id: media_id.into(),
                    offset,
                    length,
                },
                &self.token(account),
            ))
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(piece) = tokio::time::timeout(Duration::from_secs(10), s.message())
            .await
            .expect("a piece within 10 s")?
        {
            assert_eq!(piece.offset, offset + out.len() as u64);
            assert!(!piece.data.is_empty() && piece.data.len() <= CHUNK);
            out.extend_from_slice(&piece.data);
        }
        Ok(out)
    }

    /// The stored chunk objects of every upload.
    pub async fn objects(&self) -> Vec<String> {
        self.server
            .stores()
            .blob
            .list("media/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    /// KV keys of the media service.
    pub async fn keys(&self) -> Vec<String> {
        self.server
            .kv()
            .scan(
                guardyn_storage::KeyRange::prefix(b"media/v1/"),
                guardyn_storage::Direction::Forward,
                10_000,
            )
            .await
            .unwrap()
            .into_iter()
            .map(|p| String::from_utf8_lossy(&p.key).into_owned())
            .collect()
    }

    /// Wait until `check` holds (the sweeper and event handlers run in the background).
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        for _ in 0..200 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for: {what}");
    }
}

/// `n` bytes of a recognisable pattern.
pub fn blob(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

pub fn reason(status: &Status) -> String {
    guardyn_common::error::reason_of(status).unwrap_or_default()
}

/// The status's code and reason, for compact assertions.
pub fn code_reason(r: Result<impl std::fmt::Debug, Status>) -> (tonic::Code, String) {
    let e = r.expect_err("expected an error");
    (e.code(), reason(&e))
}
