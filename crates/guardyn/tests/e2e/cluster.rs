//! The cluster, for real: every service in its own `guardyn` process (auth ×1, messaging ×2,
//! presence ×2, media ×1, notification ×1) on one PostgreSQL database and one NATS server with
//! JetStream, mutual TLS between services. SDK clients reach it through gateways that route
//! to "their" messaging and presence instance and fail over to the other one when it is
//! unreachable. Faults (SIGKILL of a messaging instance, a NATS restart) under load lose no
//! acknowledged message.

#[path = "cluster/load.rs"]
mod load;
#[path = "cluster/procs.rs"]
mod procs;

use std::time::Duration;

use guardyn_proto::guardyn::presence::v1 as presence;
use guardyn_proto::guardyn::presence::v1::presence_service_client::PresenceServiceClient;
use guardyn_sdk::{Client, Event, Inbox};
use guardyn_testkit::rpc::authed;
use tonic::transport::Channel;

use crate::gateway::{Upstreams, gateway};
use crate::mesh::{access_token, next_body, register};
use procs::Cluster;

const WAIT: Duration = Duration::from_secs(30);

impl Cluster {
    /// A gateway for clients of messaging and presence instance `i` (0 or 1), failing over to
    /// the other instance.
    pub async fn gateway(&self, i: usize) -> Channel {
        let [m, p] = [&self.messaging, &self.presence];
        gateway(Upstreams {
            auth: vec![self.auth.channel()],
            messaging: vec![m[i].channel(), m[1 - i].channel()],
            presence: vec![p[i].channel(), p[1 - i].channel()],
            media: vec![self.media.channel()],
            notification: vec![self.notification.channel()],
            admin: Vec::new(),
        })
        .await
    }
}

async fn next_group_body(inbox: &mut Inbox, group: &[u8]) -> Vec<u8> {
    loop {
        match inbox.next_timeout(WAIT).await {
            Some(Event::GroupMessage { group_id, message }) if group_id == group => {
                return message.body;
            }
            Some(_) => {}
            None => panic!("no group message within {WAIT:?}"),
        }
    }
}

async fn joined(client: &Client, group: &[u8]) {
    let events = client.sync().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::GroupJoined { group_id } if group_id == group)),
        "{events:?}"
    );
}

/// The next presence of `account` on a Subscribe stream whose state is `state`.
async fn presence_becomes(
    stream: &mut tonic::Streaming<presence::SubscribeResponse>,
    account: &str,
    state: presence::PresenceState,
) -> presence::Presence {
    tokio::time::timeout(WAIT, async {
        loop {
            let event = stream.message().await.unwrap().expect("stream ended").event;
            if let Some(presence::subscribe_response::Event::Presence(p)) = event
                && p.account_id == account
                && p.state == state as i32
            {
                return p;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{account} never became {state:?} within {WAIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_chat_crosses_instances() {
    let Some(cluster) = Cluster::start().await else {
        return;
    };
    let gw = [cluster.gateway(0).await, cluster.gateway(1).await];
    let alice = register(&gw[0], "clalice").await;
    let bob = register(&gw[1], "clbob").await;
    let carol = register(&gw[1], "clcarol").await;

    // 1:1 both ways between clients of messaging-1 and messaging-2, each woken live on its
    // own instance by the other's send (mail events over NATS).
    let mut alice_in = alice.listen().await.unwrap();
    let mut bob_in = bob.listen().await.unwrap();
    alice.send(bob.account_id(), b"from m1").await.unwrap();
    assert_eq!(next_body(&mut bob_in).await, b"from m1");
    bob.send(alice.account_id(), b"from m2").await.unwrap();
    assert_eq!(next_body(&mut alice_in).await, b"from m2");
    drop((alice_in, bob_in));

    // An MLS group of three devices on both instances: created and extended through
    // messaging-1, messages from either side reach everyone live.
    let group = alice.create_group().await.unwrap();
    alice
        .add_to_group(&group, &[bob.account_id(), carol.account_id()])
        .await
        .unwrap();
    joined(&bob, &group).await;
    joined(&carol, &group).await;
    let mut alice_in = alice.listen().await.unwrap();
    let mut bob_in = bob.listen().await.unwrap();
    let mut carol_in = carol.listen().await.unwrap();
    alice.send_group(&group, b"hello group").await.unwrap();
    assert_eq!(next_group_body(&mut bob_in, &group).await, b"hello group");
    assert_eq!(next_group_body(&mut carol_in, &group).await, b"hello group");
    carol.send_group(&group, b"carol here").await.unwrap();
    assert_eq!(next_group_body(&mut alice_in, &group).await, b"carol here");
    assert_eq!(next_group_body(&mut bob_in, &group).await, b"carol here");
    drop((alice_in, bob_in, carol_in));

    // Presence: Bob watches Alice on presence-2; Alice comes online and changes her status
    // on presence-1.
    let alice_token = access_token(&gw[0], "clalice").await;
    let bob_token = access_token(&gw[1], "clbob").await;
    let mut watch = PresenceServiceClient::new(gw[1].clone())
        .subscribe(authed(
            presence::SubscribeRequest {
                account_ids: vec![alice.account_id().to_owned()],
            },
            &bob_token,
        ))
        .await
        .unwrap()
        .into_inner();
    presence_becomes(
        &mut watch,
        alice.account_id(),
        presence::PresenceState::Offline,
    )
    .await;
    let mut alice_presence = PresenceServiceClient::new(gw[0].clone());
    alice_presence
        .heartbeat(authed(presence::HeartbeatRequest {}, &alice_token))
        .await
        .unwrap();
    presence_becomes(
        &mut watch,
        alice.account_id(),
        presence::PresenceState::Online,
    )
    .await;
    alice_presence
        .set_status(authed(
            presence::SetStatusRequest {
                status: presence::PresenceStatus::DoNotDisturb as i32,
                custom_text: "in a meeting".into(),
            },
            &alice_token,
        ))
        .await
        .unwrap();
    let seen = presence_becomes(
        &mut watch,
        alice.account_id(),
        presence::PresenceState::DoNotDisturb,
    )
    .await;
    assert_eq!(seen.custom_text, "in a meeting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_sigkill_of_a_messaging_instance_loses_no_acknowledged_message() {
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    let kill: load::Fault =
        Box::new(|cluster, _| Box::pin(async move { cluster.messaging[0].kill().await }));
    let counts = load::run(&mut cluster, "clk", kill).await;
    eprintln!("SIGKILL of messaging-1 under load: {counts}");
    counts.assert_nothing_lost();
    let exited = cluster.exited();
    assert_eq!(
        exited.len(),
        1,
        "only the killed instance is gone: {exited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_nats_restart_mid_load_loses_nothing() {
    let Some(mut cluster) = Cluster::start().await else {
        return;
    };
    // The outage spans the end of the load: the last acknowledged messages are stored while
    // no mail event can reach the other instance, and nothing is sent after NATS is back to
    // wake the receivers' streams.
    let outage: load::Fault = Box::new(|cluster, progress| {
        Box::pin(async move {
            tokio::task::block_in_place(|| cluster.nats.stop());
            progress.all_sent().await;
            tokio::task::block_in_place(|| cluster.nats.start_again()).unwrap();
        })
    });
    let counts = load::run(&mut cluster, "cln", outage).await;
    eprintln!("NATS restart under load: {counts}");
    counts.assert_nothing_lost();
    let exited = cluster.exited();
    assert!(
        exited.is_empty(),
        "no process may die with NATS: {exited:?}"
    );
}
