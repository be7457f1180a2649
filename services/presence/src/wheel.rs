//! A hashed timing wheel driven by an explicit "now" (milliseconds of the injected clock), so
//! tests move time with a manual clock and production with the system clock alike.
//!
//! 1024 slots of `tick_ms` each; an entry lives in the slot of its due tick and carries the
//! absolute tick, so entries more than one revolution away simply stay put until their round
//! comes. Inserting is O(1); advancing visits only the slots whose ticks passed (at most one
//! revolution, however far the clock jumped) and touches only entries in them. A bitmap of
//! occupied slots gives the next due tick without looking at any entry, so the driver sleeps
//! exactly until something can fire instead of ticking.
//!
//! Callers cancel lazily: an entry is never removed early; when it fires the caller checks it
//! against its own table and re-inserts or drops it. That keeps the heartbeat path free of any
//! wheel operation.

const SLOTS: usize = 1024;
const WORDS: usize = SLOTS / 64;

/// See the module docs.
#[derive(Debug)]
pub struct TimerWheel<K> {
    tick_ms: u64,
    slots: Vec<Vec<(u64, K)>>,
    occupied: [u64; WORDS],
    /// The next tick not yet processed.
    cursor: u64,
    len: usize,
}

impl<K> TimerWheel<K> {
    /// A wheel whose first tick is at or before `now_ms`.
    pub fn new(tick_ms: u64, now_ms: u64) -> Self {
        let tick_ms = tick_ms.max(1);
        Self {
            tick_ms,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            occupied: [0; WORDS],
            cursor: now_ms / tick_ms,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Schedule `key` at `due_ms`; it fires at the first tick at or after it (never early).
    pub fn insert(&mut self, due_ms: u64, key: K) {
        let tick = due_ms.div_ceil(self.tick_ms).max(self.cursor);
        let slot = (tick % SLOTS as u64) as usize;
        self.slots[slot].push((tick, key));
        self.occupied[slot / 64] |= 1 << (slot % 64);
        self.len += 1;
    }

    /// Move to `now_ms`, appending every entry due by then to `out`.
    pub fn advance(&mut self, now_ms: u64, out: &mut Vec<K>) {
        let now_tick = now_ms / self.tick_ms;
        if now_tick < self.cursor {
            return;
        }
        // One revolution visits every slot; more would only revisit them.
        let steps = (now_tick - self.cursor + 1).min(SLOTS as u64);
        for step in 0..steps {
            let slot = ((self.cursor + step) % SLOTS as u64) as usize;
            if self.occupied[slot / 64] & (1 << (slot % 64)) == 0 {
                continue;
            }
            let entries = std::mem::take(&mut self.slots[slot]);
            let mut keep = Vec::new();
            for (tick, key) in entries {
                if tick <= now_tick {
                    out.push(key);
                    self.len -= 1;
                } else {
                    keep.push((tick, key));
                }
            }
            if keep.is_empty() {
                self.occupied[slot / 64] &= !(1 << (slot % 64));
            }
            self.slots[slot] = keep;
        }
        self.cursor = now_tick + 1;
    }

    /// The time of the next occupied slot's tick (an upper bound of nothing due earlier; the
    /// entries there may belong to a later revolution, then the driver just wakes once more).
    pub fn next_due_ms(&self) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let start = (self.cursor % SLOTS as u64) as usize;
        for offset in 0..SLOTS {
            let slot = (start + offset) % SLOTS;
            if self.occupied[slot / 64] & (1 << (slot % 64)) != 0 {
                return Some((self.cursor + offset as u64) * self.tick_ms);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(w: &mut TimerWheel<u32>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        w.advance(now, &mut out);
        out.sort_unstable();
        out
    }

    #[test]
    fn entries_fire_at_their_tick_never_early() {
        let mut w = TimerWheel::new(1000, 10_000);
        w.insert(12_500, 1);
        w.insert(11_000, 2);
        assert_eq!(w.next_due_ms(), Some(11_000));
        assert_eq!(fire(&mut w, 10_999), Vec::<u32>::new());
        assert_eq!(fire(&mut w, 11_000), vec![2]);
        assert_eq!(fire(&mut w, 12_999), Vec::<u32>::new());
        assert_eq!(w.next_due_ms(), Some(13_000));
        assert_eq!(fire(&mut w, 13_000), vec![1]);
        assert_eq!(w.len(), 0);
        assert_eq!(w.next_due_ms(), None);
    }

    #[test]
    fn entries_beyond_one_revolution_wait_for_their_round_and_big_jumps_fire_everything() {
        let mut w = TimerWheel::new(1000, 0);
        w.insert(5_000, 1);
        w.insert(5_000 + 1024 * 1000, 2);
        w.insert(3_000_000, 3);
        assert_eq!(fire(&mut w, 6_000), vec![1]);
        assert_eq!(fire(&mut w, 1_028_000), Vec::<u32>::new());
        assert_eq!(fire(&mut w, 1_029_000), vec![2]);
        // A jump of many revolutions still fires what is due, once.
        assert_eq!(fire(&mut w, 50_000_000), vec![3]);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn past_due_inserts_fire_on_the_next_advance() {
        let mut w = TimerWheel::new(1000, 100_000);
        w.insert(1, 7);
        assert_eq!(fire(&mut w, 100_000), vec![7]);
    }
}
