//! What a client hands to the application when envelopes and notices arrive.

use crate::attachment::Attachment;

/// One device of one account.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address {
    /// Account id (UUID string).
    pub account_id: String,
    /// Device id within the account.
    pub device_id: u32,
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.account_id, self.device_id)
    }
}

/// A decrypted message.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The authenticated sending device.
    pub sender: Address,
    /// Sender-chosen id (a UUID), stable across retries.
    pub message_id: String,
    /// Sender's clock when the message was written (Unix milliseconds).
    pub sent_at_ms: u64,
    /// The message body (empty for an attachment message).
    pub body: Vec<u8>,
    /// The file this message carries ([`crate::Client::send_attachment`]); fetch it with
    /// [`crate::Client::download`].
    pub attachment: Option<Attachment>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("sender", &self.sender)
            .field("message_id", &self.message_id)
            .field("sent_at_ms", &self.sent_at_ms)
            .field("body_len", &self.body.len())
            .field("attachment", &self.attachment)
            .finish()
    }
}

/// How urgent a [`SystemNotice`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NoticeSeverity {
    Info,
    Warning,
    Critical,
    /// A severity this SDK does not know (from a newer server): shown rather than dropped.
    Unknown,
}

/// An operator's notice to this account or to every account: on the Listen stream
/// ([`Event::SystemNotice`]) and from [`crate::Client::system_notices`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemNotice {
    /// Its id (a UUID): the same notice from the stream and from the list is the same id.
    pub notice_id: String,
    pub severity: NoticeSeverity,
    /// What to show the user.
    pub text: String,
    /// Unix milliseconds.
    pub sent_at_ms: u64,
    /// Unix milliseconds; stop showing it then.
    pub expires_at_ms: u64,
    /// Sent to every account rather than to a list including this one.
    pub all_accounts: bool,
}

impl From<guardyn_proto::guardyn::admin::v1::SystemNotice> for SystemNotice {
    fn from(n: guardyn_proto::guardyn::admin::v1::SystemNotice) -> Self {
        use guardyn_proto::guardyn::admin::v1::SystemNoticeSeverity as S;
        let severity = match S::try_from(n.severity) {
            Ok(S::Info) => NoticeSeverity::Info,
            Ok(S::Warning) => NoticeSeverity::Warning,
            Ok(S::Critical) => NoticeSeverity::Critical,
            Ok(S::Unspecified) | Err(_) => NoticeSeverity::Unknown,
        };
        let ms = |t: Option<prost_types::Timestamp>| {
            t.map_or(0, |t| {
                u64::try_from(t.seconds).unwrap_or(0).saturating_mul(1000)
                    + u64::try_from(t.nanos / 1_000_000).unwrap_or(0)
            })
        };
        Self {
            notice_id: n.notice_id,
            severity,
            text: n.text,
            sent_at_ms: ms(n.sent_at),
            expires_at_ms: ms(n.expires_at),
            all_accounts: n.all_accounts,
        }
    }
}

/// Something that happened to this device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A 1:1 message to this account.
    Message(Message),
    /// A copy of a message another device of this account sent to `destination`.
    SentByOtherDevice {
        /// Where our other device sent it.
        destination: String,
        /// The message (sender = our other device).
        message: Message,
    },
    /// An MLS application message.
    GroupMessage {
        /// MLS group id.
        group_id: Vec<u8>,
        /// The message; `sender` is the member's credential identity.
        message: Message,
    },
    /// This device was added to a group (Welcome processed).
    GroupJoined {
        /// MLS group id.
        group_id: Vec<u8>,
    },
    /// A commit changed a group.
    GroupChanged {
        /// MLS group id.
        group_id: Vec<u8>,
        /// Epoch after the commit.
        epoch: u64,
        /// Devices the commit added.
        added: Vec<Address>,
        /// Number of members removed.
        removed: usize,
        /// This device was removed; the group is no longer usable.
        self_removed: bool,
    },
    /// A device was linked to this account.
    DeviceLinked {
        /// The new device id.
        device_id: u32,
    },
    /// A device was removed from this account.
    DeviceRemoved {
        /// The removed device id.
        device_id: u32,
    },
    /// A peer device presented an identity key different from the one pinned for it. Sending
    /// to its account fails with [`crate::SdkError::IdentityChanged`] and its initial
    /// messages are held until [`crate::Client::accept_identity`].
    IdentityChanged {
        /// The device whose key changed.
        peer: Address,
    },
    /// A device not seen before of an account with known devices (its key was pinned on
    /// first use; the account's safety number changed).
    NewDevice {
        /// The new device.
        peer: Address,
    },
    /// A new client configuration version was published; fetch and apply it with
    /// [`crate::Client::fetch_client_config`].
    ClientConfigChanged {
        /// The new version.
        version: u64,
    },
    /// An operator sent a notice to this account or to every account. Not queued: after
    /// being offline, read the notices still in force with [`crate::Client::system_notices`].
    SystemNotice(SystemNotice),
    /// The backlog queued while this device was offline has been delivered.
    CaughtUp,
    /// An envelope could not be decrypted or parsed; it was acknowledged and dropped.
    Undecryptable {
        /// Sending device, when known.
        sender: Option<Address>,
        /// Why (no secrets).
        reason: String,
    },
    /// The Listen stream ended (replaced by another Listen, session revoked, server gone).
    StreamEnded {
        /// Why.
        reason: String,
    },
}
