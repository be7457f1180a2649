//! Storing, paging and expiring security events.
//!
//! Key: `admin/v1/secevent/<received ms, u64 BE><process counter, u32 BE><4 random bytes>`
//! (the event id), value a versioned [`SecurityEvent`]. Keys sort by arrival (within one
//! process even inside one millisecond), so a time filter is a key range and the retention
//! sweeper deletes from the front; the random bytes keep instances apart.

use std::sync::atomic::{AtomicU32, Ordering};

use guardyn_audit::{AuditKind, AuditRecord};
use guardyn_common::ids::{AccountId, DeviceId};
use guardyn_storage::record::{Record, decode, encode};
use guardyn_storage::{Direction, KeyRange, KvStore, StorageError, Txn, TxnOutcome};

use crate::core::Core;
use crate::error::AdminError;
use crate::security_events::{Filter, Report, SecurityEvent};

const PREFIX: &[u8] = b"admin/v1/secevent/";

/// Orders this process's events within one millisecond.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Events read per scan.
const SCAN: usize = 500;
/// Most events one listing page looks at before it answers with what it found.
const MAX_SCANNED: usize = 5_000;
/// Most events one sweeper pass deletes (one transaction).
pub const SWEEP_BATCH: usize = 256;

impl Record for SecurityEvent {
    const VERSION: u8 = 1;
}

fn key(id: &[u8]) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(id);
    k
}

fn time_key(ms: u64) -> Vec<u8> {
    key(&ms.to_be_bytes())
}

/// Where a listing goes on: after (oldest first) or before (newest first) this id.
pub type Cursor = [u8; 16];

/// One page of events and where the next starts (`None`: the last page).
#[derive(Debug)]
pub struct EventPage {
    pub events: Vec<SecurityEvent>,
    pub next: Option<Cursor>,
}

impl Core {
    /// Store a device's report and record it in the audit log.
    pub async fn report_security_event(
        &self,
        account: AccountId,
        device: DeviceId,
        report: Report,
    ) -> Result<SecurityEvent, AdminError> {
        let received_ms = self.clock.now_ms();
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&received_ms.to_be_bytes());
        id[8..12].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        id[12..].copy_from_slice(&rand::random::<[u8; 4]>());
        let event = SecurityEvent {
            id,
            account_id: account.to_string(),
            device_id: device.get(),
            event_type: report.event_type,
            severity: report.severity,
            occurred_ms: if report.occurred_ms == 0 {
                received_ms
            } else {
                report.occurred_ms
            },
            received_ms,
            details: report.details,
        };
        let txn = Txn::new()
            .require_absent(key(&id))
            .put(key(&id), encode(&event));
        if !matches!(self.kv.commit(txn).await?, TxnOutcome::Committed) {
            // Same millisecond, counter and 32 random bits: not a case worth a retry loop.
            return Err(StorageError::Backend("security event id collision".into()).into());
        }
        self.audit
            .append(AuditRecord::new(
                AuditKind::SecurityEventReported,
                event.account_id.clone(),
                Some(event.device_id),
                format!(
                    "{} {} event {}",
                    event.event_type.as_str(),
                    event.severity.as_str(),
                    event.id_string()
                ),
            ))
            .await?;
        Ok(event)
    }

    /// Up to `limit` events matching `filter`, continuing after `cursor`.
    pub async fn security_events_page(
        &self,
        filter: &Filter,
        newest_first: bool,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<EventPage, AdminError> {
        page(&*self.kv, filter, newest_first, cursor, limit).await
    }

    /// Delete up to [`SWEEP_BATCH`] events received before `cutoff_ms`; the number deleted.
    pub async fn prune_security_events(&self, cutoff_ms: u64) -> Result<usize, AdminError> {
        let old = self
            .kv
            .scan(
                KeyRange::between(PREFIX, &time_key(cutoff_ms)),
                Direction::Forward,
                SWEEP_BATCH,
            )
            .await?;
        if old.is_empty() {
            return Ok(0);
        }
        let txn = old
            .iter()
            .fold(Txn::new(), |txn, pair| txn.delete(pair.key.clone()));
        // Unconditional deletes: another instance's sweeper racing this one is harmless.
        Ok(match self.kv.commit(txn).await? {
            TxnOutcome::Committed => old.len(),
            TxnOutcome::Conflict { .. } => 0,
        })
    }
}

async fn page(
    kv: &dyn KvStore,
    filter: &Filter,
    newest_first: bool,
    cursor: Option<Cursor>,
    limit: usize,
) -> Result<EventPage, AdminError> {
    let mut start = time_key(filter.since_ms);
    let mut end = time_key(filter.until_ms.unwrap_or(u64::MAX));
    let direction = if newest_first {
        Direction::Reverse
    } else {
        Direction::Forward
    };
    if let Some(c) = cursor {
        if newest_first {
            end = end.min(key(&c));
        } else {
            let mut after = key(&c);
            after.push(0);
            start = start.max(after);
        }
    }
    let mut events = Vec::new();
    let mut scanned = 0;
    while start < end {
        let batch = kv
            .scan(KeyRange::between(&start, &end), direction, SCAN)
            .await?;
        let Some(last) = batch.last() else {
            return Ok(EventPage { events, next: None });
        };
        if newest_first {
            end = last.key.clone();
        } else {
            start = last.key.clone();
            start.push(0);
        }
        for pair in &batch {
            scanned += 1;
            let event: SecurityEvent = decode(&pair.value)?;
            let here = event.id;
            if filter.matches(&event) {
                events.push(event);
            }
            if events.len() >= limit || scanned >= MAX_SCANNED {
                return Ok(EventPage {
                    events,
                    next: Some(here),
                });
            }
        }
        if batch.len() < SCAN {
            break;
        }
    }
    Ok(EventPage { events, next: None })
}
