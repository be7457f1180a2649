//! Read snapshots shared between commits.
//!
//! Opening a redb read transaction and its tables costs more than a point read of cached
//! pages (the table lookup walks the table tree and decodes the table's header: about 7 % of
//! the server's instructions under 1:1 load when every read opened its own). Between two
//! commits every read would see the same data, so reads share one snapshot, tagged with the
//! writer's commit generation.
//!
//! Invariant (read-your-writes): the writer bumps [`Generations::committed`] after a commit
//! and before it answers any caller of that batch. A read loads the generation first and only
//! then opens a snapshot, so a snapshot tagged `g` holds at least every commit up to `g`; it
//! serves only reads that loaded a generation of at most `g`. A caller that got its write's
//! answer therefore never reads from a snapshot older than its write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use guardyn_storage::StorageResult;
use redb::{Database, ReadOnlyTable, ReadableDatabase, TableDefinition};

use crate::codec::{self, backend};

type Bytes = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// One read transaction and the tables opened on it so far.
pub(crate) struct Snapshot {
    generation: u64,
    txn: redb::ReadTransaction,
    kv: OnceLock<Bytes>,
    entries: OnceLock<Bytes>,
    meta: OnceLock<Bytes>,
}

impl Snapshot {
    pub(crate) fn kv(&self) -> StorageResult<&Bytes> {
        self.table(&self.kv, codec::KV)
    }

    pub(crate) fn entries(&self) -> StorageResult<&Bytes> {
        self.table(&self.entries, codec::LOG_ENTRIES)
    }

    pub(crate) fn meta(&self) -> StorageResult<&Bytes> {
        self.table(&self.meta, codec::LOG_META)
    }

    fn table<'a>(
        &'a self,
        slot: &'a OnceLock<Bytes>,
        def: TableDefinition<'static, &'static [u8], &'static [u8]>,
    ) -> StorageResult<&'a Bytes> {
        if let Some(t) = slot.get() {
            return Ok(t);
        }
        let opened = self.txn.open_table(def).map_err(backend)?;
        // Two readers may open it at once; either copy is the same table of this snapshot.
        Ok(slot.get_or_init(|| opened))
    }
}

/// The writer's commit count (also [`crate::EngineStats::commits`]) and the snapshot the reads
/// share.
#[derive(Default)]
pub(crate) struct Generations {
    committed: AtomicU64,
    current: Mutex<Option<Arc<Snapshot>>>,
}

impl Generations {
    /// Called by the writer after each commit, before it answers the batch's callers. Drops
    /// the shared snapshot too, so that an idle store pins no old pages.
    pub(crate) fn committed(&self) {
        self.committed.fetch_add(1, Ordering::AcqRel);
        // Taken under the lock, released (its read transaction closed) after it.
        let old = self.slot().take();
        drop(old);
    }

    /// Commits so far (the current generation).
    pub(crate) fn count(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// The snapshot of the latest generation, opened now if there is none yet.
    pub(crate) fn snapshot(&self, db: &Database) -> StorageResult<Arc<Snapshot>> {
        let generation = self.committed.load(Ordering::Acquire);
        let mut slot = self.slot();
        // A snapshot tagged later than the generation read holds everything up to it too.
        if let Some(s) = slot.as_ref().filter(|s| s.generation >= generation) {
            return Ok(s.clone());
        }
        let fresh = Arc::new(Snapshot {
            generation,
            txn: db.begin_read().map_err(backend)?,
            kv: OnceLock::new(),
            entries: OnceLock::new(),
            meta: OnceLock::new(),
        });
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<Snapshot>>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
