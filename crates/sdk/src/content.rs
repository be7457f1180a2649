//! The plaintext inside every ciphertext the SDK sends (1:1 and MLS application messages).
//!
//! Encoding (big-endian, byte strings `u32`-length-prefixed):
//! ```text
//! version 1: 0x01 | kind (1 direct, 2 sync copy, 3 group) | message id | sent_at_ms (u64)
//!                 | sender registration id (u32) | [kind 2: destination account id] | body
//! version 2: 0x02 | kind | message id | sent_at_ms | registration id
//!                 | body type (1 plain bytes, 2 attachment) | [kind 2: destination] | body
//! ```
//! Plain bodies are still written as version 1, so clients that predate version 2 keep
//! reading them; attachment messages (body = an encoded [`Attachment`]) use version 2 and
//! reach such clients as undecryptable. Both versions are read.
//! The message id is chosen by the sender (a UUID) and is also used as the SendMessage
//! idempotency key, so receivers can de-duplicate. The registration id lets the receiver
//! address replies (the server checks it against the device list).

use crate::attachment::Attachment;
use crate::codec::{Reader, Writer};
use crate::error::SdkError;
use crate::events::{Address, Message};

/// Newest version of the content encoding (version 1 is still written for plain bodies).
pub const CONTENT_VERSION: u8 = 2;

/// What the body of a content holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum BodyType {
    /// Application bytes (text).
    #[default]
    Plain,
    /// An encoded [`Attachment`].
    Attachment,
}

/// What a content is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A message to this account.
    Direct,
    /// A copy of a message one of our own devices sent to `destination`.
    Sync { destination: String },
    /// An MLS group application message.
    Group,
}

/// A decoded plaintext.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Content {
    pub kind: Kind,
    pub message_id: String,
    pub sent_at_ms: u64,
    pub registration_id: u32,
    pub body_type: BodyType,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Content")
            .field("kind", &self.kind)
            .field("message_id", &self.message_id)
            .field("body_type", &self.body_type)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Content {
    pub(crate) fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        let version = match self.body_type {
            BodyType::Plain => 1,
            BodyType::Attachment => 2,
        };
        w.u8(version);
        w.u8(match self.kind {
            Kind::Direct => 1,
            Kind::Sync { .. } => 2,
            Kind::Group => 3,
        });
        w.str(&self.message_id)
            .u64(self.sent_at_ms)
            .u32(self.registration_id);
        if version >= 2 {
            w.u8(match self.body_type {
                BodyType::Plain => 1,
                BodyType::Attachment => 2,
            });
        }
        if let Kind::Sync { destination } = &self.kind {
            w.str(destination);
        }
        w.raw(&self.body);
        w.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, SdkError> {
        let mut r = Reader::new(bytes, "message content");
        let version = r.u8()?;
        if !(1..=CONTENT_VERSION).contains(&version) {
            return Err(SdkError::Format {
                what: "message content",
                reason: "unsupported version",
            });
        }
        let kind = r.u8()?;
        let message_id = r.str()?;
        let sent_at_ms = r.u64()?;
        let registration_id = r.u32()?;
        let body_type = if version >= 2 {
            match r.u8()? {
                1 => BodyType::Plain,
                2 => BodyType::Attachment,
                _ => {
                    return Err(SdkError::Format {
                        what: "message content",
                        reason: "unknown body type",
                    });
                }
            }
        } else {
            BodyType::Plain
        };
        let kind = match kind {
            1 => Kind::Direct,
            2 => Kind::Sync {
                destination: r.str()?,
            },
            3 => Kind::Group,
            _ => {
                return Err(SdkError::Format {
                    what: "message content",
                    reason: "unknown kind",
                });
            }
        };
        Ok(Self {
            kind,
            message_id,
            sent_at_ms,
            registration_id,
            body_type,
            body: r.rest().to_vec(),
        })
    }

    /// The application-facing message (decoding an attachment body).
    pub(crate) fn into_message(self, sender: Address) -> Result<Message, SdkError> {
        let (body, attachment) = match self.body_type {
            BodyType::Plain => (self.body, None),
            BodyType::Attachment => (Vec::new(), Some(Attachment::from_bytes(&self.body)?)),
        };
        Ok(Message {
            sender,
            message_id: self.message_id,
            sent_at_ms: self.sent_at_ms,
            body,
            attachment,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn content_round_trips_and_rejects_other_versions() {
        for kind in [
            Kind::Direct,
            Kind::Group,
            Kind::Sync {
                destination: "acct".into(),
            },
        ] {
            let c = Content {
                kind,
                message_id: "m-1".into(),
                sent_at_ms: 42,
                registration_id: 7,
                body_type: BodyType::Plain,
                body: b"hello".to_vec(),
            };
            let bytes = c.encode();
            assert_eq!(bytes[0], 1, "plain bodies stay version 1");
            assert_eq!(Content::decode(&bytes).unwrap(), c);
            let a = Content {
                body_type: BodyType::Attachment,
                ..c
            };
            let bytes = a.encode();
            assert_eq!(bytes[0], 2);
            assert_eq!(Content::decode(&bytes).unwrap(), a);
        }
        let mut bytes = Content {
            kind: Kind::Direct,
            message_id: String::new(),
            sent_at_ms: 0,
            registration_id: 1,
            body_type: BodyType::Plain,
            body: vec![],
        }
        .encode()
        .to_vec();
        bytes[0] = 3;
        assert!(Content::decode(&bytes).is_err());
        assert!(Content::decode(&[1, 9]).is_err());
    }

    #[test]
    fn version_1_bytes_from_older_clients_still_decode() {
        // 0x01 | direct | "m" | sent_at 5 | registration 9 | body "hi"
        let mut old = vec![1, 1, 0, 0, 0, 1, b'm'];
        old.extend_from_slice(&5u64.to_be_bytes());
        old.extend_from_slice(&9u32.to_be_bytes());
        old.extend_from_slice(b"hi");
        let c = Content::decode(&old).unwrap();
        assert_eq!(c.body_type, BodyType::Plain);
        assert_eq!(c.body, b"hi");
        assert_eq!(c.encode().as_slice(), old.as_slice());
        // An unknown body type in version 2 is rejected.
        let mut v2 = old.clone();
        v2[0] = 2;
        v2.insert(7 + 12, 9);
        assert!(Content::decode(&v2).is_err());
    }
}
