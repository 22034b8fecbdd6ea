//! [`ExpiryNotices`]: the agent's side of the relay's expiry notices (docs/PROTOCOL.md
//! 1.6, frames `Expired` and `ExpiredAck`): whether to ask for them on a connection, and
//! which were reported already in this run (the relay repeats notices until their
//! acknowledgement is stored, so one can come twice across a reconnection; across a
//! restart of the agent before the relay stored the acknowledgement, it is reported
//! again).

use std::collections::{HashSet, VecDeque};

use e2ee_protocol::frame::{ErrorCode, ExpiredNotice};

/// How many notices are remembered to report each once.
const REMEMBERED: usize = 4096;

/// Expiry notices of one agent run.
#[derive(Debug, Default)]
pub struct ExpiryNotices {
    /// The relay does not know the frames (it closed the connection that asked with
    /// `Malformed`): not asked again in this run.
    unsupported: bool,
    /// Asked on the current connection, and neither an `Expired` nor the answer to a
    /// later frame came yet.
    asked: bool,
    seen: HashSet<ExpiredNotice>,
    order: VecDeque<ExpiredNotice>,
}

impl ExpiryNotices {
    /// On connecting: true if the relay should be asked (`ExpiredAck { through: 0 }`).
    pub fn ask(&mut self) -> bool {
        self.asked = !self.unsupported;
        self.asked
    }

    /// The relay answered a frame sent after the question (the question was read and
    /// understood: a relay that does not know it closes the connection at once).
    pub fn answered(&mut self) {
        self.asked = false;
    }

    /// The notices of an `Expired` frame that were not reported before (to report now).
    pub fn fresh(&mut self, notices: &[ExpiredNotice]) -> Vec<ExpiredNotice> {
        self.asked = false;
        let mut fresh = Vec::new();
        for notice in notices {
            if self.seen.insert(*notice) {
                if self.order.len() >= REMEMBERED {
                    if let Some(old) = self.order.pop_front() {
                        self.seen.remove(&old);
                    }
                }
                self.order.push_back(*notice);
                fresh.push(*notice);
            }
        }
        fresh
    }

    /// The relay sent `Error(code)`. Returns true if this shows that it does not know
    /// the notice frames (a `Malformed` close after we asked, before any `Expired`);
    /// they are then not asked for again.
    pub fn relay_refused(&mut self, code: ErrorCode) -> bool {
        if code == ErrorCode::Malformed && self.asked && !self.unsupported {
            self.unsupported = true;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(n: u8) -> ExpiredNotice {
        ExpiredNotice {
            recipient: [n; 32],
            msg_id: [n; 16],
        }
    }

    #[test]
    fn each_notice_is_reported_once_and_memory_is_bounded() {
        let mut notices = ExpiryNotices::default();
        assert_eq!(notices.fresh(&[notice(1), notice(2)]), vec![notice(1), notice(2)]);
        assert_eq!(notices.fresh(&[notice(2), notice(3)]), vec![notice(3)]);
        for i in 0..REMEMBERED as u32 {
            let mut n = notice(0);
            n.msg_id[..4].copy_from_slice(&i.to_be_bytes());
            notices.fresh(&[n]);
        }
        assert_eq!(notices.seen.len(), REMEMBERED);
        assert_eq!(notices.fresh(&[notice(1)]), vec![notice(1)], "forgotten");
    }

    #[test]
    fn a_relay_that_closes_with_malformed_after_the_question_is_not_asked_again() {
        let mut notices = ExpiryNotices::default();
        assert!(!notices.relay_refused(ErrorCode::Malformed), "nothing asked yet");
        assert!(notices.ask());
        assert!(!notices.relay_refused(ErrorCode::IdleTimeout));
        assert!(notices.relay_refused(ErrorCode::Malformed));
        assert!(!notices.ask());
        // The answer to a later frame shows the question was understood.
        let mut understood = ExpiryNotices::default();
        assert!(understood.ask());
        understood.answered();
        assert!(!understood.relay_refused(ErrorCode::Malformed));
        // A relay that answered with notices knows the frames.
        let mut knows = ExpiryNotices::default();
        assert!(knows.ask());
        knows.fresh(&[notice(1)]);
        assert!(!knows.relay_refused(ErrorCode::Malformed));
    }
}
