//! [`Recovery`]: the bookkeeping of session recovery (docs/PROTOCOL.md 2.8,
//! docs/AGENT.md 2 "Sessions"): which peers we asked for a new session and when, which
//! peers we started one for and when, and the new sessions waiting for a bundle.
//!
//! Both directions back off per peer: the first request (or grant) may go at once, the
//! next one after `min_interval`, then after twice that, four times, up to 2^[`MAX_BACKOFF`]
//! times; requests start again from the first when a message from the peer decrypts
//! ([`Recovery::healed`]), grants when none was made for the longest back-off. So two
//! agents whose sessions stay broken whatever they do (a relay that alters every
//! message, a stale bundle) exchange fewer and fewer requests, and each grant costs a
//! new session and a resend of the send log only that often. A
//! request for the same chain of a peer is repeated under the same back-off (the grant
//! may have been lost: a dropped link, a crash, a missing bundle). A grant counts only
//! once its new session is saved ([`Recovery::granted`]); one that cannot be finished is
//! dropped ([`Recovery::abandon`]) and the peer asks again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::keys::PublicKey;
use e2ee_protocol::session_reset::ResetReason;

/// The largest back-off, as a multiple of the interval (2^6 = 64: 32 minutes with the
/// default 30 s).
pub const MAX_BACKOFF: u32 = 6;
/// Peers tracked in each direction; past it the entries that no longer hold anything
/// back are forgotten.
const PEERS_KEPT: usize = 4096;
/// A granted new session whose bundle has not come after this long is dropped (its
/// fetch was lost: a refused request, a lost link), so that it does not block the next.
pub const PENDING_GRANT_TIMEOUT: Duration = Duration::from_secs(60);

/// When the next request (or grant) for one peer may go.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    last: Instant,
    /// Requests (or grants) since the peer's messages last decrypted.
    count: u32,
}

impl Backoff {
    fn wait(&self, interval: Duration) -> Duration {
        interval.saturating_mul(1 << self.count.saturating_sub(1).min(MAX_BACKOFF))
    }

    fn due(&self, now: Instant, interval: Duration) -> bool {
        now.saturating_duration_since(self.last) >= self.wait(interval)
    }
}

/// A granted new session waiting for the peer's bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingGrant {
    /// Why the peer asked.
    pub reason: ResetReason,
    /// The chain of ours the request named.
    pub ratchet_key: PublicKey,
}

/// Session recovery state of one agent (in memory: a restart starts afresh; what must
/// survive a restart, that a session was replaced at the peer's request, is stored
/// with the session).
#[derive(Debug)]
pub struct Recovery {
    min_interval: Duration,
    asked: HashMap<IdentityKey, Backoff>,
    granted: HashMap<IdentityKey, Backoff>,
    /// Granted new sessions waiting for a bundle, with when they were granted.
    pending: HashMap<IdentityKey, (PendingGrant, Instant)>,
}

impl Recovery {
    /// Recovery backing off from `min_interval` per peer.
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            asked: HashMap::new(),
            granted: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    /// Records a request (or grant) for `peer` at `now`: one more in a row, or the first
    /// again when the last is older than the longest back-off.
    fn record(map: &mut HashMap<IdentityKey, Backoff>, peer: IdentityKey, now: Instant, interval: Duration) {
        if map.len() >= PEERS_KEPT && !map.contains_key(&peer) {
            map.retain(|_, b| !b.due(now, interval));
            // Still full (that many peers within one back-off): the oldest goes, so the
            // map stays bounded; that peer may be asked again sooner than its back-off.
            if map.len() >= PEERS_KEPT {
                if let Some(oldest) = map.iter().min_by_key(|(_, b)| b.last).map(|(k, _)| *k) {
                    map.remove(&oldest);
                }
            }
        }
        let longest = interval.saturating_mul(1 << MAX_BACKOFF);
        let count = match map.get(&peer) {
            Some(b) if now.saturating_duration_since(b.last) <= longest => b.count.saturating_add(1),
            _ => 1,
        };
        map.insert(peer, Backoff { last: now, count });
    }

    /// True (and recorded) if `peer` may be asked now for a new session.
    pub fn may_ask(&mut self, peer: IdentityKey, now: Instant) -> bool {
        if self
            .asked
            .get(&peer)
            .is_some_and(|b| !b.due(now, self.min_interval))
        {
            return false;
        }
        Self::record(&mut self.asked, peer, now, self.min_interval);
        true
    }

    /// True if a new session may be started now at `peer`'s request (none granted
    /// within the back-off, none waiting for a bundle); the grant is then pending until
    /// [`Recovery::granted`] or [`Recovery::abandon`].
    pub fn may_grant(&mut self, peer: IdentityKey, grant: PendingGrant, now: Instant) -> bool {
        let waiting = (self.pending.get(&peer))
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) < PENDING_GRANT_TIMEOUT);
        if waiting || (self.granted.get(&peer)).is_some_and(|b| !b.due(now, self.min_interval)) {
            return false;
        }
        self.pending.insert(peer, (grant, now));
        true
    }

    /// The grant waiting for `peer`'s bundle, if any (it stays pending).
    pub fn pending(&self, peer: &IdentityKey) -> Option<PendingGrant> {
        self.pending.get(peer).map(|(grant, _)| *grant)
    }

    /// The peers whose granted new session waits for a bundle (fetched again after a
    /// reconnection).
    pub fn pending_peers(&self) -> Vec<IdentityKey> {
        self.pending.keys().copied().collect()
    }

    /// The new session for `peer` is saved: the grant counts (and backs off the next).
    pub fn granted(&mut self, peer: IdentityKey, now: Instant) {
        self.pending.remove(&peer);
        Self::record(&mut self.granted, peer, now, self.min_interval);
    }

    /// The grant for `peer` cannot be finished (no bundle, or it could not be used):
    /// dropped without counting; the peer asks again.
    pub fn abandon(&mut self, peer: &IdentityKey) {
        self.pending.remove(peer);
    }

    /// A message from `peer` decrypted: the next request to it may go at once. (Not the
    /// next grant: the peer's messages may decrypt in another session than the one a
    /// grant started, as when a stale bundle makes every new session useless.)
    pub fn healed(&mut self, peer: &IdentityKey) {
        self.asked.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use e2ee_protocol::identity::IdentityKeyPair;

    fn peer(seed: u8) -> IdentityKey {
        *IdentityKeyPair::from_seed(&[seed; 32]).public()
    }

    fn grant(key: u8) -> PendingGrant {
        PendingGrant {
            reason: ResetReason::ReusedPosition,
            ratchet_key: PublicKey::from_bytes([key; 32]),
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn requests_back_off_per_peer_until_the_peer_is_heard_again() {
        let mut r = Recovery::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let (bob, carol) = (peer(2), peer(3));
        assert!(r.may_ask(bob, t0), "the first at once");
        assert!(!r.may_ask(bob, t0 + 29 * S));
        assert!(r.may_ask(carol, t0), "another peer has its own");
        assert!(r.may_ask(bob, t0 + 30 * S), "then after the interval");
        assert!(!r.may_ask(bob, t0 + 89 * S), "then after twice the interval");
        assert!(r.may_ask(bob, t0 + 90 * S));
        let mut at = t0 + 90 * S;
        for _ in 0..10 {
            at += 30 * S * (1 << MAX_BACKOFF);
            assert!(r.may_ask(bob, at), "never more than {MAX_BACKOFF} doublings");
        }
        let longest = 30 * S * (1 << MAX_BACKOFF);
        assert!(!r.may_ask(bob, at + longest - S), "capped, and reached");
        assert!(r.may_ask(bob, at + longest));
        at += longest;
        r.healed(&bob);
        assert!(r.may_ask(bob, at + S), "heard again: at once");
    }

    #[test]
    fn a_grant_counts_once_saved_and_one_that_cannot_finish_is_dropped() {
        let mut r = Recovery::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let bob = peer(2);
        assert!(r.may_grant(bob, grant(1), t0));
        assert_eq!(r.pending(&bob), Some(grant(1)));
        assert!(!r.may_grant(bob, grant(2), t0), "one pending at a time");
        assert_eq!(r.pending_peers(), vec![bob]);
        r.abandon(&bob);
        assert!(
            r.may_grant(bob, grant(2), t0 + S),
            "an abandoned grant does not count"
        );
        // One whose bundle never comes stops blocking after a while.
        assert!(!r.may_grant(bob, grant(3), t0 + PENDING_GRANT_TIMEOUT));
        assert!(r.may_grant(bob, grant(2), t0 + S + PENDING_GRANT_TIMEOUT));
        r.granted(bob, t0 + S);
        assert_eq!(r.pending(&bob), None);
        assert!(
            !r.may_grant(bob, grant(3), t0 + 30 * S),
            "backs off from the saved grant"
        );
        assert!(r.may_grant(bob, grant(3), t0 + 31 * S));
        r.granted(bob, t0 + 31 * S);
        assert!(
            !r.may_grant(bob, grant(4), t0 + 90 * S),
            "twice the interval after the second"
        );
        r.healed(&bob);
        assert!(
            !r.may_grant(bob, grant(4), t0 + 90 * S),
            "hearing the peer does not reset grants"
        );
        assert!(r.may_grant(bob, grant(4), t0 + 91 * S));
        r.granted(bob, t0 + 91 * S);
        // Long after, the next grant is the first of a new run.
        let later = t0 + 91 * S + 30 * S * (1 << MAX_BACKOFF) + S;
        assert!(r.may_grant(bob, grant(5), later));
        r.granted(bob, later);
        assert!(r.may_grant(bob, grant(6), later + 30 * S));
    }

    #[test]
    fn the_peers_tracked_are_bounded() {
        let mut r = Recovery::new(Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..(PEERS_KEPT as u32 + 10) {
            let seed: [u8; 32] = std::array::from_fn(|j| (i >> (8 * (j % 4))) as u8 ^ j as u8);
            let id = *IdentityKeyPair::from_seed(&seed).public();
            r.may_ask(id, t0 + S * (i / 1000));
        }
        assert!(r.asked.len() <= PEERS_KEPT);
        // Even when all of them are within their back-off.
        let mut r = Recovery::new(Duration::from_secs(3600));
        for i in 0..(PEERS_KEPT as u32 + 10) {
            let seed: [u8; 32] = std::array::from_fn(|j| (i >> (8 * (j % 4))) as u8 ^ j as u8);
            r.may_ask(*IdentityKeyPair::from_seed(&seed).public(), t0);
        }
        assert_eq!(r.asked.len(), PEERS_KEPT);
    }
}
