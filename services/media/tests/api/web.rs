//! The upload path over gRPC-web (HTTP/1.1, as a browser sends it): every upload RPC is unary.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use guardyn_proto::guardyn::media::v1::UploadChunkRequest;
use prost::Message as _;

use crate::common::*;

/// One raw HTTP/1.1 exchange.
fn http1(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[tokio::test]
async fn upload_chunk_works_over_grpc_web() {
    let env = Env::start().await;
    let a = acct(1);
    let data = blob(CHUNK + 7, 8);
    let id = env.create(&a, &data).await.unwrap();

    let send = |offset: usize, end: usize| {
        let msg = UploadChunkRequest {
            upload_id: id.clone(),
            offset: offset as u64,
            data: data[offset..end].to_vec(),
        }
        .encode_to_vec();
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        frame.extend_from_slice(&msg);
        let mut request = format!(
            "POST /guardyn.media.v1.MediaService/UploadChunk HTTP/1.1\r\nHost: x\r\n\
             Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\n\
             Authorization: Bearer {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            env.token(&a),
            frame.len()
        )
        .into_bytes();
        request.extend_from_slice(&frame);
        let addr = env.server.addr;
        tokio::task::spawn_blocking(move || http1(addr, &request))
    };
    for (from, to) in [(0, CHUNK), (CHUNK, data.len())] {
        let response = send(from, to).await.unwrap();
        let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200"), "{text}");
        assert!(
            text.contains("content-type: application/grpc-web"),
            "{text}"
        );
        assert!(text.contains("grpc-status:0"), "{text}");
    }
    // A wrong offset fails with its reason in the trailers.
    let response = send(0, 10).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    // Trailers-only: the status travels in the HTTP headers.
    assert!(text.contains("grpc-status: 9"), "{text}");

    assert_eq!(env.committed(&a, &id).await.unwrap(), data.len() as u64);
    let media = env.complete(&a, &id).await.unwrap();
    assert_eq!(env.download(&a, &media.media_id, 0, 0).await.unwrap(), data);
}
