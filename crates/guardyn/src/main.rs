//! `guardyn`: the Guardyn server, its client subcommands and the load generator.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use guardyn::config::Config;

/// mimalloc rather than glibc's malloc: the request path allocates a few hundred times per
/// message, and glibc's malloc and free were about a fifth of the server's instructions.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "guardyn",
    version,
    about = "End-to-end-encrypted messaging backend"
)]
struct Cli {
    /// TOML configuration file (defaults, then this file, then GUARDYN_* variables).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: every service in one process, or the ones named with --service.
    Serve {
        /// Host only this service (repeatable).
        #[arg(long = "service", value_name = "NAME")]
        services: Vec<String>,
    },
    /// Print the effective configuration as TOML and exit.
    Config,
    /// Operator actions on the token-signing keys (on the server's storage and bus).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Drive a running server with SDK clients and print throughput and latency.
    Bench(guardyn::bench::BenchArgs),
    /// Upload and download one large attachment; compare with raw disk; sample server memory.
    BenchMedia(guardyn::bench_media::BenchMediaArgs),
    /// Flood a server with concurrent wrong-password logins; sample server memory.
    BenchLogin(guardyn::bench_login::BenchLoginArgs),
    /// Administration: bootstrap the first owner, then the admin RPCs as an admin account.
    #[command(subcommand)]
    Admin(guardyn::admin::AdminCommand),
    /// The mesh certificate authority: init, issue, rotate, revoke (files servers reload).
    #[command(subcommand)]
    Certs(guardyn::certs::CertsCommand),
    #[command(flatten)]
    Client(guardyn::client::ClientCommand),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Emergency revocation of a signing key (a leak): its tokens are refused at once and a
    /// successor signs. With the embedded engine, run it while the server is stopped.
    Revoke {
        /// The key id (the `kid` of GetVerificationKeys).
        kid: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Client commands do not read the server configuration.
    let command = match cli.command {
        Command::Bench(args) => return run(guardyn::bench::run(args)),
        Command::BenchMedia(args) => return run(guardyn::bench_media::run(args)),
        Command::BenchLogin(args) => return run(guardyn::bench_login::run(args)),
        Command::Client(command) => return run(guardyn::client::run(command)),
        Command::Admin(command) => {
            return run(guardyn::admin::run(command, cli.config.as_deref()));
        }
        Command::Certs(command) => {
            return run(async move {
                let report = guardyn::certs::run(command)?;
                #[allow(clippy::print_stdout)]
                {
                    println!("{report}");
                }
                Ok(())
            });
        }
        other => other,
    };
    let config: Config = match guardyn_common::config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Config => run(async move {
            let s = toml::to_string(&config)?;
            #[allow(clippy::print_stdout)]
            {
                print!("{s}");
            }
            Ok(())
        }),
        Command::Serve { services } => run(serve(config, services)),
        Command::Keys(KeysCommand::Revoke { kid }) => {
            run(async move { guardyn::keys::revoke(&config, &kid).await })
        }
        // Handled above, before the configuration is loaded.
        Command::Bench(_)
        | Command::BenchMedia(_)
        | Command::BenchLogin(_)
        | Command::Admin(_)
        | Command::Certs(_)
        | Command::Client(_) => ExitCode::SUCCESS,
    }
}

/// Run `task` on a fresh multi-threaded runtime; its error becomes one line and exit code 1.
fn run(task: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("starting the async runtime: {e}"))
        .and_then(|runtime| runtime.block_on(task));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, selected: Vec<String>) -> anyhow::Result<()> {
    let signal = shutdown_signal()?;
    guardyn::app::check_selection(&selected).map_err(anyhow::Error::msg)?;
    // One instance id for the process's metrics (`instance`) and spans (`service.instance.id`).
    let process = guardyn_common::telemetry::ProcessIdentity {
        services: selected.clone(),
        instance_id: config.server.effective_instance_id(),
    };
    let _telemetry = guardyn_common::telemetry::init(&config.observability, &process)?;
    guardyn::startup::serve(config, selected, signal).await
}

/// SIGTERM or SIGINT. The handlers are installed here, before the server reports SERVING, so
/// a signal that arrives at any moment after start-up drains instead of killing the process.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    #[cfg(unix)]
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    })
}
