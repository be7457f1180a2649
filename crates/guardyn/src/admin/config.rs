//! `guardyn admin config ...`: publish the signed client configuration and show the key
//! clients pin, signed in as an admin account through its SDK state file.

#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use crate::client::{ClientArgs, open};

/// Largest file `publish` reads (the server refuses payloads over 64 KiB anyway).
const MAX_FILE: u64 = 1 << 20;

/// `guardyn admin config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Publish FILE (a JSON object, at most 64 KiB) as the next client configuration version;
    /// devices with an open Listen stream are told at once. Roles: owner, admin.
    Publish {
        #[command(flatten)]
        args: ClientArgs,
        /// The configuration file.
        file: PathBuf,
        /// Why it changes (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Print the signing key clients pin (`ClientConfig::client_config_key`) and the latest
    /// versions. Roles: owner, admin, auditor.
    Show {
        #[command(flatten)]
        args: ClientArgs,
        /// How many versions to list, newest first (1..=100).
        #[arg(long, default_value_t = 5)]
        versions: u32,
    },
}

pub async fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Publish { args, file, reason } => {
            let len = std::fs::metadata(&file)
                .with_context(|| format!("reading {}", file.display()))?
                .len();
            if len > MAX_FILE {
                anyhow::bail!("{} is {len} bytes; the limit is 64 KiB", file.display());
            }
            let payload = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let client = open(&args).await?;
            let version = client.publish_client_config(&payload, &reason).await?;
            println!("published client configuration version {version}");
        }
        ConfigCommand::Show { args, versions } => {
            let client = open(&args).await?;
            let page = client.client_config_versions(versions, "").await?;
            println!("signing key id: {}", page.key_id);
            let hex: String = page.public_key.iter().map(|b| format!("{b:02x}")).collect();
            println!("public key (hex, pin this in clients): {hex}");
            if page.versions.is_empty() {
                println!("no configuration published yet");
            }
            for v in page.versions {
                let at = v.published_at.map_or(0, |t| t.seconds);
                println!(
                    "version {} published at {at} (Unix s) by {}: {}",
                    v.version, v.published_by, v.reason
                );
                println!("  {}", v.payload_json);
            }
        }
    }
    Ok(())
}
