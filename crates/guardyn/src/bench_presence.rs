//! `guardyn bench --presence-devices N`: what online devices cost the presence service. Registers
//! N devices, signs each in, and has every one heartbeat at the interval the server asks for
//! (30 s by default), spread evenly over the interval; reports the server's CPU over the hold
//! (`--max-secs`, 30..=300) as a share of one core, and per heartbeat.
//!
//! Like `--idle-streams`, start the server with cheap Argon2 for large N (bench only).

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use guardyn_proto::guardyn::auth::v1 as auth;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_proto::guardyn::presence::v1 as pb;
use guardyn_proto::guardyn::presence::v1::presence_service_client::PresenceServiceClient;
use guardyn_sdk::Channel;
use tokio::task::JoinSet;

use crate::bench_idle::{PASSWORD, connect_all, register_devices};
use crate::bench_proc::ProcSample;

/// Sign-ins in flight at once.
const LOGIN_CONCURRENCY: usize = 32;

/// What the presence mode takes from `guardyn bench`'s options.
#[derive(Debug)]
pub(crate) struct PresenceArgs<'a> {
    pub server: Option<&'a str>,
    pub connections: usize,
    pub server_pid: Option<u32>,
    pub devices: usize,
    pub hold: Duration,
    pub json: bool,
}

/// `message` with the device's access token, as the bench's raw (non-SDK) calls send it.
pub(crate) fn authed<T>(message: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(req)
}

async fn heartbeat(channel: Channel, token: &str) -> anyhow::Result<Duration> {
    let req = authed(pb::HeartbeatRequest {}, token)?;
    let resp = PresenceServiceClient::new(channel).heartbeat(req).await?;
    let interval = resp
        .into_inner()
        .interval
        .map_or(30, |d| u64::try_from(d.seconds).unwrap_or(30));
    Ok(Duration::from_secs(interval.max(1)))
}

pub(crate) async fn sign_in(
    channel: Channel,
    username: String,
    device_id: u32,
) -> anyhow::Result<String> {
    let resp = AuthServiceClient::new(channel)
        .login(auth::LoginRequest {
            username,
            password: PASSWORD.into(),
            device_id,
        })
        .await?
        .into_inner();
    match resp.outcome {
        Some(auth::login_response::Outcome::Tokens(t)) => Ok(t.access_token),
        _ => anyhow::bail!("login did not return tokens"),
    }
}

pub(crate) async fn run(args: PresenceArgs<'_>) -> anyhow::Result<()> {
    let n = args.devices;
    let Some(pid) = args.server_pid else {
        anyhow::bail!("--presence-devices measures the server's CPU: give --server-pid");
    };
    let read = || ProcSample::require(pid);
    let channels = connect_all(args.server, args.connections).await?;
    let devices = register_devices(&channels, n, "presence").await?;
    let mut tokens = vec![String::new(); n];
    let mut pending = JoinSet::new();
    for (i, (name, client)) in devices.iter().enumerate() {
        if pending.len() >= LOGIN_CONCURRENCY
            && let Some(done) = pending.join_next().await
        {
            let (j, token) = done?;
            tokens[j] = token?;
        }
        let channel = channels[i % channels.len()].clone();
        let (name, device) = (name.clone(), client.device_id());
        pending.spawn(async move { (i, sign_in(channel, name, device).await) });
    }
    while let Some(done) = pending.join_next().await {
        let (j, token) = done?;
        tokens[j] = token?;
    }
    drop(devices);
    // Everyone online first; the interval the server asks for paces the measured heartbeats.
    let mut interval = Duration::from_secs(30);
    for (i, token) in tokens.iter().enumerate() {
        interval = heartbeat(channels[i % channels.len()].clone(), token).await?;
    }

    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let before = read()?;
    let start = tokio::time::Instant::now();
    let until = start + args.hold;
    let mut beating = JoinSet::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let channel = channels[i % channels.len()].clone();
        let (sent, failed) = (sent.clone(), failed.clone());
        let offset = interval.mul_f64(i as f64 / n.max(1) as f64);
        beating.spawn(async move {
            let mut next = start + offset;
            while next < until {
                tokio::time::sleep_until(next).await;
                match heartbeat(channel.clone(), &token).await {
                    Ok(_) => sent.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                next += interval;
            }
        });
    }
    while beating.join_next().await.is_some() {}
    let after = read()?;
    let secs = Instant::now()
        .saturating_duration_since(start.into_std())
        .as_secs_f64();
    let cpu = after.cpu_secs - before.cpu_secs;
    let beats = sent.load(Ordering::Relaxed);
    let share = cpu / secs.max(f64::EPSILON);
    let per_beat_us = if beats > 0 {
        cpu / beats as f64 * 1e6
    } else {
        0.0
    };
    let v = serde_json::json!({
        "presence_devices": n,
        "interval_secs": interval.as_secs_f64(),
        "seconds": secs,
        "heartbeats": beats,
        "failed": failed.load(Ordering::Relaxed),
        "heartbeats_per_second": beats as f64 / secs.max(f64::EPSILON),
        "server": {
            "cpu_secs": cpu,
            "cpu_share_of_one_core": share,
            "cpu_us_per_heartbeat": per_beat_us,
            "rss_kib": after.rss_kib,
            "threads": after.threads,
        },
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{n} devices heartbeating every {:.0} s: {beats} heartbeats in {secs:.0} s \
             ({} failed); server CPU {:.2} % of one core, {per_beat_us:.0} µs per heartbeat",
            interval.as_secs_f64(),
            failed.load(Ordering::Relaxed),
            share * 100.0
        );
    }
    Ok(())
}
