//! Which tikv-client errors mean "another transaction got in first", "the cluster is out of
//! reach", "the commit may or may not have happened" or "something else broke".

use guardyn_storage::StorageError;
use tikv_client::Error;

/// What a failed TiKV call means for the operation, from mildest to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    /// The transaction lost a race (write conflict, a live lock it could not resolve, its own
    /// locks cleaned up by another client) and did not commit: starting it again is safe.
    Conflict,
    /// PD or TiKV could not be reached or did not answer in time; nothing of a transaction
    /// was committed.
    Unavailable,
    /// The primary key's commit got no answer: the transaction may have committed.
    Undetermined,
    /// Anything else: a bug, a misconfiguration, an unexpected answer.
    Backend,
}

// gRPC status codes that mean "try again later" (tikv-client's tonic is not ours, so by number).
const CANCELLED: i32 = 1;
const DEADLINE_EXCEEDED: i32 = 4;
const RESOURCE_EXHAUSTED: i32 = 8;
const ABORTED: i32 = 10;
const UNAVAILABLE: i32 = 14;

pub(crate) fn classify(e: &Error) -> Class {
    match e {
        Error::KeyError(k) => {
            let lost_race = k.conflict.is_some()
                || k.locked.is_some()
                || !k.retryable.is_empty()
                || k.txn_not_found.is_some()
                || k.deadlock.is_some();
            if lost_race {
                Class::Conflict
            } else {
                Class::Backend
            }
        }
        Error::ResolveLockError(_) | Error::TxnNotFound(_) => Class::Conflict,
        Error::PessimisticLockError { inner, .. } => classify(inner),
        // Several regions or keys failed: the worst of them decides.
        Error::ExtractedErrors(errors) | Error::MultipleKeyErrors(errors) => {
            errors.iter().map(classify).max().unwrap_or(Class::Backend)
        }
        Error::UndeterminedError(_) => Class::Undetermined,
        Error::GrpcAPI(status) => match i32::from(status.code()) {
            CANCELLED | DEADLINE_EXCEEDED | RESOURCE_EXHAUSTED | ABORTED | UNAVAILABLE => {
                Class::Unavailable
            }
            _ => Class::Backend,
        },
        Error::Grpc(_)
        | Error::RegionError(_)
        | Error::LeaderNotFound { .. }
        | Error::NoCurrentRegions
        | Error::EntryNotFoundInRegionCache
        | Error::RegionForKeyNotFound { .. }
        | Error::RegionForRangeNotFound { .. }
        | Error::RegionNotFoundInResponse { .. }
        | Error::Io(_)
        | Error::Channel(_)
        | Error::Canceled(_)
        | Error::JoinError(_) => Class::Unavailable,
        _ => Class::Backend,
    }
}

/// The storage error a caller sees for a TiKV error that is not retried (any more).
pub(crate) fn to_storage(e: &Error) -> StorageError {
    let message = truncate(e.to_string());
    match classify(e) {
        Class::Conflict => {
            StorageError::Unavailable(format!("TiKV transaction kept conflicting: {message}"))
        }
        Class::Unavailable => StorageError::Unavailable(format!("TiKV: {message}")),
        // The trait has no "maybe committed" outcome; Unavailable tells callers to retry, and
        // every caller's retry re-reads and re-checks its conditions first.
        Class::Undetermined => {
            StorageError::Unavailable(format!("TiKV commit outcome unknown: {message}"))
        }
        Class::Backend => StorageError::Backend(format!("TiKV: {message}")),
    }
}

/// Error texts can hold many keys (one per failed region): keep logs and messages bounded.
fn truncate(mut s: String) -> String {
    const MAX: usize = 512;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tikv_client::ProtoKeyError;
    use tonic010::{Code, Status};

    fn key_error(f: impl FnOnce(&mut ProtoKeyError)) -> Error {
        let mut k = ProtoKeyError::default();
        f(&mut k);
        Error::KeyError(Box::new(k))
    }

    fn conflict() -> Error {
        key_error(|k| k.conflict = Some(Default::default()))
    }

    #[test]
    fn lost_races_are_conflicts() {
        assert_eq!(classify(&conflict()), Class::Conflict, "write conflict");
        let locked = key_error(|k| k.locked = Some(Default::default()));
        assert_eq!(
            classify(&locked),
            Class::Conflict,
            "key locked by a live txn"
        );
        let retryable = key_error(|k| k.retryable = "stale read".into());
        assert_eq!(classify(&retryable), Class::Conflict, "retryable");
        let gone = key_error(|k| k.txn_not_found = Some(Default::default()));
        assert_eq!(classify(&gone), Class::Conflict, "own locks rolled back");
        assert_eq!(classify(&Error::ResolveLockError(vec![])), Class::Conflict);
        let prewrite = Error::ExtractedErrors(vec![conflict(), conflict()]);
        assert_eq!(classify(&prewrite), Class::Conflict, "every key conflicted");
        let nested = Error::PessimisticLockError {
            inner: Box::new(Error::MultipleKeyErrors(vec![conflict()])),
            success_keys: vec![],
        };
        assert_eq!(classify(&nested), Class::Conflict);
    }

    #[test]
    fn outages_are_unavailable() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
        ] {
            let e = Error::GrpcAPI(Status::new(code, "down"));
            assert_eq!(classify(&e), Class::Unavailable, "{code:?}");
            assert!(matches!(to_storage(&e), StorageError::Unavailable(_)));
        }
        assert_eq!(classify(&Error::NoCurrentRegions), Class::Unavailable);
        assert_eq!(
            classify(&Error::RegionError(Box::default())),
            Class::Unavailable
        );
        let io = Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(classify(&io), Class::Unavailable);
        // A region error among conflicts is not a plain lost race.
        let mixed = Error::ExtractedErrors(vec![conflict(), Error::RegionError(Box::default())]);
        assert_eq!(classify(&mixed), Class::Unavailable);
    }

    #[test]
    fn unknown_commit_outcome_is_never_a_conflict() {
        // Retrying a commit that may have landed could apply it twice.
        let e = Error::UndeterminedError(Box::new(conflict()));
        assert_eq!(classify(&e), Class::Undetermined);
        match to_storage(&e) {
            StorageError::Unavailable(m) => assert!(m.contains("outcome unknown"), "{m}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn everything_else_is_a_backend_error() {
        let bad = Error::GrpcAPI(Status::new(Code::InvalidArgument, "too large"));
        assert_eq!(classify(&bad), Class::Backend);
        let exists = key_error(|k| k.already_exist = Some(Default::default()));
        assert_eq!(classify(&exists), Class::Backend);
        let abort = key_error(|k| k.abort = "raft entry is too large".into());
        assert_eq!(classify(&abort), Class::Backend);
        assert_eq!(classify(&Error::ExtractedErrors(vec![])), Class::Backend);
        let worst = Error::ExtractedErrors(vec![conflict(), exists]);
        assert_eq!(classify(&worst), Class::Backend);
        assert!(matches!(
            to_storage(&Error::KeyspaceNotFound("x".into())),
            StorageError::Backend(_)
        ));
    }

    #[test]
    fn messages_are_bounded() {
        let e = Error::StringError("é".repeat(1000));
        match to_storage(&e) {
            StorageError::Backend(m) => assert!(m.len() < 600, "{}", m.len()),
            other => panic!("expected Backend, got {other:?}"),
        }
    }
}
