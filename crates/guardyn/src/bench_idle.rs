//! `guardyn bench --idle-streams N`: what an idle connected device costs the server. Registers
//! N devices (spread over `--connections` HTTP/2 connections), then opens their Listen streams
//! in ten steps, reading the server's resident memory after each step; reports the memory per
//! stream (the slope, so what registration left behind does not count) and the server's CPU
//! while all N streams sit idle.
//!
//! Registration hashes a password per device: for large N start the server with cheap Argon2
//! parameters (bench only), e.g. `GUARDYN_AUTH__ARGON2__MEMORY_KIB=8
//! GUARDYN_AUTH__ARGON2__ITERATIONS=1`.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use guardyn_sdk::{Channel, Client, ClientConfig, Inbox, Storage, connect};
use tokio::task::JoinSet;

use crate::bench_proc::ProcSample;

/// Registrations in flight at once.
const REGISTER_CONCURRENCY: usize = 32;
/// Streams opened at once.
const LISTEN_CONCURRENCY: usize = 64;
/// Lets the server's allocations settle after a step before reading its memory.
const SETTLE: Duration = Duration::from_secs(2);

/// What the idle-streams mode takes from `guardyn bench`'s options.
#[derive(Debug)]
pub(crate) struct IdleArgs<'a> {
    pub server: Option<&'a str>,
    pub connections: usize,
    pub server_pid: Option<u32>,
    pub streams: usize,
    /// How long all streams are held idle while the server's CPU is measured.
    pub hold: Duration,
    pub json: bool,
}

pub(crate) async fn run(args: IdleArgs<'_>) -> anyhow::Result<()> {
    let n = args.streams;
    let Some(pid) = args.server_pid else {
        anyhow::bail!("--idle-streams measures the server's memory: give --server-pid");
    };
    let read = || ProcSample::require(pid);
    let channels = connect_all(args.server, args.connections).await?;
    let idle = read()?;
    let started = Instant::now();
    let clients: Vec<Client> = register_devices(&channels, n, "idle")
        .await?
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    let register_secs = started.elapsed().as_secs_f64();
    let registered = read()?;

    let step = n.div_ceil(10).max(1);
    let mut inboxes: Vec<Inbox> = Vec::with_capacity(n);
    let mut steps = Vec::new();
    let mut opening = JoinSet::new();
    for chunk in clients.chunks(step) {
        for c in chunk {
            if opening.len() >= LISTEN_CONCURRENCY
                && let Some(done) = opening.join_next().await
            {
                inboxes.push(done??);
            }
            let c = c.clone();
            opening.spawn(async move { c.listen().await });
        }
        while let Some(done) = opening.join_next().await {
            inboxes.push(done??);
        }
        tokio::time::sleep(SETTLE).await;
        let s = read()?;
        eprintln!("{} streams: server RSS {} KiB", inboxes.len(), s.rss_kib);
        steps.push((inboxes.len(), s));
    }
    let hold_from = read()?;
    let hold = args.hold;
    tokio::time::sleep(hold).await;
    let hold_to = read()?;

    let per_stream = |streams: usize, s: &ProcSample| -> f64 {
        (s.rss_kib as f64 - registered.rss_kib as f64) * 1024.0 / streams.max(1) as f64
    };
    let (last_n, last) = steps.last().copied().unwrap_or((0, registered));
    // Least-squares slope of RSS over streams across the steps: bytes per stream.
    let slope = {
        let pts: Vec<(f64, f64)> = steps
            .iter()
            .map(|(k, s)| (*k as f64, s.rss_kib as f64 * 1024.0))
            .collect();
        let m = pts.len() as f64;
        let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let (mx, my) = (sx / m, sy / m);
        let num: f64 = pts.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let den: f64 = pts.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
        if den > 0.0 { num / den } else { 0.0 }
    };
    let idle_cpu = hold_to.cpu_secs - hold_from.cpu_secs;
    let v = serde_json::json!({
        "idle_streams": inboxes.len(),
        "connections": channels.len(),
        "register_secs": register_secs,
        "server": {
            "before": idle.json(), "registered": registered.json(), "streaming": last.json(),
            "steps": steps.iter().map(|(k, s)| serde_json::json!({"streams": k, "rss_kib": s.rss_kib, "threads": s.threads})).collect::<Vec<_>>(),
            "rss_per_stream_bytes": per_stream(last_n, &last),
            "rss_per_stream_bytes_slope": slope,
            "idle_hold_secs": hold.as_secs_f64(),
            "idle_cpu_share_of_one_core": idle_cpu / hold.as_secs_f64(),
        },
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} idle Listen streams over {} connections: server RSS {} KiB registered, {} KiB \
             streaming; {:.0} B per stream ({:.0} B slope); idle CPU {:.2} % of a core",
            inboxes.len(),
            channels.len(),
            registered.rss_kib,
            last.rss_kib,
            per_stream(last_n, &last),
            slope,
            idle_cpu / hold.as_secs_f64() * 100.0
        );
    }
    drop(inboxes);
    Ok(())
}

/// `connections` HTTP/2 connections to `server`, which the bench devices share.
pub(crate) async fn connect_all(
    server: Option<&str>,
    connections: usize,
) -> anyhow::Result<Vec<Channel>> {
    let server = server.ok_or_else(|| anyhow::anyhow!("no --server"))?;
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        channels.push(connect(server).await?);
    }
    Ok(channels)
}

/// The password of every bench device.
pub(crate) const PASSWORD: &str = "bench password 0123456789";

/// Registers `n` accounts of one device each, spread over `channels`, with the fewest keys
/// the SDK allows; returns (username, client) in order.
pub(crate) async fn register_devices(
    channels: &[Channel],
    n: usize,
    prefix: &str,
) -> anyhow::Result<Vec<(String, Client)>> {
    let config = ClientConfig {
        device_name: prefix.into(),
        prekey_batch: 1,
        prekey_low_water: 0,
        key_package_batch: 1,
        max_attempts: 5,
        ..ClientConfig::default()
    };
    let run_id = std::process::id();
    let mut clients = Vec::with_capacity(n);
    let mut pending = JoinSet::new();
    for i in 0..n {
        if pending.len() >= REGISTER_CONCURRENCY
            && let Some(done) = pending.join_next().await
        {
            clients.push(done??);
        }
        let channel = channels[i % channels.len()].clone();
        let config = config.clone();
        let name = format!("{prefix}{run_id}x{i}");
        pending.spawn(async move {
            Client::register(channel, Storage::Memory, config, &name, PASSWORD)
                .await
                .map(|c| (i, name, c))
        });
        if (i + 1) % 1000 == 0 {
            eprintln!("registered {} of {n}", i + 1);
        }
    }
    while let Some(done) = pending.join_next().await {
        clients.push(done??);
    }
    clients.sort_by_key(|(i, _, _)| *i);
    Ok(clients.into_iter().map(|(_, name, c)| (name, c)).collect())
}
