//! Room in the process's Listen buffer for group-log envelopes, held from before a stream reads
//! them until its client acknowledges them.
//!
//! Releasing room when HTTP/2 takes an envelope did not bound memory: hyper buffers up to
//! 400 KB per stream behind that point, so 10,000 streams catching up on 175 KB commits held
//! gigabytes the buffer no longer counted. An acknowledged envelope has left the process, so
//! room held until the acknowledgement covers every copy of it. Room is also reserved before
//! the read, so streams waiting for room hold no entries either.
//!
//! Invariants: a stream waits for room only while it holds none (no stream holds room while
//! waiting for more, so waiting cannot deadlock); a client that does not acknowledge keeps its
//! room for at most `listen_hold_secs`, after which only the per-stream cap on unacknowledged
//! bytes limits it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A group-log envelope sent on a stream and not yet acknowledged.
#[derive(Debug)]
pub(crate) struct Sent {
    pub seq: u64,
    /// The stored entry's size: what counts towards the stream's unacknowledged bytes.
    pub bytes: usize,
    /// Its size of the Listen buffer, and when it was sent.
    room: Option<(OwnedSemaphorePermit, Instant)>,
}

impl Sent {
    pub(crate) fn new(seq: u64, bytes: usize, room: OwnedSemaphorePermit) -> Self {
        Self {
            seq,
            bytes,
            room: Some((room, Instant::now())),
        }
    }

    pub(crate) fn holds_room(&self) -> bool {
        self.room.is_some()
    }

    /// Give the room back once it has been held for `hold` unacknowledged.
    pub(crate) fn expire(&mut self, now: Instant, hold: Duration) {
        if self
            .room
            .as_ref()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) >= hold)
        {
            self.room = None;
        }
    }
}

/// Room reserved before a read; what the entries sent do not take goes back when this drops.
pub(crate) struct Grant {
    permit: OwnedSemaphorePermit,
    buffer: Arc<Semaphore>,
    /// The buffer's size: an entry larger than the whole buffer takes all of it.
    cap: usize,
}

impl Grant {
    pub(crate) fn new(permit: OwnedSemaphorePermit, buffer: Arc<Semaphore>, cap: usize) -> Self {
        Self {
            permit,
            buffer,
            cap,
        }
    }

    /// Room for an entry of `bytes`: from the reservation, topped up from the buffer if it is
    /// free; `None` when the buffer has no more.
    pub(crate) fn take(&mut self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let n = bytes.clamp(1, self.cap.max(1));
        let have = self.permit.num_permits();
        if have < n {
            let more = self
                .buffer
                .clone()
                .try_acquire_many_owned(permits(n - have, self.cap))
                .ok()?;
            self.permit.merge(more);
        }
        self.permit.split(n)
    }
}

/// `bytes` as semaphore permits, at most `cap` (and at least one).
pub(crate) fn permits(bytes: usize, cap: usize) -> u32 {
    u32::try_from(bytes.clamp(1, cap.max(1))).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_grant_gives_what_it_holds_then_tops_up_and_returns_the_rest() {
        let buffer = Arc::new(Semaphore::new(100));
        let first = buffer.clone().try_acquire_many_owned(30).unwrap();
        let mut grant = Grant::new(first, buffer.clone(), 100);
        let a = grant.take(20).unwrap();
        assert_eq!(a.num_permits(), 20);
        // 10 left in the grant, 70 in the buffer: 50 more are taken from it.
        let b = grant.take(60).unwrap();
        assert_eq!(b.num_permits(), 60);
        assert_eq!(buffer.available_permits(), 20);
        assert!(grant.take(21).is_none(), "the buffer has 20");
        drop(grant);
        assert_eq!(buffer.available_permits(), 20);
        drop((a, b));
        assert_eq!(buffer.available_permits(), 100);
        // Larger than the whole buffer: all of it.
        let all = buffer.clone().try_acquire_many_owned(1).unwrap();
        let mut grant = Grant::new(all, buffer.clone(), 100);
        assert_eq!(grant.take(1_000).unwrap().num_permits(), 100);
    }

    #[test]
    fn room_is_given_back_after_the_hold() {
        let buffer = Arc::new(Semaphore::new(10));
        let mut sent = Sent::new(1, 10, buffer.clone().try_acquire_many_owned(10).unwrap());
        let now = Instant::now();
        sent.expire(now, Duration::from_secs(30));
        assert!(sent.holds_room());
        assert_eq!(buffer.available_permits(), 0);
        sent.expire(now + Duration::from_secs(30), Duration::from_secs(30));
        assert!(!sent.holds_room());
        assert_eq!(buffer.available_permits(), 10);
    }
}
