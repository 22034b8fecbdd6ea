//! [`SendWindow`]: which outbox entries are on the wire to the relay, in what order the
//! others go, and when the relay may take more.
//!
//! The relay answers every `Send` with `SentAck`, `RateLimited` or `QuotaExceeded`
//! (docs/PROTOCOL.md 1.6). A receiver takes the messages of one chain out of order only
//! within [`e2ee_protocol::consts::MAX_SKIP`] positions and
//! [`e2ee_protocol::consts::MAX_STORED_SKIPPED_KEYS`] stored keys; past that a message
//! fails (`too_old`, `skip_limit`) and is lost. So the agent sends each recipient's
//! messages in outbox order, the order of their chain positions, and never lets the
//! relay reorder them by more than a window:
//!
//! - at most [`SEND_WINDOW`] outbox entries are unanswered at once (the rest wait their
//!   turn here), so a refused message is overtaken by at most that many later ones;
//! - a `RateLimited` (the sender's token bucket is empty, for every recipient) pauses
//!   every transmission until its retry time, and the window then opens again from one
//!   entry, one more for each `SentAck` (the bucket refills slowly: sending the whole
//!   window at once would only be refused again); a `QuotaExceeded` (a queue or quota
//!   that the relay does not name is full) pauses the transmissions to that recipient;
//! - after a pause the refused entries go first, in outbox order (the relay answers
//!   `RateLimited` at once and `QuotaExceeded` after its store, so refusals may come in
//!   another order than the `Send`s went), then the ones never sent.
//!
//! Recipients take turns, so one whose queue is paused does not hold back the others.
//! Pure bookkeeping of message ids; the agent owns the outbox and the timers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most outbox entries unanswered at once. Below `MAX_SKIP` (1 000) and the stored
/// skipped keys (2 000), so that no reordering within the window can lose a message.
pub const SEND_WINDOW: usize = 256;

/// A 16-byte message id.
pub type MsgId = [u8; 16];
/// A recipient's 32-byte identity key.
pub type Recipient = [u8; 32];

/// What waits for one recipient, by outbox position.
#[derive(Debug, Default)]
struct Queue {
    /// Refused, by outbox position: sent again first.
    refused: BTreeMap<u64, MsgId>,
    /// Never sent on this connection, in outbox order (all after the refused).
    waiting: VecDeque<(u64, MsgId)>,
    /// Nothing is sent to this recipient before this (`QuotaExceeded`).
    paused_until: Option<Instant>,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.refused.is_empty() && self.waiting.is_empty()
    }

    fn pop(&mut self) -> Option<(u64, MsgId)> {
        self.refused.pop_first().or_else(|| self.waiting.pop_front())
    }
}

/// The transmission state of one connection.
#[derive(Debug)]
pub struct SendWindow {
    /// Sent on this connection, not answered yet: recipient and outbox position.
    in_flight: HashMap<MsgId, (Recipient, u64)>,
    queues: HashMap<Recipient, Queue>,
    /// Recipients with something queued, in turn.
    turns: VecDeque<Recipient>,
    /// No transmission at all before this (`RateLimited`).
    paused_until: Option<Instant>,
    /// Entries that may be unanswered at once now (up to [`SEND_WINDOW`]).
    limit: usize,
    /// The outbox position of the next entry pushed.
    next_position: u64,
}

impl Default for SendWindow {
    fn default() -> Self {
        Self {
            in_flight: HashMap::new(),
            queues: HashMap::new(),
            turns: VecDeque::new(),
            paused_until: None,
            limit: SEND_WINDOW,
            next_position: 0,
        }
    }
}

impl SendWindow {
    /// A connection started: nothing is on the wire or paused; `outbox` (in order)
    /// waits.
    pub fn restart(&mut self, outbox: impl IntoIterator<Item = (MsgId, Recipient)>) {
        *self = Self::default();
        for (id, recipient) in outbox {
            self.push(id, recipient);
        }
    }

    /// A new outbox entry, behind every other to the same recipient.
    pub fn push(&mut self, id: MsgId, recipient: Recipient) {
        let position = self.next_position;
        self.next_position += 1;
        self.queue_of(recipient).waiting.push_back((position, id));
    }

    /// The next ids to send now and counts them as in flight: none while everything is
    /// paused, none to a paused recipient, at most what the window has room for; each
    /// recipient's in order, recipients in turn. Every pause ended by `now` is lifted,
    /// even one whose entries find no room (an answer makes room and sends them).
    pub fn next_batch(&mut self, now: Instant) -> Vec<(MsgId, Recipient)> {
        for queue in self.queues.values_mut() {
            if queue.paused_until.is_some_and(|until| until <= now) {
                queue.paused_until = None;
            }
        }
        if self.paused_until.is_some_and(|until| now < until) {
            return Vec::new();
        }
        self.paused_until = None;
        let mut out = Vec::new();
        // Each recipient in `turns` is looked at once per pass; a pass that sends
        // nothing ends the batch (all paused or empty).
        while self.has_room() {
            let mut sent = false;
            for _ in 0..self.turns.len() {
                if !self.has_room() {
                    break;
                }
                let Some(recipient) = self.turns.pop_front() else {
                    break;
                };
                let Some(queue) = self.queues.get_mut(&recipient) else {
                    continue;
                };
                if queue.paused_until.is_some_and(|until| now < until) {
                    self.turns.push_back(recipient);
                    continue;
                }
                queue.paused_until = None;
                if let Some((position, id)) = queue.pop() {
                    if self.in_flight.insert(id, (recipient, position)).is_none() {
                        out.push((id, recipient));
                        sent = true;
                    }
                }
                if queue.is_empty() {
                    self.queues.remove(&recipient);
                } else {
                    self.turns.push_back(recipient);
                }
            }
            if !sent {
                break;
            }
        }
        out
    }

    /// The relay stored `id` (`SentAck`): its slot is free, and the window grows by
    /// one after a rate-limit pause. False if it was not in flight here.
    pub fn answered(&mut self, id: &MsgId) -> bool {
        let answered = self.in_flight.remove(id).is_some();
        if answered {
            self.limit = (self.limit + 1).min(SEND_WINDOW);
        }
        answered
    }

    /// The relay refused `id` with `RateLimited`: nothing is sent until `retry_after`
    /// has passed, then the window opens again from one entry, `id` first among its
    /// recipient's. Returns when sending resumes (a later refusal may push it further).
    pub fn rate_limited(&mut self, id: MsgId, now: Instant, retry_after: Duration) -> Instant {
        self.requeue(id);
        self.limit = 1;
        let until = later(self.paused_until, now + retry_after);
        self.paused_until = Some(until);
        until
    }

    /// The relay refused `id` with `QuotaExceeded`: nothing more goes to its recipient
    /// until `retry_after` has passed, and then `id` goes first. Returns when sending to
    /// that recipient resumes, or `None` if `id` was not in flight here.
    pub fn quota_exceeded(&mut self, id: MsgId, now: Instant, retry_after: Duration) -> Option<Instant> {
        let recipient = self.requeue(id)?;
        let queue = self.queue_of(recipient);
        let until = later(queue.paused_until, now + retry_after);
        queue.paused_until = Some(until);
        Some(until)
    }

    /// The earliest end of a pause that [`SendWindow::next_batch`] has not lifted yet
    /// (when to call it again), if any. It may have passed since that call (then call it
    /// at once): a pause that ends between the two calls still has entries waiting.
    pub fn next_resume(&self) -> Option<Instant> {
        (self.queues.values())
            .filter_map(|q| q.paused_until)
            .chain(self.paused_until)
            .min()
    }

    /// Why and until when sending to `recipient` is paused now, if it is:
    /// `"rate_limited"` (everything) or `"quota_exceeded"` (this recipient).
    pub fn pause_of(&self, recipient: &Recipient, now: Instant) -> Option<(&'static str, Instant)> {
        let ahead = |until: Option<Instant>| until.filter(|u| now < *u);
        if let Some(until) = ahead(self.paused_until) {
            return Some(("rate_limited", until));
        }
        let queue = self.queues.get(recipient)?;
        ahead(queue.paused_until).map(|until| ("quota_exceeded", until))
    }

    /// True if a message to `recipient` sent around the window now would overtake
    /// entries that wait, or go out during a pause.
    pub fn holds_back(&self, recipient: &Recipient, now: Instant) -> bool {
        self.pause_of(recipient, now).is_some() || self.queues.get(recipient).is_some_and(|q| !q.is_empty())
    }

    /// Entries sent and not answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Entries waiting to be sent (refused or never sent).
    pub fn waiting(&self) -> usize {
        self.queues
            .values()
            .map(|q| q.refused.len() + q.waiting.len())
            .sum()
    }

    fn has_room(&self) -> bool {
        self.in_flight.len() < self.limit
    }

    /// Puts an in-flight `id` back among its recipient's refused; its recipient.
    fn requeue(&mut self, id: MsgId) -> Option<Recipient> {
        let (recipient, position) = self.in_flight.remove(&id)?;
        self.queue_of(recipient).refused.insert(position, id);
        Some(recipient)
    }

    fn queue_of(&mut self, recipient: Recipient) -> &mut Queue {
        if !self.queues.contains_key(&recipient) {
            self.turns.push_back(recipient);
        }
        self.queues.entry(recipient).or_default()
    }
}

fn later(current: Option<Instant>, until: Instant) -> Instant {
    current.map_or(until, |c| c.max(until))
}

#[cfg(test)]
mod tests;
