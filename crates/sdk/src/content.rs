//! The plaintext inside every ciphertext the SDK sends (1:1 and MLS application messages).
//!
//! Encoding, version 1 (big-endian, byte strings `u32`-length-prefixed):
//! ```text
//! 0x01 | kind (1 direct, 2 sync copy, 3 group) | message id | sent_at_ms (u64)
//!      | sender registration id (u32) | [kind 2: destination account id] | body
//! ```
//! The message id is chosen by the sender (a UUID) and is also used as the SendMessage
//! idempotency key, so receivers can de-duplicate. The registration id lets the receiver
//! address replies (the server checks it against the device list).

use crate::codec::{Reader, Writer};
use crate::error::SdkError;

/// Version byte of the content encoding.
pub const CONTENT_VERSION: u8 = 1;

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
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Content")
            .field("kind", &self.kind)
            .field("message_id", &self.message_id)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Content {
    pub(crate) fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut w = Writer::new();
        w.u8(CONTENT_VERSION);
        w.u8(match self.kind {
            Kind::Direct => 1,
            Kind::Sync { .. } => 2,
            Kind::Group => 3,
        });
        w.str(&self.message_id)
            .u64(self.sent_at_ms)
            .u32(self.registration_id);
        if let Kind::Sync { destination } = &self.kind {
            w.str(destination);
        }
        w.raw(&self.body);
        w.finish()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, SdkError> {
        let mut r = Reader::new(bytes, "message content");
        let version = r.u8()?;
        if version != CONTENT_VERSION {
            return Err(SdkError::Format {
                what: "message content",
                reason: "unsupported version",
            });
        }
        let kind = r.u8()?;
        let message_id = r.str()?;
        let sent_at_ms = r.u64()?;
        let registration_id = r.u32()?;
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
            body: r.rest().to_vec(),
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
                body: b"hello".to_vec(),
            };
            let bytes = c.encode();
            assert_eq!(Content::decode(&bytes).unwrap(), c);
        }
        let mut bytes = Content {
            kind: Kind::Direct,
            message_id: String::new(),
            sent_at_ms: 0,
            registration_id: 1,
            body: vec![],
        }
        .encode()
        .to_vec();
        bytes[0] = 2;
        assert!(Content::decode(&bytes).is_err());
        assert!(Content::decode(&[1, 9]).is_err());
    }
}
