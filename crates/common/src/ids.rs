//! The identifiers every service shares, each validated by one constructor.
//!
//! Handlers parse wire values into these types once, at the edge ([`AccountId::parse_field`],
//! [`DeviceId::parse_field`], ...), so the domain code below the edge never re-checks them and
//! every service rejects the same bad input with the same `INVALID_ARGUMENT` field violation.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

/// An account: a UUID, written in its canonical lowercase hyphenated form (36 characters) in
/// keys, subjects and on the wire, so one account has one spelling.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AccountId(Uuid);

/// Length of an [`AccountId`]'s canonical spelling.
pub const ACCOUNT_ID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;

impl AccountId {
    /// A fresh random account id.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    pub const fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub const fn uuid(&self) -> Uuid {
        self.0
    }

    /// Only the canonical lowercase hyphenated form (as the server issues it) is accepted,
    /// so one account has one spelling in keys, subjects and requests.
    pub fn parse(s: &str) -> Option<Self> {
        let id = Self(Uuid::try_parse(s).ok()?);
        (id.encode(&mut [0; ACCOUNT_ID_LEN]) == s).then_some(id)
    }

    /// The canonical spelling, written into `buf`: what `Display` writes, without the
    /// formatter or an allocation, for the keys and subjects built on every request.
    pub fn encode<'b>(&self, buf: &'b mut [u8; ACCOUNT_ID_LEN]) -> &'b str {
        self.0.hyphenated().encode_lower(buf)
    }

    /// [`Self::parse`] for a request field: `INVALID_ARGUMENT` naming `field` otherwise.
    pub fn parse_field(field: &str, s: &str) -> Result<Self, ApiError> {
        Self::parse(s).ok_or_else(|| ApiError::invalid_field(field, "must be an account id (UUID)"))
    }

    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        Uuid::from_slice(b).ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for AccountId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        Self::parse(s).ok_or(InvalidId("account id"))
    }
}

/// A value that is not a valid identifier of the named kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {0}")]
pub struct InvalidId(pub &'static str);

/// A device of an account: libsignal-style, 1..=127, never reused within the account.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct DeviceId(u8);

impl DeviceId {
    /// Smallest device id (the account's first device).
    pub const FIRST: Self = Self(1);
    /// Largest device id.
    pub const MAX: u32 = 127;

    pub fn new(id: u32) -> Option<Self> {
        match u8::try_from(id) {
            Ok(b) if (1..=127).contains(&b) => Some(Self(b)),
            _ => None,
        }
    }

    /// [`Self::new`] for a request field: `INVALID_ARGUMENT` naming `field` otherwise.
    pub fn parse_field(field: &str, id: u32) -> Result<Self, ApiError> {
        Self::new(id).ok_or_else(|| ApiError::invalid_field(field, "must be 1..127"))
    }

    pub const fn get(self) -> u32 {
        self.0 as u32
    }

    /// Every possible device id, in order.
    pub fn all() -> impl Iterator<Item = Self> {
        (1..=127u8).map(Self)
    }
}

impl TryFrom<u32> for DeviceId {
    type Error = InvalidId;
    fn try_from(id: u32) -> Result<Self, InvalidId> {
        Self::new(id).ok_or(InvalidId("device id (1..127)"))
    }
}

impl From<DeviceId> for u32 {
    fn from(d: DeviceId) -> u32 {
        d.get()
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// An MLS group id: 16..=64 opaque bytes chosen by the creating client (at least 128 random
/// bits, so it is not guessable). Cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct GroupId(Arc<[u8]>);

impl TryFrom<Vec<u8>> for GroupId {
    type Error = InvalidId;
    fn try_from(bytes: Vec<u8>) -> Result<Self, InvalidId> {
        Self::new(&bytes).ok_or(InvalidId("group id (16..64 bytes)"))
    }
}

impl From<GroupId> for Vec<u8> {
    fn from(g: GroupId) -> Vec<u8> {
        g.0.to_vec()
    }
}

impl GroupId {
    pub const MIN_LEN: usize = 16;
    pub const MAX_LEN: usize = 64;

    pub fn new(bytes: &[u8]) -> Option<Self> {
        (Self::MIN_LEN..=Self::MAX_LEN)
            .contains(&bytes.len())
            .then(|| Self(bytes.into()))
    }

    /// [`Self::new`] for a request field: `INVALID_ARGUMENT` naming `field` otherwise.
    pub fn parse_field(field: &str, bytes: &[u8]) -> Result<Self, ApiError> {
        Self::new(bytes).ok_or_else(|| ApiError::invalid_field(field, "must be 16..64 bytes"))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lowercase hex, as used in storage keys.
    pub fn hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({})", self.hex())
    }
}

/// A media object: a 128-bit random capability, written as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MediaId([u8; 16]);

impl MediaId {
    pub fn random() -> Self {
        Self(rand::random())
    }

    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }

    /// [`Self::parse`] for a request field: `INVALID_ARGUMENT` naming `field` otherwise.
    pub fn parse_field(field: &str, s: &str) -> Result<Self, ApiError> {
        Self::parse(s).ok_or_else(|| ApiError::invalid_field(field, "must be a media id"))
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

impl fmt::Debug for MediaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MediaId({self})")
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    // Not `write!("{b:02x}")`: group keys are built on every delivery, and the formatting
    // machinery was 2.6 % of a busy group's server CPU.
    let digit = |n: u8| char::from_digit(u32::from(n), 16).unwrap_or('0');
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(digit(b >> 4));
        s.push(digit(b & 0x0f));
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn account_ids_have_one_spelling() {
        let a = AccountId::random();
        let s = a.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(a.encode(&mut [0; ACCOUNT_ID_LEN]), s);
        assert_eq!(AccountId::parse(&s), Some(a));
        let s = "0b0c5c8e-7c4b-4c1e-9a34-1d5b0d3b8f11";
        assert_eq!(AccountId::parse(s).unwrap().to_string(), s);
        assert!(AccountId::parse(&s.to_uppercase()).is_none());
        assert!(AccountId::parse(&s.replace('-', "")).is_none());
        assert!(AccountId::parse("nope").is_none());
        assert_eq!(AccountId::parse(&a.uuid().simple().to_string()), None);
        let err = AccountId::parse_field("destination_account_id", "x").unwrap_err();
        assert_eq!(err.violations()[0].field, "destination_account_id");
        assert_eq!(AccountId::from_bytes(a.as_bytes()), Some(a));
    }

    #[test]
    fn device_ids_are_1_to_127() {
        assert_eq!(DeviceId::new(0), None);
        assert_eq!(DeviceId::new(128), None);
        assert_eq!(DeviceId::new(256 + 1), None);
        assert_eq!(DeviceId::new(127).unwrap().get(), 127);
        assert_eq!(DeviceId::all().count(), 127);
        let err = DeviceId::parse_field("device_id", 0).unwrap_err();
        assert_eq!(err.violations()[0].field, "device_id");
        let bytes = postcard::to_stdvec(&DeviceId::FIRST).unwrap();
        assert!(postcard::from_bytes::<DeviceId>(&[200]).is_err());
        assert_eq!(
            postcard::from_bytes::<DeviceId>(&bytes).unwrap(),
            DeviceId::FIRST
        );
    }

    #[test]
    fn group_and_media_ids_validate() {
        assert!(GroupId::new(&[0; 15]).is_none());
        assert!(GroupId::new(&[0; 65]).is_none());
        assert_eq!(GroupId::new(&[0xab; 16]).unwrap().hex(), "ab".repeat(16));
        let m = MediaId::random();
        assert_eq!(MediaId::parse(&m.to_string()), Some(m));
        assert_eq!(MediaId::parse(&m.to_string().to_uppercase()), None);
        assert_eq!(MediaId::parse("zz"), None);
    }
}
