//! A Guardyn transaction translated to TiKV's key space, and its conditions' verdict.

use std::collections::HashMap;

use guardyn_storage::{Condition, MAX_KEY_LEN, MAX_VALUE_LEN, Mutation, StorageError, Txn};

use crate::codec::{Keyspace, encode_value};

/// What a condition wants of a stored (prefixed, enveloped) key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    Absent,
    Exists,
    /// The stored bytes, envelope included.
    Equals(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Write {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// A validated transaction on stored keys and values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) conditions: Vec<(Vec<u8>, Want)>,
    pub(crate) writes: Vec<Write>,
}

impl Plan {
    /// Translate `txn`, rejecting it whole when any key or value breaks the limits.
    pub(crate) fn new(keys: &Keyspace, txn: &Txn) -> Result<Self, StorageError> {
        let mut conditions = Vec::with_capacity(txn.conditions.len());
        for c in &txn.conditions {
            let (key, want) = match c {
                Condition::Absent(k) => (k, Want::Absent),
                Condition::Exists(k) => (k, Want::Exists),
                Condition::Equals(k, v) => (k, Want::Equals(encode_value(v))),
            };
            check_key(key)?;
            conditions.push((keys.key(key), want));
        }
        let mut writes = Vec::with_capacity(txn.mutations.len());
        for m in &txn.mutations {
            writes.push(match m {
                Mutation::Put(k, v) => {
                    check_key(k)?;
                    check_value(v)?;
                    Write::Put(keys.key(k), encode_value(v))
                }
                Mutation::Delete(k) => {
                    check_key(k)?;
                    Write::Delete(keys.key(k))
                }
            });
        }
        Ok(Self { conditions, writes })
    }

    /// Each condition's key once, in first-use order: what one batch read must fetch.
    pub(crate) fn condition_keys(&self) -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for (k, _) in &self.conditions {
            if !out.contains(k) {
                out.push(k.clone());
            }
        }
        out
    }

    /// Condition keys the transaction does not write. An optimistic TiKV transaction checks
    /// for conflicts only on the keys it prewrites, so these are locked (prewritten as `Lock`)
    /// to make a concurrent change to them abort this commit instead of slipping past the
    /// condition (write skew).
    pub(crate) fn keys_to_lock(&self) -> Vec<Vec<u8>> {
        self.condition_keys()
            .into_iter()
            .filter(|k| {
                !self.writes.iter().any(|w| match w {
                    Write::Put(wk, _) | Write::Delete(wk) => wk == k,
                })
            })
            .collect()
    }

    /// The first condition that `found` (stored key → stored value, absent keys missing)
    /// does not satisfy.
    pub(crate) fn first_failing(&self, found: &HashMap<Vec<u8>, Vec<u8>>) -> Option<usize> {
        self.conditions.iter().position(|(k, want)| {
            let holds = match (want, found.get(k)) {
                (Want::Absent, None) | (Want::Exists, Some(_)) => true,
                (Want::Equals(expected), Some(stored)) => expected == stored,
                _ => false,
            };
            !holds
        })
    }
}

pub(crate) fn check_key(key: &[u8]) -> Result<(), StorageError> {
    if key.len() > MAX_KEY_LEN {
        return Err(StorageError::InvalidRequest(format!(
            "key of {} bytes exceeds {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), StorageError> {
    if value.len() > MAX_VALUE_LEN {
        return Err(StorageError::InvalidRequest(format!(
            "value of {} bytes exceeds {MAX_VALUE_LEN}",
            value.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ks() -> Keyspace {
        Keyspace::new(b"p/")
    }

    #[test]
    fn keys_and_values_are_translated() {
        let txn = Txn::new()
            .require_equals(b"a".to_vec(), b"".to_vec())
            .require_absent(b"b".to_vec())
            .put(b"c".to_vec(), b"v".to_vec())
            .delete(b"a".to_vec());
        let plan = Plan::new(&ks(), &txn).unwrap();
        assert_eq!(
            plan.conditions,
            vec![
                (b"p/a".to_vec(), Want::Equals(vec![1])),
                (b"p/b".to_vec(), Want::Absent)
            ]
        );
        assert_eq!(
            plan.writes,
            vec![
                Write::Put(b"p/c".to_vec(), vec![1, b'v']),
                Write::Delete(b"p/a".to_vec())
            ]
        );
    }

    #[test]
    fn oversized_keys_or_values_reject_the_whole_txn() {
        let long = vec![b'k'; MAX_KEY_LEN + 1];
        for txn in [
            Txn::new().require_exists(long.clone()),
            Txn::new().delete(long.clone()),
            Txn::new()
                .put(b"ok".to_vec(), b"v".to_vec())
                .put(long, b"v".to_vec()),
            Txn::new().put(b"ok".to_vec(), vec![0; MAX_VALUE_LEN + 1]),
        ] {
            assert!(matches!(
                Plan::new(&ks(), &txn),
                Err(StorageError::InvalidRequest(_))
            ));
        }
        // The limits apply to the caller's key, not the prefixed one.
        let txn = Txn::new().put(vec![b'k'; MAX_KEY_LEN], vec![0; MAX_VALUE_LEN]);
        Plan::new(&ks(), &txn).unwrap();
    }

    #[test]
    fn only_unwritten_condition_keys_are_locked_once() {
        let txn = Txn::new()
            .require_exists(b"read".to_vec())
            .require_equals(b"read".to_vec(), b"x".to_vec())
            .require_absent(b"written".to_vec())
            .require_exists(b"deleted".to_vec())
            .put(b"written".to_vec(), b"v".to_vec())
            .delete(b"deleted".to_vec());
        let plan = Plan::new(&ks(), &txn).unwrap();
        assert_eq!(
            plan.condition_keys(),
            vec![
                b"p/read".to_vec(),
                b"p/written".to_vec(),
                b"p/deleted".to_vec()
            ]
        );
        assert_eq!(plan.keys_to_lock(), vec![b"p/read".to_vec()]);
    }

    #[test]
    fn first_failing_condition_is_reported() {
        let txn = Txn::new()
            .require_exists(b"a".to_vec())
            .require_absent(b"a".to_vec())
            .require_equals(b"b".to_vec(), b"1".to_vec())
            .require_equals(b"empty".to_vec(), b"".to_vec());
        let plan = Plan::new(&ks(), &txn).unwrap();
        let mut found = HashMap::new();
        assert_eq!(plan.first_failing(&found), Some(0), "Exists on missing");
        found.insert(b"p/a".to_vec(), encode_value(b""));
        assert_eq!(
            plan.first_failing(&found),
            Some(1),
            "Absent on an empty value"
        );
        let only_b = Plan::new(
            &ks(),
            &Txn::new().require_equals(b"b".to_vec(), b"1".to_vec()),
        )
        .unwrap();
        assert_eq!(only_b.first_failing(&found), Some(0), "Equals on missing");
        found.insert(b"p/b".to_vec(), encode_value(b"1\0"));
        assert_eq!(only_b.first_failing(&found), Some(0), "Equals longer");
        found.insert(b"p/b".to_vec(), encode_value(b"1"));
        assert_eq!(only_b.first_failing(&found), None, "Equals same");
        let empty = Plan::new(
            &ks(),
            &Txn::new().require_equals(b"empty".to_vec(), b"".to_vec()),
        )
        .unwrap();
        assert_eq!(
            empty.first_failing(&found),
            Some(0),
            "Equals empty on missing"
        );
        found.insert(b"p/empty".to_vec(), encode_value(b""));
        assert_eq!(empty.first_failing(&found), None, "Equals empty on empty");
        assert_eq!(
            Plan::new(&ks(), &Txn::new()).unwrap().first_failing(&found),
            None
        );
    }
}
