//! Which outbox records this process is fanning out right now.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

/// Outbox keys this process is fanning out right now (the sweep skips them).
#[derive(Debug, Default)]
pub(crate) struct Busy(Mutex<HashSet<Vec<u8>>>);

pub(crate) struct BusyGuard<'a> {
    busy: &'a Busy,
    key: Vec<u8>,
}

impl Busy {
    pub(crate) fn claim(&self, key: &[u8]) -> Option<BusyGuard<'_>> {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.insert(key.to_vec()).then(|| BusyGuard {
            busy: self,
            key: key.to_vec(),
        })
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.busy
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_key_is_claimed_once_until_released() {
        let busy = Busy::default();
        let g = busy.claim(b"k").unwrap();
        assert!(busy.claim(b"k").is_none());
        drop(g);
        assert!(busy.claim(b"k").is_some());
    }
}
