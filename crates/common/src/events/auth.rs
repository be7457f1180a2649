//! Events the auth service publishes (`proto/guardyn/auth/v1/events.proto`). At-most-once
//! live events: a consumer that must not miss one also re-checks the source of truth.

use guardyn_proto::guardyn::auth::v1 as pb;

use super::{DecodeError, Payload, bad};
use crate::ids::{AccountId, DeviceId};

/// A session was revoked: every process adds it to its revocation list.
pub const SESSION_REVOKED: &str = "auth.session.revoked";
/// An account was deleted: services purge its data.
pub const ACCOUNT_DELETED: &str = "auth.account.deleted";
/// A device joined an account.
pub const DEVICE_LINKED: &str = "auth.device.linked";
/// A device was removed from its account (its sessions are revoked too).
pub const DEVICE_REMOVED: &str = "auth.device.removed";
/// A device's one-time keys ran low.
pub const PREKEYS_LOW: &str = "auth.prekeys.low";
/// A token-signing key was revoked in an emergency: every process drops it at once.
pub const SIGNING_KEY_REVOKED: &str = "auth.signing_key.revoked";

fn account(what: &'static str, s: &str) -> Result<AccountId, DecodeError> {
    AccountId::parse(s).ok_or(bad(what, "account_id"))
}

fn device(what: &'static str, d: u32) -> Result<DeviceId, DecodeError> {
    DeviceId::new(d).ok_or(bad(what, "device_id"))
}

/// [`SESSION_REVOKED`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRevoked {
    pub session_id: String,
    pub account: AccountId,
    pub device: DeviceId,
    /// Unix seconds: the latest expiry of any access token of the session.
    pub tokens_valid_until: u64,
}

impl Payload for SessionRevoked {
    type Wire = pb::SessionRevokedEvent;
    const WHAT: &'static str = SESSION_REVOKED;
    fn to_wire(&self) -> Self::Wire {
        pb::SessionRevokedEvent {
            session_id: self.session_id.clone(),
            account_id: self.account.to_string(),
            device_id: self.device.get(),
            tokens_valid_until: self.tokens_valid_until,
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        Ok(Self {
            account: account(Self::WHAT, &w.account_id)?,
            device: device(Self::WHAT, w.device_id)?,
            session_id: w.session_id,
            tokens_valid_until: w.tokens_valid_until,
        })
    }
}

/// [`ACCOUNT_DELETED`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountDeleted {
    pub account: AccountId,
    /// The devices the account had.
    pub devices: Vec<DeviceId>,
}

impl Payload for AccountDeleted {
    type Wire = pb::AccountDeletedEvent;
    const WHAT: &'static str = ACCOUNT_DELETED;
    fn to_wire(&self) -> Self::Wire {
        pb::AccountDeletedEvent {
            account_id: self.account.to_string(),
            device_ids: self.devices.iter().map(|d| d.get()).collect(),
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        Ok(Self {
            account: account(Self::WHAT, &w.account_id)?,
            devices: w
                .device_ids
                .into_iter()
                .map(|d| device(Self::WHAT, d))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// [`DEVICE_LINKED`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceLinked {
    pub account: AccountId,
    pub device: DeviceId,
    /// The device that created the link code.
    pub linked_by: DeviceId,
    pub device_name: String,
}

impl Payload for DeviceLinked {
    type Wire = pb::DeviceLinkedEvent;
    const WHAT: &'static str = DEVICE_LINKED;
    fn to_wire(&self) -> Self::Wire {
        pb::DeviceLinkedEvent {
            account_id: self.account.to_string(),
            device_id: self.device.get(),
            linked_by_device_id: self.linked_by.get(),
            device_name: self.device_name.clone(),
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        Ok(Self {
            account: account(Self::WHAT, &w.account_id)?,
            device: device(Self::WHAT, w.device_id)?,
            linked_by: device(Self::WHAT, w.linked_by_device_id)?,
            device_name: w.device_name,
        })
    }
}

/// [`DEVICE_REMOVED`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRemoved {
    pub account: AccountId,
    pub device: DeviceId,
}

impl Payload for DeviceRemoved {
    type Wire = pb::DeviceRemovedEvent;
    const WHAT: &'static str = DEVICE_REMOVED;
    fn to_wire(&self) -> Self::Wire {
        pb::DeviceRemovedEvent {
            account_id: self.account.to_string(),
            device_id: self.device.get(),
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        Ok(Self {
            account: account(Self::WHAT, &w.account_id)?,
            device: device(Self::WHAT, w.device_id)?,
        })
    }
}

/// [`PREKEYS_LOW`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreKeysLow {
    pub account: AccountId,
    pub device: DeviceId,
    pub one_time_prekeys: u32,
    pub one_time_kem_prekeys: u32,
    pub key_packages: u32,
    pub has_last_resort_kem_prekey: bool,
}

impl Payload for PreKeysLow {
    type Wire = pb::PreKeysLowEvent;
    const WHAT: &'static str = PREKEYS_LOW;
    fn to_wire(&self) -> Self::Wire {
        pb::PreKeysLowEvent {
            account_id: self.account.to_string(),
            device_id: self.device.get(),
            one_time_prekeys: self.one_time_prekeys,
            one_time_kem_prekeys: self.one_time_kem_prekeys,
            key_packages: self.key_packages,
            has_last_resort_kem_prekey: self.has_last_resort_kem_prekey,
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        Ok(Self {
            account: account(Self::WHAT, &w.account_id)?,
            device: device(Self::WHAT, w.device_id)?,
            one_time_prekeys: w.one_time_prekeys,
            one_time_kem_prekeys: w.one_time_kem_prekeys,
            key_packages: w.key_packages,
            has_last_resort_kem_prekey: w.has_last_resort_kem_prekey,
        })
    }
}

/// [`SIGNING_KEY_REVOKED`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeyRevoked {
    pub kid: String,
}

impl Payload for SigningKeyRevoked {
    type Wire = pb::SigningKeyRevokedEvent;
    const WHAT: &'static str = SIGNING_KEY_REVOKED;
    fn to_wire(&self) -> Self::Wire {
        pb::SigningKeyRevokedEvent {
            kid: self.kid.clone(),
        }
    }
    fn from_wire(w: Self::Wire) -> Result<Self, DecodeError> {
        if w.kid.is_empty() {
            return Err(bad(Self::WHAT, "kid"));
        }
        Ok(Self { kid: w.kid })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn auth_events_round_trip_and_reject_bad_ids() {
        let a = AccountId::random();
        let d = DeviceId::new(3).unwrap();
        let e = SessionRevoked {
            session_id: "s".into(),
            account: a,
            device: d,
            tokens_valid_until: 9,
        };
        assert_eq!(SessionRevoked::decode(&e.encode()).unwrap(), e);
        let e = AccountDeleted {
            account: a,
            devices: vec![d, DeviceId::FIRST],
        };
        assert_eq!(AccountDeleted::decode(&e.encode()).unwrap(), e);
        let e = DeviceLinked {
            account: a,
            device: d,
            linked_by: DeviceId::FIRST,
            device_name: "phone".into(),
        };
        assert_eq!(DeviceLinked::decode(&e.encode()).unwrap(), e);
        let e = DeviceRemoved {
            account: a,
            device: d,
        };
        assert_eq!(DeviceRemoved::decode(&e.encode()).unwrap(), e);
        let e = PreKeysLow {
            account: a,
            device: d,
            one_time_prekeys: 1,
            one_time_kem_prekeys: 2,
            key_packages: 3,
            has_last_resort_kem_prekey: true,
        };
        assert_eq!(PreKeysLow::decode(&e.encode()).unwrap(), e);
        let e = SigningKeyRevoked { kid: "k1".into() };
        assert_eq!(SigningKeyRevoked::decode(&e.encode()).unwrap(), e);
        let bad = SigningKeyRevoked { kid: String::new() };
        assert!(SigningKeyRevoked::decode(&bad.encode()).is_err());
        let bad = pb::DeviceRemovedEvent {
            account_id: "nope".into(),
            device_id: 1,
        };
        use prost::Message as _;
        assert!(DeviceRemoved::decode(&bad.encode_to_vec()).is_err());
        let bad = pb::DeviceRemovedEvent {
            account_id: a.to_string(),
            device_id: 0,
        };
        assert!(DeviceRemoved::decode(&bad.encode_to_vec()).is_err());
    }
}
