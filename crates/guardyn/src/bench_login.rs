//! `guardyn bench-login`: a login flood against a running server. Registers one account, then
//! fires rounds of `--concurrency` simultaneous logins with a wrong password (each costs the
//! server an Argon2id verification) and samples the server's resident memory and thread count
//! (`--pid`, `/proc/<pid>/status` every 20 ms). With the hashing bound (`auth.argon2_concurrency`)
//! the peak stays near idle and the excess is refused with RESOURCE_EXHAUSTED / OVERLOADED.
//!
//! Start the server with per-address and per-username login limits and the lockout raised,
//! or those refuse the flood before any hashing happens, e.g.
//! `GUARDYN_AUTH__LIMITS__LOGIN_PER_ADDRESS__BURST=100000`,
//! `GUARDYN_AUTH__LIMITS__LOGIN_PER_ACCOUNT__BURST=100000`,
//! `GUARDYN_AUTH__LIMITS__LOGIN_PER_USERNAME__BURST=100000`,
//! `GUARDYN_AUTH__LOCKOUT__THRESHOLD=100000`,
//! `GUARDYN_AUTH__LOCKOUT__GLOBAL_THRESHOLD=100000`.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use guardyn_proto::guardyn::auth::v1 as pb;
use guardyn_proto::guardyn::auth::v1::auth_service_client::AuthServiceClient;
use guardyn_sdk::{Client, ClientConfig, Storage, connect};

use crate::bench_proc::{Sampler, status_field};

/// `guardyn bench-login` options.
#[derive(Debug, Clone, Args)]
pub struct BenchLoginArgs {
    /// Server URL (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// The server's process id, to sample its resident memory and threads.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Logins in flight at once per round.
    #[arg(long, default_value_t = 400)]
    pub concurrency: usize,
    /// Rounds (each waits for all of its logins to finish).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// HTTP/2 connections the logins are spread over.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: BenchLoginArgs) -> anyhow::Result<()> {
    if !args.server.contains("127.0.0.1") && !args.server.contains("localhost") {
        anyhow::bail!(
            "bench-login only drives a loopback server (got {})",
            args.server
        );
    }
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(connect(&args.server).await?);
    }
    let config = ClientConfig {
        device_name: "bench-login".into(),
        prekey_batch: 2,
        prekey_low_water: 1,
        key_package_batch: 1,
        max_attempts: 5,
        ..ClientConfig::default()
    };
    let name = format!("benchlogin{}", std::process::id());
    Client::register(
        channels[0].clone(),
        Storage::Memory,
        config,
        &name,
        "bench password 0123456789",
    )
    .await
    .context("registering the bench account")?;

    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_kib = args
        .pid
        .and_then(|p| status_field(p, "VmRSS:"))
        .unwrap_or(0);
    let idle_threads = args
        .pid
        .and_then(|p| status_field(p, "Threads:"))
        .unwrap_or(0);
    let sampler = Sampler::start(args.pid);
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let start = Instant::now();
    for round in 0..args.rounds {
        let mut tasks = Vec::with_capacity(args.concurrency);
        for i in 0..args.concurrency {
            let mut auth = AuthServiceClient::new(channels[i % channels.len()].clone());
            let username = name.clone();
            tasks.push(tokio::spawn(async move {
                let r = auth
                    .login(pb::LoginRequest {
                        username,
                        password: format!("wrong password {round} {i}"),
                        device_id: 1,
                    })
                    .await;
                match r {
                    Ok(_) => "OK (wrong password accepted!)".to_owned(),
                    Err(status) => format!(
                        "{:?}/{}",
                        status.code(),
                        guardyn_common::error::reason_of(&status).unwrap_or_default()
                    ),
                }
            }));
        }
        for t in tasks {
            *outcomes.entry(t.await?).or_default() += 1;
        }
    }
    let elapsed_s = start.elapsed().as_secs_f64();
    let (peak_kib, peak_threads) = sampler.finish();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let report = serde_json::json!({
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "elapsed_s": elapsed_s,
        "outcomes": outcomes,
        "server_rss_idle_mib": mib(idle_kib),
        "server_rss_peak_mib": mib(peak_kib),
        "server_threads_idle": idle_threads,
        "server_threads_peak": peak_threads,
    });
    if args.json {
        println!("{report:#}");
    } else {
        println!(
            "{} rounds x {} concurrent wrong-password logins in {elapsed_s:.1} s",
            args.rounds, args.concurrency
        );
        for (outcome, n) in &outcomes {
            println!("  {outcome:<45} {n}");
        }
        if args.pid.is_some() {
            println!(
                "server RSS: idle {:.1} MiB, peak {:.1} MiB (+{:.1}); threads: idle {idle_threads}, peak {peak_threads}",
                mib(idle_kib),
                mib(peak_kib),
                mib(peak_kib.saturating_sub(idle_kib))
            );
        }
    }
    Ok(())
}
