//! `guardyn bench-media`: upload and download one large attachment through a running server
//! and compare with raw local disk speed measured in the same run; optionally sample the
//! server's resident memory (`--pid`) to show that it stays bounded by the chunk size, not
//! the blob size.
//!
//! The attachment goes through the SDK (client-side AES-256-GCM, 1 MiB chunks, SHA-256), so
//! the figures are end to end; the raw-disk baseline writes the same number of bytes as 1 MiB
//! writes each followed by `fsync` (what the server does per chunk) and reads them back.

#![allow(clippy::print_stdout)]

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use guardyn_sdk::{Client, ClientConfig, Storage, connect};

use crate::bench_proc::{Sampler, status_field};

const MIB: u64 = 1024 * 1024;

/// `guardyn bench-media` options.
#[derive(Debug, Clone, Args)]
pub struct BenchMediaArgs {
    /// Server URL (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Blob size in MiB (the server's media.max_blob_bytes and quota must allow it).
    #[arg(long, default_value_t = 1024)]
    pub size_mib: u64,
    /// The server's process id, to sample its resident memory.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Scratch directory for the source file, the downloaded copy and the disk baseline.
    #[arg(long, default_value = "bench-media-tmp")]
    pub dir: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Write `size` bytes as 1 MiB writes each followed by fsync; returns seconds.
fn raw_write(path: &Path, size: u64) -> anyhow::Result<f64> {
    let block = vec![0x5au8; MIB as usize];
    let start = Instant::now();
    let mut f = std::fs::File::create(path)?;
    for _ in 0..size / MIB {
        f.write_all(&block)?;
        f.sync_data()?;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Read a file in 1 MiB reads; returns seconds.
fn raw_read(path: &Path) -> anyhow::Result<f64> {
    let mut buf = vec![0u8; MIB as usize];
    let start = Instant::now();
    let mut f = std::fs::File::open(path)?;
    while f.read(&mut buf)? > 0 {}
    Ok(start.elapsed().as_secs_f64())
}

/// A file of `size` pseudo-random bytes (incompressible, cheap to make).
fn source_file(path: &Path, size: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; MIB as usize];
    for _ in 0..size / MIB {
        for b in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&block)?;
    }
    f.flush()?;
    Ok(())
}

fn same_contents(a: &Path, b: &Path) -> anyhow::Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; MIB as usize], vec![0u8; MIB as usize]);
    loop {
        let n = fa.read(&mut ba)?;
        let mut m = 0;
        while m < n {
            let k = fb.read(&mut bb[m..n])?;
            if k == 0 {
                return Ok(false);
            }
            m += k;
        }
        if n == 0 {
            return Ok(fb.read(&mut bb)? == 0);
        }
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

pub async fn run(args: BenchMediaArgs) -> anyhow::Result<()> {
    if !args.server.contains("127.0.0.1") && !args.server.contains("localhost") {
        anyhow::bail!(
            "bench-media only drives a loopback server (got {})",
            args.server
        );
    }
    let size = args.size_mib.max(1) * MIB;
    std::fs::create_dir_all(&args.dir)?;
    let (src, dst, raw) = (
        args.dir.join("source.bin"),
        args.dir.join("downloaded.bin"),
        args.dir.join("raw.bin"),
    );
    let _ = std::fs::remove_file(&dst);
    eprintln!("raw disk baseline ({} MiB)...", args.size_mib);
    let raw_write_s = raw_write(&raw, size)?;
    let raw_read_s = raw_read(&raw)?;
    std::fs::remove_file(&raw)?;
    source_file(&src, size)?;

    let channel = connect(&args.server).await?;
    let config = ClientConfig {
        device_name: "bench-media".into(),
        prekey_batch: 2,
        prekey_low_water: 1,
        key_package_batch: 1,
        max_attempts: 5,
        ..ClientConfig::default()
    };
    let name = format!("benchmedia{}", std::process::id());
    let client = Client::register(
        channel,
        Storage::Memory,
        config,
        &name,
        "bench password 0123456789",
    )
    .await
    .context("registering the bench client")?;

    let idle_kib = args
        .pid
        .and_then(|p| status_field(p, "VmRSS:"))
        .unwrap_or(0);
    let sampler = Sampler::start(args.pid);
    let start = Instant::now();
    let attachment = client
        .upload_file(&src, "application/octet-stream")
        .await
        .context("upload")?;
    let upload_s = start.elapsed().as_secs_f64();
    let (upload_peak_kib, _) = sampler.finish();

    let sampler = Sampler::start(args.pid);
    let start = Instant::now();
    client
        .download_to_path(&attachment, &dst)
        .await
        .context("download")?;
    let download_s = start.elapsed().as_secs_f64();
    let (download_peak_kib, _) = sampler.finish();
    let identical = same_contents(&src, &dst)?;
    let _ = std::fs::remove_file(&src);
    let _ = std::fs::remove_file(&dst);

    let mbs = |secs: f64| size as f64 / MIB as f64 / secs;
    let report = serde_json::json!({
        "size_mib": args.size_mib,
        "raw_write_mib_s": mbs(raw_write_s),
        "raw_read_mib_s": mbs(raw_read_s),
        "upload_mib_s": mbs(upload_s),
        "download_mib_s": mbs(download_s),
        "upload_vs_raw_write": raw_write_s / upload_s,
        "download_vs_raw_read": raw_read_s / download_s,
        "server_rss_idle_mib": idle_kib as f64 / 1024.0,
        "server_rss_peak_upload_mib": upload_peak_kib as f64 / 1024.0,
        "server_rss_peak_download_mib": download_peak_kib as f64 / 1024.0,
        "byte_identical": identical,
    });
    if args.json {
        println!("{report:#}");
    } else {
        println!(
            "blob: {} MiB, byte-identical after the round trip: {identical}",
            args.size_mib
        );
        println!(
            "raw disk:  write {:8.1} MiB/s (1 MiB + fsync)   read {:8.1} MiB/s",
            mbs(raw_write_s),
            mbs(raw_read_s)
        );
        println!(
            "guardyn:   upload {:7.1} MiB/s ({:.2} of raw)    download {:7.1} MiB/s ({:.2} of raw)",
            mbs(upload_s),
            raw_write_s / upload_s,
            mbs(download_s),
            raw_read_s / download_s
        );
        if args.pid.is_some() {
            println!(
                "server RSS: idle {:.1} MiB, peak during upload {:.1} MiB, during download {:.1} MiB",
                idle_kib as f64 / 1024.0,
                upload_peak_kib as f64 / 1024.0,
                download_peak_kib as f64 / 1024.0
            );
        }
    }
    if !identical {
        anyhow::bail!("the downloaded file differs from the source");
    }
    Ok(())
}
