//! Token buckets per identity: sends take a token from one, other requests (lookups,
//! bundle fetches, publications) from another; an empty bucket answers with the time
//! until the next token.

use std::time::{Duration, Instant};

/// A token bucket with fractional refill.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    refill_per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u32, refill_per_sec: u32) -> Self {
        Self {
            capacity: f64::from(capacity.max(1)),
            refill_per_sec: f64::from(refill_per_sec.max(1)),
            tokens: f64::from(capacity.max(1)),
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.refill_per_sec).min(self.capacity);
        self.last = now;
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

    /// Whole tokens available now.
    pub fn remaining(&mut self, now: Instant) -> u32 {
        self.refill(now);
        self.tokens as u32
    }

    /// The bucket size.
    pub fn capacity(&self) -> u32 {
        self.capacity as u32
    }

    /// Tokens added per second.
    pub fn refill_per_sec(&self) -> u32 {
        self.refill_per_sec as u32
    }
}

/// An identity's buckets, kept by the Router across its connections.
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// For `Send`.
    pub sends: TokenBucket,
    /// For `FetchBundle`, `LookupName`, `PublishPreKeys` and `PublishName`: a fetch takes
    /// a one-time prekey for good, so fetches must not be free.
    pub requests: TokenBucket,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empties_then_reports_retry_delay() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(2, 10);
        assert!(bucket.try_take(start).is_ok());
        assert!(bucket.try_take(start).is_ok());
        let wait = bucket.try_take(start).expect_err("empty");
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        assert!(bucket.try_take(start + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn never_exceeds_capacity() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(5, 1000);
        assert_eq!(bucket.remaining(start + Duration::from_secs(60)), 5);
    }
}
