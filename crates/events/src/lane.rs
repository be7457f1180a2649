//! One subscriber's bounded buffer: `send` never waits, and on overflow the oldest buffered
//! event is dropped and the receiver learns how many it lost, instead of the publisher slowing
//! down (the semantics of a broadcast channel with a single receiver).
//!
//! Why not `tokio::sync::broadcast`: it allocates all of its slots up front, about 100 bytes
//! each, so a 1,024-event buffer cost every subscription about 100 KiB even when idle, and
//! every connected device holds one (its mail subject). This buffer grows with what is
//! actually queued and gives the memory back once drained.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures::Stream;

/// Buffers that grew past this many events are shrunk back once drained.
const KEEP_CAPACITY: usize = 8;

struct State<T> {
    queue: VecDeque<T>,
    /// Dropped for overflow since the receiver last looked.
    missed: u64,
    receiver_gone: bool,
    waker: Option<Waker>,
}

struct Shared<T> {
    capacity: usize,
    senders: AtomicUsize,
    state: Mutex<State<T>>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The receiver is gone; the event was not buffered.
#[derive(Debug)]
pub(crate) struct Closed;

/// The publishing side; clones share the buffer.
pub(crate) struct LaneSender<T>(Arc<Shared<T>>);

/// The subscriber's side: yields events, or `Err(missed)` after an overflow.
pub(crate) struct LaneReceiver<T>(Arc<Shared<T>>);

pub(crate) fn lane<T>(capacity: usize) -> (LaneSender<T>, LaneReceiver<T>) {
    let shared = Arc::new(Shared {
        capacity: capacity.max(1),
        senders: AtomicUsize::new(1),
        state: Mutex::new(State {
            queue: VecDeque::new(),
            missed: 0,
            receiver_gone: false,
            waker: None,
        }),
    });
    (LaneSender(shared.clone()), LaneReceiver(shared))
}

impl<T> LaneSender<T> {
    pub(crate) fn send(&self, event: T) -> Result<(), Closed> {
        let waker = {
            let mut state = self.0.lock();
            if state.receiver_gone {
                return Err(Closed);
            }
            if state.queue.len() >= self.0.capacity {
                state.queue.pop_front();
                state.missed += 1;
            }
            state.queue.push_back(event);
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }
}

impl<T> Clone for LaneSender<T> {
    fn clone(&self) -> Self {
        self.0.senders.fetch_add(1, Ordering::Relaxed);
        Self(self.0.clone())
    }
}

impl<T> Drop for LaneSender<T> {
    fn drop(&mut self) {
        // The last sender gone ends the stream once the buffer is drained.
        if self.0.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            let waker = self.0.lock().waker.take();
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl<T> Stream for LaneReceiver<T> {
    type Item = Result<T, u64>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let shared = &self.0;
        let mut state = shared.lock();
        if state.missed > 0 {
            let missed = std::mem::take(&mut state.missed);
            return Poll::Ready(Some(Err(missed)));
        }
        if let Some(event) = state.queue.pop_front() {
            if state.queue.is_empty() && state.queue.capacity() > KEEP_CAPACITY {
                state.queue.shrink_to(KEEP_CAPACITY);
            }
            return Poll::Ready(Some(Ok(event)));
        }
        if shared.senders.load(Ordering::Acquire) == 0 {
            return Poll::Ready(None);
        }
        state.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> Drop for LaneReceiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        state.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures::StreamExt as _;

    use super::*;

    fn event(n: u8) -> u8 {
        n
    }

    #[tokio::test]
    async fn overflow_drops_the_oldest_and_reports_how_many() {
        let (tx, mut rx) = lane(2);
        for n in 0..5 {
            tx.send(event(n)).unwrap();
        }
        assert_eq!(rx.next().await.unwrap().unwrap_err(), 3);
        assert_eq!(rx.next().await.unwrap().unwrap(), 3);
        assert_eq!(rx.next().await.unwrap().unwrap(), 4);
        drop(tx);
        assert!(rx.next().await.is_none(), "ends once every sender is gone");
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_and_a_dropped_one_refuses_sends() {
        let (tx, mut rx) = lane(4);
        let tx2 = tx.clone();
        let waiter = tokio::spawn(async move { rx.next().await.map(Result::unwrap) });
        tokio::task::yield_now().await;
        tx2.send(event(7)).unwrap();
        assert_eq!(waiter.await.unwrap(), Some(7));
        assert!(tx.send(event(8)).is_err(), "the receiver was dropped");
    }
}
