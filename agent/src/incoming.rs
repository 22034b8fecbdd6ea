//! [`Incoming`]: a received message that decrypted, as the state returns it and the
//! events report it. Kept apart from `state` so that `event` (which reports it) and
//! `state` (which lists peers as events do) do not import each other.

use e2ee_protocol::payload::Payload;

/// A message that decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The decoded payload (text, receipt or control).
    pub payload: Payload,
    /// Earlier messages of this peer that have not arrived yet.
    pub newly_skipped: u32,
    /// True if it was decrypted with a stored skipped key (arrived late).
    pub late: bool,
    /// True if it started a new session (a PreKey message from a new handshake).
    pub new_session: bool,
    /// Messages of this peer that can never be decrypted any more, given up by this
    /// message (a closed chain's keys past the skip limit, evicted skipped keys).
    pub given_up: u32,
}
