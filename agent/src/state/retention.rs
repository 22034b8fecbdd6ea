//! What the state keeps of past messages: the per-peer send log (recent sent payloads,
//! for re-sending them if a session must be established again) and the conversation
//! history shown on request. Both are sealed at rest and bounded per peer.

use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::payload::MESSAGE_ID_LEN;

use super::{AgentState, StateError};
use crate::store::history::Direction;

/// How much of the past the state keeps (docs/AGENT.md, settings `history.*` and
/// `send_log.*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Messages kept in the history per peer (sent and received texts); 0 keeps none.
    pub history_keep: usize,
    /// Sent payloads kept in the send log per peer; 0 keeps none.
    pub send_log_keep: usize,
    /// Send log entries older than this (ms, counted from the newest) are deleted.
    pub send_log_max_age_ms: u64,
}

impl Default for Retention {
    /// 1 000 history messages and 200 sent payloads per peer, for 7 days (the relay's
    /// default message lifetime).
    fn default() -> Self {
        Self {
            history_keep: 1000,
            send_log_keep: 200,
            send_log_max_age_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// One message of a conversation's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// True for a message we sent, false for one we received.
    pub sent: bool,
    /// The end-to-end message id.
    pub msg_id: [u8; MESSAGE_ID_LEN],
    /// The text.
    pub text: String,
    /// The sender's timestamp, ms since the Unix epoch.
    pub at_ms: u64,
}

/// One entry of the send log: an encoded payload sent to the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedSend {
    /// The end-to-end message id.
    pub msg_id: [u8; MESSAGE_ID_LEN],
    /// The encoded payload (docs/PROTOCOL.md 3), as it was encrypted.
    pub payload: Vec<u8>,
    /// When it was sent, ms since the Unix epoch.
    pub sent_ms: u64,
}

impl AgentState {
    /// Sets what the state keeps from now on (the defaults until called).
    pub fn set_retention(&mut self, retention: Retention) {
        self.retention = retention;
    }

    /// The last `limit` messages of the conversation with `peer`, oldest first.
    pub fn history(&self, peer: &IdentityKey, limit: usize) -> Result<Vec<HistoryEntry>, StateError> {
        let rows = self.db.rows().history(peer.as_bytes(), limit)?;
        Ok(rows
            .into_iter()
            .map(|row| HistoryEntry {
                sent: row.direction == Direction::Sent,
                msg_id: row.msg_id,
                text: String::from_utf8_lossy(&row.text).into_owned(),
                at_ms: row.at_ms,
            })
            .collect())
    }

    /// The payloads recently sent to `peer`, oldest first.
    pub fn send_log(&self, peer: &IdentityKey) -> Result<Vec<LoggedSend>, StateError> {
        let rows = self.db.rows().send_log(peer.as_bytes())?;
        Ok(rows
            .into_iter()
            .map(|row| LoggedSend {
                msg_id: row.msg_id,
                payload: row.plaintext.to_vec(),
                sent_ms: row.sent_ms,
            })
            .collect())
    }
}
