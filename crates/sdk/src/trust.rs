//! Trust on first use: the identity key pinned per peer device, the changes waiting for the
//! user's decision, and the safety number that lets two people compare what they pinned.
//!
//! # Policy
//!
//! * The first identity key seen for a device (in a prekey bundle or an initial message) is
//!   pinned. A later, different key for that device is never used silently: it is recorded
//!   as a pending change, every send to the account fails with
//!   [`crate::SdkError::IdentityChanged`], and initial messages carrying it are held (at
//!   most [`HELD_PER_DEVICE`]) until [`crate::Client::accept_identity`] re-pins it.
//! * A device not seen before of an account that already has pins (a new device learned
//!   from device-mismatch repair, a bundle fetch or an initial message) is trusted on first
//!   use too, and reported as [`crate::Event::NewDevice`]. Blocking it would make every
//!   linked device a hard stop for all contacts; the event and the changed safety number are
//!   what a careful user checks. Linking itself needs an existing device's approval.
//! * Devices the server reports as removed keep their pin, marked removed: they leave the
//!   safety number. The server hands a removed device's id to a new device only once all 127
//!   ids were used (and a day after the removal), so a device that comes back under a removed
//!   id with another key is a new device of that account, reported and pinned like one (the
//!   server could as well have given it a fresh id). A key that changes under an id the
//!   client never saw removed is an identity change.
//!
//! # Safety number (version 0)
//!
//! For one account, with its active pinned devices in ascending device id order:
//! ```text
//! keys   = for each device: device id (u32, big-endian) || identity key (33 bytes)
//! h      = SHA-512(0x00 0x00 || keys || account id (UTF-8))
//! repeat 5200 times: h = SHA-512(h || keys)
//! digits = first 30 bytes of h as six 5-byte big-endian integers, each mod 100000,
//!          written as five decimal digits (30 digits)
//! ```
//! The safety number of a conversation is the two accounts' 30-digit strings, the smaller
//! one first (so both sides compute the same 60 digits), shown in twelve groups of five.
//! This is Signal's numeric fingerprint (version 0, 5200 iterations) with the device list
//! in place of the single identity key.

use std::collections::BTreeMap;

use guardyn_crypto::IdentityKey;
use sha2::{Digest, Sha512};

use crate::codec::{Reader, Writer};
use crate::error::SdkError;

/// Initial messages kept per device while its identity change is pending.
pub(crate) const HELD_PER_DEVICE: usize = 8;
/// Hash iterations of the safety number (Signal's value).
const ITERATIONS: usize = 5200;

/// A peer device: account id and device id.
pub(crate) type DeviceKey = (String, u32);

/// The trust decision for one device.
#[derive(Clone, Debug)]
pub(crate) struct Pin {
    pub key: IdentityKey,
    /// The server no longer lists the device.
    pub removed: bool,
    /// A different key was presented and not yet accepted.
    pub changed: Option<IdentityKey>,
}

/// What [`Trust::observe`] concluded about a presented key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The pinned key.
    Trusted,
    /// The first device seen of an account: pinned silently.
    FirstContact,
    /// A new (or returning) device of an account with pins: pinned, and to be reported.
    NewDevice,
    /// A key different from the pinned one: recorded as pending, not trusted. `first` when
    /// this key was not already the pending one (report it once).
    Changed { first: bool },
}

/// Every pin of this client, and the initial messages held back by pending changes.
#[derive(Debug, Default)]
pub(crate) struct Trust {
    pins: BTreeMap<DeviceKey, Pin>,
    held: BTreeMap<DeviceKey, Vec<Vec<u8>>>,
}

impl Trust {
    /// Records that `key` was presented for `device` and says whether it may be used.
    pub(crate) fn observe(&mut self, device: &DeviceKey, key: &IdentityKey) -> Seen {
        if let Some(pin) = self.pins.get_mut(device) {
            if pin.key.ct_eq(key) {
                if pin.removed {
                    pin.removed = false;
                    return Seen::NewDevice;
                }
                return Seen::Trusted;
            }
            if pin.removed {
                // The id was reused by a newly linked device.
                self.held.remove(device);
                *pin = Pin {
                    key: *key,
                    removed: false,
                    changed: None,
                };
                return Seen::NewDevice;
            }
            let first = pin.changed.is_none_or(|c| !c.ct_eq(key));
            if first {
                // Messages held for an earlier pending key would be released under this one.
                self.held.remove(device);
                pin.changed = Some(*key);
            }
            return Seen::Changed { first };
        }
        let known = self.has_account(&device.0);
        self.pins.insert(
            device.clone(),
            Pin {
                key: *key,
                removed: false,
                changed: None,
            },
        );
        if known {
            Seen::NewDevice
        } else {
            Seen::FirstContact
        }
    }

    /// Whether any device of `account` was ever pinned.
    pub(crate) fn has_account(&self, account: &str) -> bool {
        self.devices(account).next().is_some()
    }

    fn devices<'a>(&'a self, account: &'a str) -> impl Iterator<Item = (u32, &'a Pin)> + 'a {
        self.pins
            .range((account.to_owned(), 0)..)
            .take_while(move |((a, _), _)| a == account)
            .map(|((_, d), p)| (*d, p))
    }

    /// The first device of `account` with a pending identity change.
    pub(crate) fn blocked(&self, account: &str) -> Option<u32> {
        self.devices(account)
            .find(|(_, p)| p.changed.is_some())
            .map(|(d, _)| d)
    }

    /// Whether `key` is the pinned key of `device`.
    #[cfg(test)]
    pub(crate) fn is_pinned(&self, device: &DeviceKey, key: &IdentityKey) -> bool {
        self.pins.get(device).is_some_and(|p| p.key.ct_eq(key))
    }

    /// Whether `device` has a pin and it is not `key`.
    pub(crate) fn conflicts(&self, device: &DeviceKey, key: &IdentityKey) -> bool {
        self.pins.get(device).is_some_and(|p| !p.key.ct_eq(key))
    }

    /// Marks a device the server no longer lists.
    pub(crate) fn removed(&mut self, device: &DeviceKey) {
        if let Some(pin) = self.pins.get_mut(device) {
            pin.removed = true;
        }
    }

    /// Keeps an initial message carrying the pending key of `device` (the oldest is dropped
    /// beyond [`HELD_PER_DEVICE`]).
    pub(crate) fn hold(&mut self, device: &DeviceKey, message: Vec<u8>) {
        let held = self.held.entry(device.clone()).or_default();
        held.push(message);
        if held.len() > HELD_PER_DEVICE {
            held.remove(0);
        }
    }

    /// Pins every pending key of `account`; returns the re-pinned devices with the initial
    /// messages held for them.
    pub(crate) fn accept(&mut self, account: &str) -> Vec<(u32, IdentityKey, Vec<Vec<u8>>)> {
        let mut accepted = Vec::new();
        for ((a, d), pin) in self.pins.range_mut((account.to_owned(), 0)..) {
            if a != account {
                break;
            }
            if let Some(key) = pin.changed.take() {
                pin.key = key;
                pin.removed = false;
                accepted.push((*d, key));
            }
        }
        accepted
            .into_iter()
            .map(|(d, key)| {
                let held = self
                    .held
                    .remove(&(account.to_owned(), d))
                    .unwrap_or_default();
                (d, key, held)
            })
            .collect()
    }

    /// The active pinned devices of `account`, ascending.
    pub(crate) fn active(&self, account: &str) -> Vec<(u32, IdentityKey)> {
        self.devices(account)
            .filter(|(_, p)| !p.removed)
            .map(|(d, p)| (d, p.key))
            .collect()
    }

    /// [`Trust::active`] as it would be after [`Trust::accept`], or `None` without a pending
    /// change: the number to compare before accepting.
    pub(crate) fn active_if_accepted(&self, account: &str) -> Option<Vec<(u32, IdentityKey)>> {
        self.blocked(account)?;
        Some(
            self.devices(account)
                .filter(|(_, p)| !p.removed || p.changed.is_some())
                .map(|(d, p)| (d, p.changed.unwrap_or(p.key)))
                .collect(),
        )
    }

    /// Pins taken over from a state written before pinning existed: the identity of each
    /// peer's current session.
    pub(crate) fn from_sessions(sessions: impl Iterator<Item = (DeviceKey, IdentityKey)>) -> Self {
        let mut trust = Self::default();
        for (device, key) in sessions {
            trust.pins.entry(device).or_insert(Pin {
                key,
                removed: false,
                changed: None,
            });
        }
        trust
    }

    /// `count | (account | device | key (33) | removed | changed flag [| key (33)])...
    ///  | held count | (account | device | message count | messages...)...`
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.pins.len() as u32);
        for ((account, device), pin) in &self.pins {
            w.str(account)
                .u32(*device)
                .raw(&pin.key.to_bytes())
                .u8(u8::from(pin.removed));
            match &pin.changed {
                Some(k) => w.u8(1).raw(&k.to_bytes()),
                None => w.u8(0),
            };
        }
        w.u32(self.held.len() as u32);
        for ((account, device), messages) in &self.held {
            w.str(account).u32(*device).u32(messages.len() as u32);
            for m in messages {
                w.bytes(m);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, SdkError> {
        let mut trust = Self::default();
        for _ in 0..r.u32()? {
            let device = (r.str()?, r.u32()?);
            let key = IdentityKey::from_bytes(&r.array::<33>()?)?;
            let removed = r.u8()? == 1;
            let changed = match r.u8()? {
                1 => Some(IdentityKey::from_bytes(&r.array::<33>()?)?),
                _ => None,
            };
            trust.pins.insert(
                device,
                Pin {
                    key,
                    removed,
                    changed,
                },
            );
        }
        for _ in 0..r.u32()? {
            let device = (r.str()?, r.u32()?);
            let mut messages = Vec::new();
            for _ in 0..r.u32()? {
                messages.push(r.bytes()?.to_vec());
            }
            trust.held.insert(device, messages);
        }
        Ok(trust)
    }
}

/// The 30-digit fingerprint of one account's devices (see the module documentation).
pub(crate) fn fingerprint(account: &str, devices: &[(u32, IdentityKey)]) -> String {
    let mut keys = Vec::with_capacity(devices.len() * 37);
    let mut sorted = devices.to_vec();
    sorted.sort_by_key(|(d, _)| *d);
    for (device, key) in &sorted {
        keys.extend_from_slice(&device.to_be_bytes());
        keys.extend_from_slice(&key.to_bytes());
    }
    let mut hash = Sha512::new()
        .chain_update([0u8, 0u8])
        .chain_update(&keys)
        .chain_update(account.as_bytes())
        .finalize();
    for _ in 0..ITERATIONS {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(&keys)
            .finalize();
    }
    hash[..30]
        .chunks(5)
        .map(|c| {
            let n = c.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
            format!("{:05}", n % 100_000)
        })
        .collect()
}

/// The conversation's safety number: both fingerprints, the smaller first, in groups of five.
pub(crate) fn safety_number(
    local: (&str, &[(u32, IdentityKey)]),
    remote: (&str, &[(u32, IdentityKey)]),
) -> String {
    let mut parts = [
        fingerprint(local.0, local.1),
        fingerprint(remote.0, remote.1),
    ];
    parts.sort();
    let digits = parts.concat();
    digits
        .as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use guardyn_crypto::IdentityKeyPair;

    use super::*;

    fn key(byte: u8) -> IdentityKey {
        let mut bytes = [byte; 33];
        bytes[0] = 0x05;
        IdentityKey::from_bytes(&bytes).unwrap()
    }

    #[test]
    fn safety_number_matches_the_fixed_vector_and_is_order_independent() {
        let alice = [(1, key(1)), (2, key(2))];
        let bob = [(1, key(3))];
        let a = "00000000-0000-4000-8000-00000000000a";
        let b = "00000000-0000-4000-8000-00000000000b";
        let number = safety_number((a, &alice), (b, &bob));
        assert_eq!(number, safety_number((b, &bob), (a, &alice)));
        let reversed = [(2, key(2)), (1, key(1))];
        assert_eq!(number, safety_number((a, &reversed), (b, &bob)));
        assert_eq!(number, FIXED_VECTOR);
        assert_eq!(number.len(), 60 + 11);
        assert!(number.chars().all(|c| c.is_ascii_digit() || c == ' '));
        let bob_changed = [(1, key(4))];
        assert_ne!(number, safety_number((a, &alice), (b, &bob_changed)));
        let bob_more = [(1, key(3)), (2, key(5))];
        assert_ne!(number, safety_number((a, &alice), (b, &bob_more)));
    }

    /// Computed independently (Python hashlib) from the derivation in the module docs.
    const FIXED_VECTOR: &str =
        "33943 65525 58567 36350 31866 38934 50193 22555 66151 07435 33046 33790";

    #[test]
    fn a_changed_key_is_pending_until_accepted_and_held_messages_are_released() {
        let mut trust = Trust::default();
        let bob1 = ("bob".to_owned(), 1);
        let bob2 = ("bob".to_owned(), 2);
        let k1 = IdentityKeyPair::generate().identity_key();
        let k2 = IdentityKeyPair::generate().identity_key();
        assert_eq!(trust.observe(&bob1, &k1), Seen::FirstContact);
        assert_eq!(trust.observe(&bob1, &k1), Seen::Trusted);
        assert_eq!(trust.observe(&bob2, &k2), Seen::NewDevice);
        assert_eq!(trust.blocked("bob"), None);
        assert_eq!(trust.observe(&bob1, &k2), Seen::Changed { first: true });
        assert_eq!(trust.observe(&bob1, &k2), Seen::Changed { first: false });
        trust.hold(&bob1, vec![7]);
        assert_eq!(trust.blocked("bob"), Some(1));
        assert!(trust.is_pinned(&bob1, &k1));

        let mut w = Writer::new();
        trust.encode(&mut w);
        let bytes = w.finish();
        let mut back = Trust::decode(&mut Reader::new(&bytes, "trust")).unwrap();
        assert_eq!(back.blocked("bob"), Some(1));

        let accepted = back.accept("bob");
        assert_eq!(accepted.len(), 1);
        assert_eq!(accepted[0].0, 1);
        assert_eq!(accepted[0].2, vec![vec![7]]);
        assert_eq!(back.blocked("bob"), None);
        assert!(back.is_pinned(&bob1, &k2));

        back.removed(&bob2);
        assert_eq!(back.active("bob").len(), 1);
        let k3 = IdentityKeyPair::generate().identity_key();
        assert_eq!(
            back.observe(&bob2, &k3),
            Seen::NewDevice,
            "a removed id reused by a new device"
        );
        assert_eq!(back.observe(&bob2, &k3), Seen::Trusted);
        back.removed(&bob2);
        assert_eq!(
            back.observe(&bob2, &k3),
            Seen::NewDevice,
            "the same key comes back"
        );
        assert_eq!(
            back.observe(&bob2, &k2),
            Seen::Changed { first: true },
            "an id not seen removed changes its key"
        );
    }
}
