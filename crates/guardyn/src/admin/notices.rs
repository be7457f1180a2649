//! `guardyn admin notices ...`: send a system notice (owner, admin) and list the notices in
//! force for the signed-in account, through its SDK state file.

#![allow(clippy::print_stdout)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Subcommand, ValueEnum};
use guardyn_proto::guardyn::admin::v1 as pb;

use crate::client::{ClientArgs, open};

/// `--severity`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl From<Severity> for pb::SystemNoticeSeverity {
    fn from(s: Severity) -> Self {
        match s {
            Severity::Info => Self::Info,
            Severity::Warning => Self::Warning,
            Severity::Critical => Self::Critical,
        }
    }
}

/// `guardyn admin notices ...`
#[derive(Debug, Subcommand)]
pub enum NoticesCommand {
    /// Send TEXT (1..=1000 characters) to every account (--all) or to the accounts named by
    /// --account; connected devices are told at once, others see it in their list until it
    /// expires. Roles: owner, admin.
    Send {
        #[command(flatten)]
        args: ClientArgs,
        /// What users are told.
        text: String,
        /// Send to every account.
        #[arg(
            long,
            conflicts_with = "accounts",
            required_unless_present = "accounts"
        )]
        all: bool,
        /// An account id to send to; repeat for more (at most 1000).
        #[arg(long = "account")]
        accounts: Vec<String>,
        #[arg(long, value_enum, default_value_t = Severity::Info)]
        severity: Severity,
        /// Why it is sent (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// How long it is shown, in seconds (default and at most 30 days).
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
    /// The notices in force for the signed-in account, newest first.
    List {
        #[command(flatten)]
        args: ClientArgs,
    },
}

pub async fn run(command: NoticesCommand) -> anyhow::Result<()> {
    match command {
        NoticesCommand::Send {
            args,
            text,
            all,
            accounts,
            severity,
            reason,
            expires_in_secs,
        } => {
            let expires_at = expires_in_secs.map(|s| {
                let at = SystemTime::now() + Duration::from_secs(s);
                let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
                prost_types::Timestamp {
                    seconds: i64::try_from(secs).unwrap_or(i64::MAX),
                    nanos: 0,
                }
            });
            let request = pb::SendSystemNoticeRequest {
                all_accounts: all,
                account_ids: accounts,
                severity: pb::SystemNoticeSeverity::from(severity).into(),
                text,
                reason,
                expires_at,
            };
            let sent = open(&args).await?.send_system_notice(request).await?;
            println!("sent system notice {}", sent.notice_id);
        }
        NoticesCommand::List { args } => {
            let client = open(&args).await?;
            let mut token = String::new();
            loop {
                let (notices, next) = client.system_notices(100, &token).await?;
                for n in notices {
                    println!(
                        "{}  {:?}  sent_at_ms={}  expires_at_ms={}  {}",
                        n.notice_id, n.severity, n.sent_at_ms, n.expires_at_ms, n.text
                    );
                }
                if next.is_empty() {
                    break;
                }
                token = next;
            }
        }
    }
    Ok(())
}
