//! `guardyn certs`: the certificate authority of the service mesh (rcgen, no OpenSSL). Servers
//! and mesh clients reload what it writes (`guardyn_common::tls_reload`), so `rotate` and
//! `revoke` take effect without a restart.

mod ca;
mod files;

use std::path::PathBuf;

use clap::Subcommand;

pub use ca::{Issued, Rotation, crl_path, existing, init, issue, revoke, root_path, rotate};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create an offline root and an intermediate CA (and an empty CRL) in --dir.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Issue a certificate for a service or instance: <NAME>.pem (chain) and <NAME>.key.
    Issue {
        name: String,
        /// DNS name or IP address the certificate is valid for (repeatable; default NAME).
        #[arg(long = "san", value_name = "NAME_OR_IP")]
        sans: Vec<String>,
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Renew <NAME> (same SANs, new key) when it expires within --window-days, or --force.
    Rotate {
        name: String,
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, default_value_t = 30)]
        window_days: u32,
        #[arg(long, default_value_t = 90)]
        days: u32,
        #[arg(long)]
        force: bool,
    },
    /// Revoke a certificate by name or hex serial and publish a new crl.pem.
    Revoke {
        /// An issued certificate's name, or a serial number in hex.
        target: String,
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Run one `certs` subcommand; the report goes to stdout for the operator.
pub fn run(command: CertsCommand) -> anyhow::Result<String> {
    Ok(match command {
        CertsCommand::Init { dir } => {
            init(&dir)?;
            format!(
                "CA created in {}: trust anchor {} (mesh.tls.ca_path), CRL {} (crl_path); \
                 move root.key offline",
                dir.display(),
                root_path(&dir).display(),
                crl_path(&dir).display()
            )
        }
        CertsCommand::Issue {
            name,
            sans,
            dir,
            days,
        } => describe(&issue(&dir, &name, &sans, days)?),
        CertsCommand::Rotate {
            name,
            dir,
            window_days,
            days,
            force,
        } => match rotate(&dir, &name, window_days, days, force)? {
            Rotation::Renewed(issued) => describe(&issued),
            Rotation::NotDue { not_after } => {
                format!("{name} is valid until {not_after}: not due (use --force)")
            }
        },
        CertsCommand::Revoke { target, dir } => {
            let serial = revoke(&dir, &target)?;
            format!(
                "revoked serial {serial}; {} updated",
                crl_path(&dir).display()
            )
        }
    })
}

fn describe(issued: &Issued) -> String {
    format!(
        "serial {} valid until {}: {} {}",
        issued.serial,
        issued.not_after,
        issued.chain.display(),
        issued.key.display()
    )
}

#[cfg(test)]
mod tests;
