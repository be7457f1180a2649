//! `guardyn admin claim-owner` and `guardyn admin users ...`: the first owner's claim and the
//! user lifecycle, signed in through an SDK state file. The enrolment code is a secret: it
//! comes from `GDN_OWNER_CODE` or a prompt, never from the command line.

#![allow(clippy::print_stdout)]

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use guardyn_proto::guardyn::admin::v1 as pb;

use crate::client::{ClientArgs, open, secret_from};

/// A role as the command line names it.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    Owner,
    Admin,
    Auditor,
}

impl From<RoleArg> for pb::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Owner => pb::Role::Owner,
            RoleArg::Admin => pb::Role::Admin,
            RoleArg::Auditor => pb::Role::Auditor,
        }
    }
}

/// `guardyn admin users ...`
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List accounts in username order. Roles: owner, admin, auditor.
    List {
        #[command(flatten)]
        args: ClientArgs,
        /// Only usernames starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Show one account. Roles: owner, admin, auditor.
    Show {
        #[command(flatten)]
        args: ClientArgs,
        account: String,
    },
    /// Suspend an account: its sessions end at once, sign-in is refused. Roles: owner, admin.
    Suspend {
        #[command(flatten)]
        args: ClientArgs,
        account: String,
        #[arg(long)]
        reason: String,
    },
    /// Lift a suspension. Roles: owner, admin.
    Unsuspend {
        #[command(flatten)]
        args: ClientArgs,
        account: String,
        #[arg(long)]
        reason: String,
    },
    /// Delete an account and everything the server holds for it. Roles: owner, admin.
    Delete {
        #[command(flatten)]
        args: ClientArgs,
        account: String,
        #[arg(long)]
        reason: String,
    },
    /// Turn an account's TOTP off and delete its recovery codes. Roles: owner, admin.
    ResetMfa {
        #[command(flatten)]
        args: ClientArgs,
        account: String,
        #[arg(long)]
        reason: String,
    },
    /// Grant and remove roles (owner and admin: owners only). Removing a role ends the
    /// account's sessions. Roles: owner, admin.
    Roles {
        #[command(flatten)]
        args: ClientArgs,
        account: String,
        #[arg(long, value_enum)]
        grant: Vec<RoleArg>,
        #[arg(long, value_enum)]
        revoke: Vec<RoleArg>,
        #[arg(long)]
        reason: String,
    },
    /// List an account's live sessions. Roles: owner, admin, auditor.
    Sessions {
        #[command(flatten)]
        args: ClientArgs,
        account: String,
    },
    /// End one session (--session) or every session of an account. Roles: owner, admin.
    Terminate {
        #[command(flatten)]
        args: ClientArgs,
        account: String,
        #[arg(long)]
        session: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Remove a device of an account. Roles: owner, admin.
    RemoveDevice {
        #[command(flatten)]
        args: ClientArgs,
        account: String,
        device: u32,
        #[arg(long)]
        reason: String,
    },
}

/// Redeem the bootstrap code with the signed-in account of `args`.
pub async fn claim_owner(args: ClientArgs) -> anyhow::Result<()> {
    let client = open(&args).await?;
    let code = secret_from("GDN_OWNER_CODE", "owner enrolment code")?;
    client
        .claim_owner(code.trim())
        .await
        .context("claiming the owner role")?;
    println!("{} is now the owner", client.account_id());
    Ok(())
}

fn print_account(a: &pb::AccountSummary) {
    let roles: Vec<&str> = a
        .roles()
        .map(|r| {
            r.as_str_name()
                .strip_prefix("ROLE_")
                .unwrap_or(r.as_str_name())
        })
        .collect();
    println!(
        "{}  {}  roles={}  devices={}  mfa={}  suspended={}  created={}",
        a.account_id,
        a.username,
        roles.join(",").to_lowercase(),
        a.device_count,
        a.mfa_enabled,
        a.suspended,
        a.created_at.map_or(0, |t| t.seconds),
    );
}

pub async fn run(command: UsersCommand) -> anyhow::Result<()> {
    match command {
        UsersCommand::List { args, prefix } => {
            let client = open(&args).await?;
            let mut token = String::new();
            loop {
                let page = client
                    .admin_list_accounts(pb::ListAccountsRequest {
                        page_size: 200,
                        page_token: token.clone(),
                        username_prefix: prefix.clone(),
                    })
                    .await?;
                page.accounts.iter().for_each(print_account);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        UsersCommand::Show { args, account } => {
            print_account(&open(&args).await?.admin_account(&account).await?);
        }
        UsersCommand::Suspend {
            args,
            account,
            reason,
        } => {
            let n = open(&args)
                .await?
                .admin_set_suspended(&account, true, &reason)
                .await?;
            println!("suspended {account}; {n} sessions ended");
        }
        UsersCommand::Unsuspend {
            args,
            account,
            reason,
        } => {
            open(&args)
                .await?
                .admin_set_suspended(&account, false, &reason)
                .await?;
            println!("unsuspended {account}");
        }
        UsersCommand::Delete {
            args,
            account,
            reason,
        } => {
            open(&args)
                .await?
                .admin_delete_account(&account, &reason)
                .await?;
            println!("deleted {account}");
        }
        UsersCommand::ResetMfa {
            args,
            account,
            reason,
        } => {
            let was = open(&args)
                .await?
                .admin_reset_mfa(&account, &reason)
                .await?;
            println!("two-factor authentication of {account} reset (was enabled: {was})");
        }
        UsersCommand::Roles {
            args,
            account,
            grant,
            revoke,
            reason,
        } => {
            let roles = open(&args)
                .await?
                .admin_set_roles(pb::SetRolesRequest {
                    account_id: account.clone(),
                    grant: grant
                        .into_iter()
                        .map(|r| pb::Role::from(r).into())
                        .collect(),
                    revoke: revoke
                        .into_iter()
                        .map(|r| pb::Role::from(r).into())
                        .collect(),
                    reason,
                })
                .await?;
            let names: Vec<String> = roles
                .iter()
                .map(|r| r.as_str_name().trim_start_matches("ROLE_").to_lowercase())
                .collect();
            println!("{account} now holds: {}", names.join(", "));
        }
        UsersCommand::Sessions { args, account } => {
            for s in open(&args).await?.admin_sessions(&account).await? {
                println!(
                    "{}  device {}  created={}  expires={}",
                    s.session_id,
                    s.device_id,
                    s.created_at.map_or(0, |t| t.seconds),
                    s.expires_at.map_or(0, |t| t.seconds),
                );
            }
        }
        UsersCommand::Terminate {
            args,
            account,
            session,
            reason,
        } => {
            let n = open(&args)
                .await?
                .admin_terminate_sessions(&account, session.as_deref(), &reason)
                .await?;
            println!("{n} sessions of {account} ended");
        }
        UsersCommand::RemoveDevice {
            args,
            account,
            device,
            reason,
        } => {
            open(&args)
                .await?
                .admin_remove_device(&account, device, &reason)
                .await?;
            println!("device {device} of {account} removed");
        }
    }
    Ok(())
}
