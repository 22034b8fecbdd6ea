//! Away notices: once the relay has stored a message to a peer, the agent asks it how
//! long the peer's pinned identity has been away (`QueryAway`, docs/PROTOCOL.md 1.8) and
//! reports a long absence as `recipient_away` instead of leaving the user with a silent
//! `sent`. [`AwayChecks`] decides when to ask and matches the answers; it reads no clock
//! (the caller passes the time).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2ee_protocol::frame::ErrorCode;
use e2ee_protocol::identity::IdentityKey;

use crate::event::Event;

/// A peer is asked about at most once in this long on one connection.
pub const ASK_EVERY: Duration = Duration::from_secs(10 * 60);

/// The away queries of one agent: when each peer identity was last asked about on the
/// current connection, and the queries whose answer has not come.
#[derive(Debug, Default)]
pub struct AwayChecks {
    asked: HashMap<IdentityKey, Instant>,
    in_flight: HashMap<u32, (String, IdentityKey)>,
    /// The relay closed a connection as `Malformed` while a query was in flight: it
    /// predates `QueryAway` (revision 2 of docs/PROTOCOL.md), so it is not asked again
    /// while the agent runs.
    unsupported: bool,
}

impl AwayChecks {
    /// Whether to ask about `identity` at `now`: not if it was asked about less than
    /// [`ASK_EVERY`] ago on this connection, nor if the relay does not know the query.
    /// A `true` counts as asking.
    pub fn should_ask(&mut self, identity: &IdentityKey, now: Instant) -> bool {
        if self.unsupported {
            return false;
        }
        match self.asked.get(identity) {
            Some(at) if now.saturating_duration_since(*at) < ASK_EVERY => false,
            _ => {
                self.asked.insert(*identity, now);
                true
            }
        }
    }

    /// Remembers that query `request_id` asks about `peer`'s identity `identity`.
    pub fn asking(&mut self, request_id: u32, peer: String, identity: IdentityKey) {
        self.in_flight.insert(request_id, (peer, identity));
    }

    /// The relay's `Away` answer to query `request_id`: the `recipient_away` event to
    /// report if the peer is away (`away_days > 0`), `None` if it is not or the query
    /// is not one of ours.
    pub fn answered(&mut self, request_id: u32, away_days: u32) -> Option<Event> {
        let (peer, identity) = self.in_flight.remove(&request_id)?;
        Event::recipient_away(&peer, &identity, away_days)
    }

    /// Forgets the queries in flight (their answers will not come, or are not awaited);
    /// when each peer was asked about is kept.
    pub fn forget_in_flight(&mut self) {
        self.in_flight.clear();
    }

    /// The connection ended: forgets everything but whether the relay knows the query.
    pub fn connection_ended(&mut self) {
        self.asked.clear();
        self.in_flight.clear();
    }

    /// The relay sent `Error(code)`. Returns true if this shows that it does not know
    /// `QueryAway` (a `Malformed` close while a query was in flight); it is then not
    /// asked again.
    pub fn relay_refused(&mut self, code: ErrorCode) -> bool {
        if code == ErrorCode::Malformed && !self.in_flight.is_empty() && !self.unsupported {
            self.unsupported = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use e2ee_protocol::frame::AWAY_NEVER;
    use e2ee_protocol::identity::IdentityKeyPair;

    use super::*;

    fn bob() -> IdentityKey {
        *IdentityKeyPair::from_seed(&[7; 32]).public()
    }

    #[test]
    fn a_peer_is_asked_about_once_in_ten_minutes() {
        let mut checks = AwayChecks::default();
        let now = Instant::now();
        assert!(checks.should_ask(&bob(), now));
        assert!(!checks.should_ask(&bob(), now + Duration::from_secs(599)));
        assert!(checks.should_ask(&bob(), now + ASK_EVERY));
        let carol = *IdentityKeyPair::from_seed(&[8; 32]).public();
        assert!(checks.should_ask(&carol, now), "per peer");
    }

    #[test]
    fn a_new_connection_asks_again() {
        let mut checks = AwayChecks::default();
        let now = Instant::now();
        assert!(checks.should_ask(&bob(), now));
        checks.forget_in_flight();
        assert!(!checks.should_ask(&bob(), now), "still the same connection");
        checks.connection_ended();
        assert!(checks.should_ask(&bob(), now));
    }

    #[test]
    fn only_an_absence_is_reported() {
        let mut checks = AwayChecks::default();
        checks.asking(1, "bob".into(), bob());
        checks.asking(2, "bob".into(), bob());
        checks.asking(3, "bob".into(), bob());
        assert_eq!(checks.answered(1, 0), None, "present");
        assert_eq!(checks.answered(1, 45), None, "answered already");
        assert_eq!(checks.answered(9, 45), None, "not ours");
        assert!(matches!(
            checks.answered(2, 45),
            Some(Event::RecipientAway {
                away_days: Some(45),
                ..
            })
        ));
        assert!(matches!(
            checks.answered(3, AWAY_NEVER),
            Some(Event::RecipientAway { away_days: None, .. })
        ));
    }

    #[test]
    fn a_relay_that_does_not_know_the_query_is_not_asked_again() {
        let mut checks = AwayChecks::default();
        let now = Instant::now();
        assert!(!checks.relay_refused(ErrorCode::Malformed), "no query in flight");
        assert!(checks.should_ask(&bob(), now));
        checks.asking(1, "bob".into(), bob());
        assert!(!checks.relay_refused(ErrorCode::IdleTimeout));
        assert!(checks.relay_refused(ErrorCode::Malformed));
        checks.connection_ended();
        assert!(!checks.should_ask(&bob(), now + ASK_EVERY));
    }
}
