//! The admin service's policy subject (`proto/guardyn/admin/v1/policy.proto`): a new policy
//! version is current. Every process holding a [`crate::policy::PolicyCache`] re-reads the
//! policy from storage on it; the payload only says which version to expect.

use guardyn_proto::guardyn::admin::v1 as pb;

use super::{DecodeError, Payload};

/// A policy version became current.
pub const POLICY_CHANGED: &str = "admin.policy.changed";

/// [`POLICY_CHANGED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyChanged {
    pub version: u64,
}

impl Payload for PolicyChanged {
    type Wire = pb::PolicyChangedEvent;
    const WHAT: &'static str = POLICY_CHANGED;
    fn to_wire(&self) -> Self::Wire {
        pb::PolicyChangedEvent {
            version: self.version,
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        Ok(Self { version: w.version })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips() {
        let e = PolicyChanged { version: 7 };
        assert_eq!(PolicyChanged::decode(&e.encode()).unwrap(), e);
    }
}
