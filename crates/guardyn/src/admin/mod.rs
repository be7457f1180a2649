//! `guardyn admin ...`: the admin service's command line. `bootstrap` runs on the server host
//! with the server's configuration; every other command is a client of the admin RPCs,
//! signed in as an admin account through an SDK state file like the other client commands
//! (`--server`, `--state`, secrets from the environment or a prompt, never from arguments).
//! Each area's commands live in their own file; this enum only dispatches to them.

use std::path::Path;

use clap::Subcommand;

mod audit;
mod bootstrap;
mod config;
mod credentials;
mod monitoring;
mod notices;
mod policy;
mod users;

/// `guardyn admin ...`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// On the server host, with the server's configuration: print a one-time enrolment code
    /// (valid 1 h) that a signed-in account redeems with `guardyn admin claim-owner` to become
    /// the first owner. Issuing a new code replaces the pending one.
    Bootstrap,
    /// Redeem the code `bootstrap` printed (GDN_OWNER_CODE or a prompt): the signed-in account
    /// of --state becomes the first owner.
    ClaimOwner {
        #[command(flatten)]
        args: crate::client::ClientArgs,
    },
    /// Accounts: `list`, `show`, `suspend`, `unsuspend`, `delete`, `reset-mfa`, `roles`,
    /// `sessions`, `terminate`, `remove-device` (changes need --reason).
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// The signed client configuration: `publish FILE --reason ...`, `show`.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// The audit log: `list` (filters, pages), `verify` (the hash chain).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Client security events: `list`, `export` (JSON lines).
    #[command(subcommand)]
    SecurityEvents(audit::SecurityEventsCommand),
    /// The policy (passwords, MFA, devices, heartbeats, sizes, retention): `show`,
    /// `set NAME=VALUE... --reason ...`, `history`.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Every live instance's figures (CPU, memory, disk, streams, queues), the cluster
    /// aggregate and the alerts in force; `--watch` keeps printing. Roles: owner, admin,
    /// auditor.
    Monitoring(monitoring::MonitoringArgs),
    /// API credentials for bots and integrations: `issue --name ... --scope ...`, `list`,
    /// `rotate ID`, `revoke ID`. Roles: owner, admin.
    #[command(subcommand)]
    Credentials(credentials::CredentialsCommand),
    /// System notices: `send TEXT --all | --account ID... --reason ...` (owner, admin),
    /// `list` (the notices in force for the signed-in account).
    #[command(subcommand)]
    Notices(notices::NoticesCommand),
}

/// Run one admin command. `config` is the `--config` file, read only by commands that act on
/// the server host.
pub async fn run(command: AdminCommand, config: Option<&Path>) -> anyhow::Result<()> {
    match command {
        AdminCommand::Bootstrap => bootstrap::bootstrap(config),
        AdminCommand::ClaimOwner { args } => users::claim_owner(args).await,
        AdminCommand::Users(command) => users::run(command).await,
        AdminCommand::Config(command) => config::run(command).await,
        AdminCommand::Audit(command) => audit::audit(command).await,
        AdminCommand::SecurityEvents(command) => audit::security_events(command).await,
        AdminCommand::Policy(command) => policy::run(command).await,
        AdminCommand::Monitoring(args) => monitoring::run(args).await,
        AdminCommand::Credentials(command) => credentials::run(command).await,
        AdminCommand::Notices(command) => notices::run(command).await,
    }
}
