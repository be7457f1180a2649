//! `guardyn` client subcommands over `guardyn-sdk`: register, login, link, send, send-file,
//! listen (which saves received files), groups, verify (safety numbers). Peers are addressed
//! by account id or by `@username` (resolved with LookupUsername first, see
//! [`resolve_peer`]); `register` and `whoami` print this device's account id to share,
//! `discoverable false` hides the username from lookups.
//!
//! Secrets come from the environment or a prompt, never from arguments (which other users
//! can read in the process list): `GDN_PASSWORD` (account password),
//! `GDN_STATE_PASSPHRASE` (unlocks the state file) and `GDN_TOTP`. They deliberately do not
//! start with `GUARDYN_`, which is the server configuration's environment prefix.

#![allow(clippy::print_stdout)]

use std::io::{BufRead as _, IsTerminal as _};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use guardyn_proto::guardyn::common::v1::ErrorReason;
use guardyn_sdk::{
    Attachment, Client, ClientConfig, Event, LoginOutcome, SdkError, SecondFactor, StateKey,
    Storage, connect,
};
use zeroize::Zeroizing;

/// How long `guardyn link` waits for the approval (the server's longest link lifetime).
const LINK_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

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
    /// Approve a new device that shows a code from `guardyn link`: it joins this account.
    /// Asks for the password (and TOTP code, when enabled) to step up first.
    ApproveLink {
        #[command(flatten)]
        args: ClientArgs,
        /// The code the new device shows.
        code: String,
        /// TOTP code, if the account has two-factor authentication (prompted otherwise).
        #[arg(long)]
        totp: Option<String>,
    },
    /// Join an account as a new device: prints a code to approve on one of its devices with
    /// `guardyn approve-link`, then waits for the approval.
    Link {
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Print this device's account and device id.
    Whoami {
        #[command(flatten)]
        args: ClientArgs,
    },
    /// Set whether peers can find this account by `@username` (on by default).
    Discoverable {
        #[command(flatten)]
        args: ClientArgs,
        /// `true` or `false`.
        #[arg(action = clap::ArgAction::Set)]
        discoverable: bool,
    },
    /// Send an end-to-end-encrypted message to every device of an account.
    Send {
        #[command(flatten)]
        args: ClientArgs,
        /// Destination account id or `@username`.
        to: String,
        /// Message text.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Encrypt a file, upload it and send it to every device of an account.
    SendFile {
        #[command(flatten)]
        args: ClientArgs,
        /// Destination account id or `@username`.
        to: String,
        /// The file to send.
        path: PathBuf,
        /// MIME type (guessed from the extension when omitted).
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Print incoming messages until interrupted; received files are saved.
    Listen {
        #[command(flatten)]
        args: ClientArgs,
        /// Directory received files are saved in (under the sender's file name without any
        /// directory part; an existing file is never overwritten).
        #[arg(long, default_value = ".")]
        save_dir: PathBuf,
    },
    /// Print the safety number of the conversation with an account, to compare with the
    /// peer's (in person, or over another channel). Says so when the account's identity keys
    /// changed; `--accept` then accepts them, which unblocks sending.
    Verify {
        #[command(flatten)]
        args: ClientArgs,
        /// Account id or `@username`.
        account: String,
        /// Accept the changed identity keys (after comparing the new safety number).
        #[arg(long)]
        accept: bool,
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
        /// Account ids or `@username`s.
        #[arg(required = true, num_args = 1..)]
        accounts: Vec<String>,
    },
    /// Remove every device of an account.
    Remove {
        #[command(flatten)]
        args: ClientArgs,
        /// Group id (hex).
        group: String,
        /// Account id or `@username`.
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

/// A peer argument as an account id: `@name` is looked up (exact, case-insensitive match;
/// unknown and hidden names both fail), anything else is taken as an account id.
async fn resolve_peer(client: &Client, peer: &str) -> anyhow::Result<String> {
    let Some(name) = peer.strip_prefix('@') else {
        return Ok(peer.to_owned());
    };
    match client.lookup_username(name).await {
        Ok(account) => Ok(account),
        Err(e) if e.reason() == Some(ErrorReason::NotFound) => {
            anyhow::bail!("no discoverable account is called {peer}")
        }
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn secret_from(env: &str, prompt: &str) -> anyhow::Result<Zeroizing<String>> {
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

pub(crate) async fn open(args: &ClientArgs) -> anyhow::Result<Client> {
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

/// A MIME type from a file name's extension (a few common ones).
fn guess_content_type(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "md" => "text/plain",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        "ogg" | "opus" => "audio/ogg",
        "zip" => "application/zip",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

/// A byte progress bar on stderr, or a hidden one when stderr is not a terminal.
fn progress_bar(total: u64, what: String) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

/// How a received file is described.
fn describe(att: &Attachment) -> String {
    format!(
        "file {:?} ({} bytes, {})",
        att.safe_file_name(),
        att.plaintext_size,
        att.content_type
    )
}

/// Downloads an attachment into `dir` under its sanitised name, adding " (n)" before the
/// extension when the name is taken.
async fn save_attachment(client: &Client, att: &Attachment, dir: &Path) -> anyhow::Result<PathBuf> {
    let name = att.safe_file_name();
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem.to_owned(), format!(".{ext}")),
        _ => (name.clone(), String::new()),
    };
    let bar = progress_bar(att.size, name.clone());
    for n in 0..1000 {
        let candidate = if n == 0 {
            dir.join(&name)
        } else {
            dir.join(format!("{stem} ({n}){ext}"))
        };
        if candidate.exists() {
            continue;
        }
        let result = client
            .download_to_path_with_progress(att, &candidate, &mut |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
            .await;
        match result {
            Ok(_) => {
                bar.finish_and_clear();
                return Ok(candidate);
            }
            // Someone took the name meanwhile: try the next one.
            Err(SdkError::Io(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                bar.abandon();
                return Err(e.into());
            }
        }
    }
    bar.abandon();
    anyhow::bail!("no free file name for {name:?} in {}", dir.display())
}

/// Prints an event (and saves received files into `save_dir`, when given); returns false when
/// the stream ended.
async fn handle_event(client: &Client, event: &Event, save_dir: Option<&Path>) -> bool {
    let received = match event {
        Event::Message(m) | Event::GroupMessage { message: m, .. } => m.attachment.as_ref(),
        _ => None,
    };
    let (Some(att), Some(dir)) = (received, save_dir) else {
        return print_event(event);
    };
    let from = match event {
        Event::GroupMessage { group_id, message } => {
            format!("group {} | {}", hex(group_id), message.sender)
        }
        Event::Message(m) => m.sender.to_string(),
        _ => String::new(),
    };
    match save_attachment(client, att, dir).await {
        Ok(path) => println!("[{from}] {} saved to {}", describe(att), path.display()),
        Err(e) => eprintln!("[{from}] {}: not saved: {e:#}", describe(att)),
    }
    true
}

/// Prints an event; returns false when the stream ended.
fn print_event(event: &Event) -> bool {
    let text = |m: &guardyn_sdk::Message| match &m.attachment {
        Some(att) => format!("{} (not saved: use `guardyn listen`)", describe(att)),
        None => String::from_utf8_lossy(&m.body).into_owned(),
    };
    match event {
        Event::Message(m) => println!("[{}] {}", m.sender, text(m)),
        Event::SentByOtherDevice {
            destination,
            message,
        } => println!(
            "[me.{} -> {destination}] {}",
            message.sender.device_id,
            match &message.attachment {
                Some(att) => describe(att),
                None => text(message),
            }
        ),
        Event::GroupMessage { group_id, message } => {
            println!(
                "[group {} | {}] {}",
                hex(group_id),
                message.sender,
                text(message)
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
        Event::IdentityChanged { peer } => eprintln!(
            "the identity key of {peer} changed: sending to it is blocked until you compare \
             safety numbers (`guardyn verify {}`) and accept",
            peer.account_id
        ),
        Event::NewDevice { peer } => println!(
            "new device {peer}: its safety number changed (`guardyn verify {}`)",
            peer.account_id
        ),
        Event::ClientConfigChanged { version } => {
            println!("client configuration version {version} published");
        }
        Event::SystemNotice(n) => {
            println!("notice ({:?}): {}", n.severity, n.text);
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

/// `guardyn verify`: the safety number, the one to compare before accepting a change, and
/// the messages an accepted change released.
async fn verify(client: &Client, account: &str, accept: bool) -> anyhow::Result<()> {
    let pending = client.pending_safety_number(account).await;
    if accept {
        if pending.is_none() {
            println!("no changed identity key to accept for {account}");
        }
        for event in client.accept_identity(account).await? {
            print_event(&event);
        }
    } else if let Some(number) = &pending {
        println!("the identity keys of {account} changed; sending is blocked.");
        println!("safety number after accepting (compare it with the peer's):\n{number}");
        println!("then run: guardyn verify {account} --accept");
        println!("safety number before the change:");
    }
    println!("{}", client.safety_number(account).await?);
    Ok(())
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
        ClientCommand::ApproveLink { args, code, totp } => {
            let client = open(&args).await?;
            let password = secret_from("GDN_PASSWORD", "account password")?;
            let factor = totp.map(SecondFactor::Totp);
            match client.step_up(&password, factor.clone()).await {
                Err(SdkError::Server {
                    reason: Some(ErrorReason::MfaRequired),
                    ..
                }) if factor.is_none() => {
                    let code = secret_from("GDN_TOTP", "TOTP code")?;
                    client
                        .step_up(&password, Some(SecondFactor::Totp(code.to_string())))
                        .await?;
                }
                other => other?,
            }
            let d = client.approve_link(&code).await?;
            println!(
                "approved: device {} ({}) joined, identity key {}",
                d.device_id,
                d.name,
                guardyn_common::ids::hex(&d.identity_key)
            );
        }
        ClientCommand::Link { args } => {
            if args.state.exists() {
                anyhow::bail!(
                    "{} already exists; choose another --state",
                    args.state.display()
                );
            }
            let storage = storage(&args)?;
            let channel = connect(&args.server).await?;
            let pending = Client::request_link(channel, storage, config()).await?;
            println!(
                "on a device of the account run: guardyn approve-link {}",
                pending.code()
            );
            println!(
                "this device's identity key: {}",
                guardyn_common::ids::hex(&pending.identity_key())
            );
            let client = pending.finish(LINK_WAIT).await?;
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
        ClientCommand::Discoverable { args, discoverable } => {
            let client = open(&args).await?;
            client.set_username_discoverable(discoverable).await?;
            if discoverable {
                println!("peers can find this account by its username");
            } else {
                println!("this account's username is hidden from lookups");
            }
        }
        ClientCommand::Send { args, to, text } => {
            let client = open(&args).await?;
            drain(&client).await?;
            let to = resolve_peer(&client, &to).await?;
            let sent = client.send(&to, text.join(" ").as_bytes()).await?;
            println!("sent {} to {} device(s)", sent.message_id, sent.devices);
        }
        ClientCommand::SendFile {
            args,
            to,
            path,
            content_type,
        } => {
            let client = open(&args).await?;
            drain(&client).await?;
            let to = resolve_peer(&client, &to).await?;
            let content_type = content_type.unwrap_or_else(|| guess_content_type(&path).to_owned());
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let file = std::fs::File::open(&path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let bar = progress_bar(0, format!("uploading {name}"));
            let attachment = client
                .upload_reader_with_progress(file, &name, &content_type, &mut |done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                })
                .await;
            let attachment = match attachment {
                Ok(a) => {
                    bar.finish_and_clear();
                    a
                }
                Err(e) => {
                    bar.abandon();
                    return Err(e.into());
                }
            };
            let sent = client.send_attachment(&to, &attachment).await?;
            println!(
                "sent {} ({} bytes) as {} to {} device(s)",
                name, attachment.plaintext_size, sent.message_id, sent.devices
            );
        }
        ClientCommand::Listen { args, save_dir } => {
            if !save_dir.is_dir() {
                anyhow::bail!("--save-dir {} is not a directory", save_dir.display());
            }
            let client = open(&args).await?;
            client.top_up_keys().await?;
            let mut inbox = client.listen().await?;
            eprintln!("listening as {} (Ctrl-C to stop)", client.account_id());
            loop {
                tokio::select! {
                    event = inbox.next() => match event {
                        Some(e) => tokio::select! {
                            keep = handle_event(&client, &e, Some(&save_dir)) => if !keep { break },
                            _ = tokio::signal::ctrl_c() => break,
                        },
                        None => break,
                    },
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
        ClientCommand::Verify {
            args,
            account,
            accept,
        } => {
            let client = open(&args).await?;
            drain(&client).await?;
            let account = resolve_peer(&client, &account).await?;
            verify(&client, &account, accept).await?;
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
            let mut resolved = Vec::with_capacity(accounts.len());
            for a in &accounts {
                resolved.push(resolve_peer(&client, a).await?);
            }
            let accounts: Vec<&str> = resolved.iter().map(String::as_str).collect();
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
            let account = resolve_peer(&client, &account).await?;
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
