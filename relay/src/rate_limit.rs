//! Token buckets per identity: sends take a token from one, other requests (lookups,
//! bundle fetches, publications, releases) from another, delivery acknowledgements from
//! a third; an empty bucket answers with the time until the next token.
//!
//! An identity's buckets are one shared object ([`SharedRateLimits`]) that the Router
//! hands to every connection of that identity, including a connection that replaces an
//! older one while it is still open, and keeps after the identity disconnects. It drops
//! them only once they are full again: a full bucket is what a new one would be, so
//! reconnecting never refills a bucket.
//!
//! # Why not the `governor` crate
//!
//! The buckets are hand-written on purpose (decided against governor 0.10, the
//! current release). governor's GCRA limiter decides well, but the relay needs four
//! things from a bucket that it does not offer:
//!
//! - **Reading the remaining quota without spending it.** `QueryQuota` answers
//!   `Quota { remaining, capacity, refill_per_sec }` (docs/PROTOCOL.md 1.9). governor
//!   reports what is left only as a side effect of a successful `check` (the
//!   `StateInformationMiddleware`'s `StateSnapshot::remaining_burst_capacity`), which
//!   takes a cell; there is no read-only view of a limiter's state. Answering a query
//!   would cost the client a send.
//! - **Giving a token back.** A bundle fetch takes a one-time prekey hand-out token
//!   before the store says whether the target has a one-time prekey at all, and returns
//!   it when none was handed out ([`TokenBucket::give_back`], used by
//!   [`crate::opk_handouts`]). GCRA state is a single "theoretical arrival time" that
//!   governor only moves forward.
//! - **Knowing when a bucket is full again**, to forget an identity's buckets only then
//!   ([`RateLimits::is_full`]: forgetting earlier would let a reconnect refill them).
//!   governor's keyed store has `retain_recent`, but our buckets are shared objects held
//!   by connections, not keys of one store, and the three buckets of an identity must
//!   be forgotten together.
//! - **Times from several threads.** Connections on different workers share a bucket
//!   and each passes the time it read its frame; [`TokenBucket`] never lets time run
//!   backwards. governor takes the time from its own clock.
//!
//! The retry delay (`RateLimited.retry_after_ms`) governor would give too
//! (`NotUntil::wait_time_from`), so it alone would not have decided it. Revisit if
//! governor gains a read-only state view and a way to return cells.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::settings::Limits;

/// A token bucket with fractional refill.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    refill_per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `capacity` tokens (at least 1) refilled by `refill_per_sec`
    /// tokens a second (at least 1).
    pub fn new(capacity: u32, refill_per_sec: u32) -> Self {
        Self::with_rate(capacity, f64::from(refill_per_sec.max(1)))
    }

    /// A full bucket of `capacity` tokens (at least 1) refilled by `refill_per_hour`
    /// tokens an hour (at least 1).
    pub fn per_hour(capacity: u32, refill_per_hour: u32) -> Self {
        Self::with_rate(capacity, f64::from(refill_per_hour.max(1)) / 3600.0)
    }

    fn with_rate(capacity: u32, refill_per_sec: f64) -> Self {
        Self {
            capacity: f64::from(capacity.max(1)),
            refill_per_sec,
            tokens: f64::from(capacity.max(1)),
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.refill_per_sec).min(self.capacity);
        // Never backwards: connections on several threads share a bucket, each with the
        // time it read its frame.
        self.last = self.last.max(now);
    }

    /// Takes one token, or tells how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.refill_per_sec))
        }
    }

    /// Returns a token taken for something that did not happen after all.
    pub fn give_back(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + 1.0).min(self.capacity);
    }

    /// Whether the bucket is full, i.e. no different from a new one.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.capacity
    }

    /// Whole tokens available now.
    pub fn remaining(&mut self, now: Instant) -> u32 {
        self.refill(now);
        self.tokens as u32
    }

    /// The bucket size.
    pub fn capacity(&self) -> u32 {
        self.capacity as u32
    }

    /// Whole tokens added per second.
    pub fn refill_per_sec(&self) -> u32 {
        self.refill_per_sec as u32
    }
}

/// An identity's buckets.
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// For `Send`.
    pub sends: TokenBucket,
    /// For `FetchBundle`, `LookupName`, `LookupIdentity`, `PublishPreKeys`,
    /// `PublishName` and `ReleaseName`: a fetch may take a one-time prekey for good, so
    /// requests must not be free.
    pub requests: TokenBucket,
    /// For `DeliveryAck`: acknowledgements cost the relay a lookup (and, for a message it
    /// delivered, a store write) each, so they are limited too. A bucket of their own:
    /// a client acknowledges every message it receives, far more than it looks up.
    pub acks: TokenBucket,
}

impl RateLimits {
    /// Full buckets of the sizes in `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            sends: TokenBucket::new(limits.rate_capacity, limits.rate_refill_per_sec),
            requests: TokenBucket::new(limits.request_rate_capacity, limits.request_rate_refill_per_sec),
            acks: TokenBucket::new(limits.ack_rate_capacity, limits.ack_rate_refill_per_sec),
        }
    }

    /// Whether every bucket is full (new buckets would be the same).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.sends.is_full(now) && self.requests.is_full(now) && self.acks.is_full(now)
    }
}

/// An identity's buckets as every connection of it shares them.
pub type SharedRateLimits = Arc<Mutex<RateLimits>>;

/// The buckets, locked. A thread that panicked while holding them cannot have left them
/// inconsistent (every update is a few float operations), so poisoning is ignored.
pub fn lock(limits: &SharedRateLimits) -> MutexGuard<'_, RateLimits> {
    limits.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empties_then_reports_retry_delay() {
        let mut bucket = TokenBucket::new(2, 10);
        let start = Instant::now();
        assert!(bucket.try_take(start).is_ok());
        assert!(bucket.try_take(start).is_ok());
        let wait = bucket.try_take(start).expect_err("empty");
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        assert!(bucket.try_take(start + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn never_exceeds_capacity() {
        let mut bucket = TokenBucket::new(5, 1000);
        let start = Instant::now();
        assert_eq!(bucket.remaining(start + Duration::from_secs(60)), 5);
    }

    #[test]
    fn an_hourly_bucket_refills_one_token_per_interval() {
        let mut bucket = TokenBucket::per_hour(1, 120);
        let start = Instant::now();
        assert!(bucket.try_take(start).is_ok());
        let wait = bucket.try_take(start).expect_err("empty");
        assert!(
            wait > Duration::from_secs(29) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
        assert!(bucket.try_take(start + Duration::from_secs(29)).is_err());
        assert!(bucket.try_take(start + Duration::from_secs(31)).is_ok());
    }

    #[test]
    fn is_full_only_once_refilled_to_capacity() {
        let mut bucket = TokenBucket::new(2, 1);
        let start = Instant::now();
        assert!(bucket.is_full(start), "a new bucket");
        bucket.try_take(start).expect("a token");
        assert!(!bucket.is_full(start + Duration::from_millis(500)));
        assert!(bucket.is_full(start + Duration::from_secs(1)));
    }

    #[test]
    fn a_token_given_back_is_available_again_up_to_capacity() {
        let mut bucket = TokenBucket::new(1, 1);
        let start = Instant::now();
        bucket.try_take(start).expect("a token");
        bucket.give_back(start);
        assert!(bucket.is_full(start));
        bucket.give_back(start);
        assert_eq!(bucket.remaining(start), 1, "never above capacity");
    }

    #[test]
    fn acknowledgements_draw_from_their_own_bucket() {
        let limits = Limits {
            ack_rate_capacity: 2,
            ack_rate_refill_per_sec: 1000,
            ..Limits::default()
        };
        let mut rates = RateLimits::new(&limits);
        let start = Instant::now();
        assert!(rates.acks.try_take(start).is_ok() && rates.acks.try_take(start).is_ok());
        let wait = rates.acks.try_take(start).expect_err("empty");
        assert!(wait <= Duration::from_millis(1), "{wait:?}");
        assert!(
            !rates.is_full(start),
            "an ack bucket in use keeps the identity's buckets"
        );
        assert_eq!(
            rates.sends.remaining(start),
            limits.rate_capacity,
            "sends untouched"
        );
        assert_eq!(rates.requests.remaining(start), limits.request_rate_capacity);
        assert!(rates.is_full(start + Duration::from_millis(2)));
    }

    #[test]
    fn an_earlier_time_does_not_refill_twice() {
        let mut bucket = TokenBucket::new(1, 1);
        let start = Instant::now();
        bucket.try_take(start + Duration::from_secs(1)).expect("a token");
        // Another connection read its frame a little earlier.
        assert!(bucket.try_take(start).is_err());
        assert!(bucket.try_take(start + Duration::from_millis(1500)).is_err());
        assert!(bucket.try_take(start + Duration::from_secs(2)).is_ok());
    }
}
