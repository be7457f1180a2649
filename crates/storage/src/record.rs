//! The one encoding of every value a service persists: `[version byte] ++ postcard(record)`.
//!
//! A record type names its current version ([`Record::VERSION`]); readers refuse a version they
//! do not know as corrupt rather than guessing, and a type whose layout changed keeps reading
//! its older versions by overriding [`Record::decode_version`]. postcard is compact and fast, and
//! serde derives keep the format next to the type; a change of layout is a new version.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StorageError;

/// A persisted value type.
pub trait Record: Serialize + DeserializeOwned {
    /// Version tag written in front of every encoded value.
    const VERSION: u8;

    /// Decode a body written under `version` (only [`Self::VERSION`] unless overridden).
    fn decode_version(version: u8, body: &[u8]) -> Result<Self, StorageError> {
        if version != Self::VERSION {
            return Err(StorageError::Corrupt(format!(
                "{}: unknown version {version}",
                std::any::type_name::<Self>()
            )));
        }
        postcard_body(body)
    }
}

/// Encode `value` with its version tag.
pub fn encode<R: Record>(value: &R) -> Vec<u8> {
    // Most records fit 128 bytes; starting there saves the vector's early doublings (seven
    // reallocations for a queue entry of a few hundred bytes when started at one).
    let mut out = Vec::with_capacity(128);
    out.push(R::VERSION);
    // postcard fails only for sequences of unknown length or a `Serialize` impl that reports an
    // error; derived impls of structs, enums, strings, byte vectors, collections and maps have
    // neither, and every record type is such a derive (each has a round-trip test).
    #[allow(clippy::expect_used)]
    postcard::to_extend(value, out).expect("postcard encodes derived records")
}

/// Decode a value written by [`encode`].
pub fn decode<R: Record>(bytes: &[u8]) -> Result<R, StorageError> {
    match bytes.split_first() {
        Some((v, body)) => R::decode_version(*v, body),
        None => Err(StorageError::Corrupt(format!(
            "{}: empty value",
            std::any::type_name::<R>()
        ))),
    }
}

/// postcard-decode a record body (for [`Record::decode_version`] overrides).
pub fn postcard_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(body)
        .map_err(|e| StorageError::Corrupt(format!("{}: {e}", std::any::type_name::<T>())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        a: u32,
        b: String,
    }
    impl Record for V2 {
        const VERSION: u8 = 2;
        fn decode_version(version: u8, body: &[u8]) -> Result<Self, StorageError> {
            match version {
                1 => Ok(Self {
                    a: postcard_body(body)?,
                    b: String::new(),
                }),
                2 => postcard_body(body),
                v => Err(StorageError::Corrupt(format!("version {v}"))),
            }
        }
    }

    #[test]
    fn versioned_round_trip_and_migration() {
        let v = V2 {
            a: 7,
            b: "x".into(),
        };
        let bytes = encode(&v);
        assert_eq!(bytes[0], 2);
        assert_eq!(decode::<V2>(&bytes).unwrap(), v);
        let mut old = vec![1u8];
        old.extend(postcard::to_stdvec(&9u32).unwrap());
        assert_eq!(decode::<V2>(&old).unwrap().a, 9);
        assert!(matches!(
            decode::<V2>(&[3, 0]),
            Err(StorageError::Corrupt(_))
        ));
        assert!(matches!(decode::<V2>(&[]), Err(StorageError::Corrupt(_))));
    }
}
