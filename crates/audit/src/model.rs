//! What callers append and how an audit operation fails.

use guardyn_storage::StorageError;

use crate::kind::AuditKind;

/// One entry to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub kind: AuditKind,
    /// Empty when the event has no known account.
    pub account_id: String,
    pub device_id: Option<u32>,
    /// The admin account that did it (`None`: the account itself or the system).
    pub actor: Option<String>,
    /// Why, as the admin gave it.
    pub reason: String,
    /// Non-secret context.
    pub detail: String,
}

impl AuditRecord {
    /// Something an account (or the system) did, without actor or reason.
    pub fn new(
        kind: AuditKind,
        account_id: impl Into<String>,
        device_id: Option<u32>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            account_id: account_id.into(),
            device_id,
            actor: None,
            reason: String::new(),
            detail: detail.into(),
        }
    }

    /// Done by the admin account `actor` for `reason`.
    pub fn by(mut self, actor: impl Into<String>, reason: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self.reason = reason.into();
        self
    }
}

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// Other writers kept winning the head's compare-and-set.
    #[error("too much contention on the audit head")]
    Contention,
}

impl AuditError {
    /// The same failure again, for every caller of a failed batch.
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            AuditError::Contention => AuditError::Contention,
            AuditError::Storage(s) => AuditError::Storage(match s {
                StorageError::InvalidRequest(m) => StorageError::InvalidRequest(m.clone()),
                StorageError::Corrupt(m) => StorageError::Corrupt(m.clone()),
                StorageError::Unavailable(m) => StorageError::Unavailable(m.clone()),
                StorageError::Closed => StorageError::Closed,
                other => StorageError::Backend(other.to_string()),
            }),
        }
    }
}

/// How often an optimistic transaction is retried before giving up.
pub(crate) const MAX_ATTEMPTS: usize = 64;
