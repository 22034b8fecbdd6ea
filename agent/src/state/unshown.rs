//! Received texts committed but not shown yet: [`AgentState::decrypt`] records each text
//! in the message's own transaction; the agent calls [`AgentState::shown`] just before
//! it prints the text's event (nothing observable happens between the two), and at
//! start shows what [`AgentState::unshown`] returns (left by a crash between the commit
//! and the event).
//!
//! The delete is an unsynced commit (`StateDb::transaction_unsynced`): it survives a
//! crash of the process; a power loss right after it can show a text twice. A delete
//! that fails (disk full) is retried with the next one; until then a restart shows the
//! text again.

use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::payload::Payload;

use super::error::StateError;
use super::values::identity_key;
use super::AgentState;

/// A received text to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unshown {
    /// The sender.
    pub sender: IdentityKey,
    /// The payload (a text).
    pub payload: Payload,
    /// As [`crate::incoming::Incoming::newly_skipped`].
    pub newly_skipped: u32,
    /// As [`crate::incoming::Incoming::late`].
    pub late: bool,
}

/// Texts whose delete failed, kept for the next attempt at most.
const SHOWN_UNSAVED_LIMIT: usize = 4096;

impl AgentState {
    /// Every received text committed but not shown, in the order received. A row that
    /// does not decode is an error naming the table.
    pub fn unshown(&self) -> Result<Vec<Unshown>, StateError> {
        let path = self.db.path().to_path_buf();
        let mut out = Vec::new();
        for row in self.db.rows().unshown()? {
            let sender = identity_key(&row.peer, "unshown.peer", &path)?;
            let payload = Payload::decode(&row.payload).map_err(|e| StateError::Corrupt {
                path: path.clone(),
                detail: format!("unshown.payload: {e}"),
            })?;
            out.push(Unshown {
                sender,
                payload,
                newly_skipped: row.newly_skipped,
                late: row.late,
            });
        }
        Ok(out)
    }

    /// Records that the text `msg_id` from `sender` is shown (call it just before its
    /// event is printed). If that fails it is tried again with the next one.
    pub fn shown(&mut self, sender: &IdentityKey, msg_id: &[u8; 16]) -> Result<(), StateError> {
        let current = (*sender, *msg_id);
        let earlier = &self.shown_unsaved;
        let result = self.db.transaction_unsynced(|tx| -> Result<(), StateError> {
            for (peer, id) in earlier.iter().chain([&current]) {
                tx.remove_unshown(peer.as_bytes(), id)?;
            }
            Ok(())
        });
        match result {
            Ok(()) => self.shown_unsaved.clear(),
            Err(_) if self.shown_unsaved.len() < SHOWN_UNSAVED_LIMIT => self.shown_unsaved.push(current),
            Err(_) => {}
        }
        result
    }
}
