//! `guardyn admin policy ...`: show, change and list the versions of the policy, signed in as
//! an admin account through its SDK state file.

#![allow(clippy::print_stdout)]

use clap::Subcommand;
use guardyn_proto::guardyn::admin::v1 as pb;

use crate::client::{ClientArgs, open};

/// `guardyn admin policy ...`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the current policy, one `name = value` per line. Roles: owner, admin, auditor.
    Show {
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Change some values of the current policy and store the result as the next version
    /// (every instance applies it within seconds). VALUES are `name=value` with the names
    /// `show` prints, e.g. `mfa_required=true max_devices=3 password.min_length=14`.
    /// Roles: owner, admin.
    Set {
        #[command(flatten)]
        args: ClientArgs,
        /// Why it changes (recorded in the audit log).
        #[arg(long)]
        reason: String,
        /// `name=value` pairs.
        #[arg(required = true)]
        values: Vec<String>,
    },
    /// List every version, oldest first, with who set it and why. Roles: owner, admin,
    /// auditor.
    History {
        #[command(flatten)]
        args: ClientArgs,
    },
}

pub async fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Show { args } => {
            let current = open(&args).await?.policy().await?;
            print_version(&current);
            for (name, value) in fields(&current.policy.unwrap_or_default()) {
                println!("{name} = {value}");
            }
        }
        PolicyCommand::Set {
            args,
            reason,
            values,
        } => {
            let client = open(&args).await?;
            let mut policy = client.policy().await?.policy.unwrap_or_default();
            for pair in &values {
                apply(&mut policy, pair)?;
            }
            let stored = client.set_policy(policy, &reason).await?;
            let version = stored.policy.map_or(0, |p| p.version);
            println!("policy version {version} is current");
        }
        PolicyCommand::History { args } => {
            let client = open(&args).await?;
            let mut token = String::new();
            loop {
                let page = client.policy_versions(100, &token).await?;
                for v in &page.versions {
                    print_version(v);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
    }
    Ok(())
}

fn print_version(v: &pb::PolicyVersion) {
    let version = v.policy.as_ref().map_or(0, |p| p.version);
    if version == 0 {
        println!("version 0 (the defaults, never set)");
        return;
    }
    let at = v.set_at.as_ref().map_or(0, |t| t.seconds);
    println!(
        "version {version} set at {at} (Unix s) by {}: {}",
        v.set_by, v.reason
    );
}

/// Every value of `p` with its name.
fn fields(p: &pb::Policy) -> Vec<(&'static str, String)> {
    let pw = p.password.unwrap_or_default();
    let r = p.retention.unwrap_or_default();
    vec![
        ("password.min_length", pw.min_length.to_string()),
        ("password.check_breached", pw.check_breached.to_string()),
        ("mfa_required", p.mfa_required.to_string()),
        ("max_devices", p.max_devices.to_string()),
        ("heartbeat_min_secs", p.heartbeat_min_secs.to_string()),
        ("heartbeat_max_secs", p.heartbeat_max_secs.to_string()),
        ("max_message_bytes", p.max_message_bytes.to_string()),
        ("max_attachment_bytes", p.max_attachment_bytes.to_string()),
        ("retention.realtime_secs", r.realtime_secs.to_string()),
        ("retention.historical_secs", r.historical_secs.to_string()),
        ("retention.audit_secs", r.audit_secs.to_string()),
        (
            "retention.security_events_secs",
            r.security_events_secs.to_string(),
        ),
    ]
}

/// Set one `name=value` in `p` (ranges are the server's to check).
fn apply(p: &mut pb::Policy, pair: &str) -> anyhow::Result<()> {
    let (name, value) = pair
        .split_once('=')
        .map(|(n, v)| (n.trim(), v.trim()))
        .ok_or_else(|| anyhow::anyhow!("`{pair}`: expected name=value"))?;
    let num = || -> anyhow::Result<u64> {
        value
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}: `{value}` is not a number"))
    };
    let small = || -> anyhow::Result<u32> {
        u32::try_from(num()?).map_err(|_| anyhow::anyhow!("{name}: `{value}` is too large"))
    };
    let flag = || -> anyhow::Result<bool> {
        value
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}: `{value}` is not true or false"))
    };
    let pw = p.password.get_or_insert_with(Default::default);
    match name {
        "password.min_length" => pw.min_length = small()?,
        "password.check_breached" => pw.check_breached = flag()?,
        "mfa_required" => p.mfa_required = flag()?,
        "max_devices" => p.max_devices = small()?,
        "heartbeat_min_secs" => p.heartbeat_min_secs = small()?,
        "heartbeat_max_secs" => p.heartbeat_max_secs = small()?,
        "max_message_bytes" => p.max_message_bytes = num()?,
        "max_attachment_bytes" => p.max_attachment_bytes = num()?,
        _ => {
            let r = p.retention.get_or_insert_with(Default::default);
            match name {
                "retention.realtime_secs" => r.realtime_secs = num()?,
                "retention.historical_secs" => r.historical_secs = num()?,
                "retention.audit_secs" => r.audit_secs = num()?,
                "retention.security_events_secs" => r.security_events_secs = num()?,
                _ => {
                    anyhow::bail!("unknown policy value `{name}` (see `guardyn admin policy show`)")
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn set_values_change_only_what_they_name_and_bad_ones_are_refused() {
        let mut p = pb::Policy {
            max_devices: 6,
            ..Default::default()
        };
        apply(&mut p, "mfa_required=true").unwrap();
        apply(&mut p, "password.min_length = 14").unwrap();
        apply(&mut p, "retention.historical_secs=3600").unwrap();
        assert!(p.mfa_required);
        assert_eq!(p.max_devices, 6);
        assert_eq!(p.password.unwrap().min_length, 14);
        assert_eq!(p.retention.unwrap().historical_secs, 3600);
        assert!(apply(&mut p, "max_devices").is_err());
        assert!(apply(&mut p, "max_devices=many").is_err());
        assert!(apply(&mut p, "mfa_required=yes").is_err());
        assert!(apply(&mut p, "colour=blue").is_err());
        let names: Vec<_> = fields(&p).into_iter().map(|(n, _)| n).collect();
        for name in names {
            assert!(
                apply(&mut p, &format!("{name}=1")).is_ok()
                    || apply(&mut p, &format!("{name}=true")).is_ok(),
                "{name} is shown but cannot be set"
            );
        }
    }
}
