//! The bound on the store's write queue: writes handed to group commit and not yet
//! committed, counted in writes and in message bytes. A connection about to add a write
//! while the queue is full stops reading frames until the Committer has made room, so
//! TCP slows its client down and a flood of Sends or acknowledgements, from one client
//! or many, holds at most about the bound in memory (docs/PROTOCOL.md 1.6).
//!
//! Connections count their writes in as they queue them ([`StoreBacklog::add`]); the
//! Committer counts them out once their batch is committed ([`StoreBacklog::done`]) and
//! wakes the connections that wait. A check and the write it allows are not atomic
//! together, so the queue may pass the bound by one write per thread that serves
//! connections.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Writes and message bytes waiting for group commit, and their bounds.
#[derive(Debug)]
pub struct StoreBacklog {
    writes: AtomicUsize,
    bytes: AtomicUsize,
    max_writes: usize,
    max_bytes: usize,
    room: Notify,
}

impl StoreBacklog {
    /// An empty queue that is full at `max_writes` writes or `max_bytes` message bytes.
    pub fn new(max_writes: usize, max_bytes: usize) -> Self {
        Self {
            writes: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            max_writes: max_writes.max(1),
            max_bytes: max_bytes.max(1),
            room: Notify::new(),
        }
    }

    /// Counts one write of `bytes` message bytes in.
    pub fn add(&self, bytes: usize) {
        self.writes.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `writes` writes of `bytes` message bytes out (committed or failed), and
    /// wakes the connections waiting for room if there is some.
    pub fn done(&self, writes: usize, bytes: usize) {
        let sub = |counter: &AtomicUsize, n: usize| {
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
        };
        sub(&self.writes, writes);
        sub(&self.bytes, bytes);
        if !self.is_full() {
            self.room.notify_waiters();
        }
    }

    /// Whether the queue is at one of its bounds.
    pub fn is_full(&self) -> bool {
        self.writes.load(Ordering::Relaxed) >= self.max_writes
            || self.bytes.load(Ordering::Relaxed) >= self.max_bytes
    }

    /// Writes and message bytes queued now.
    pub fn queued(&self) -> (usize, usize) {
        (
            self.writes.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Resolves once the queue is below its bounds.
    pub async fn wait_for_room(&self) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            // Registered before the check, so a `done` between the check and the wait
            // is not missed.
            room.as_mut().enable();
            if !self.is_full() {
                return;
            }
            room.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_full_at_either_bound() {
        let backlog = StoreBacklog::new(2, 100);
        assert!(!backlog.is_full());
        backlog.add(10);
        assert!(!backlog.is_full());
        backlog.add(10);
        assert!(backlog.is_full(), "two writes");
        backlog.done(2, 20);
        assert_eq!(backlog.queued(), (0, 0));
        backlog.add(100);
        assert!(backlog.is_full(), "100 bytes");
        backlog.done(5, 500);
        assert_eq!(backlog.queued(), (0, 0), "never below zero");
    }

    #[test]
    fn a_waiter_resumes_once_a_commit_makes_room() {
        use std::future::Future;
        use std::task::{Context, Waker};
        let mut cx = Context::from_waker(Waker::noop());
        let backlog = StoreBacklog::new(1, 1 << 20);
        assert!(Box::pin(backlog.wait_for_room())
            .as_mut()
            .poll(&mut cx)
            .is_ready());
        backlog.add(0);
        let mut waiter = Box::pin(backlog.wait_for_room());
        assert!(waiter.as_mut().poll(&mut cx).is_pending(), "waits while full");
        backlog.add(0);
        backlog.done(1, 0);
        assert!(
            waiter.as_mut().poll(&mut cx).is_pending(),
            "still full: not woken for good"
        );
        backlog.done(1, 0);
        assert!(
            waiter.as_mut().poll(&mut cx).is_ready(),
            "woken once there is room"
        );
    }
}
