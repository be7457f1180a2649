//! `guardyn bench`: a load generator that drives a running server with SDK clients.
//!
//! Phases (all bounded by `--messages` and `--max-secs`):
//! 1. 1:1: `pairs` senders each send `messages` end-to-end-encrypted messages to their own
//!    receiver; latency is measured from just before `Client::send` to the moment the
//!    receiver's Listen pump hands out the decrypted message (same process, same clock).
//!    With several `--server` addresses (instances of a cluster, or gateways to them), the
//!    clients are spread round-robin: pair `p`'s sender on address `p % n`, its receiver on
//!    `(p + 1) % n`, so with two or more every message crosses instances.
//! 2. Echo baseline: the same clients (same channels, same auth/refresh path) call
//!    MessagingService.Echo `messages` times each with a payload of the same size.
//! 3. Group fan-out: one member sends `group_rounds` messages to a group of `group_size`
//!    devices (up to 10,000: extra one-device accounts beyond the pairs' clients, sharing the
//!    same channels); each round is timed until every other member received it. With
//!    `--metrics`, the server's storage writes per group message (see [`crate::bench_group`]).

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use clap::Args;
use guardyn_sdk::{Channel, Client, ClientConfig, Event, Storage};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::bench_proc::{ProcSample, Sampler};
use crate::bench_stats::{Note, Stats, stamp, unstamp};

/// `guardyn bench` options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Server URLs (loopback only), repeatable or comma-separated; each must serve the whole
    /// public API (a process hosting every service, or a gateway to one instance).
    #[arg(
        long,
        alias = "addr",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: Vec<String>,
    /// Sender/receiver pairs (clients = 2 x pairs).
    #[arg(long, default_value_t = 8)]
    pub pairs: usize,
    /// Messages per sender (and echo calls per client).
    #[arg(long, default_value_t = 200)]
    pub messages: usize,
    /// Message body size in bytes (at least 8).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// HTTP/2 connections per server address, shared by the clients on it.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Group size (devices including the sender, 2..=10000). The first 2 x pairs are the
    /// pairs' clients; more are registered as one-device accounts sharing the connections.
    #[arg(long, default_value_t = 8)]
    pub group_size: usize,
    /// Devices added per group commit (each commit and its Welcome must stay under the
    /// server's `messaging.max_mls_message_bytes` and `max_welcome_bytes`).
    #[arg(long, default_value_t = 100)]
    pub group_add_chunk: usize,
    /// Members do not join with the SDK: the group is timed at the wire only (bare Listen
    /// streams), and `--metrics` is scraped around those rounds. An SDK member validates the
    /// whole ratchet tree when it joins, so SDK members cost the bench O(size²): use this for
    /// thousands of devices.
    #[arg(long)]
    pub group_wire_only: bool,
    /// The server's Prometheus endpoint (e.g. http://127.0.0.1:9565/metrics): report its
    /// storage writes per group message, scraped before and after the group rounds.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Group messages sent (one at a time).
    #[arg(long, default_value_t = 20)]
    pub group_rounds: usize,
    /// Stop sending after this many seconds per phase.
    #[arg(long, default_value_t = 60)]
    pub max_secs: u64,
    /// Messages (or echo calls) in flight per sender.
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Offered 1:1 load in messages per second over all senders (0: as fast as `--window`
    /// allows). Each sender starts its sends on a fixed schedule, still at most `--window` in
    /// flight; for latency at a fraction of the saturated throughput. The echo baseline is not
    /// paced, so the ratio to echo then only says how far below saturation the run was.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// The local server's process id: report its CPU seconds per phase (and messages per server
    /// CPU-second), its resident memory before, at peak and after, and its threads.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Instead of the phases above: hold this many idle Listen streams, each its own
    /// registered device, and report the server's memory per stream (needs `--server-pid`)
    /// and its CPU while they sit idle for `--max-secs` (5..=60).
    #[arg(long, default_value_t = 0)]
    pub idle_streams: usize,
    /// Instead of the phases above: this many signed-in devices heartbeat at the interval the
    /// server asks for, for `--max-secs` (30..=300); reports the server's CPU (needs
    /// `--server-pid`).
    #[arg(long, default_value_t = 0)]
    pub presence_devices: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn loopback(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    rest.starts_with("127.") || rest.starts_with("localhost") || rest.starts_with("[::1]")
}

/// The address index of client `i` (senders are `0..pairs`, receivers `pairs..2 * pairs`):
/// pair `p`'s sender on `p % n`, its receiver on `(p + 1) % n`.
fn instance_of(i: usize, pairs: usize, n: usize) -> usize {
    if i < pairs {
        i % n
    } else {
        (i - pairs + 1) % n
    }
}

/// When a paced sender starts its calls: call `i` not before `first + i * every`.
#[derive(Clone, Copy, Debug)]
struct Pace {
    first: Instant,
    every: Duration,
}

impl Pace {
    /// The schedule of sender `k` of `senders` sharing `rate` calls per second, the senders'
    /// slots spread evenly over one interval; `None` unpaced.
    fn of(rate: f64, senders: usize, k: usize, start: Instant) -> Option<Self> {
        if !(rate > 0.0 && rate.is_finite()) {
            return None;
        }
        let every = Duration::from_secs_f64(senders as f64 / rate);
        Some(Self {
            first: start + every.mul_f64(k as f64 / senders as f64),
            every,
        })
    }

    fn due(&self, i: usize) -> Instant {
        self.first + self.every.mul_f64(i as f64)
    }
}

/// Calls `call(i)` for `i` in `0..n` with up to `window` calls in flight (and, paced, none
/// before its slot), until `n` or the deadline; returns each call's duration.
async fn windowed<F, Fut>(
    n: usize,
    window: usize,
    pace: Option<Pace>,
    until: Instant,
    call: F,
) -> anyhow::Result<Vec<Duration>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), guardyn_sdk::SdkError>> + Send + 'static,
{
    let mut samples = Vec::with_capacity(n);
    let mut inflight = JoinSet::new();
    let mut next = 0;
    loop {
        while inflight.len() < window.max(1) && next < n && Instant::now() < until {
            if let Some(due) = pace.map(|p| p.due(next))
                && due > Instant::now()
            {
                // Collect what finishes before the slot; the window is checked again after.
                tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => {}
                    Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                        samples.push(done??);
                        continue;
                    }
                }
            }
            let fut = call(next);
            inflight.spawn(async move {
                let t = Instant::now();
                fut.await.map(|()| t.elapsed())
            });
            next += 1;
        }
        match inflight.join_next().await {
            None => return Ok(samples),
            Some(done) => samples.push(done??),
        }
    }
}

/// Server CPU and memory readings around the phases (all `None` without `--server-pid`),
/// and the bench's own CPU at the same marks: the clients share the machine with the server,
/// so their cost per message bounds the throughput as much as the server's does.
struct ServerWatch {
    pid: Option<u32>,
    marks: Vec<(&'static str, ProcSample)>,
    own: Vec<(&'static str, f64)>,
}

impl ServerWatch {
    fn mark(&mut self, name: &'static str) {
        if let Some(s) = self.pid.and_then(ProcSample::read) {
            self.marks.push((name, s));
        }
        if let Some(c) = crate::bench_proc::cpu_secs(std::process::id()) {
            self.own.push((name, c));
        }
    }

    /// The bench's own CPU seconds between two marks.
    fn own_cpu(&self, from: &str, to: &str) -> Option<f64> {
        let at = |name: &str| self.own.iter().find(|(n, _)| *n == name).map(|(_, c)| *c);
        Some(at(to)? - at(from)?)
    }

    /// Microseconds of the bench's CPU per unit of work between two marks.
    fn own_us_per(&self, units: usize, from: &str, to: &str) -> Option<f64> {
        (units > 0)
            .then(|| self.own_cpu(from, to))
            .flatten()
            .map(|c| c * 1e6 / units as f64)
    }

    fn get(&self, name: &str) -> Option<ProcSample> {
        self.marks.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
    }

    /// Server CPU seconds between two marks.
    fn cpu(&self, from: &str, to: &str) -> Option<f64> {
        Some(self.get(to)?.cpu_secs - self.get(from)?.cpu_secs)
    }

    /// Work units per server CPU-second between two marks.
    fn per_cpu_sec(&self, units: usize, from: &str, to: &str) -> Option<f64> {
        self.cpu(from, to)
            .filter(|c| *c > 0.0)
            .map(|c| units as f64 / c)
    }
}

/// HTTP/2 connection-level receive window of the bench's channels (the most HTTP/2 allows).
const CONNECTION_WINDOW: u32 = (1 << 31) - 1;
/// Per-stream receive window: hyper's default, stated because the connection window is
/// sized from it.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;

/// [`guardyn_sdk::connect`] with a connection window for hundreds of Listen streams on one
/// connection. With hyper's default (5 MB), group members opening their streams onto a
/// backlog (Welcome and commits, up to a few hundred KiB each) fill it with data their pumps
/// have not read yet; the SDK's `listen` awaits a unary call before it starts reading, that
/// call's response then cannot arrive, and the connection stalls (seen at 1,000 members).
async fn connect_wide(url: &str) -> anyhow::Result<Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|_| anyhow::anyhow!("{url:?} is not a server URL"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .initial_stream_window_size(STREAM_WINDOW);
    Ok(endpoint.connect().await?)
}

/// Runs the benchmark and prints the results.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(remote) = args
        .server
        .iter()
        .chain(&args.metrics)
        .find(|s| !loopback(s))
    {
        anyhow::bail!("bench only drives a loopback server (got {remote})");
    }
    if args.presence_devices > 0 {
        return crate::bench_presence::run(crate::bench_presence::PresenceArgs {
            server: args.server.first().map(String::as_str),
            connections: args.connections,
            server_pid: args.server_pid,
            devices: args.presence_devices,
            hold: Duration::from_secs(args.max_secs.clamp(30, 300)),
            json: args.json,
        })
        .await;
    }
    if args.idle_streams > 0 {
        return crate::bench_idle::run(crate::bench_idle::IdleArgs {
            server: args.server.first().map(String::as_str),
            connections: args.connections,
            server_pid: args.server_pid,
            streams: args.idle_streams,
            hold: Duration::from_secs(args.max_secs.clamp(5, 60)),
            json: args.json,
        })
        .await;
    }
    let pairs = args.pairs.max(1);
    let group_size = args.group_size.clamp(2, crate::bench_group::MAX_GROUP_SIZE);
    let instances = args.server.len().max(1);
    // channels[instance][connection]
    let mut channels = Vec::new();
    for server in &args.server {
        let mut on = Vec::new();
        for _ in 0..args.connections.max(1) {
            on.push(connect_wide(server).await?);
        }
        channels.push(on);
    }
    let connections: usize = channels.iter().map(Vec::len).sum();
    let config = ClientConfig {
        device_name: "bench".into(),
        prekey_batch: 10,
        prekey_low_water: 2,
        key_package_batch: 5,
        max_attempts: 5,
        ..ClientConfig::default()
    };
    let run_id = std::process::id();
    eprintln!("registering {} clients...", pairs * 2);
    let mut clients = Vec::new();
    for i in 0..pairs * 2 {
        let on = &channels[instance_of(i, pairs, instances)];
        let channel = on[i % on.len()].clone();
        let name = format!("bench{run_id}x{i}");
        clients.push(
            Client::register(
                channel,
                Storage::Memory,
                config.clone(),
                &name,
                "bench password 0123456789",
            )
            .await?,
        );
    }
    let (senders, receivers) = clients.split_at(pairs);
    let cross_instance = (0..pairs)
        .filter(|&p| instance_of(p, pairs, instances) != instance_of(pairs + p, pairs, instances))
        .count();
    let base = Instant::now();
    let deadline = Duration::from_secs(args.max_secs);
    let window = args.window.max(1);
    let mut server = ServerWatch {
        pid: args.server_pid,
        marks: Vec::new(),
        own: Vec::new(),
    };
    let sampler = Sampler::start(args.server_pid);

    // Warm-up: establish every session, so the figures measure steady-state messaging.
    for (s, r) in senders.iter().zip(receivers) {
        s.send(r.account_id(), b"warm-up").await?;
        r.sync().await?;
    }

    // 1:1 phase.
    let (tx, mut rx) = mpsc::unbounded_channel::<Note>();
    let mut inboxes = Vec::new();
    for r in receivers {
        let mut inbox = r.listen().await?;
        let tx = tx.clone();
        inboxes.push(tokio::spawn(async move {
            while let Some(e) = inbox.next().await {
                if let Event::Message(m) | Event::GroupMessage { message: m, .. } = e
                    && let Some(note) = unstamp(base, &m.body)
                {
                    let _ = tx.send(note);
                }
            }
        }));
    }
    server.mark("idle");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (k, (s, r)) in senders
        .iter()
        .cloned()
        .zip(receivers.iter().map(|r| r.account_id().to_owned()))
        .enumerate()
    {
        let (n, size) = (args.messages, args.size);
        tasks.push(tokio::spawn(windowed(
            n,
            window,
            Pace::of(args.rate, pairs, k, start),
            start + deadline,
            move |i| {
                let (s, r) = (s.clone(), r.clone());
                let body = stamp(base, i as u64, size);
                async move { s.send(&r, &body).await.map(drop) }
            },
        )));
    }
    let mut send_calls = Vec::new();
    for t in tasks {
        send_calls.extend(t.await??);
    }
    let total = send_calls.len();
    let send_secs = start.elapsed().as_secs_f64();
    let mut latencies = Vec::with_capacity(total);
    while latencies.len() < total {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
            Ok(Some((_, d))) => latencies.push(d),
            _ => break,
        }
    }
    let one_to_one = Stats::of(latencies, start.elapsed().as_secs_f64());
    server.mark("one_to_one");
    let send_call = Stats::of(send_calls, send_secs);
    let lost = total - one_to_one.count;
    for i in inboxes {
        i.abort();
    }

    // Echo baseline over the same clients and channels.
    let payload = vec![7u8; args.size.max(16)];
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in senders {
        let (s, payload) = (s.clone(), payload.clone());
        tasks.push(tokio::spawn(windowed(
            args.messages,
            window,
            None,
            start + deadline,
            move |_| {
                let (s, payload) = (s.clone(), payload.clone());
                async move { s.echo(&payload).await.map(drop) }
            },
        )));
    }
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await??);
    }
    let echo = Stats::of(samples, start.elapsed().as_secs_f64());
    server.mark("echo");

    // Group fan-out.
    let mut ready = crate::bench_group::setup(crate::bench_group::GroupSetup {
        clients: &clients,
        channels: channels.iter().flatten().cloned().collect(),
        size: group_size,
        add_chunk: args.group_add_chunk,
        body: args.size,
        base,
        wire_only: args.group_wire_only,
    })
    .await?;
    server.mark("group_ready");
    let mut group = ready
        .run(
            args.group_rounds,
            args.size,
            base,
            deadline,
            args.metrics.as_deref(),
        )
        .await?;
    server.mark("group");
    if let Some(session) = ready.open_wire().await? {
        server.mark("group_wire_ready");
        ready
            .wire_rounds(
                session,
                &mut group,
                args.group_rounds,
                (args.size, base),
                args.metrics.as_deref(),
            )
            .await?;
        server.mark("group_wire");
    }
    let fanout = &group.fanout;
    let (peak_rss_kib, peak_threads) = sampler.finish();
    let group_deliveries = fanout.count * (group.size - 1);
    let server_json = args.server_pid.map(|pid| {
        serde_json::json!({
            "pid": pid,
            "marks": server.marks.iter().map(|(n, s)| (n.to_string(), s.json())).collect::<serde_json::Map<_, _>>(),
            "peak_rss_kib": peak_rss_kib, "peak_threads": peak_threads,
            "one_to_one_cpu_secs": server.cpu("idle", "one_to_one"),
            "messages_per_server_cpu_sec": server.per_cpu_sec(one_to_one.count, "idle", "one_to_one"),
            "echo_cpu_secs": server.cpu("one_to_one", "echo"),
            "echo_calls_per_server_cpu_sec": server.per_cpu_sec(echo.count, "one_to_one", "echo"),
            "group_deliveries_per_server_cpu_sec": server.per_cpu_sec(group_deliveries, "group_ready", "group"),
            "group_wire_deliveries_per_server_cpu_sec": group.wire.as_ref().and_then(|w| server.per_cpu_sec(w.delivery.count, "group_wire_ready", "group_wire")),
        })
    });

    let client_json = serde_json::json!({
        "one_to_one_cpu_secs": server.own_cpu("idle", "one_to_one"),
        "cpu_us_per_message": server.own_us_per(one_to_one.count, "idle", "one_to_one"),
        "echo_cpu_secs": server.own_cpu("one_to_one", "echo"),
        "cpu_us_per_echo_call": server.own_us_per(echo.count, "one_to_one", "echo"),
    });
    let ratio = if echo.rate() > 0.0 {
        one_to_one.rate() / echo.rate()
    } else {
        0.0
    };
    if args.json {
        let v = serde_json::json!({
            "clients": pairs * 2, "pairs": pairs, "connections": connections, "body_bytes": args.size,
            "servers": args.server, "pairs_across_servers": cross_instance,
            "one_to_one": one_to_one.json(), "lost": lost,
            "send_call": send_call.json(),
            "echo": echo.json(),
            "messaging_to_echo_throughput_ratio": ratio,
            "group": group.json(),
            "window": window,
            "offered_rate": (args.rate > 0.0).then_some(args.rate),
            "server": server_json,
            "bench_client": client_json,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "clients {} ({} pairs), connections {}, body {} B",
            pairs * 2,
            pairs,
            connections,
            args.size
        );
        println!(
            "servers {} ({}): pair p sends on server p % {instances}, receives on (p + 1) % \
             {instances}; {cross_instance} of {pairs} pairs across servers",
            instances,
            args.server.join(", ")
        );
        println!(
            "{:<30} {:>8} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "phase", "count", "per_sec", "p50_ms", "p99_ms", "p99.9_ms", "max_ms"
        );
        for (name, s) in [
            ("1:1 send->delivery", &one_to_one),
            ("1:1 send call (encrypt+RPC)", &send_call),
            ("echo (unary baseline)", &echo),
        ] {
            println!(
                "{name:<30} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                s.count,
                s.rate(),
                s.p50_ms,
                s.p99_ms,
                s.p999_ms,
                s.max_ms
            );
        }
        let gname = format!("group fan-out (G={})", group.size);
        println!(
            "{gname:<30} {:>8} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            fanout.count,
            fanout.rate(),
            fanout.p50_ms,
            fanout.p99_ms,
            fanout.p999_ms,
            fanout.max_ms
        );
        group.print();
        println!("messaging/echo throughput ratio: {ratio:.3}; lost: {lost}; window {window}");
        if args.rate > 0.0 {
            println!("1:1 offered at {} messages/s", args.rate);
        }
        if let Some(v) = server_json {
            println!("server: {v}");
        }
        println!("bench client: {client_json}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{Pace, instance_of};

    #[test]
    fn paced_senders_share_the_rate_in_evenly_spread_slots() {
        let start = std::time::Instant::now();
        assert!(Pace::of(0.0, 4, 0, start).is_none());
        assert!(Pace::of(f64::NAN, 4, 0, start).is_none());
        // 4 senders at 1,000/s: each every 4 ms, sender k offset by k ms.
        let slots: Vec<Vec<u128>> = (0..4)
            .map(|k| {
                let p = Pace::of(1000.0, 4, k, start).unwrap();
                (0..3).map(|i| (p.due(i) - start).as_micros()).collect()
            })
            .collect();
        assert_eq!(slots[0], [0, 4000, 8000]);
        assert_eq!(slots[1], [1000, 5000, 9000]);
        assert_eq!(slots[3], [3000, 7000, 11000]);
    }

    #[test]
    fn each_pair_spans_two_servers_when_there_are_two_or_more() {
        let pairs = 5;
        for n in 2..=4 {
            let mut used = vec![0; n];
            for p in 0..pairs {
                let (s, r) = (instance_of(p, pairs, n), instance_of(pairs + p, pairs, n));
                assert_ne!(s, r, "pair {p} on one of {n} servers");
                used[s] += 1;
                used[r] += 1;
            }
            // Round-robin: no server gets more than its share plus one per role.
            assert!(used.iter().all(|&u| u >= 2 * pairs / n - 1), "{used:?}");
        }
        for i in 0..2 * pairs {
            assert_eq!(instance_of(i, pairs, 1), 0);
        }
    }
}
