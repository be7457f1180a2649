//! Guardyn client SDK: a device's side of the Guardyn API.
//!
//! This crate owns the client: account enrolment ([`Client::register`], [`Client::link`],
//! [`Client::login`] with an optional second factor), session tokens (an expired access token
//! is refreshed once and the call retried), prekey and MLS KeyPackage replenishment,
//! end-to-end-encrypted 1:1 messages (one X3DH/PQXDH + Double Ratchet session per peer
//! device, via `guardyn-crypto`), MLS groups through GroupService, and the device's state
//! file. It talks to the server only through the public gRPC contracts (`guardyn-proto`) and
//! must not depend on any server crate (services, storage, common).
//!
//! # Delivery
//!
//! * [`Client::send`] encrypts once per destination device — an initial (prekey) message for
//!   a session that the peer has not answered yet, a ratchet message otherwise — plus a sync
//!   copy for this account's other devices. On `FAILED_PRECONDITION / DEVICE_MISMATCH` it
//!   drops sessions of extra and stale devices, fetches bundles for missing ones, re-encrypts
//!   and resends with the same client message id (idempotent on the server).
//! * [`Client::listen`] runs the Listen stream: envelopes are decrypted, the state is saved,
//!   events are handed out ([`Inbox::next`]) and then acknowledged; a stream broken by an
//!   unreachable server is reopened with backoff. [`Client::sync`] does the same for the
//!   queued backlog only.
//! * Groups: [`Client::create_group`], [`Client::add_to_group`],
//!   [`Client::remove_from_group`], [`Client::send_group`]. A commit or message rejected with
//!   `ABORTED / STALE_EPOCH` is retried after the winning commit has been processed.
//!
//! # Trust
//!
//! The server's key directory is not trusted blindly (see `trust.rs`): the first identity
//! key seen for each peer device is pinned; a different key later is surfaced as
//! [`Event::IdentityChanged`], its initial messages are held and every send to the account
//! fails with [`SdkError::IdentityChanged`] until [`Client::accept_identity`]. New devices of
//! a known account are pinned on first use and surfaced as [`Event::NewDevice`]; devices
//! the server reports as removed are dropped. [`Client::safety_number`] gives the number
//! two people compare. Sessions need PQXDH: a bundle or initial message without a KEM
//! prekey is refused ([`SdkError::PqxdhRequired`]) unless
//! [`ClientConfig::allow_x3dh_fallback`] is set.
//!
//! # State at rest
//!
//! With [`Storage::File`] the whole device state (identity key, prekeys, sessions, MLS key
//! store, tokens) is one file, versioned and sealed with AES-256-GCM under a key derived from
//! a passphrase (Argon2id, 19 MiB, 2 passes) or from a caller-held 32-byte key (HKDF-SHA256).
//! Every save writes a temporary file, syncs it and renames it over the old one. The state is
//! saved before anything that depends on it leaves the device (new prekeys before upload,
//! advanced ratchets before SendMessage, processed envelopes before Ack), so a restarted
//! client continues its sessions. See `store.rs` and `state.rs` for the formats.
//!
//! # Message format
//!
//! The plaintext inside every ciphertext is a small versioned structure (see `content.rs`):
//! version, kind (direct / sync copy / group), sender-chosen message id, sender timestamp,
//! sender registration id, body type (plain or attachment), body.
//!
//! # Attachments
//!
//! [`Client::upload_file`] / [`Client::upload_reader`] encrypt a file with a fresh key in
//! 64 KiB AES-256-GCM segments and upload the ciphertext to MediaService (chunked, resumable);
//! [`Client::send_attachment`] sends the resulting [`Attachment`] (media id, key, ciphertext
//! SHA-256, sizes, type, name) inside an ordinary end-to-end-encrypted message, which arrives
//! as a [`Message`] with `attachment` set; [`Client::download`] / [`Client::download_to_path`]
//! fetch, verify and decrypt it. See `media.rs` for the formats.

mod account;
mod admin_audit;
mod admin_credentials;
mod admin_monitoring;
mod admin_policy;
mod admin_users;
mod attachment;
mod client;
mod client_config;
mod codec;
mod config_doc;
mod content;
mod enrol;
mod error;
mod events;
mod groups;
mod keys;
mod listen;
mod media;
mod messages;
mod state;
mod store;
mod system_notices;
mod trust;

pub use account::{KeyCounts, TotpEnrollment};
pub use attachment::{ATTACHMENT_VERSION, Attachment, BLOB_VERSION, SEGMENT_SIZE};
pub use client::{Client, ClientConfig, connect};
pub use config_doc::{
    AppliedClientConfig, ConfigRefusal, SIGNING_CONTEXT as CLIENT_CONFIG_SIGNING_CONTEXT,
    config_key_id, verify_client_config,
};
pub use content::CONTENT_VERSION;
pub use enrol::{LinkedDevice, LoginOutcome, PendingLink, SecondFactor};
pub use error::SdkError;
pub use events::{Address, Event, Message, NoticeSeverity, SystemNotice};
pub use listen::Inbox;
pub use media::Progress;
pub use messages::SentMessage;
pub use state::STATE_VERSION;
pub use store::{STATE_FILE_VERSION, StateKey, Storage};
pub use tonic::transport::Channel;
