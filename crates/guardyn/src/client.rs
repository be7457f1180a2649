//! `guardyn` client subcommands over `guardyn-sdk`: register, login, link, send, listen,
//! groups. Peers are addressed by account id (the API has no username lookup); `register`
//! and `whoami` print this device's account id to share.
//!
//! Secrets come from the environment or a prompt, never from arguments (which other users
//! can read in the process list): `GDN_PASSWORD` (account password),
//! `GDN_STATE_PASSPHRASE` (unlocks the state file) and `GDN_TOTP`. They deliberately do not
//! start with `GUARDYN_`, which is the server configuration's environment prefix.

#![allow(clippy::print_stdout)]

use std::io::BufRead as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use guardyn_sdk::{
    Client, ClientConfig, Event, LoginOutcome, SecondFactor, StateKey, Storage, connect,
};
use zeroize::Zeroizing;

/// Where the client connects and keeps its state.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// State file of this device (sealed with GDN_STATE_PASSPHRASE).
    #[arg(long, default_value = "./guardyn-client.state")]
    pub state: PathBuf,
}

/// Client subcommands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create an account with this device; prints the account id peers send to.
    Register {
        #[command(flatten)]
        args: ClientArgs,
        /// Username (3..32 of [a-z0-9_.], starting with a letter).
        #[arg(long)]
        username: String,
    },
    /// Sign this device in again (after a revoked or expired session).
    Login {
        #[command(flatten)]
        args: ClientArgs,
        /// TOTP code, if the account has two-factor authentication (prompted otherwise).
        #[arg(long)]
        totp: Option<String>,
    },
    /// Print a code that links a new device to this account.
    LinkCode {
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Join an account as a new device with a code from `link-code`.
    Link {
        #[command(flatten)]
        args: ClientArgs,
        /// The link code.
        code: String,
    },
    /// Print this device's account and device id.
    Whoami {
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Send an end-to-end-encrypted message to every device of an account.
    Send {
        #[command(flatten)]
        args: ClientArgs,
        /// Destination account id.
        to: String,
        /// Message text.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Print incoming messages until interrupted.
    Listen {
        #[command(flatten)]
        args: ClientArgs,
    },
    /// MLS groups.
    #[command(subcommand)]
    Group(GroupCommand),
}

/// `guardyn group ...`
#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group; prints its id (hex).
    Create {
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Add every device of the given accounts.
    Add {
        #[command(flatten)]
        args: ClientArgs,
        /// Group id (hex).
        group: String,
        /// Account ids.
        #[arg(required = true, num_args = 1..)]
        accounts: Vec<String>,
    },
    /// Remove every device of an account.
    Remove {
        #[command(flatten)]
        args: ClientArgs,
        /// Group id (hex).
        group: String,
        /// Account id.
        account: String,
    },
    /// Send a message to a group.
    Send {
        #[command(flatten)]
        args: ClientArgs,
        /// Group id (hex).
        group: String,
        /// Message text.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// List this device's groups and their members.
    List {
        #[command(flatten)]
        args: ClientArgs,
    },
}

fn secret_from(env: &str, prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    if let Ok(v) = std::env::var(env) {
        return Ok(Zeroizing::new(v));
    }
    eprint!("{prompt} (or set {env}): ");
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).to_owned(),
    ))
}

fn storage(args: &ClientArgs) -> anyhow::Result<Storage> {
    Ok(Storage::File {
        path: args.state.clone(),
        key: StateKey::Passphrase(secret_from(
            "GDN_STATE_PASSPHRASE",
            "state file passphrase",
        )?),
    })
}

fn config() -> ClientConfig {
    ClientConfig {
        device_name: "guardyn-cli".into(),
        ..ClientConfig::default()
    }
}

async fn open(args: &ClientArgs) -> anyhow::Result<Client> {
    if !args.state.exists() {
        anyhow::bail!(
            "no state file at {} (run `guardyn register` or `guardyn link` first)",
            args.state.display()
        );
    }
    let channel = connect(&args.server).await?;
    Ok(Client::open(channel, storage(args)?, config()).await?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> anyhow::Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        anyhow::bail!("group id must be hex");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| anyhow::anyhow!("group id must be hex"))
        })
        .collect()
}

/// Prints an event; returns false when the stream ended.
fn print_event(event: &Event) -> bool {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match event {
        Event::Message(m) => println!("[{}] {}", m.sender, text(&m.body)),
        Event::SentByOtherDevice {
            destination,
            message,
        } => println!(
            "[me.{} -> {destination}] {}",
            message.sender.device_id,
            text(&message.body)
        ),
        Event::GroupMessage { group_id, message } => {
            println!(
                "[group {} | {}] {}",
                hex(group_id),
                message.sender,
                text(&message.body)
            );
        }
        Event::GroupJoined { group_id } => println!("joined group {}", hex(group_id)),
        Event::GroupChanged {
            group_id,
            epoch,
            added,
            removed,
            self_removed,
        } => {
            if *self_removed {
                println!("removed from group {}", hex(group_id));
            } else {
                let added: Vec<String> = added.iter().map(ToString::to_string).collect();
                println!(
                    "group {} now at epoch {epoch} (added: {}; removed: {removed})",
                    hex(group_id),
                    added.join(", ")
                );
            }
        }
        Event::DeviceLinked { device_id } => println!("device {device_id} linked to this account"),
        Event::DeviceRemoved { device_id } => {
            println!("device {device_id} removed from this account")
        }
        Event::CaughtUp => {}
        Event::Undecryptable { sender, reason } => {
            eprintln!("undecryptable message from {sender:?}: {reason}");
        }
        Event::StreamEnded { reason } => {
            eprintln!("stream ended: {reason}");
            return false;
        }
    }
    true
}

async fn drain(client: &Client) -> anyhow::Result<()> {
    for e in client.sync().await? {
        print_event(&e);
    }
    Ok(())
}

/// Runs one client subcommand.
pub async fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Register { args, username } => {
            if args.state.exists() {
                anyhow::bail!(
                    "{} already exists; choose another --state",
                    args.state.display()
                );
            }
            let password = secret_from("GDN_PASSWORD", "account password")?;
            let storage = storage(&args)?;
            let channel = connect(&args.server).await?;
            let client = Client::register(channel, storage, config(), &username, &password).await?;
            println!(
                "registered {username}: account id {} (device {})",
                client.account_id(),
                client.device_id()
            );
            println!(
                "peers send to you with: guardyn send {} <text>",
                client.account_id()
            );
        }
        ClientCommand::Login { args, totp } => {
            let client = open(&args).await?;
            let password = secret_from("GDN_PASSWORD", "account password")?;
            match client.login(&password).await? {
                LoginOutcome::SignedIn => {}
                LoginOutcome::MfaRequired { ticket } => {
                    let code = match totp {
                        Some(c) => Zeroizing::new(c),
                        None => secret_from("GDN_TOTP", "TOTP code")?,
                    };
                    client
                        .complete_mfa(&ticket, SecondFactor::Totp(code.to_string()))
                        .await?;
                }
            }
            client.top_up_keys().await?;
            println!(
                "signed in as {} (device {})",
                client.account_id(),
                client.device_id()
            );
        }
        ClientCommand::LinkCode { args } => {
            let client = open(&args).await?;
            println!("{}", client.create_link_code().await?);
        }
        ClientCommand::Link { args, code } => {
            if args.state.exists() {
                anyhow::bail!(
                    "{} already exists; choose another --state",
                    args.state.display()
                );
            }
            let storage = storage(&args)?;
            let channel = connect(&args.server).await?;
            let client = Client::link(channel, storage, config(), &code).await?;
            println!(
                "linked: account {} device {}",
                client.account_id(),
                client.device_id()
            );
        }
        ClientCommand::Whoami { args } => {
            let client = open(&args).await?;
            println!(
                "account {} device {}",
                client.account_id(),
                client.device_id()
            );
        }
        ClientCommand::Send { args, to, text } => {
            let client = open(&args).await?;
            drain(&client).await?;
            let sent = client.send(&to, text.join(" ").as_bytes()).await?;
            println!("sent {} to {} device(s)", sent.message_id, sent.devices);
        }
        ClientCommand::Listen { args } => {
            let client = open(&args).await?;
            client.top_up_keys().await?;
            let mut inbox = client.listen().await?;
            eprintln!("listening as {} (Ctrl-C to stop)", client.account_id());
            loop {
                tokio::select! {
                    event = inbox.next() => match event {
                        Some(e) => if !print_event(&e) { break },
                        None => break,
                    },
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
        ClientCommand::Group(g) => group(g).await?,
    }
    Ok(())
}

async fn group(command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::Create { args } => {
            let client = open(&args).await?;
            let id = client.create_group().await?;
            println!("{}", hex(&id));
        }
        GroupCommand::Add {
            args,
            group,
            accounts,
        } => {
            let client = open(&args).await?;
            drain(&client).await?;
            let accounts: Vec<&str> = accounts.iter().map(String::as_str).collect();
            let epoch = client.add_to_group(&unhex(&group)?, &accounts).await?;
            println!("group {group} at epoch {epoch}");
        }
        GroupCommand::Remove {
            args,
            group,
            account,
        } => {
            let client = open(&args).await?;
            drain(&client).await?;
            let epoch = client.remove_from_group(&unhex(&group)?, &account).await?;
            println!("group {group} at epoch {epoch}");
        }
        GroupCommand::Send { args, group, text } => {
            let client = open(&args).await?;
            drain(&client).await?;
            let id = client
                .send_group(&unhex(&group)?, text.join(" ").as_bytes())
                .await?;
            println!("sent {id}");
        }
        GroupCommand::List { args } => {
            let client = open(&args).await?;
            drain(&client).await?;
            for id in client.groups().await {
                let (epoch, members) = client.group_members(&id).await?;
                let members: Vec<String> = members.iter().map(ToString::to_string).collect();
                println!("{} epoch {epoch}: {}", hex(&id), members.join(", "));
            }
        }
    }
    Ok(())
}
