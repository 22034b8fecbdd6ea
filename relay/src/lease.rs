//! How long a name stays with an identity that stops authenticating: the one place that
//! decides whether another identity may take a name over (docs/PROTOCOL.md 1.8).

/// The lease of a name: it runs from the holder's last authentication, or from when its
/// claim was stored if that is later (a holder that never authenticated since counts
/// from then). A holder whose lease has run out may lose the name to another identity's
/// claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    ms: u64,
}

impl Lease {
    /// A lease of `secs` seconds.
    pub fn from_secs(secs: u64) -> Self {
        Self {
            ms: secs.saturating_mul(1000),
        }
    }

    /// The lease's length in ms (for the Redis engine's claim script, which applies
    /// [`Lease::expired`]'s rule inside Redis).
    pub fn ms(self) -> u64 {
        self.ms
    }

    /// Whether a claim stored at `stored_ms`, whose holder last authenticated at
    /// `last_auth_ms` (`None`: not since the claim was stored, or not recorded), has
    /// run out at `now_ms`: strictly more than the lease has passed since the later of
    /// the two. All times are ms since the Unix epoch; a clock that went back counts as
    /// no time passed.
    pub fn expired(self, now_ms: u64, stored_ms: u64, last_auth_ms: Option<u64>) -> bool {
        let since = last_auth_ms.map_or(stored_ms, |auth| auth.max(stored_ms));
        now_ms.saturating_sub(since) > self.ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: u64 = 24 * 3600 * 1000;

    fn lease() -> Lease {
        Lease::from_secs(90 * 24 * 3600)
    }

    #[test]
    fn a_holder_silent_for_longer_than_the_lease_has_expired() {
        let now = 1000 * DAY_MS;
        assert!(lease().expired(now, now - 200 * DAY_MS, Some(now - 91 * DAY_MS)));
    }

    #[test]
    fn a_holder_that_authenticated_within_the_lease_keeps_the_name() {
        let now = 1000 * DAY_MS;
        assert!(!lease().expired(now, now - 200 * DAY_MS, Some(now - 89 * DAY_MS)));
    }

    #[test]
    fn exactly_at_the_boundary_the_lease_still_holds() {
        let now = 1000 * DAY_MS;
        assert!(!lease().expired(now, now - 200 * DAY_MS, Some(now - 90 * DAY_MS)));
        assert!(lease().expired(now + 1, now - 200 * DAY_MS, Some(now - 90 * DAY_MS)));
    }

    #[test]
    fn a_holder_that_never_authenticated_counts_from_when_the_claim_was_stored() {
        let now = 1000 * DAY_MS;
        assert!(!lease().expired(now, now - 90 * DAY_MS, None));
        assert!(lease().expired(now, now - 90 * DAY_MS - 1, None));
    }

    #[test]
    fn a_claim_stored_after_the_last_authentication_counts_from_the_claim() {
        let now = 1000 * DAY_MS;
        assert!(!lease().expired(now, now - DAY_MS, Some(now - 200 * DAY_MS)));
    }

    #[test]
    fn a_clock_that_went_back_does_not_expire_anything() {
        assert!(!Lease::from_secs(1).expired(5, 10_000, Some(20_000)));
    }
}
