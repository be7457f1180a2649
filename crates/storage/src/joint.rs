//! [`JointStore`]: a KV transaction and log appends committed as one atomic step, for engines
//! that keep both stores in one database.
//!
//! A 1:1 send must store its envelopes, charge the queues and record its result under the
//! client's message id, all or nothing. With separate stores that takes three writes (reserve
//! the id, append, complete the reservation) and a lease to recover from a crash between them;
//! an engine offering [`JointStore`] does it in one. Engines that cannot (TiKV beside ScyllaDB)
//! leave [`crate::Stores::joint`] empty and the services keep the stepwise protocol.

use std::fmt;

use async_trait::async_trait;

use crate::StorageResult;
use crate::kv::Txn;
use crate::log::NewEntry;

/// Builds a KV value from the sequences the appends of a [`JointTxn`] received (one list per
/// append, in the order of [`JointTxn::appends`]).
pub type SeqRecord = Box<dyn FnOnce(&[Vec<u64>]) -> Vec<u8> + Send>;

/// A read-modify-write of one KV key inside a [`JointTxn`]: given the key's value (`None`:
/// absent), the new value, or `None` to refuse the whole transaction.
pub type Update = Box<dyn FnOnce(Option<&[u8]>) -> Option<Vec<u8>> + Send>;

/// A transaction over the KV store and the log.
///
/// Applied as one step: every condition of `txn` is checked against the KV store; only if all
/// hold, every update is given its key's value (as it was before this transaction) and, only if
/// none refuses, the mutations of `txn` are applied, the updates' values put, every append made,
/// and `record` (if any) put with the value its function builds from the appends' sequences.
/// Either all of it is durable or none of it happened.
///
/// Updates are for counters many writers change at once (a queue's usage): where a
/// compare-and-set condition would make all but one of them conflict and retry, an update
/// sees the value the previous transaction left.
pub struct JointTxn {
    pub txn: Txn,
    /// (key, read-modify-write); a key should not also be in `txn`'s mutations.
    pub updates: Vec<(Vec<u8>, Update)>,
    /// (partition, entries), appended in this order.
    pub appends: Vec<(Vec<u8>, Vec<NewEntry>)>,
    /// A key put last, its value depending on the sequences the appends received.
    pub record: Option<(Vec<u8>, SeqRecord)>,
}

impl fmt::Debug for JointTxn {
    // Payloads are ciphertext and the record is opaque: print shapes only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let appends: Vec<(String, usize)> = self
            .appends
            .iter()
            .map(|(p, e)| (String::from_utf8_lossy(p).into_owned(), e.len()))
            .collect();
        f.debug_struct("JointTxn")
            .field("txn", &self.txn)
            .field(
                "updates",
                &self
                    .updates
                    .iter()
                    .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                    .collect::<Vec<_>>(),
            )
            .field("appends", &appends)
            .field(
                "record",
                &self
                    .record
                    .as_ref()
                    .map(|(k, _)| String::from_utf8_lossy(k).into_owned()),
            )
            .finish()
    }
}

/// Whether a [`JointTxn`] committed.
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JointOutcome {
    /// Everything is durable: the sequences each append received, in order.
    Committed(Vec<Vec<u64>>),
    /// The condition at this index (into the KV transaction's conditions) did not hold; nothing
    /// was written.
    Conflict { condition: usize },
    /// The update at this index (into [`JointTxn::updates`]) refused; nothing was written.
    Refused { update: usize },
}

/// An engine whose KV store and log commit together.
///
/// Contract (checked by [`crate::conformance`]'s `joint_*` cases), on top of the KV and log
/// contracts, which its appends and puts obey (sequences, limits, durability):
/// - all or nothing: a failed condition, a refusing update, a request over a size limit (built
///   values included) or an error writes nothing;
/// - an update sees every transaction committed before its own, never a stale value;
/// - serializable with every KV transaction and append: of two joint transactions racing on
///   one key with the same precondition, exactly one commits;
/// - the record is built from the sequences the entries really received.
#[async_trait]
pub trait JointStore: Send + Sync + fmt::Debug + 'static {
    async fn commit_joint(&self, txn: JointTxn) -> StorageResult<JointOutcome>;
}
