//! The presence service through its gRPC API, on a real server with a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "api/auth_events.rs"]
mod auth_events;
#[path = "api/cluster.rs"]
mod cluster;
#[path = "api/presence.rs"]
mod presence;
#[path = "api/privacy.rs"]
mod privacy;
#[path = "api/retention.rs"]
mod retention;
#[path = "api/stream_auth.rs"]
mod stream_auth;
#[path = "api/typing.rs"]
mod typing;

use std::sync::Arc;
use std::time::Duration;

use guardyn_common::clock::ManualClock;
use guardyn_proto::guardyn::presence::v1::presence_service_client::PresenceServiceClient;
use guardyn_proto::guardyn::presence::v1::subscribe_response::Event;
use guardyn_proto::guardyn::presence::v1::{
    GetPresenceRequest, HeartbeatRequest, Presence, PresenceState, SubscribeRequest,
    SubscribeResponse,
};
use guardyn_testkit::{Options, TestServer};
use tonic::Streaming;
use tonic::transport::Channel;

pub type Client = PresenceServiceClient<Channel>;

/// A fresh account id.
pub fn account() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A server hosting presence, with a manual clock the test moves.
pub async fn start(
    configure: impl FnOnce(&mut guardyn::config::Config) + Send + 'static,
) -> (TestServer, ManualClock) {
    let clock = ManualClock::new();
    let server = start_on(clock.clone(), configure).await;
    (server, clock)
}

pub async fn start_on(
    clock: ManualClock,
    configure: impl FnOnce(&mut guardyn::config::Config) + Send + 'static,
) -> TestServer {
    TestServer::start_with(Options {
        services: vec!["presence".into()],
        clock: Some(Arc::new(clock)),
        ..Options::configure(configure)
    })
    .await
    .unwrap()
}

/// `msg` as a request of `account`'s device `device`.
pub fn req<T>(server: &TestServer, account: &str, device: u32, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    let token = server.token(account, device, &format!("session-{device}"));
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub fn client(server: &TestServer) -> Client {
    PresenceServiceClient::new(server.channel())
}

pub async fn heartbeat(server: &TestServer, account: &str, device: u32) {
    client(server)
        .heartbeat(req(server, account, device, HeartbeatRequest {}))
        .await
        .unwrap();
}

pub async fn get(server: &TestServer, viewer: &str, ids: &[&str]) -> Vec<Presence> {
    client(server)
        .get_presence(req(
            server,
            viewer,
            1,
            GetPresenceRequest {
                account_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .presences
}

pub async fn state_of(server: &TestServer, viewer: &str, id: &str) -> PresenceState {
    get(server, viewer, &[id]).await[0].state()
}

/// The next stream event. The timeout is a safety net against a hang, not an assertion on
/// timing: every awaited event is caused by a call the test already made.
pub async fn next(stream: &mut Streaming<SubscribeResponse>) -> Event {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("the stream delivers the expected event")
            .unwrap()
            .expect("the stream is open");
        match msg.event.unwrap() {
            Event::Keepalive(_) => continue,
            e => return e,
        }
    }
}

pub async fn next_presence(stream: &mut Streaming<SubscribeResponse>) -> Presence {
    match next(stream).await {
        Event::Presence(p) => p,
        other => panic!("expected a presence update, got {other:?}"),
    }
}

/// Subscribe and read the initial snapshot up to the Ready marker.
pub async fn subscribe(
    server: &TestServer,
    viewer: &str,
    device: u32,
    ids: &[&str],
) -> (Streaming<SubscribeResponse>, Vec<Presence>) {
    let mut stream = client(server)
        .subscribe(req(
            server,
            viewer,
            device,
            SubscribeRequest {
                account_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut initial = Vec::new();
    loop {
        match next(&mut stream).await {
            Event::Presence(p) => initial.push(p),
            Event::Ready(_) => return (stream, initial),
            other => panic!("unexpected {other:?} before Ready"),
        }
    }
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
