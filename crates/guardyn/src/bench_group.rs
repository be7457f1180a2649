//! The group fan-out phase of `guardyn bench`: one MLS group of up to [`MAX_GROUP_SIZE`]
//! devices, delivery time to all members, and (with `--metrics`) the server's storage writes
//! per group message.
//!
//! Members beyond the 2 x `--pairs` clients of the other phases are extra one-device accounts
//! registered here ([`register_devices`], bounded concurrency), all sharing the bench's
//! channels: never one connection per device. They are added in commits of `--group-add-chunk`
//! devices, so each commit (an Add proposal with the device's KeyPackage per added device)
//! stays under the server's `messaging.max_mls_message_bytes` and each Welcome under
//! `max_welcome_bytes` (neither carries the ratchet tree: the server serves it); when the
//! server refuses a commit the phase fails naming the size reached and the server's error.
//!
//! Every member (but the sender) listens; one unmeasured warm-up message brings every member
//! to the group's last epoch and lets it fetch the pinned keys of the others (the SDK does
//! that once per account before it processes a group's first message, so this is O(size²)
//! key-directory calls across the members), then `--group-rounds` messages are sent one at a
//! time, each timed until the last member decrypted it. With `--group-wire-only` no member
//! joins with the SDK (each would verify the whole tree: O(size²) on the bench's cores) and
//! only the wire rounds run.
//!
//! Storage writes come from the server's `guardyn_storage_*_total` counters, scraped once the
//! warm-up settled and again after the rounds once they stop moving (members acknowledge
//! after they decrypt, and those writes belong to the message): the deltas cover the sends,
//! the fan-out and every member's acknowledgement, divided by the rounds (per group message)
//! and by rounds x (size - 1) (per member delivery). Sender-side and member-side writes are
//! not separable by scraping; other traffic on the server in the meantime counts too.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::Context as _;
use guardyn_sdk::{Channel, Client, Event};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::bench_group_wire::{WireArgs, WireReport, WireSession};
use crate::bench_idle::register_devices;
use crate::bench_stats::{Note, Stats, stamp, unstamp};

/// The largest `--group-size` (the server's default `messaging.max_group_members`).
pub(crate) const MAX_GROUP_SIZE: usize = 10_000;
/// Listen streams opened at once.
const LISTEN_CONCURRENCY: usize = 64;
/// The warm-up fails when no member reports progress for this long, plus
/// [`WARM_UP_PER_MEMBER`] per member: every member fetches every other member's pinned keys
/// before it decrypts, and they all finish at about the same time (minutes for 1,000
/// members against a debug build).
const WARM_UP_IDLE: Duration = Duration::from_secs(300);
const WARM_UP_PER_MEMBER: Duration = Duration::from_secs(1);
/// A measured round fails when no member reports progress for this long.
const ROUND_IDLE: Duration = Duration::from_secs(30);
/// Tag of the unmeasured warm-up message (rounds are tagged 0..).
const WARM_UP_TAG: u64 = u64::MAX;

/// The server's storage counters the bench reads, by the name used in the report.
const SERIES: [(&str, &str); 7] = [
    ("kv_commits", "guardyn_storage_kv_commits_total"),
    ("kv_keys_written", "guardyn_storage_kv_keys_written_total"),
    ("kv_keys_deleted", "guardyn_storage_kv_keys_deleted_total"),
    ("log_appends", "guardyn_storage_log_appends_total"),
    (
        "log_entries_appended",
        "guardyn_storage_log_entries_appended_total",
    ),
    (
        "log_entries_deleted",
        "guardyn_storage_log_entries_deleted_total",
    ),
    ("written_bytes", "guardyn_storage_written_bytes_total"),
];

/// One scrape of [`SERIES`], in that order (summed over series of the same name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Totals([u64; SERIES.len()]);

impl Totals {
    fn get(&self, name: &str) -> u64 {
        SERIES
            .iter()
            .position(|(n, _)| *n == name)
            .map_or(0, |i| self.0[i])
    }

    fn since(&self, before: &Totals) -> Totals {
        let mut d = Totals::default();
        for (i, slot) in d.0.iter_mut().enumerate() {
            *slot = self.0[i].saturating_sub(before.0[i]);
        }
        d
    }

    /// The writes a group message costs: KV keys put, log entries appended and deleted.
    fn writes(&self) -> u64 {
        self.get("kv_keys_written")
            + self.get("log_entries_appended")
            + self.get("log_entries_deleted")
    }
}

/// Parses the OpenMetrics text; `None` when it has none of the storage counters (a server
/// without them).
fn parse_totals(text: &str) -> Option<Totals> {
    let mut t = Totals::default();
    let mut seen = false;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(series), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Some(i) = SERIES.iter().position(|(_, s)| *s == name)
            && let Ok(v) = value.parse::<f64>()
        {
            t.0[i] += v as u64;
            seen = true;
        }
    }
    seen.then_some(t)
}

/// GETs `url` (plain `http://host:port/path`) and returns the storage counters. HTTP/1.0, so
/// the body is neither chunked nor kept alive: read to the end and split off the head.
async fn scrape(url: &str) -> anyhow::Result<Totals> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--metrics must be an http:// URL (got {url})"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/metrics"),
    };
    let io = async {
        let mut stream = TcpStream::connect(authority).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .with_context(|| format!("scraping {url}: timed out"))?
        .with_context(|| format!("scraping {url}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("scraping {url}: not an HTTP response"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        anyhow::bail!("scraping {url}: {status}");
    }
    parse_totals(body).with_context(|| {
        format!("{url} has no guardyn_storage_*_total counters (a server older than the bench?)")
    })
}

/// Scrapes until two scrapes half a second apart agree (the members' acknowledgements have
/// landed), for at most ten seconds; returns the last scrape.
async fn settled(url: &str) -> anyhow::Result<Totals> {
    let mut last = scrape(url).await?;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = scrape(url).await?;
        if now == last {
            break;
        }
        last = now;
    }
    Ok(last)
}

/// A group whose members all listen, ready for the measured rounds.
pub(crate) struct ReadyGroup {
    owner: Client,
    group: Vec<u8>,
    size: usize,
    add_commits: usize,
    add_chunk: usize,
    setup_secs: f64,
    notes: mpsc::UnboundedReceiver<Note>,
    pumps: Vec<JoinHandle<()>>,
    // Kept alive so their state (and their Listen streams' clients) outlive the rounds.
    _members: Vec<Client>,
    channels: Vec<Channel>,
    /// (username, device id) of the members registered here: read at the wire afterwards.
    wire_members: Vec<(String, u32)>,
    /// No SDK member joined: only the wire rounds run.
    wire_only: bool,
}

/// Options of the group phase.
pub(crate) struct GroupSetup<'a> {
    /// The other phases' clients; the first `size` of them are members.
    pub clients: &'a [Client],
    /// Every channel of the bench: extra members share them.
    pub channels: Vec<Channel>,
    pub size: usize,
    pub add_chunk: usize,
    pub body: usize,
    pub base: Instant,
    /// Members do not join with the SDK; the group is timed at the wire only.
    pub wire_only: bool,
}

/// Registers the extra members, builds the group in chunked commits, opens every member's
/// Listen stream and delivers one warm-up message to all of them.
pub(crate) async fn setup(o: GroupSetup<'_>) -> anyhow::Result<ReadyGroup> {
    let started = Instant::now();
    let size = o.size.clamp(2, MAX_GROUP_SIZE);
    let mut members: Vec<Client> = o.clients.iter().take(size).cloned().collect();
    let extra = size.saturating_sub(members.len());
    let mut wire_members = Vec::with_capacity(extra);
    if extra > 0 {
        eprintln!("registering {extra} more group members...");
        for (name, client) in register_devices(&o.channels, extra, "gm").await? {
            wire_members.push((name, client.device_id()));
            members.push(client);
        }
    }
    let Some(owner) = members.first().cloned() else {
        anyhow::bail!("no group members");
    };
    let group = owner.create_group().await?;
    let accounts: Vec<&str> = members[1..].iter().map(Client::account_id).collect();
    let add_chunk = o.add_chunk.max(1);
    let mut reached = 1;
    let mut add_commits = 0;
    for chunk in accounts.chunks(add_chunk) {
        if let Err(e) = owner.add_to_group(&group, chunk).await {
            anyhow::bail!(
                "the group reached {reached} of {size} devices: the server refused the commit \
                 adding {} more: {e}. The commit and its Welcome grow with --group-add-chunk \
                 (a KeyPackage and a Welcome secret per added device), against \
                 messaging.max_mls_message_bytes and max_welcome_bytes",
                chunk.len()
            );
        }
        reached += chunk.len();
        add_commits += 1;
        if size > 100 {
            eprintln!("group: {reached} of {size} devices");
        }
    }

    let (tx, mut notes) = mpsc::unbounded_channel::<Note>();
    let mut pumps = Vec::with_capacity(size - 1);
    let mut opening = JoinSet::new();
    let listeners = if o.wire_only { &[][..] } else { &members[1..] };
    for m in listeners {
        let m = m.clone();
        if opening.len() >= LISTEN_CONCURRENCY
            && let Some(done) = opening.join_next().await
        {
            pumps.push(done??);
        }
        let (tx, base) = (tx.clone(), o.base);
        opening.spawn(async move {
            let mut inbox = m.listen().await?;
            Ok::<_, guardyn_sdk::SdkError>(tokio::spawn(async move {
                while let Some(e) = inbox.next().await {
                    if let Event::GroupMessage { message, .. } = e
                        && let Some(note) = unstamp(base, &message.body)
                    {
                        let _ = tx.send(note);
                    }
                }
            }))
        });
    }
    while let Some(done) = opening.join_next().await {
        pumps.push(done??);
    }
    drop(tx);

    if !o.wire_only {
        eprintln!("group of {size}: warm-up message to every member...");
        owner
            .send_group(&group, &stamp(o.base, WARM_UP_TAG, o.body))
            .await?;
        await_all(
            &mut notes,
            WARM_UP_TAG,
            size - 1,
            WARM_UP_IDLE + WARM_UP_PER_MEMBER * u32::try_from(size).unwrap_or(u32::MAX),
            &mut Vec::new(),
        )
        .await
        .context("group warm-up")?;
    }
    Ok(ReadyGroup {
        owner,
        group,
        size,
        add_commits,
        add_chunk,
        setup_secs: started.elapsed().as_secs_f64(),
        notes,
        pumps,
        _members: members,
        channels: o.channels.clone(),
        wire_members,
        wire_only: o.wire_only,
    })
}

/// Waits until `want` members reported message `tag`, pushing each delivery's latency.
async fn await_all(
    notes: &mut mpsc::UnboundedReceiver<Note>,
    tag: u64,
    want: usize,
    idle: Duration,
    deliveries: &mut Vec<Duration>,
) -> anyhow::Result<()> {
    let mut got = 0;
    while got < want {
        match tokio::time::timeout(idle, notes.recv()).await {
            Ok(Some((t, d))) if t == tag => {
                got += 1;
                deliveries.push(d);
            }
            Ok(Some(_)) => {}
            _ => anyhow::bail!("only {got} of {want} members received message {tag}"),
        }
    }
    Ok(())
}

/// Storage write deltas over the measured rounds.
pub(crate) struct StorageDelta {
    rounds: usize,
    deliveries: usize,
    delta: Totals,
}

impl StorageDelta {
    fn per_message(&self) -> f64 {
        self.delta.writes() as f64 / self.rounds.max(1) as f64
    }

    fn per_delivery(&self) -> f64 {
        self.delta.writes() as f64 / self.deliveries.max(1) as f64
    }

    fn json(&self) -> serde_json::Value {
        let per = |v: u64| v as f64 / self.rounds.max(1) as f64;
        let deltas: serde_json::Map<_, _> = SERIES
            .iter()
            .map(|(n, _)| (n.to_string(), self.delta.get(n).into()))
            .collect();
        let per_message: serde_json::Map<_, _> = SERIES
            .iter()
            .map(|(n, _)| (n.to_string(), per(self.delta.get(n)).into()))
            .collect();
        serde_json::json!({
            "rounds": self.rounds,
            "member_deliveries": self.deliveries,
            "writes": self.delta.writes(),
            "deltas": deltas,
            "per_message": per_message,
        })
    }
}

/// The group phase's figures.
pub(crate) struct GroupReport {
    pub size: usize,
    add_commits: usize,
    add_chunk: usize,
    setup_secs: f64,
    /// Per round: send until the last member decrypted it.
    pub fanout: Stats,
    /// Per member delivery: send until that member decrypted it.
    delivery: Stats,
    storage: Option<StorageDelta>,
    /// The same group timed at the wire, when it has members registered for the phase.
    pub wire: Option<WireReport>,
}

impl ReadyGroup {
    /// Sends `rounds` messages one at a time (until `deadline`), each timed until every member
    /// decrypted it; with `metrics`, the server's storage writes over them.
    pub(crate) async fn run(
        &mut self,
        rounds: usize,
        body: usize,
        base: Instant,
        deadline: Duration,
        metrics: Option<&str>,
    ) -> anyhow::Result<GroupReport> {
        if self.wire_only {
            return Ok(GroupReport {
                size: self.size,
                add_commits: self.add_commits,
                add_chunk: self.add_chunk,
                setup_secs: self.setup_secs,
                fanout: Stats::of(Vec::new(), 0.0),
                delivery: Stats::of(Vec::new(), 0.0),
                storage: None,
                wire: None,
            });
        }
        let before = match metrics {
            Some(url) => Some(settled(url).await?),
            None => None,
        };
        let want = self.size - 1;
        let mut fanout = Vec::new();
        let mut deliveries = Vec::with_capacity(rounds * want);
        let start = Instant::now();
        for round in 0..rounds as u64 {
            if start.elapsed() > deadline {
                break;
            }
            let t = Instant::now();
            self.owner
                .send_group(&self.group, &stamp(base, round, body))
                .await?;
            await_all(&mut self.notes, round, want, ROUND_IDLE, &mut deliveries)
                .await
                .with_context(|| format!("group round {round}"))?;
            fanout.push(t.elapsed());
        }
        let secs = start.elapsed().as_secs_f64();
        let done = fanout.len();
        let storage = match (metrics, before) {
            (Some(url), Some(before)) => Some(StorageDelta {
                rounds: done,
                deliveries: done * want,
                delta: settled(url).await?.since(&before),
            }),
            _ => None,
        };
        for p in &self.pumps {
            p.abort();
        }
        Ok(GroupReport {
            size: self.size,
            add_commits: self.add_commits,
            add_chunk: self.add_chunk,
            setup_secs: self.setup_secs,
            fanout: Stats::of(fanout, secs),
            delivery: Stats::of(deliveries, secs),
            storage,
            wire: None,
        })
    }

    fn wire_args(&self, rounds: usize, body: usize, base: Instant) -> WireArgs<'_> {
        WireArgs {
            channels: &self.channels,
            owner: &self.owner,
            group: &self.group,
            members: &self.wire_members,
            rounds,
            body,
            base,
        }
    }

    /// Opens the wire members' streams ([`crate::bench_group_wire`]): the members registered
    /// here as bare Listen streams; `None` when there are none (a group of pair clients only).
    pub(crate) async fn open_wire(&self) -> anyhow::Result<Option<WireSession>> {
        if self.wire_members.is_empty() {
            return Ok(None);
        }
        eprintln!(
            "group of {}: {} members as bare Listen streams...",
            self.size,
            self.wire_members.len()
        );
        let session = crate::bench_group_wire::open(&self.wire_args(0, 0, Instant::now())).await?;
        Ok(Some(session))
    }

    /// Times the same group at the wire; when only the wire rounds run, `metrics` is scraped
    /// around them for the storage writes per message.
    pub(crate) async fn wire_rounds(
        &self,
        session: WireSession,
        report: &mut GroupReport,
        rounds: usize,
        (body, base): (usize, Instant),
        metrics: Option<&str>,
    ) -> anyhow::Result<()> {
        let metrics = metrics.filter(|_| self.wire_only);
        let before = match metrics {
            Some(url) => Some(settled(url).await?),
            None => None,
        };
        let wire = session.rounds(&self.wire_args(rounds, body, base)).await?;
        if let (Some(url), Some(before)) = (metrics, before) {
            report.storage = Some(StorageDelta {
                rounds: wire.fanout.count,
                deliveries: wire.delivery.count,
                delta: settled(url).await?.since(&before),
            });
        }
        report.wire = Some(wire);
        Ok(())
    }
}

impl GroupReport {
    /// The `group` object of `--json`.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "size": self.size,
            "add_commits": self.add_commits,
            "add_chunk": self.add_chunk,
            "setup_secs": self.setup_secs,
            "fanout": self.fanout.json(),
            "delivery": self.delivery.json(),
            "storage_writes_per_group_message": self.storage.as_ref().map(StorageDelta::per_message),
            "storage_writes_per_member_delivery": self.storage.as_ref().map(StorageDelta::per_delivery),
            "storage": self.storage.as_ref().map(StorageDelta::json),
            "wire": self.wire.as_ref().map(|w| serde_json::json!({
                "members": w.members,
                "fanout": w.fanout.json(),
                "delivery": w.delivery.json(),
            })),
        })
    }

    /// The human-readable lines after the phase table.
    pub(crate) fn print(&self) {
        let d = &self.delivery;
        println!(
            "group of {} devices: built in {} commits of up to {} in {:.1} s; per member \
             delivery p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.size,
            self.add_commits,
            self.add_chunk,
            self.setup_secs,
            d.p50_ms,
            d.p99_ms,
            d.max_ms
        );
        if let Some(w) = &self.wire {
            println!(
                "at the wire ({} members as bare Listen streams): fan-out to all p50 {:.2} ms, \
                 p99 {:.2} ms, max {:.2} ms; per member delivery p50 {:.2} ms",
                w.members, w.fanout.p50_ms, w.fanout.p99_ms, w.fanout.max_ms, w.delivery.p50_ms
            );
        }
        if let Some(s) = &self.storage {
            let per = |n: &str| s.delta.get(n) as f64 / s.rounds.max(1) as f64;
            println!(
                "storage writes per group message: {:.1} ({:.3} per member delivery) = KV keys \
                 written {:.1} + log entries appended {:.1} + log entries deleted {:.1}; also \
                 KV commits {:.1}, KV keys deleted {:.1}, log appends {:.1}, {:.0} bytes \
                 written (over {} messages, member acks included)",
                s.per_message(),
                s.per_delivery(),
                per("kv_keys_written"),
                per("log_entries_appended"),
                per("log_entries_deleted"),
                per("kv_commits"),
                per("kv_keys_deleted"),
                per("log_appends"),
                per("written_bytes"),
                s.rounds
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn storage_counters_are_read_from_the_exposition_and_summed_by_name() {
        let text = "# TYPE guardyn_storage_kv_keys_written counter\n\
            guardyn_storage_kv_keys_written_total{instance=\"a\"} 10\n\
            guardyn_storage_kv_keys_written_total{instance=\"b\"} 5\n\
            guardyn_storage_log_entries_appended_total{instance=\"a\"} 7\n\
            guardyn_storage_log_entries_deleted_total{instance=\"a\"} 3\n\
            guardyn_grpc_server_in_flight{instance=\"a\"} 2\n\
            # EOF\n";
        let t = parse_totals(text).unwrap();
        assert_eq!(t.get("kv_keys_written"), 15);
        assert_eq!(t.writes(), 25);
        let later = parse_totals(&text.replace("} 7", "} 17")).unwrap();
        assert_eq!(later.since(&t).writes(), 10);
        assert!(parse_totals("guardyn_grpc_server_in_flight 1\n").is_none());
    }
}
