//! [`SendWindow`]: which outbox entries are on the wire to the relay, in what order the
//! others go, and when the relay may take more.
//!
//! The relay answers every `Send` with `SentAck`, `RateLimited` or `QuotaExceeded`
//! (docs/PROTOCOL.md 1.6). A receiver takes the messages of one chain out of order only
//! within [`e2ee_protocol::consts::MAX_SKIP`] positions and
//! [`e2ee_protocol::consts::MAX_STORED_SKIPPED_KEYS`] stored keys; past that a message
//! is lost (`too_old`, `skip_limit`). So the agent sends in outbox order, which is the
//! order of the chain positions, and never lets the relay reorder more than a window:
//!
//! - at most [`SEND_WINDOW`] `Send`s are unanswered at once (the rest wait their turn
//!   here), so a refused message is overtaken by at most that many later ones;
//! - a `RateLimited` pauses every transmission until its retry time (the token bucket is
//!   the sender's, for all recipients); then the refused entries go again first, in the
//!   order they were refused (the order they were sent), then the ones never sent.
//!
//! Pure bookkeeping of message ids; the agent owns the outbox and the timer.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Most `Send`s unanswered at once. Below `MAX_SKIP` (1 000) and the stored skipped
/// keys (2 000), so that no reordering within the window can lose a message.
pub const SEND_WINDOW: usize = 256;

/// A 16-byte message id.
pub type MsgId = [u8; 16];

/// The transmission state of one connection.
#[derive(Debug, Default)]
pub struct SendWindow {
    /// Sent on this connection, not answered yet.
    in_flight: HashSet<MsgId>,
    /// Refused with `RateLimited`, in the order the refusals came: sent again first.
    refused: VecDeque<MsgId>,
    /// Never sent on this connection, in outbox order.
    waiting: VecDeque<MsgId>,
    /// No transmission before this (the sender's token bucket is empty).
    paused_until: Option<Instant>,
}

impl SendWindow {
    /// A connection started: nothing is on the wire; `outbox` (in order) waits.
    pub fn restart(&mut self, outbox: impl IntoIterator<Item = MsgId>) {
        self.in_flight.clear();
        self.refused.clear();
        self.paused_until = None;
        self.waiting = outbox.into_iter().collect();
    }

    /// A new outbox entry, behind every other.
    pub fn push(&mut self, id: MsgId) {
        self.waiting.push_back(id);
    }

    /// The next ids to send now, in order, and counts them as in flight: none while
    /// paused, and at most what the window has room for.
    pub fn next_batch(&mut self, now: Instant) -> Vec<MsgId> {
        if self.paused_until.is_some_and(|until| now < until) {
            return Vec::new();
        }
        self.paused_until = None;
        let room = SEND_WINDOW.saturating_sub(self.in_flight.len());
        let mut out = Vec::with_capacity(room.min(self.refused.len() + self.waiting.len()));
        while out.len() < room {
            let Some(id) = self.refused.pop_front().or_else(|| self.waiting.pop_front()) else {
                break;
            };
            if self.in_flight.insert(id) {
                out.push(id);
            }
        }
        out
    }

    /// The relay answered `id` (stored it, or refused it for good): its slot is free.
    /// False if it was not in flight here.
    pub fn answered(&mut self, id: &MsgId) -> bool {
        self.in_flight.remove(id)
    }

    /// The relay refused `id` with `RateLimited`: it goes again, before anything not yet
    /// sent, once `retry_after` has passed; nothing is sent until then. Returns the time
    /// to send again (a later refusal may push it further).
    pub fn rate_limited(&mut self, id: MsgId, now: Instant, retry_after: Duration) -> Instant {
        if self.in_flight.remove(&id) {
            self.refused.push_back(id);
        }
        let until = now + retry_after;
        let until = self.paused_until.map_or(until, |p| p.max(until));
        self.paused_until = Some(until);
        until
    }

    /// Sends `id` again at the next batch, before anything not yet sent (a resend
    /// after a `QuotaExceeded` delay). Nothing if it is in flight.
    pub fn again(&mut self, id: MsgId) {
        if !self.in_flight.contains(&id) && !self.refused.contains(&id) {
            self.refused.push_back(id);
        }
    }

    /// When the pause after a `RateLimited` ends, if there is one.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Entries sent and not answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Entries waiting to be sent (refused or never sent).
    pub fn waiting(&self) -> usize {
        self.refused.len() + self.waiting.len()
    }
}

#[cfg(test)]
mod tests;
