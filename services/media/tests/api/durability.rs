//! Committed chunks survive SIGKILL of the server process: the upload resumes from the
//! committed offset on the restarted server.
//!
//! The server process is this test binary itself, re-run with only [`child_server`] selected
//! (ignored in normal runs): it serves media on the given data directory and prints its
//! address and a token (each start has its own token signer).

use guardyn_proto::guardyn::media::v1::media_service_client::MediaServiceClient;
use guardyn_proto::guardyn::media::v1::{
    CompleteUploadRequest, CreateUploadRequest, DownloadRequest, GetUploadRequest,
    UploadChunkRequest,
};
use tokio::process::Child;

use crate::common::*;

const CHILD_DIR: &str = "GUARDYN_MEDIA_TEST_CHILD_DIR";

#[tokio::test]
#[ignore = "server process for committed_chunks_survive_sigkill, which runs it"]
#[allow(clippy::print_stdout)] // The parent test reads the address and token from stdout.
async fn child_server() {
    let dir = std::path::PathBuf::from(std::env::var(CHILD_DIR).unwrap());
    let env = Env::start_with(move |c| c.storage.data_dir = dir).await;
    println!("CHILD {} {}", env.server.addr, env.token(&acct(1)));
    std::future::pending::<()>().await;
}

/// Start the child; returns it with the words it printed (address, tokens).
async fn spawn(dir: &std::path::Path) -> (Child, String, String) {
    let (child, w) = guardyn_testkit::child::spawn("durability::child_server", CHILD_DIR, dir)
        .await
        .unwrap();
    (child, w[0].clone(), w[1].clone())
}

async fn client(addr: &str) -> MediaServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    MediaServiceClient::new(channel)
}

#[tokio::test]
async fn committed_chunks_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(3 * CHUNK + 1, 11);
    let (mut child, addr, token) = spawn(dir.path()).await;
    let mut c = client(&addr).await;
    let id = c
        .create_upload(authed(
            CreateUploadRequest {
                total_size: data.len() as u64,
                sha256: sha256(&data),
                content_type: String::new(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .upload_id;
    for i in 0..2 {
        c.upload_chunk(authed(
            UploadChunkRequest {
                upload_id: id.clone(),
                offset: (i * CHUNK) as u64,
                data: data[i * CHUNK..(i + 1) * CHUNK].to_vec(),
            },
            &token,
        ))
        .await
        .unwrap();
    }
    child.kill().await.unwrap(); // SIGKILL: no shutdown, no flush.

    let (_child, addr, token) = spawn(dir.path()).await;
    let mut c = client(&addr).await;
    let resume = c
        .get_upload(authed(
            GetUploadRequest {
                upload_id: id.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .committed_offset;
    assert_eq!(resume, 2 * CHUNK as u64);
    let mut off = resume as usize;
    while off < data.len() {
        let end = (off + CHUNK).min(data.len());
        c.upload_chunk(authed(
            UploadChunkRequest {
                upload_id: id.clone(),
                offset: off as u64,
                data: data[off..end].to_vec(),
            },
            &token,
        ))
        .await
        .unwrap();
        off = end;
    }
    let media = c
        .complete_upload(authed(CompleteUploadRequest { upload_id: id }, &token))
        .await
        .unwrap()
        .into_inner()
        .media
        .unwrap();
    let mut s = c
        .download(authed(
            DownloadRequest {
                media_id: media.media_id,
                offset: 0,
                length: 0,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(p) = s.message().await.unwrap() {
        got.extend_from_slice(&p.data);
    }
    assert_eq!(got, data);
}
