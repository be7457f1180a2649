//! What the load generators read about a local server process from `/proc`: resident memory,
//! threads and CPU time, so a benchmark reports cost per unit of work (messages per server
//! CPU-second, RSS per stream) next to its throughput.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`). The kernel's ABI fixes it
/// at 100 on every architecture Linux exports to user space with a stable value.
const USER_HZ: f64 = 100.0;

/// A numeric field of `/proc/<pid>/status` (`VmRSS:` and `VmHWM:` in KiB, `Threads:`).
pub fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// User plus system CPU seconds the process has used so far.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: count from its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// One reading of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    pub cpu_secs: f64,
    pub rss_kib: u64,
    pub threads: u64,
}

impl ProcSample {
    pub fn read(pid: u32) -> Option<Self> {
        Some(Self {
            cpu_secs: cpu_secs(pid)?,
            rss_kib: status_field(pid, "VmRSS:")?,
            threads: status_field(pid, "Threads:")?,
        })
    }

    /// [`Self::read`], failing when the process cannot be read (gone, or not ours to read).
    pub fn require(pid: u32) -> anyhow::Result<Self> {
        Self::read(pid).ok_or_else(|| anyhow::anyhow!("cannot read /proc/{pid}"))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "cpu_secs": self.cpu_secs, "rss_kib": self.rss_kib, "threads": self.threads,
        })
    }
}

/// Samples a process's RSS and thread count every 20 ms until finished; keeps the maxima.
#[derive(Debug)]
pub struct Sampler {
    peak_kib: Arc<AtomicU64>,
    peak_threads: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    pub fn start(pid: Option<u32>) -> Self {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let peak_threads = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = pid.map(|pid| {
            let (kib, threads, stop) = (peak_kib.clone(), peak_threads.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(v) = status_field(pid, "VmRSS:") {
                        kib.fetch_max(v, Ordering::Relaxed);
                    }
                    if let Some(v) = status_field(pid, "Threads:") {
                        threads.fetch_max(v, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        });
        Self {
            peak_kib,
            peak_threads,
            stop,
            task,
        }
    }

    /// (peak RSS KiB, peak threads)
    pub fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.join();
        }
        (
            self.peak_kib.load(Ordering::Relaxed),
            self.peak_threads.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let before = ProcSample::read(pid).unwrap();
        assert!(before.rss_kib > 0 && before.threads >= 1);
        // Burn some CPU so the counter must move.
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(150) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let after = ProcSample::read(pid).unwrap();
        assert!(after.cpu_secs > before.cpu_secs, "{before:?} -> {after:?}");
    }
}
