//! How driver failures become [`StorageError`]s.
//!
//! The line that matters is "may be retried" ([`StorageError::Unavailable`], mapped by the
//! services to `UNAVAILABLE` with a retry hint) against "will fail again"
//! ([`StorageError::Backend`]: bad statement, missing schema, no permission). A write
//! timeout is ambiguous (the write may have been applied); it is still `Unavailable`,
//! because the log's callers treat a failed append as "not acknowledged" and re-send, which
//! is at-least-once, never loss.

use guardyn_storage::StorageError;
use scylla::errors::{DbError, ExecutionError, NewSessionError, PrepareError, RequestAttemptError};
use thiserror::Error;

/// A configuration value that cannot be used, naming its key under `storage.scylla`.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("storage.scylla.{key}: {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}

impl From<ConfigError> for StorageError {
    fn from(e: ConfigError) -> Self {
        StorageError::Backend(e.to_string())
    }
}

/// Whether a server-reported error is transient.
pub(crate) fn db_error_is_transient(e: &DbError) -> bool {
    matches!(
        e,
        DbError::Unavailable { .. }
            | DbError::Overloaded
            | DbError::IsBootstrapping
            | DbError::ReadTimeout { .. }
            | DbError::WriteTimeout { .. }
            | DbError::ReadFailure { .. }
            | DbError::WriteFailure { .. }
            | DbError::RateLimitReached { .. }
            | DbError::TruncateError
    )
}

fn attempt_is_transient(e: &RequestAttemptError) -> bool {
    match e {
        RequestAttemptError::DbError(db, _) => db_error_is_transient(db),
        RequestAttemptError::BrokenConnectionError(_)
        | RequestAttemptError::UnableToAllocStreamId => true,
        _ => false,
    }
}

/// Classifies one failed request; `what` says which operation, for the log line upstream.
pub(crate) fn execution(what: &str, e: &ExecutionError) -> StorageError {
    let transient = match e {
        ExecutionError::LastAttemptError(a) => attempt_is_transient(a),
        ExecutionError::RequestTimeout(_)
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::EmptyPlan => true,
        ExecutionError::PrepareError(p) => prepare_is_transient(p),
        _ => false,
    };
    if transient {
        StorageError::Unavailable(format!("scylla {what}: {e}"))
    } else {
        StorageError::Backend(format!("scylla {what}: {e}"))
    }
}

fn prepare_is_transient(e: &PrepareError) -> bool {
    match e {
        PrepareError::ConnectionPoolError(_) => true,
        PrepareError::AllAttemptsFailed { first_attempt } => attempt_is_transient(first_attempt),
        _ => false,
    }
}

pub(crate) fn prepare(what: &str, e: &PrepareError) -> StorageError {
    if prepare_is_transient(e) {
        StorageError::Unavailable(format!("scylla prepare {what}: {e}"))
    } else {
        StorageError::Backend(format!("scylla prepare {what}: {e}"))
    }
}

/// A session that cannot be built at start-up: unreachable or not yet resolvable contact points
/// are worth retrying (the cluster may still be starting), bad credentials are not.
pub(crate) fn new_session(e: &NewSessionError) -> StorageError {
    let msg = format!("scylla connect: {e}");
    match e {
        NewSessionError::EmptyKnownNodesList | NewSessionError::IllegalConfig(_) => {
            StorageError::Backend(msg)
        }
        _ if msg.contains("uthenticat") => StorageError::Backend(msg),
        _ => StorageError::Unavailable(msg),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use scylla::errors::{OperationType, WriteType};
    use scylla::frame::types::Consistency;

    use super::*;

    fn db(e: DbError) -> ExecutionError {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(e, "msg".into()))
    }

    fn is_unavailable(e: StorageError) -> bool {
        matches!(e, StorageError::Unavailable(_))
    }

    #[test]
    fn outages_and_timeouts_may_be_retried() {
        let cases = [
            db(DbError::Unavailable {
                consistency: Consistency::LocalQuorum,
                required: 2,
                alive: 1,
            }),
            db(DbError::WriteTimeout {
                consistency: Consistency::LocalQuorum,
                received: 1,
                required: 2,
                write_type: WriteType::Cas,
            }),
            db(DbError::ReadTimeout {
                consistency: Consistency::LocalQuorum,
                received: 1,
                required: 2,
                data_present: false,
            }),
            db(DbError::Overloaded),
            db(DbError::IsBootstrapping),
            db(DbError::RateLimitReached {
                op_type: OperationType::Write,
                rejected_by_coordinator: true,
            }),
            ExecutionError::RequestTimeout(Duration::from_secs(5)),
            ExecutionError::EmptyPlan,
        ];
        for e in cases {
            assert!(is_unavailable(execution("append", &e)), "{e:?}");
        }
    }

    #[test]
    fn invalid_statements_and_permissions_are_not_retried() {
        for e in [
            db(DbError::Invalid),
            db(DbError::SyntaxError),
            db(DbError::Unauthorized),
            db(DbError::ConfigError),
            db(DbError::ServerError),
        ] {
            let got = execution("read", &e);
            assert!(matches!(got, StorageError::Backend(_)), "{e:?} -> {got:?}");
        }
    }

    #[test]
    fn empty_node_list_is_a_configuration_error() {
        assert!(matches!(
            new_session(&NewSessionError::EmptyKnownNodesList),
            StorageError::Backend(_)
        ));
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = StorageError::from(ConfigError {
            key: "nodes",
            reason: "empty".into(),
        });
        assert!(e.to_string().contains("storage.scylla.nodes"), "{e}");
    }
}
