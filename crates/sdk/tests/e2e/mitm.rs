//! A key directory that lies: an HTTP/2 proxy in front of the real server that forwards every
//! call unchanged except the responses of one RPC (GetPreKeyBundle unless told otherwise),
//! which it rewrites. This is what a
//! compromised or malicious server can do to the bundles a client fetches.

use std::sync::Arc;

use http_body_util::BodyExt as _;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::transport::Channel;
use tower::ServiceExt as _;

use guardyn_proto::guardyn::auth::v1::GetPreKeyBundleResponse;

const BUNDLE_PATH: &str = "/guardyn.auth.v1.KeyDirectoryService/GetPreKeyBundle";

type Rewrite<M> = Arc<dyn Fn(&mut M) + Send + Sync>;

/// The running proxy; dropping it stops accepting connections.
pub struct Mitm {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Mitm {
    /// A channel to the proxy.
    pub fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .unwrap()
            .connect_lazy()
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a proxy to `upstream` that applies `rewrite` to every GetPreKeyBundle response.
pub async fn start(
    upstream: Channel,
    rewrite: impl Fn(&mut GetPreKeyBundleResponse) + Send + Sync + 'static,
) -> Mitm {
    start_on(upstream, BUNDLE_PATH, rewrite).await
}

/// Starts a proxy to `upstream` that applies `rewrite` to every response of `path`.
pub async fn start_on<M: prost::Message + Default + 'static>(
    upstream: Channel,
    path: &'static str,
    rewrite: impl Fn(&mut M) + Send + Sync + 'static,
) -> Mitm {
    let rewrite: Rewrite<M> = Arc::new(rewrite);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let rewrite = rewrite.clone();
            let service = hyper::service::service_fn(move |req| {
                forward(upstream.clone(), path, rewrite.clone(), req)
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Mitm { url, task }
}

async fn forward<M: prost::Message + Default>(
    upstream: Channel,
    path: &str,
    rewrite: Rewrite<M>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<tonic::body::Body>, tonic::transport::Error> {
    let tamper = req.uri().path() == path;
    let resp = upstream.oneshot(req.map(tonic::body::Body::new)).await?;
    if !tamper {
        return Ok(resp);
    }
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    let bytes = collected.to_bytes();
    let mut frames: Vec<Result<Frame<bytes::Bytes>, tonic::Status>> = Vec::new();
    if bytes.len() >= 5 {
        // One uncompressed gRPC message: flag (0) | length (u32) | message.
        assert_eq!(bytes[0], 0, "compressed responses are not expected");
        let mut message = M::decode(&bytes[5..]).unwrap();
        rewrite(&mut message);
        let encoded = message.encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
        framed.extend_from_slice(&encoded);
        frames.push(Ok(Frame::data(framed.into())));
    }
    if let Some(t) = trailers {
        frames.push(Ok(Frame::trailers(t)));
    }
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    Ok(http::Response::from_parts(
        parts,
        tonic::body::Body::new(body),
    ))
}
