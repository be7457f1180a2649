//! The admin service's client configuration event (`proto/guardyn/admin/v1/client_config.proto`).

use guardyn_proto::guardyn::admin::v1 as pb;

use super::{DecodeError, Payload, bad};

/// A new client configuration version was published: messaging tells every open Listen stream.
pub const CLIENT_CONFIG_PUBLISHED: &str = "admin.client_config.published";

/// [`CLIENT_CONFIG_PUBLISHED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfigPublished {
    pub version: u64,
}

impl Payload for ClientConfigPublished {
    type Wire = pb::ClientConfigPublishedEvent;
    const WHAT: &'static str = CLIENT_CONFIG_PUBLISHED;
    fn to_wire(&self) -> Self::Wire {
        pb::ClientConfigPublishedEvent {
            version: self.version,
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        if w.version == 0 {
            return Err(bad(Self::WHAT, "version"));
        }
        Ok(Self { version: w.version })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn published_events_round_trip_and_version_zero_is_refused() {
        let e = ClientConfigPublished { version: 7 };
        assert_eq!(ClientConfigPublished::decode(&e.encode()).unwrap(), e);
        assert!(
            ClientConfigPublished::decode(&ClientConfigPublished { version: 0 }.encode()).is_err()
        );
    }
}
