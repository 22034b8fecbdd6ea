//! [`Recovery`]: the bookkeeping of session recovery (docs/PROTOCOL.md 2.8,
//! docs/AGENT.md "Session recovery"): which peers we asked for a new session and when,
//! which peers we started one for and when, and the new sessions waiting for a bundle.
//!
//! Both directions are limited per peer to one per `min_interval`, so two agents whose
//! sessions are broken in a way a new session does not cure (or a relay that replays
//! requests) cause at most one request and one new session per peer and interval. A
//! request is never sent twice for the same chain of a peer (ratchet key), and a request
//! naming a chain is granted at most once (until a restart).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::keys::PublicKey;
use e2ee_protocol::session_reset::ResetReason;

/// How many (peer, ratchet key) pairs already asked about, and already granted, are
/// remembered (each).
const KEYS_KEPT: usize = 1024;

/// A bounded set of (peer, ratchet key) pairs, oldest forgotten first.
#[derive(Debug, Default)]
struct KeySet {
    order: VecDeque<(IdentityKey, PublicKey)>,
    set: HashSet<(IdentityKey, PublicKey)>,
}

impl KeySet {
    fn contains(&self, key: &(IdentityKey, PublicKey)) -> bool {
        self.set.contains(key)
    }

    fn insert(&mut self, key: (IdentityKey, PublicKey)) {
        if self.order.len() >= KEYS_KEPT {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        if self.set.insert(key) {
            self.order.push_back(key);
        }
    }
}

/// Session recovery state of one agent (in memory: a restart starts afresh).
#[derive(Debug)]
pub struct Recovery {
    min_interval: Duration,
    /// When we last asked each peer for a new session.
    asked: HashMap<IdentityKey, Instant>,
    /// The chains we asked about.
    asked_keys: KeySet,
    /// When we last started a new session at each peer's request.
    granted: HashMap<IdentityKey, Instant>,
    /// The chains of ours that requests we granted named.
    granted_keys: KeySet,
    /// New sessions granted and waiting for the peer's bundle, with the reason.
    pending: HashMap<IdentityKey, ResetReason>,
}

impl Recovery {
    /// Recovery limited to one request and one new session per peer per `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            asked: HashMap::new(),
            asked_keys: KeySet::default(),
            granted: HashMap::new(),
            granted_keys: KeySet::default(),
            pending: HashMap::new(),
        }
    }

    fn due(last: Option<&Instant>, now: Instant, interval: Duration) -> bool {
        last.is_none_or(|last| now.saturating_duration_since(*last) >= interval)
    }

    /// True (and recorded) if `peer` may be asked now for a new session because of a
    /// message in its chain `ratchet_key`: not asked within the interval, and never
    /// about that chain.
    pub fn may_ask(&mut self, peer: IdentityKey, ratchet_key: PublicKey, now: Instant) -> bool {
        let key = (peer, ratchet_key);
        if self.asked_keys.contains(&key) || !Self::due(self.asked.get(&peer), now, self.min_interval) {
            return false;
        }
        self.asked.insert(peer, now);
        self.asked_keys.insert(key);
        true
    }

    /// True (and recorded as pending) if a new session may be started now at `peer`'s
    /// request naming our chain `ratchet_key`: none started for it within the interval,
    /// and no request naming that chain granted before (a replayed request).
    pub fn may_grant(
        &mut self,
        peer: IdentityKey,
        ratchet_key: PublicKey,
        reason: ResetReason,
        now: Instant,
    ) -> bool {
        let key = (peer, ratchet_key);
        if self.granted_keys.contains(&key) || !Self::due(self.granted.get(&peer), now, self.min_interval) {
            return false;
        }
        self.granted.insert(peer, now);
        self.granted_keys.insert(key);
        self.pending.insert(peer, reason);
        true
    }

    /// The reason of a granted new session with `peer` that waits for its bundle,
    /// removing it.
    pub fn take_pending(&mut self, peer: &IdentityKey) -> Option<ResetReason> {
        self.pending.remove(peer)
    }

    /// True if a granted new session with `peer` waits for its bundle.
    pub fn is_pending(&self, peer: &IdentityKey) -> bool {
        self.pending.contains_key(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2ee_protocol::identity::IdentityKeyPair;

    fn peer(seed: u8) -> IdentityKey {
        *IdentityKeyPair::from_seed(&[seed; 32]).public()
    }

    #[test]
    fn one_request_per_peer_and_interval_and_never_twice_for_a_chain() {
        let mut r = Recovery::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let (bob, carol) = (peer(2), peer(3));
        let (k1, k2) = (PublicKey::from_bytes([1; 32]), PublicKey::from_bytes([2; 32]));
        assert!(r.may_ask(bob, k1, t0));
        assert!(
            !r.may_ask(bob, k2, t0 + Duration::from_secs(29)),
            "within the interval"
        );
        assert!(r.may_ask(carol, k1, t0), "another peer has its own interval");
        assert!(
            !r.may_ask(bob, k1, t0 + Duration::from_secs(31)),
            "the same chain again"
        );
        assert!(r.may_ask(bob, k2, t0 + Duration::from_secs(31)));
    }

    #[test]
    fn one_new_session_per_peer_and_interval_pending_until_taken() {
        let mut r = Recovery::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let bob = peer(2);
        let (k1, k2) = (PublicKey::from_bytes([1; 32]), PublicKey::from_bytes([2; 32]));
        assert!(r.may_grant(bob, k1, ResetReason::ReusedPosition, t0));
        assert!(r.is_pending(&bob));
        assert!(!r.may_grant(
            bob,
            k2,
            ResetReason::Unauthenticated,
            t0 + Duration::from_secs(10)
        ));
        assert_eq!(r.take_pending(&bob), Some(ResetReason::ReusedPosition));
        assert_eq!(r.take_pending(&bob), None);
        assert!(
            !r.may_grant(bob, k1, ResetReason::ReusedPosition, t0 + Duration::from_secs(60)),
            "a request naming a chain already granted is a replay"
        );
        assert!(r.may_grant(bob, k2, ResetReason::SkipLimit, t0 + Duration::from_secs(30)));
    }

    #[test]
    fn the_chains_asked_about_are_bounded() {
        let mut r = Recovery::new(Duration::ZERO);
        let t0 = Instant::now();
        let bob = peer(2);
        for i in 0..(KEYS_KEPT as u32 + 10) {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            assert!(r.may_ask(bob, PublicKey::from_bytes(key), t0));
        }
        assert_eq!(r.asked_keys.order.len(), KEYS_KEPT);
        assert_eq!(r.asked_keys.set.len(), KEYS_KEPT);
        // The oldest was forgotten: it may be asked about again.
        assert!(r.may_ask(bob, PublicKey::from_bytes([0; 32]), t0));
    }
}
