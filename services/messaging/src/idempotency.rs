//! Client message id reservations, shared by SendMessage and SendGroupMessage: a send reserves
//! its id (compare-and-set on the record's bytes) before storing anything, so concurrent
//! duplicates store once, and completes the record with its result.

use std::time::Duration;

use guardyn_common::{AccountId, DeviceId};
use guardyn_storage::Txn;
use guardyn_storage::record::{decode, encode};

use crate::core::Core;
use crate::error::MessagingError;
use crate::store::{self, IdempotencyRecord};

/// How long a client message id reservation holds (by the service clock) before a send that
/// crashed mid-way stops blocking retries.
const RESERVATION_LEASE_MS: u64 = 30_000;
/// How long a duplicate waits for the send holding the reservation to finish.
const RESERVATION_WAIT: Duration = Duration::from_secs(2);
const RESERVATION_POLL: Duration = Duration::from_millis(20);

/// Outcome of reserving a client message id.
pub(crate) enum Claim {
    /// The id was already used: the original result.
    Replay(IdempotencyRecord),
    /// Reserved; the stored reservation bytes (the compare-and-set witness for completing it).
    Reserved(Vec<u8>),
}

/// What [`Core::claim_state`] found.
pub(crate) enum Free {
    /// The id was already used: the original result.
    Replay(IdempotencyRecord),
    /// The id is free (or its reservation lapsed): the record read, and when (service clock)
    /// a reservation replacing it would start ([`reservation`]).
    Open {
        current: Option<Vec<u8>>,
        at_ms: u64,
    },
}

impl Core {
    /// Reserve the client message id at `key` (or find its result). A reservation held by a
    /// send in progress is waited for up to [`RESERVATION_WAIT`].
    pub(crate) async fn reserve(&self, key: &[u8]) -> Result<Claim, MessagingError> {
        loop {
            let (current, reservation) = match self.claim_state(key).await? {
                Free::Replay(r) => return Ok(Claim::Replay(r)),
                Free::Open { current, at_ms } => (current, reservation(at_ms)),
            };
            let txn = Txn::new()
                .require_unchanged(key.to_vec(), current.as_deref())
                .put(key.to_vec(), reservation.clone());
            if self.kv.commit(txn).await?.is_committed() {
                return Ok(Claim::Reserved(reservation));
            }
        }
    }

    /// Reads the id's record, waiting while another send holds it: either the finished send to
    /// replay, or the record to replace (`current`) and when a reservation would start. The
    /// caller commits the reservation conditioned on `current`, possibly with more writes in
    /// the same transaction (a 1:1 send charges its queues there).
    pub(crate) async fn claim_state(&self, key: &[u8]) -> Result<Free, MessagingError> {
        let deadline = tokio::time::Instant::now() + RESERVATION_WAIT;
        loop {
            let now = self.clock.now_ms();
            let current = self.kv.get(key).await?;
            if let Some(raw) = &current {
                let rec: IdempotencyRecord = decode(raw)?;
                if rec.expires_at_ms > now {
                    if !rec.pending {
                        return Ok(Free::Replay(rec));
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(MessagingError::SendInProgress {
                            retry_after_ms: rec.expires_at_ms - now,
                        });
                    }
                    tokio::time::sleep(RESERVATION_POLL).await;
                    continue;
                }
            }
            return Ok(Free::Open {
                current,
                at_ms: now,
            });
        }
    }

    pub(crate) fn completed(&self, now: u64, queued: Vec<(DeviceId, u64)>) -> IdempotencyRecord {
        IdempotencyRecord {
            pending: false,
            expires_at_ms: now.saturating_add(self.cfg.idempotency_secs.saturating_mul(1000)),
            server_timestamp_ms: now,
            queued,
        }
    }

    /// Free a reservation whose send stored nothing, so that a retry is not refused for the
    /// length of the lease.
    pub(crate) async fn release(
        &self,
        key: Vec<u8>,
        reservation: Vec<u8>,
    ) -> Result<(), MessagingError> {
        let txn = Txn::new()
            .require_equals(key.clone(), reservation)
            .delete(key);
        if !self.kv.commit(txn).await?.is_committed() {
            // Our lease expired and another send took the id over.
            tracing::debug!("idempotency reservation was taken over");
        }
        Ok(())
    }
}

/// The stored bytes of a reservation taken at `at_ms`: the compare-and-set witness for
/// completing or releasing it.
pub(crate) fn reservation(at_ms: u64) -> Vec<u8> {
    encode(&pending_record(at_ms))
}

fn pending_record(now_ms: u64) -> IdempotencyRecord {
    IdempotencyRecord {
        pending: true,
        expires_at_ms: now_ms.saturating_add(RESERVATION_LEASE_MS),
        server_timestamp_ms: now_ms,
        queued: Vec::new(),
    }
}

/// Test support: the key and value of a SendMessage reservation taken at `now_ms`, as a send
/// that crashed before completing it leaves behind.
#[doc(hidden)]
pub fn pending_send_record(
    account: AccountId,
    device: DeviceId,
    client_message_id: &str,
    now_ms: u64,
) -> (Vec<u8>, Vec<u8>) {
    (
        store::idempotency_key(account, device, client_message_id),
        encode(&pending_record(now_ms)),
    )
}
