//! Every event-bus subject and payload that crosses a service boundary, in one place, used by
//! publishers and subscribers alike.
//!
//! Each payload is a protobuf message of `proto/guardyn/<service>/v1/events.proto` on the bus
//! (so instances of different versions understand each other: fields are only added) and a
//! plain Rust type here, validated once on decode ([`AccountId`], [`DeviceId`]...). Services
//! never build subject strings or touch the wire messages themselves.
//!
//! [`AccountId`]: crate::ids::AccountId
//! [`DeviceId`]: crate::ids::DeviceId

pub mod auth;
pub mod client_config;
pub mod messaging;
pub mod monitoring;
pub mod notices;
pub mod notification;
pub mod policy;
pub mod presence;

use bytes::Bytes;
use prost::Message;

/// A payload that does not decode into its domain type (malformed, or from a newer peer that
/// uses a variant this version does not know). Subscribers log and skip it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("undecodable {what} event: {why}")]
pub struct DecodeError {
    pub what: &'static str,
    pub why: &'static str,
}

pub(crate) fn bad(what: &'static str, why: &'static str) -> DecodeError {
    DecodeError { what, why }
}

/// A domain event with its wire form.
pub trait Payload: Sized {
    /// The protobuf message on the bus.
    type Wire: Message + Default;
    const WHAT: &'static str;

    fn to_wire(&self) -> Self::Wire;
    fn from_wire(wire: Self::Wire) -> Result<Self, DecodeError>;

    fn encode(&self) -> Bytes {
        self.to_wire().encode_to_vec().into()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let wire = Self::Wire::decode(bytes).map_err(|_| bad(Self::WHAT, "not protobuf"))?;
        Self::from_wire(wire)
    }
}
