//! The server side of group fan-out: the same group and sender as the SDK rounds, but each
//! member is a bare Listen stream that notes when the server handed it the message (at the
//! gRPC level, without decrypting) and acknowledges it. What an SDK member adds on top (MLS
//! decryption and saving its state, hundreds of them on the bench's own two cores) is the
//! client's cost, not the delivery's: these rounds time only the server and the wire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use guardyn_proto::guardyn::messaging::v1 as msg;
use guardyn_proto::guardyn::messaging::v1::messaging_service_client::MessagingServiceClient;
use guardyn_sdk::{Channel, Client};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::bench_presence::{authed, sign_in};
use crate::bench_stats::{Stats, stamp};

/// Sign-ins and stream openings in flight at once.
const CONCURRENCY: usize = 32;
/// A round fails when no member reports progress for this long.
const ROUND_IDLE: Duration = Duration::from_secs(30);
/// Opening fails when no stream catches up for this long. Every member reads the commits
/// after its own Add, each carrying its chunk's KeyPackages (about 175 KB for 500): for
/// 10,000 devices added 500 at a time that is some 17 GB, and the streams all finish late.
const OPEN_IDLE: Duration = Duration::from_secs(900);

/// What the wire rounds need from the group phase.
pub(crate) struct WireArgs<'a> {
    pub channels: &'a [Channel],
    pub owner: &'a Client,
    pub group: &'a [u8],
    /// (username, device id) of the members read at the wire.
    pub members: &'a [(String, u32)],
    pub rounds: usize,
    pub body: usize,
    pub base: Instant,
}

/// The wire rounds' figures.
pub(crate) struct WireReport {
    pub members: usize,
    /// Per round: send until the last member's stream had it.
    pub fanout: Stats,
    /// Per member delivery.
    pub delivery: Stats,
}

/// Reads one member's stream: its backlog (what the SDK left unacknowledged) is acknowledged
/// and not counted; after `QueueEmpty`, every group application message is reported and
/// acknowledged. Acknowledgements go out from a task of their own, as a client that keeps
/// reading while they are in flight: one the server shed (retried after its hint of 1 s)
/// must not hold back the next message, which would time the member's own wait, not the
/// delivery.
async fn member(
    channel: Channel,
    token: String,
    ready: mpsc::UnboundedSender<()>,
    got: mpsc::UnboundedSender<Instant>,
) -> anyhow::Result<()> {
    let mut client = MessagingServiceClient::new(channel);
    let mut stream = client
        .listen(authed(msg::ListenRequest {}, &token)?)
        .await?
        .into_inner();
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    let mut acks = tokio::spawn(acknowledge(client, token, ack_rx));
    let mut live = false;
    loop {
        let resp = tokio::select! {
            resp = stream.message() => resp?,
            // Acknowledging failed for good (or panicked): stop, with its error.
            done = &mut acks => return done?,
        };
        let Some(resp) = resp else { break };
        match resp.item {
            Some(msg::listen_response::Item::QueueEmpty(_)) if !live => {
                live = true;
                let _ = ready.send(());
            }
            Some(msg::listen_response::Item::Envelope(e)) => {
                let at = Instant::now();
                if live && e.group_log && e.mls_kind == msg::MlsMessageKind::Application as i32 {
                    let _ = got.send(at);
                }
                let group = e.group_log.then(|| e.group_id.unwrap_or_default());
                let _ = ack_tx.send((group, e.server_id));
            }
            _ => {}
        }
    }
    drop(ack_tx);
    acks.await?
}

/// Acknowledgements the member read meanwhile go out together, as the SDK batches them.
const ACK_BATCH: usize = 64;

/// Sends the member's acknowledgements, each request carrying what arrived while the last
/// was in flight (up to [`ACK_BATCH`]).
async fn acknowledge(
    mut client: MessagingServiceClient<Channel>,
    token: String,
    mut rx: mpsc::UnboundedReceiver<(Option<Vec<u8>>, u64)>,
) -> anyhow::Result<()> {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < ACK_BATCH
            && let Ok(more) = rx.try_recv()
        {
            batch.push(more);
        }
        let mut ack = msg::AckRequest::default();
        for (group, id) in batch {
            match group {
                None => ack.server_ids.push(id),
                Some(group_id) => {
                    match ack.group_acks.iter_mut().find(|g| g.group_id == group_id) {
                        Some(g) => g.server_ids.push(id),
                        None => ack.group_acks.push(msg::GroupAck {
                            group_id,
                            server_ids: vec![id],
                        }),
                    }
                }
            }
        }
        ack_retrying(&mut client, ack, &token).await?;
    }
    Ok(())
}

/// Acknowledge as a client does: a call the server shed (RESOURCE_EXHAUSTED while 10,000
/// members acknowledge at once) or could not serve is tried again after its hint of 1 s.
async fn ack_retrying(
    client: &mut MessagingServiceClient<Channel>,
    ack: msg::AckRequest,
    token: &str,
) -> anyhow::Result<()> {
    let mut attempts = 0;
    loop {
        match client.ack(authed(ack.clone(), token)?).await {
            Ok(_) => return Ok(()),
            Err(s)
                if attempts < ACK_ATTEMPTS
                    && matches!(
                        s.code(),
                        tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                    ) =>
            {
                attempts += 1;
                RETRIED.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(s) => return Err(s.into()),
        }
    }
}

/// Acknowledgements the server shed and the members tried again (reported on stderr).
static RETRIED: AtomicU64 = AtomicU64::new(0);

/// Tries of one acknowledgement before the member gives up.
const ACK_ATTEMPTS: u32 = 30;

/// The members' streams, caught up with their backlog: ready for the rounds.
pub(crate) struct WireSession {
    members: usize,
    streams: JoinSet<anyhow::Result<()>>,
    got: mpsc::UnboundedReceiver<Instant>,
}

/// Signs the members in and opens their streams; returns once every stream has read its
/// backlog (Welcome and commits, acknowledged, not counted).
pub(crate) async fn open(a: &WireArgs<'_>) -> anyhow::Result<WireSession> {
    let n = a.members.len();
    if n == 0 {
        anyhow::bail!("no members to read at the wire");
    }
    let channel = |i: usize| a.channels[i % a.channels.len()].clone();
    let mut tokens = vec![String::new(); n];
    let mut pending = JoinSet::new();
    for (i, (name, device)) in a.members.iter().enumerate() {
        if pending.len() >= CONCURRENCY
            && let Some(done) = pending.join_next().await
        {
            let (j, token) = done?;
            tokens[j] = token?;
        }
        let (ch, name, device) = (channel(i), name.clone(), *device);
        pending.spawn(async move { (i, sign_in(ch, name, device).await) });
    }
    while let Some(done) = pending.join_next().await {
        let (j, token) = done?;
        tokens[j] = token?;
    }
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let (got_tx, got) = mpsc::unbounded_channel();
    let mut streams = JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        streams.spawn(member(channel(i), token, ready_tx.clone(), got_tx.clone()));
    }
    drop((ready_tx, got_tx));
    for opened in 0..n {
        tokio::time::timeout(OPEN_IDLE, ready.recv())
            .await
            .ok()
            .flatten()
            .with_context(|| format!("only {opened} of {n} member streams caught up"))?;
        if (opened + 1) % 1000 == 0 {
            eprintln!("{} of {n} member streams caught up", opened + 1);
        }
    }
    Ok(WireSession {
        members: n,
        streams,
        got,
    })
}

impl WireSession {
    /// Times `rounds` messages from the owner, each until every member's stream had it.
    pub(crate) async fn rounds(mut self, a: &WireArgs<'_>) -> anyhow::Result<WireReport> {
        let n = self.members;
        let mut fanout = Vec::with_capacity(a.rounds);
        let mut delivery = Vec::with_capacity(a.rounds * n);
        let start = Instant::now();
        for round in 0..a.rounds as u64 {
            let sent = Instant::now();
            a.owner
                .send_group(a.group, &stamp(a.base, round, a.body))
                .await?;
            let (mut first, mut last) = (None, sent);
            for have in 0..n {
                let at = tokio::time::timeout(ROUND_IDLE, self.got.recv())
                    .await
                    .ok()
                    .flatten()
                    .with_context(|| format!("wire round {round}: only {have} of {n} members"))?;
                delivery.push(at.saturating_duration_since(sent));
                last = last.max(at);
                first = first.min(Some(at)).or(Some(at));
            }
            let took = last.saturating_duration_since(sent);
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            eprintln!(
                "wire round {round}: {:.1} ms, the first member at {:.1} ms ({} acknowledgements \
                 retried so far)",
                ms(took),
                ms(first.map_or(took, |f| f.saturating_duration_since(sent))),
                RETRIED.load(Ordering::Relaxed)
            );
            fanout.push(took);
        }
        let secs = start.elapsed().as_secs_f64();
        self.streams.abort_all();
        Ok(WireReport {
            members: n,
            fanout: Stats::of(fanout, secs),
            delivery: Stats::of(delivery, secs),
        })
    }
}
