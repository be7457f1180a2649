//! Host and process figures through `sysinfo`, read on a blocking thread (it reads `/proc` and
//! walks the data directory).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sysinfo::{Disks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// One reading.
#[derive(Clone, Debug, Default)]
pub(super) struct HostSample {
    pub cpu_percent: f64,
    pub process_cpu_percent: f64,
    pub process_rss_bytes: u64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub storage_bytes: Option<u64>,
}

/// Keeps the previous reading: CPU use is the change since the last refresh.
#[derive(Debug)]
pub(super) struct Sampler {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    system: System,
    pid: Option<Pid>,
    data_dir: PathBuf,
    embedded: bool,
}

impl Sampler {
    pub fn new(data_dir: PathBuf, embedded: bool) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                system: System::new(),
                pid: sysinfo::get_current_pid().ok(),
                data_dir,
                embedded,
            })),
        }
    }

    pub async fn sample(&mut self) -> HostSample {
        let state = self.state.clone();
        let read = tokio::task::spawn_blocking(move || {
            state.lock().unwrap_or_else(PoisonError::into_inner).read()
        });
        match read.await {
            Ok(sample) => sample,
            Err(e) => {
                tracing::warn!(error = %e, "reading the host figures failed");
                HostSample::default()
            }
        }
    }
}

impl State {
    fn read(&mut self) -> HostSample {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        let mut out = HostSample {
            cpu_percent: f64::from(self.system.global_cpu_usage()),
            memory_used_bytes: self.system.used_memory(),
            memory_total_bytes: self.system.total_memory(),
            ..HostSample::default()
        };
        if let Some(pid) = self.pid {
            self.system.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                false,
                ProcessRefreshKind::nothing().with_cpu().with_memory(),
            );
            if let Some(p) = self.system.process(pid) {
                out.process_cpu_percent = f64::from(p.cpu_usage());
                out.process_rss_bytes = p.memory();
            }
        }
        if let Some((used, total)) = disk_of(&self.data_dir) {
            out.disk_used_bytes = used;
            out.disk_total_bytes = total;
        }
        if self.embedded {
            out.storage_bytes = Some(dir_size(&self.data_dir));
        }
        out
    }
}

/// Used and total bytes of the filesystem holding `dir`: the mount point that is the longest
/// prefix of its canonical path.
fn disk_of(dir: &Path) -> Option<(u64, u64)> {
    let dir = dir.canonicalize().ok()?;
    let disks = Disks::new_with_refreshed_list();
    disks
        .list()
        .iter()
        .filter(|d| dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| {
            (
                d.total_space().saturating_sub(d.available_space()),
                d.total_space(),
            )
        })
}

/// Bytes of the regular files under `dir` (symlinks not followed); unreadable entries count 0.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_dir() => pending.push(entry.path()),
                Ok(t) if t.is_file() => total += entry.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_sample_reads_the_host_the_process_and_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), [0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("b"), [0u8; 24]).unwrap();
        let mut sampler = Sampler::new(dir.path().to_path_buf(), true);
        let s = sampler.sample().await;
        assert_eq!(s.storage_bytes, Some(1024));
        assert!(s.memory_total_bytes > 0 && s.memory_used_bytes <= s.memory_total_bytes);
        assert!(s.process_rss_bytes > 0, "{s:?}");
        assert!(
            s.disk_total_bytes > 0 && s.disk_used_bytes <= s.disk_total_bytes,
            "{s:?}"
        );
        let networked = Sampler::new(dir.path().to_path_buf(), false).sample().await;
        assert_eq!(networked.storage_bytes, None);
    }
}
