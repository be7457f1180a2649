//! `guardyn admin monitoring [--watch]`: every live instance's figures, the cluster aggregate
//! and the alerts in force, signed in as an owner, admin or auditor through its SDK state file.

#![allow(clippy::print_stdout)]

use clap::Args;
use guardyn_proto::guardyn::admin::v1 as pb;

use crate::client::{ClientArgs, open};

/// `guardyn admin monitoring`
#[derive(Debug, Args)]
pub struct MonitoringArgs {
    #[command(flatten)]
    args: ClientArgs,
    /// Keep printing a fresh snapshot every --interval seconds until interrupted.
    #[arg(long)]
    watch: bool,
    /// Seconds between snapshots with --watch (1..=300).
    #[arg(long, default_value_t = 5)]
    interval: u32,
}

pub async fn run(a: MonitoringArgs) -> anyhow::Result<()> {
    let client = open(&a.args).await?;
    if !a.watch {
        print(&client.monitoring_data().await?);
        return Ok(());
    }
    let mut stream = client.watch_monitoring(a.interval).await?;
    while let Some(item) = stream.message().await? {
        print(&item.snapshot.unwrap_or_default());
        println!();
    }
    Ok(())
}

fn mib(bytes: u64) -> u64 {
    bytes / (1024 * 1024)
}

fn percent(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / total as f64
    }
}

fn queues(q: &[pb::QueueDepth]) -> String {
    q.iter()
        .map(|q| format!("{}={}", q.queue, q.depth))
        .collect::<Vec<_>>()
        .join(" ")
}

fn known(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".to_owned(), |v| v.to_string())
}

fn resource(r: pb::MonitoredResource) -> String {
    let name = r.as_str_name();
    name.strip_prefix("MONITORED_RESOURCE_")
        .unwrap_or(name)
        .to_lowercase()
}

fn print(s: &pb::MonitoringSnapshot) {
    let at = s.taken_at.map_or(0, |t| t.seconds);
    println!(
        "snapshot at {at} (Unix s): {} instance(s)",
        s.instances.len()
    );
    for i in &s.instances {
        println!(
            "{} v{} [{}] up {} s: cpu {:.1} % (process {:.1} %), memory {:.1} % of {} MiB \
             (process {} MiB), disk {:.1} % of {} MiB, devices {}, listen streams {}, \
             open streams {}, push backlog {}, storage {} bytes, queues: {}",
            i.instance_id,
            i.version,
            i.services.join(","),
            i.uptime_secs,
            i.cpu_percent,
            i.process_cpu_percent,
            percent(i.memory_used_bytes, i.memory_total_bytes),
            mib(i.memory_total_bytes),
            mib(i.process_rss_bytes),
            percent(i.disk_used_bytes, i.disk_total_bytes),
            mib(i.disk_total_bytes),
            i.connected_devices,
            i.listen_streams,
            i.open_streams,
            known(i.push_backlog),
            known(i.storage_bytes),
            queues(&i.queue_depths),
        );
    }
    if let Some(c) = &s.cluster {
        println!(
            "cluster: {} instance(s), cpu mean {:.1} % max {:.1} %, memory {} of {} MiB, \
             devices {}, listen streams {}, open streams {}, push backlog {}, storage {} bytes",
            c.instances,
            c.cpu_percent_mean,
            c.cpu_percent_max,
            mib(c.memory_used_bytes),
            mib(c.memory_total_bytes),
            c.connected_devices,
            c.listen_streams,
            c.open_streams,
            known(c.push_backlog),
            known(c.storage_bytes),
        );
    }
    for alert in &s.alerts {
        println!(
            "ALERT {} {}: {:.1} % above {} % since {} (Unix s)",
            alert.instance_id,
            resource(alert.resource()),
            alert.value_percent,
            alert.threshold_percent,
            alert.raised_at.map_or(0, |t| t.seconds),
        );
    }
}
