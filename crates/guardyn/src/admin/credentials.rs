//! `guardyn admin credentials ...`: API credentials for bots and integrations, signed in as an
//! owner or admin account through its SDK state file. The secret is printed once, by `issue`
//! and `rotate`, and cannot be read back.

#![allow(clippy::print_stdout)]

use clap::Subcommand;
use guardyn_proto::guardyn::admin::v1 as pb;

use crate::client::{ClientArgs, open};

/// `guardyn admin credentials ...`
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Issue a credential and print its bearer value (`gdc_<id>.<secret>`) once. Scopes:
    /// `admin.read` (read-only admin RPCs), `monitoring`, `notices.send` (SendSystemNotice).
    Issue {
        #[command(flatten)]
        args: ClientArgs,
        /// A name for people (e.g. the bot's).
        #[arg(long)]
        name: String,
        /// A scope; repeat for more.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// How long it stays valid, in seconds.
        #[arg(long, default_value_t = 90 * 24 * 3600)]
        valid_for_secs: u64,
    },
    /// List credentials (never their secrets).
    List {
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Replace a credential's secret and print the new bearer value once; the old one is
    /// refused from now on.
    Rotate {
        #[command(flatten)]
        args: ClientArgs,
        credential_id: String,
    },
    /// Revoke a credential on every instance at once.
    Revoke {
        #[command(flatten)]
        args: ClientArgs,
        credential_id: String,
    },
}

pub async fn run(command: CredentialsCommand) -> anyhow::Result<()> {
    match command {
        CredentialsCommand::Issue {
            args,
            name,
            scopes,
            valid_for_secs,
        } => {
            let issued = open(&args)
                .await?
                .issue_credential(&name, scopes, valid_for_secs)
                .await?;
            print_credential(&issued.credential.unwrap_or_default());
            println!("secret (shown once): {}", issued.secret);
        }
        CredentialsCommand::List { args } => {
            for c in open(&args).await?.credentials().await? {
                print_credential(&c);
            }
        }
        CredentialsCommand::Rotate {
            args,
            credential_id,
        } => {
            let rotated = open(&args).await?.rotate_credential(&credential_id).await?;
            print_credential(&rotated.credential.unwrap_or_default());
            println!("secret (shown once): {}", rotated.secret);
        }
        CredentialsCommand::Revoke {
            args,
            credential_id,
        } => {
            let revoked = open(&args).await?.revoke_credential(&credential_id).await?;
            print_credential(&revoked);
        }
    }
    Ok(())
}

fn print_credential(c: &pb::Credential) {
    let secs = |t: &Option<prost_types::Timestamp>| t.as_ref().map_or(0, |t| t.seconds);
    let state = match &c.revoked_at {
        Some(t) => format!("revoked at {}", t.seconds),
        None => "in force".to_owned(),
    };
    println!(
        "{}  {:?}  scopes={}  issued_by={}  expires_at={}  {state}",
        c.credential_id,
        c.name,
        c.scopes.join(","),
        c.issued_by,
        secs(&c.expires_at)
    );
}
