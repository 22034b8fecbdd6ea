//! [`WriteRetry`]: delivered messages that could not be saved because the state database
//! refused a write that may succeed later (disk full, read-only file system:
//! [`crate::state::StateError::is_retryable`]), kept in memory and retried with backoff
//! until the state can be written again, without a restart.
//!
//! - A kept message is **not acknowledged** to the relay, so nothing is lost if the
//!   agent stops meanwhile: the relay delivers it again on the next connection.
//! - While anything is kept, later deliveries are kept behind it (in arrival order):
//!   they would fail the same way, and this keeps the order they are shown in.
//! - At most [`KEPT_LIMIT`] are kept; past it a delivery is left at the relay and comes
//!   again on the next connection. A redelivery of a kept message is kept once.
//! - One failure **episode** runs from the first failure until a retry has processed
//!   every kept message: the agent reports its start once ([`Kept::First`]) and its
//!   end once ([`WriteRetry::settle`]), not every failed attempt.
//! - Retries are `FIRST_DELAY` apart at first, doubling up to `MAX_DELAY`.
//!
//! IO-free: the actor asks [`WriteRetry::take_due`] on a short tick and processes what
//! it returns as new deliveries.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Messages kept at most while the state cannot be written.
pub const KEPT_LIMIT: usize = 1024;
/// The first retry comes this long after the first failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// Retries are at most this far apart.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// A delivered message kept unacknowledged until the state can be written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptDelivery {
    /// The sender's identity key as the relay gave it.
    pub sender: [u8; 32],
    /// The relay message id.
    pub msg_id: [u8; 16],
    /// The end-to-end ciphertext.
    pub wire: Vec<u8>,
}

/// What [`WriteRetry::keep`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept {
    /// Kept, and this failure starts an episode: report it.
    First,
    /// Kept, during an episode already reported.
    Again,
    /// Already kept (a redelivery): nothing changed.
    Known,
    /// Not kept: [`KEPT_LIMIT`] reached. It stays at the relay (unacknowledged).
    Full,
}

/// The kept deliveries and the retry schedule. See the module documentation.
#[derive(Debug)]
pub struct WriteRetry {
    kept: VecDeque<KeptDelivery>,
    failing: bool,
    delay: Duration,
    next_at: Option<Instant>,
}

impl Default for WriteRetry {
    fn default() -> Self {
        Self {
            kept: VecDeque::new(),
            failing: false,
            delay: FIRST_DELAY,
            next_at: None,
        }
    }
}

impl WriteRetry {
    /// True while messages are kept: a new delivery must be kept behind them.
    pub fn is_holding(&self) -> bool {
        !self.kept.is_empty()
    }

    /// True during a failure episode (from the first failure until a retry processed
    /// everything): a failed write then needs no new report.
    pub fn in_episode(&self) -> bool {
        self.failing
    }

    /// How many messages are kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// True if nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Keeps `delivery` (which could not be saved, or arrived while others are kept)
    /// and schedules a retry if none is.
    pub fn keep(&mut self, delivery: KeptDelivery, now: Instant) -> Kept {
        if (self.kept.iter()).any(|k| k.sender == delivery.sender && k.msg_id == delivery.msg_id) {
            return Kept::Known;
        }
        if self.kept.len() >= KEPT_LIMIT {
            return Kept::Full;
        }
        self.kept.push_back(delivery);
        if self.next_at.is_none() {
            self.next_at = Some(now + self.delay);
        }
        if self.failing {
            Kept::Again
        } else {
            self.failing = true;
            Kept::First
        }
    }

    /// If a retry is due at `now`: every kept message, oldest first (process each as a
    /// new delivery; one that fails again is kept again, and so is everything after
    /// it), and the next retry waits twice as long.
    pub fn take_due(&mut self, now: Instant) -> Option<Vec<KeptDelivery>> {
        let at = self.next_at?;
        if now < at {
            return None;
        }
        self.next_at = None;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        Some(self.kept.drain(..).collect())
    }

    /// Once everything [`WriteRetry::take_due`] returned was processed: true once when
    /// the episode is over (nothing was kept again), and the backoff starts over.
    pub fn settle(&mut self) -> bool {
        if self.failing && self.kept.is_empty() {
            self.failing = false;
            self.delay = FIRST_DELAY;
            self.next_at = None;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(n: u8) -> KeptDelivery {
        KeptDelivery {
            sender: [1; 32],
            msg_id: [n; 16],
            wire: vec![n],
        }
    }

    #[test]
    fn reports_an_episode_once_and_keeps_order() {
        let mut retry = WriteRetry::default();
        let t0 = Instant::now();
        assert_eq!(retry.keep(delivery(1), t0), Kept::First);
        assert_eq!(retry.keep(delivery(2), t0), Kept::Again);
        assert_eq!(retry.keep(delivery(1), t0), Kept::Known);
        assert!(retry.take_due(t0).is_none(), "not due before the first delay");
        let due = retry.take_due(t0 + FIRST_DELAY).expect("due");
        assert_eq!(due, vec![delivery(1), delivery(2)]);
        // The first fails again: kept, with the rest behind it; no new episode.
        assert_eq!(retry.keep(delivery(1), t0 + FIRST_DELAY), Kept::Again);
        assert_eq!(retry.keep(delivery(2), t0 + FIRST_DELAY), Kept::Again);
        assert!(!retry.settle());
        assert!(retry.take_due(t0 + FIRST_DELAY * 2).is_none(), "backoff doubled");
        let due = retry.take_due(t0 + FIRST_DELAY * 3).expect("due");
        assert_eq!(due.len(), 2);
        assert!(retry.settle(), "the episode ends once");
        assert!(!retry.settle());
        assert_eq!(retry.keep(delivery(3), t0), Kept::First, "a new episode");
    }

    #[test]
    fn backoff_is_bounded_and_the_queue_too() {
        let mut retry = WriteRetry::default();
        let mut now = Instant::now();
        retry.keep(delivery(0), now);
        for _ in 0..20 {
            now += MAX_DELAY;
            let due = retry.take_due(now).expect("due within the longest delay");
            for d in due {
                retry.keep(d, now);
            }
        }
        for n in 1..=KEPT_LIMIT {
            let mut d = delivery(0);
            d.msg_id[..8].copy_from_slice(&(n as u64).to_be_bytes());
            let kept = retry.keep(d, now);
            assert_eq!(kept == Kept::Full, n >= KEPT_LIMIT, "{n}");
        }
        assert_eq!(retry.len(), KEPT_LIMIT);
    }
}
