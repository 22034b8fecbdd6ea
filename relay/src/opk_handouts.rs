//! How many one-time prekeys of one identity fetches may take: a token bucket per
//! *target* identity, shared by every connection, so that no number of fetchers (nor of
//! throwaway identities) can drain a victim's one-time prekeys. A fetch for a target
//! whose bucket is empty is still answered, with the signed prekey only: peers can still
//! start sessions, and the target's one-time prekeys stay.
//!
//! Buckets live in memory. One that has refilled is no different from a new one, so the
//! map drops full buckets whenever it has doubled since it last did: its size stays
//! bounded by the targets fetched recently, and dropping one never refills anything.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::rate_limit::TokenBucket;
use crate::store::IdentityBytes;

/// Buckets held before the first sweep.
const FIRST_SWEEP_AT: usize = 1024;

/// The handout buckets of every target identity.
pub struct OpkHandouts {
    capacity: u32,
    refill_per_hour: u32,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    map: HashMap<IdentityBytes, TokenBucket, ahash::RandomState>,
    /// Sweep full buckets out once the map holds this many.
    sweep_at: usize,
}

impl OpkHandouts {
    /// Buckets of `capacity` handouts, refilled by `refill_per_hour` an hour.
    pub fn new(capacity: u32, refill_per_hour: u32) -> Self {
        Self {
            capacity,
            refill_per_hour,
            buckets: Mutex::new(Buckets {
                map: HashMap::default(),
                sweep_at: FIRST_SWEEP_AT,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Buckets> {
        // Every update leaves the map consistent, so a panic elsewhere is no reason to stop.
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a handout of one of `target`'s one-time prekeys; false when its bucket is
    /// empty (the fetch then hands out none).
    pub fn try_take(&self, target: &IdentityBytes, now: Instant) -> bool {
        let mut buckets = self.lock();
        let Buckets { map, sweep_at } = &mut *buckets;
        if !map.contains_key(target) && map.len() >= *sweep_at {
            map.retain(|_, bucket| !bucket.is_full(now));
            *sweep_at = (map.len() * 2).max(FIRST_SWEEP_AT);
        }
        map.entry(*target)
            .or_insert_with(|| TokenBucket::per_hour(self.capacity, self.refill_per_hour))
            .try_take(now)
            .is_ok()
    }

    /// Gives back a handout taken for a fetch that handed out nothing (the target has no
    /// bundle or no one-time prekey left).
    pub fn give_back(&self, target: &IdentityBytes, now: Instant) {
        if let Some(bucket) = self.lock().map.get_mut(target) {
            bucket.give_back(now);
        }
    }

    /// Buckets held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_target_gets_capacity_handouts_then_none_until_refilled() {
        let handouts = OpkHandouts::new(3, 3600);
        let start = Instant::now();
        let victim = [1; 32];
        let taken = (0..10).filter(|_| handouts.try_take(&victim, start)).count();
        assert_eq!(taken, 3);
        assert!(handouts.try_take(&[2; 32], start), "other targets have their own");
        assert!(!handouts.try_take(&victim, start + Duration::from_millis(900)));
        assert!(handouts.try_take(&victim, start + Duration::from_millis(1100)));
    }

    #[test]
    fn a_handout_given_back_can_be_taken_again() {
        let handouts = OpkHandouts::new(1, 1);
        let start = Instant::now();
        assert!(handouts.try_take(&[1; 32], start));
        handouts.give_back(&[1; 32], start);
        assert!(handouts.try_take(&[1; 32], start));
        assert!(!handouts.try_take(&[1; 32], start));
    }

    #[test]
    fn full_buckets_are_swept_and_empty_ones_kept() {
        let handouts = OpkHandouts::new(1, 3600);
        let start = Instant::now();
        let target = |n: usize| {
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&(n as u64).to_be_bytes());
            id
        };
        // One drained bucket, then enough given-back (full) ones to reach the sweep.
        assert!(handouts.try_take(&target(0), start));
        for n in 1..FIRST_SWEEP_AT {
            assert!(handouts.try_take(&target(n), start));
            handouts.give_back(&target(n), start);
        }
        assert_eq!(handouts.len(), FIRST_SWEEP_AT);
        assert!(handouts.try_take(&target(FIRST_SWEEP_AT), start));
        assert_eq!(handouts.len(), 2, "the drained bucket and the new one");
        assert!(
            !handouts.try_take(&target(0), start),
            "the drained bucket was not refilled by the sweep"
        );
    }
}
