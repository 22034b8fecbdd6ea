//! How long an identity has been away from the relay, as `QueryAway` reveals it: only
//! "seen within the notice period" or whole days of absence, never whether it is
//! connected right now (docs/PROTOCOL.md 1.8).

use e2ee_protocol::frame::AWAY_NEVER;

const DAY_MS: u64 = 24 * 3600 * 1000;
/// The coarsest precision a seen time is recorded with: a connection that begins or ends
/// less than this after the time recorded need not be written (see
/// [`AwayNotice::precision_ms`]).
const MAX_PRECISION_MS: u64 = 3600 * 1000;

/// The notice period of `QueryAway`: an identity seen within it is reported as present
/// (`away_days = 0`); past it, by the whole days since it was last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwayNotice {
    ms: u64,
}

impl AwayNotice {
    /// A notice period of `secs` seconds.
    pub fn from_secs(secs: u64) -> Self {
        Self {
            ms: secs.saturating_mul(1000),
        }
    }

    /// How precisely seen times are recorded, in ms: the store skips writing a seen time
    /// that is less than this after the recorded one, so reconnecting clients cost no
    /// write each time. One hour, or the notice period if that is shorter. A reply may
    /// so overstate an absence by less than this.
    pub fn precision_ms(self) -> u64 {
        self.ms.min(MAX_PRECISION_MS)
    }

    /// `away_days` of the `Away` reply at `now_ms` for an identity last seen at
    /// `last_seen_ms` (ms since the Unix epoch; `None`: never, or forgotten):
    ///
    /// - `0` if at most the notice period has passed since then (a clock that went
    ///   back counts as no time passed);
    /// - else the whole days passed since then, at least 1 (a notice period shorter than
    ///   a day, only for tests, still gives 1) and at most `AWAY_NEVER - 1`;
    /// - [`AWAY_NEVER`] for `None`.
    pub fn away_days(self, now_ms: u64, last_seen_ms: Option<u64>) -> u32 {
        let Some(seen) = last_seen_ms else {
            return AWAY_NEVER;
        };
        let gone = now_ms.saturating_sub(seen);
        if gone <= self.ms {
            return 0;
        }
        let days = (gone / DAY_MS).max(1);
        u32::try_from(days).unwrap_or(AWAY_NEVER).min(AWAY_NEVER - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice() -> AwayNotice {
        AwayNotice::from_secs(30 * 24 * 3600)
    }

    #[test]
    fn an_identity_seen_within_the_notice_period_is_not_away() {
        let now = 1000 * DAY_MS;
        assert_eq!(notice().away_days(now, Some(now)), 0);
        assert_eq!(notice().away_days(now, Some(now - 29 * DAY_MS)), 0);
    }

    #[test]
    fn exactly_at_the_boundary_it_is_not_away_yet() {
        let now = 1000 * DAY_MS;
        assert_eq!(notice().away_days(now, Some(now - 30 * DAY_MS)), 0);
        assert_eq!(notice().away_days(now + 1, Some(now - 30 * DAY_MS)), 30);
    }

    #[test]
    fn past_the_notice_period_it_is_away_for_whole_days() {
        let now = 1000 * DAY_MS;
        assert_eq!(notice().away_days(now, Some(now - 45 * DAY_MS - 1)), 45);
        assert_eq!(notice().away_days(now, Some(now - 46 * DAY_MS + 1)), 45);
    }

    #[test]
    fn never_seen_is_the_never_value() {
        assert_eq!(notice().away_days(5, None), AWAY_NEVER);
    }

    #[test]
    fn a_notice_period_of_seconds_reports_at_least_one_day() {
        let notice = AwayNotice::from_secs(1);
        assert_eq!(notice.away_days(10_000, Some(9_000)), 0);
        assert_eq!(notice.away_days(10_000, Some(8_999)), 1);
    }

    #[test]
    fn a_huge_absence_never_reads_as_never() {
        assert_eq!(notice().away_days(u64::MAX, Some(0)), AWAY_NEVER - 1);
    }

    #[test]
    fn a_clock_that_went_back_is_no_absence() {
        assert_eq!(AwayNotice::from_secs(1).away_days(5, Some(20_000)), 0);
    }

    #[test]
    fn precision_is_an_hour_or_the_notice_period() {
        assert_eq!(notice().precision_ms(), 3_600_000);
        assert_eq!(AwayNotice::from_secs(2).precision_ms(), 2_000);
    }
}
