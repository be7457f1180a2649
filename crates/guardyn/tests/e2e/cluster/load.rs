//! Continuous numbered 1:1 traffic both ways between a client of messaging-1 ("a") and a
//! client of messaging-2 ("b"), each listening live, with a fault injected once both senders
//! have some acknowledged sends. Acknowledged = `send` returned `Ok`; every acknowledged number
//! must arrive (duplicates allowed, losses not).

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guardyn_sdk::{Client, Event, Inbox};

use super::procs::Cluster;
use crate::mesh::{next_body, register};

/// Acknowledged sends per direction before the test stops sending.
const TOTAL: usize = 60;
/// Acknowledged sends per direction before the fault.
const FAULT_AT: usize = 20;
/// Generous bounds for a loaded 2-core machine; never reached when things work.
const SENDING: Duration = Duration::from_secs(120);
const DELIVERY: Duration = Duration::from_secs(60);

/// One direction's tally.
#[derive(Default)]
struct Tally {
    acked: Vec<u32>,
    failed_sends: usize,
    last_error: String,
    received: Vec<u32>,
    stream_ended: Vec<String>,
}

pub struct Counts {
    directions: Vec<(&'static str, Tally)>,
}

impl Counts {
    pub fn assert_nothing_lost(&self) {
        for (name, t) in &self.directions {
            let received: BTreeSet<u32> = t.received.iter().copied().collect();
            let lost: Vec<u32> = t
                .acked
                .iter()
                .copied()
                .filter(|n| !received.contains(n))
                .collect();
            assert!(
                t.acked.len() >= TOTAL,
                "{name}: too few acknowledged: {self}"
            );
            assert!(
                lost.is_empty(),
                "{name}: acknowledged but lost {lost:?}: {self}"
            );
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, t) in &self.directions {
            let distinct: BTreeSet<u32> = t.received.iter().copied().collect();
            write!(
                f,
                "[{name}: {} acknowledged, {} received ({} distinct, {} duplicates), {} failed \
                 sends{}{}] ",
                t.acked.len(),
                t.received.len(),
                distinct.len(),
                t.received.len() - distinct.len(),
                t.failed_sends,
                if t.failed_sends > 0 {
                    format!(" (last: {})", t.last_error)
                } else {
                    String::new()
                },
                if t.stream_ended.is_empty() {
                    String::new()
                } else {
                    format!(", stream ended: {:?}", t.stream_ended)
                },
            )?;
        }
        Ok(())
    }
}

type Shared = Arc<Mutex<Tally>>;

fn receive(mut inbox: Inbox, tag: &'static str, tally: Shared) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(event) = inbox.next().await {
            let mut t = tally.lock().unwrap();
            match event {
                Event::Message(m) => {
                    let body = String::from_utf8_lossy(&m.body).into_owned();
                    if let Some(n) = body.strip_prefix(tag).and_then(|r| r.parse().ok()) {
                        t.received.push(n);
                    }
                }
                Event::StreamEnded { reason } => t.stream_ended.push(reason),
                _ => {}
            }
        }
    })
}

fn send(from: Client, to: String, tag: &'static str, tally: Shared) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let deadline = Instant::now() + SENDING;
        let mut n = 0u32;
        while tally.lock().unwrap().acked.len() < TOTAL && Instant::now() < deadline {
            let result = from.send(&to, format!("{tag}{n}").as_bytes()).await;
            let failed = result.is_err();
            {
                let mut t = tally.lock().unwrap();
                match result {
                    Ok(_) => t.acked.push(n),
                    Err(e) => {
                        t.failed_sends += 1;
                        t.last_error = e.to_string();
                    }
                }
            }
            if failed {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            n += 1;
        }
    })
}

async fn until(what: &str, bound: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !done() {
        assert!(Instant::now() < deadline, "{what} within {bound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The senders' progress, for a fault that spans part of the load.
#[derive(Clone)]
pub struct Progress([Shared; 2]);

impl Progress {
    /// Waits until both senders have their [`TOTAL`] acknowledged sends.
    pub async fn all_sent(&self) {
        until("all acknowledged", SENDING, || {
            self.0
                .iter()
                .all(|t| t.lock().unwrap().acked.len() >= TOTAL)
        })
        .await;
    }
}

pub type Fault = Box<
    dyn for<'c> FnOnce(&'c mut Cluster, Progress) -> Pin<Box<dyn Future<Output = ()> + Send + 'c>>,
>;

/// Runs the load and `fault` in its middle; returns the tallies once every acknowledged
/// message arrived or [`DELIVERY`] passed.
pub async fn run(cluster: &mut Cluster, prefix: &str, fault: Fault) -> Counts {
    let gw = [cluster.gateway(0).await, cluster.gateway(1).await];
    let a = register(&gw[0], &format!("{prefix}a")).await;
    let b = register(&gw[1], &format!("{prefix}b")).await;
    let mut a_in = a.listen().await.unwrap();
    let mut b_in = b.listen().await.unwrap();
    // Sessions both ways first, so the load is ordinary ratchet messages.
    a.send(b.account_id(), b"hi").await.unwrap();
    assert_eq!(next_body(&mut b_in).await, b"hi");
    b.send(a.account_id(), b"hi").await.unwrap();
    assert_eq!(next_body(&mut a_in).await, b"hi");

    let a_to_b: Shared = Arc::default();
    let b_to_a: Shared = Arc::default();
    let receivers = [
        receive(b_in, "a:", a_to_b.clone()),
        receive(a_in, "b:", b_to_a.clone()),
    ];
    let senders = [
        send(a.clone(), b.account_id().to_owned(), "a:", a_to_b.clone()),
        send(b.clone(), a.account_id().to_owned(), "b:", b_to_a.clone()),
    ];
    let acked = |t: &Shared| t.lock().unwrap().acked.len();
    until("both senders reach the fault point", SENDING, || {
        acked(&a_to_b) >= FAULT_AT && acked(&b_to_a) >= FAULT_AT
    })
    .await;
    fault(cluster, Progress([a_to_b.clone(), b_to_a.clone()])).await;
    let at_fault_end = acked(&a_to_b) + acked(&b_to_a);
    for s in senders {
        s.await.unwrap();
    }
    let all_arrived = |t: &Shared| {
        let t = t.lock().unwrap();
        let received: BTreeSet<u32> = t.received.iter().copied().collect();
        t.acked.iter().all(|n| received.contains(n))
    };
    let deadline = Instant::now() + DELIVERY;
    while !(all_arrived(&a_to_b) && all_arrived(&b_to_a)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("{at_fault_end} sends acknowledged when the fault was over");
    for r in receivers {
        r.abort();
    }
    let take = |t: Shared| std::mem::take(&mut *t.lock().unwrap());
    Counts {
        directions: vec![("a→b", take(a_to_b)), ("b→a", take(b_to_a))],
    }
}
