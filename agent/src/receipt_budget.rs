//! [`ReceiptBudget`]: how many end-to-end receipts go to peers the user never wrote to.
//!
//! A receipt is a message like any other: until its recipient reads it, it counts
//! against the sender's storage quota at the relay (docs/PROTOCOL.md 1.9). Receipts to
//! peers we have written to are always sent; receipts to others (first contacts, and
//! any number of throwaway identities) come out of this token bucket, so a flood of
//! texts from identities that never read can use at most a bounded share of the quota
//! (about 20 + 15 an hour; the relay keeps messages 7 days by default).

use std::time::{Duration, Instant};

/// Receipts to first contacts allowed in a burst.
pub const BURST: u32 = 20;
/// One more such receipt allowed per this interval (15 an hour).
pub const REFILL_EVERY: Duration = Duration::from_secs(240);

/// A token bucket of receipts to peers we have not written to.
#[derive(Debug, Clone)]
pub struct ReceiptBudget {
    tokens: u32,
    /// When the next token is added.
    next_refill: Instant,
}

impl ReceiptBudget {
    /// A full bucket at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            tokens: BURST,
            next_refill: now + REFILL_EVERY,
        }
    }

    /// Takes one token at `now`; false when the budget is spent.
    pub fn take(&mut self, now: Instant) -> bool {
        while self.tokens < BURST && now >= self.next_refill {
            self.tokens += 1;
            self.next_refill += REFILL_EVERY;
        }
        if self.tokens == BURST {
            // Full: the refill clock starts again from now.
            self.next_refill = self.next_refill.max(now + REFILL_EVERY);
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval() {
        let start = Instant::now();
        let mut budget = ReceiptBudget::new(start);
        assert!((0..BURST).all(|_| budget.take(start)));
        assert!(!budget.take(start), "spent");
        assert!(!budget.take(start + REFILL_EVERY / 2));
        assert!(budget.take(start + REFILL_EVERY));
        assert!(!budget.take(start + REFILL_EVERY));
        // A long quiet time refills at most the burst.
        let later = start + REFILL_EVERY * 1000;
        assert_eq!(
            (0..BURST + 5).filter(|_| budget.take(later)).count(),
            BURST as usize
        );
    }
}
