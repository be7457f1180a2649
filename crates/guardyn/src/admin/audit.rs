//! `guardyn admin audit ...` and `guardyn admin security-events ...`: read and verify the
//! audit log, list and export client security events, signed in as an owner, admin or auditor
//! through its SDK state file.

#![allow(clippy::print_stdout)]

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use guardyn_proto::guardyn::admin::v1 as pb;

use crate::client::{ClientArgs, open};

/// `guardyn admin audit ...`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print audit entries, newest first unless --oldest-first.
    List {
        #[command(flatten)]
        args: ClientArgs,
        /// Only entries about this account id.
        #[arg(long)]
        account: Option<String>,
        /// Only actions by this admin account id.
        #[arg(long)]
        actor: Option<String>,
        /// Only entries of this kind (e.g. ROLE_CHANGED); repeatable.
        #[arg(long = "kind")]
        kinds: Vec<String>,
        #[command(flatten)]
        range: Range,
    },
    /// Verify the hash chain; exits non-zero naming the first broken link.
    Verify {
        #[command(flatten)]
        args: ClientArgs,
    },
}

/// `guardyn admin security-events ...`
#[derive(Debug, Subcommand)]
pub enum SecurityEventsCommand {
    /// Print security events, newest first unless --oldest-first.
    List {
        #[command(flatten)]
        args: ClientArgs,
        #[command(flatten)]
        filter: EventFilter,
        #[command(flatten)]
        range: Range,
    },
    /// Write every matching event as JSON lines (oldest first) to --output or stdout.
    Export {
        #[command(flatten)]
        args: ClientArgs,
        #[command(flatten)]
        filter: EventFilter,
        /// Only events at or after this Unix time (seconds).
        #[arg(long)]
        since: Option<i64>,
        /// Only events before this Unix time (seconds).
        #[arg(long)]
        until: Option<i64>,
        /// File to write (created or truncated); stdout when absent.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// Time window, order and count of a listing.
#[derive(Debug, Args)]
pub struct Range {
    /// Only entries at or after this Unix time (seconds).
    #[arg(long)]
    since: Option<i64>,
    /// Only entries before this Unix time (seconds).
    #[arg(long)]
    until: Option<i64>,
    /// Oldest first instead of newest first.
    #[arg(long)]
    oldest_first: bool,
    /// Most entries to print.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

impl Range {
    fn order(&self) -> i32 {
        if self.oldest_first {
            pb::ListOrder::OldestFirst.into()
        } else {
            pb::ListOrder::NewestFirst.into()
        }
    }
}

/// Which security events.
#[derive(Debug, Args)]
pub struct EventFilter {
    /// Only events of this account id.
    #[arg(long)]
    account: Option<String>,
    /// Only events of this type; repeatable.
    #[arg(long = "type", value_enum)]
    types: Vec<EventType>,
    /// Only events at least this severe.
    #[arg(long, value_enum)]
    min_severity: Option<Severity>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EventType {
    FailedUnlock,
    RootDetected,
    CertificatePinningFailure,
    SuspiciousLogin,
    TamperDetected,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

fn seconds(s: Option<i64>) -> Option<prost_types::Timestamp> {
    s.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 })
}

impl EventFilter {
    fn wire(&self, since: Option<i64>, until: Option<i64>) -> pb::SecurityEventFilter {
        use pb::SecurityEventType as T;
        use pb::SecuritySeverity as S;
        pb::SecurityEventFilter {
            account_id: self.account.clone().unwrap_or_default(),
            types: self
                .types
                .iter()
                .map(|t| match t {
                    EventType::FailedUnlock => T::FailedUnlock,
                    EventType::RootDetected => T::RootDetected,
                    EventType::CertificatePinningFailure => T::CertificatePinningFailure,
                    EventType::SuspiciousLogin => T::SuspiciousLogin,
                    EventType::TamperDetected => T::TamperDetected,
                })
                .map(Into::into)
                .collect(),
            min_severity: match self.min_severity {
                None => S::Unspecified,
                Some(Severity::Low) => S::Low,
                Some(Severity::Medium) => S::Medium,
                Some(Severity::High) => S::High,
                Some(Severity::Critical) => S::Critical,
            }
            .into(),
            since: seconds(since),
            until: seconds(until),
        }
    }
}

fn secs(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| t.seconds)
}

pub async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::List {
            args,
            account,
            actor,
            kinds,
            range,
        } => {
            let client = open(&args).await?;
            let mut request = pb::ListAuditEntriesRequest {
                page_size: u32::try_from(range.limit.min(500)).unwrap_or(500),
                page_token: String::new(),
                account_id: account.unwrap_or_default(),
                actor_account_id: actor.unwrap_or_default(),
                kinds,
                since: seconds(range.since),
                until: seconds(range.until),
                order: range.order(),
            };
            let mut printed = 0;
            loop {
                let page = client.audit_entries(request.clone()).await?;
                for e in page.entries {
                    if printed == range.limit {
                        return Ok(());
                    }
                    printed += 1;
                    let by = if e.actor_account_id.is_empty() {
                        String::new()
                    } else {
                        format!(" by {} ({})", e.actor_account_id, e.reason)
                    };
                    println!(
                        "#{} {} (Unix s) {} account={} device={}{by}: {}",
                        e.seq,
                        secs(e.time.as_ref()),
                        e.kind,
                        e.account_id,
                        e.device_id,
                        e.detail
                    );
                }
                if page.next_page_token.is_empty() || printed == range.limit {
                    return Ok(());
                }
                request.page_token = page.next_page_token;
            }
        }
        AuditCommand::Verify { args } => {
            let client = open(&args).await?;
            let v = client.verify_audit_log().await?;
            if v.ok {
                println!(
                    "audit chain intact: {} entries checked ({}..={})",
                    v.entries_checked, v.first_seq, v.last_seq
                );
                return Ok(());
            }
            let broken = v.broken.unwrap_or_default();
            anyhow::bail!(
                "audit chain broken at entry {}: {}",
                broken.seq,
                broken.description
            )
        }
    }
}

pub async fn security_events(command: SecurityEventsCommand) -> anyhow::Result<()> {
    match command {
        SecurityEventsCommand::List {
            args,
            filter,
            range,
        } => {
            let client = open(&args).await?;
            let mut request = pb::ListSecurityEventsRequest {
                page_size: u32::try_from(range.limit.min(500)).unwrap_or(500),
                page_token: String::new(),
                filter: Some(filter.wire(range.since, range.until)),
                order: range.order(),
            };
            let mut printed = 0;
            loop {
                let page = client.security_events(request.clone()).await?;
                for e in page.events {
                    if printed == range.limit {
                        return Ok(());
                    }
                    printed += 1;
                    let details: Vec<String> = e
                        .details
                        .iter()
                        .map(|(k, v)| format!("{k}={v:?}"))
                        .collect();
                    println!(
                        "{} {} (Unix s) {} {} account={} device={} {}",
                        e.event_id,
                        secs(e.received_at.as_ref()),
                        e.r#type().as_str_name(),
                        e.severity().as_str_name(),
                        e.account_id,
                        e.device_id,
                        details.join(" ")
                    );
                }
                if page.next_page_token.is_empty() || printed == range.limit {
                    return Ok(());
                }
                request.page_token = page.next_page_token;
            }
        }
        SecurityEventsCommand::Export {
            args,
            filter,
            since,
            until,
            output,
        } => {
            let client = open(&args).await?;
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut stream = client
                .export_security_events(filter.wire(since, until))
                .await?;
            while let Some(chunk) = stream.message().await? {
                out.write_all(&chunk.chunk)?;
            }
            out.flush()?;
        }
    }
    Ok(())
}
