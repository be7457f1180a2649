//! How Guardyn keys, ranges and values map onto TiKV's key space.
//!
//! Keys: `key_prefix ++ key`. Ranges become TiKV's half-open `[start, end)` on prefixed keys,
//! clamped to the prefix, so a scan never leaves this deployment's keys.
//!
//! Values: `[FORMAT_PLAIN] ++ value`. The tag keeps an empty Guardyn value from being stored as
//! an empty TiKV value (TiKV's raw API and TiDB-derived tools treat empty as "no value"), and
//! leaves room for another format (say, with an expiry) without rewriting the cluster.

use std::ops::Bound;

use guardyn_storage::{KeyRange, StorageError};

/// The only value format so far: the caller's bytes, unchanged.
pub(crate) const FORMAT_PLAIN: u8 = 1;

/// The keys of one deployment: everything under `prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Keyspace {
    prefix: Vec<u8>,
    /// First key after every prefixed key; `None` when the prefix is all `0xFF`.
    end: Option<Vec<u8>>,
}

impl Keyspace {
    pub(crate) fn new(prefix: &[u8]) -> Self {
        let end = match KeyRange::prefix(prefix).end {
            Bound::Excluded(end) => Some(end),
            _ => None,
        };
        Self {
            prefix: prefix.to_vec(),
            end,
        }
    }

    pub(crate) fn key(&self, key: &[u8]) -> Vec<u8> {
        [self.prefix.as_slice(), key].concat()
    }

    /// The caller's key of a stored key.
    pub(crate) fn strip(&self, stored: Vec<u8>) -> Result<Vec<u8>, StorageError> {
        if !stored.starts_with(&self.prefix) {
            return Err(StorageError::Corrupt(
                "TiKV returned a key outside the configured key_prefix".into(),
            ));
        }
        Ok(stored[self.prefix.len()..].to_vec())
    }

    /// `range` as prefixed `[start, end)`, or `None` when no key can lie in it (TiKV must not
    /// see an inverted range: a reverse scan would swap its ends).
    pub(crate) fn range(&self, range: &KeyRange) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
        let start = match &range.start {
            Bound::Included(s) => self.key(s),
            Bound::Excluded(s) => next_key(self.key(s)),
            Bound::Unbounded => self.prefix.clone(),
        };
        let end = match &range.end {
            Bound::Included(e) => Some(next_key(self.key(e))),
            Bound::Excluded(e) => Some(self.key(e)),
            Bound::Unbounded => self.end.clone(),
        };
        match &end {
            Some(end) if *end <= start => None,
            _ => Some((start, end)),
        }
    }
}

/// The smallest key greater than `key`.
fn next_key(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}

pub(crate) fn encode_value(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 1);
    out.push(FORMAT_PLAIN);
    out.extend_from_slice(value);
    out
}

pub(crate) fn decode_value(mut stored: Vec<u8>) -> Result<Vec<u8>, StorageError> {
    match stored.first() {
        Some(&FORMAT_PLAIN) => {
            stored.remove(0);
            Ok(stored)
        }
        Some(tag) => Err(StorageError::Corrupt(format!(
            "unknown TiKV value format {tag}"
        ))),
        None => Err(StorageError::Corrupt("empty TiKV value".into())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ks() -> Keyspace {
        Keyspace::new(b"dep/")
    }

    fn r(start: Bound<&[u8]>, end: Bound<&[u8]>) -> KeyRange {
        KeyRange {
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn keys_are_prefixed_and_stripped() {
        assert_eq!(ks().key(b"auth/v1/x"), b"dep/auth/v1/x");
        assert_eq!(ks().key(b""), b"dep/");
        assert_eq!(ks().strip(b"dep/a\xff".to_vec()).unwrap(), b"a\xff");
        assert_eq!(ks().strip(b"dep/".to_vec()).unwrap(), b"");
        assert!(matches!(
            ks().strip(b"other/a".to_vec()),
            Err(StorageError::Corrupt(_))
        ));
    }

    #[test]
    fn bounds_become_half_open_prefixed_ranges() {
        use Bound::{Excluded, Included, Unbounded};
        type Want<'a> = Option<(&'a [u8], Option<&'a [u8]>)>;
        let cases: Vec<(KeyRange, Want<'_>)> = vec![
            (
                r(Included(b"c"), Included(b"f")),
                Some((b"dep/c", Some(b"dep/f\0"))),
            ),
            (
                r(Included(b"c"), Excluded(b"f")),
                Some((b"dep/c", Some(b"dep/f"))),
            ),
            (
                r(Excluded(b"c"), Included(b"f")),
                Some((b"dep/c\0", Some(b"dep/f\0"))),
            ),
            (
                r(Excluded(b"c"), Excluded(b"f")),
                Some((b"dep/c\0", Some(b"dep/f"))),
            ),
            // Unbounded ends stay inside the deployment's prefix.
            (r(Unbounded, Unbounded), Some((b"dep/", Some(b"dep0")))),
            (
                r(Unbounded, Excluded(b"c")),
                Some((b"dep/", Some(b"dep/c"))),
            ),
            (
                r(Included(b"h"), Unbounded),
                Some((b"dep/h", Some(b"dep0"))),
            ),
            (
                r(Included(b"e"), Included(b"e")),
                Some((b"dep/e", Some(b"dep/e\0"))),
            ),
            // Empty and inverted ranges never reach TiKV.
            (r(Included(b"e"), Excluded(b"e")), None),
            (r(Excluded(b"e"), Included(b"e")), None),
            (r(Included(b"f"), Excluded(b"c")), None),
            (r(Included(b"f"), Included(b"c")), None),
        ];
        for (range, want) in cases {
            let got = ks().range(&range);
            let want = want.map(|(s, e)| (s.to_vec(), e.map(<[u8]>::to_vec)));
            assert_eq!(got, want, "{range:?}");
        }
    }

    #[test]
    fn prefix_ranges_carry_over_0xff() {
        // The caller's prefix range ends with a carry ("a\xff" -> "b"), prefixed after.
        let got = ks().range(&KeyRange::prefix(b"a\xff")).unwrap();
        assert_eq!(got, (b"dep/a\xff".to_vec(), Some(b"dep/b".to_vec())));
        // An all-0xFF caller prefix is unbounded above: clamp to the deployment's end.
        let got = ks().range(&KeyRange::prefix(b"\xff\xff")).unwrap();
        assert_eq!(got, (b"dep/\xff\xff".to_vec(), Some(b"dep0".to_vec())));
        // The deployment prefix itself carries the same way.
        let odd = Keyspace::new(b"a\xff\xff");
        assert_eq!(odd.range(&KeyRange::all()).unwrap().1, Some(b"b".to_vec()));
        let top = Keyspace::new(b"\xff");
        assert_eq!(
            top.range(&KeyRange::all()).unwrap(),
            (b"\xff".to_vec(), None)
        );
    }

    #[test]
    fn values_round_trip_through_the_envelope() {
        for v in [&b""[..], b"\x00", b"\x01", b"payload"] {
            let stored = encode_value(v);
            assert_eq!(stored[0], FORMAT_PLAIN);
            assert_eq!(stored.len(), v.len() + 1, "never empty in TiKV");
            assert_eq!(decode_value(stored).unwrap(), v);
        }
        assert!(matches!(
            decode_value(Vec::new()),
            Err(StorageError::Corrupt(_))
        ));
        assert!(matches!(
            decode_value(vec![2, 1, 2]),
            Err(StorageError::Corrupt(m)) if m.contains("format 2")
        ));
    }
}
