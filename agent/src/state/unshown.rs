//! Received texts committed but not shown yet: [`AgentState::decrypt`] records each text
//! in the message's own transaction; the agent calls [`AgentState::shown`] just before
//! it prints the text's event (one append to `state.shown`, `store::shown_log`: nothing
//! but the end of that write and the start of the print lie between the two), deletes
//! the rows of what was printed after the burst ([`AgentState::settle_shown`]), and at
//! start shows what [`AgentState::unshown`] returns (left by a crash between the commit
//! and the print).
//!
//! The record survives a crash of the process; a power loss can show a text again
//! (with its `msg_id`). A record that cannot be written (disk full) lets a restart show
//! the text again.

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

    /// Records that the text `msg_id` from `sender` is about to be printed (call it just
    /// before the print, with the line ready): one append to `state.shown`
    /// (`store::shown_log`). If that fails, a restart may show the text again.
    pub fn shown(&mut self, sender: &IdentityKey, msg_id: &[u8; 16]) -> Result<(), StateError> {
        Ok(self.shown_log.record(sender.as_bytes(), msg_id)?)
    }

    /// Deletes the `unshown` rows of the texts recorded as printed, in one transaction,
    /// then empties the record (after a burst, and at start).
    pub fn settle_shown(&mut self) -> Result<(), StateError> {
        if self.shown_log.is_empty()? {
            return Ok(());
        }
        let entries = self.shown_log.entries()?;
        self.db.transaction_unsynced(|tx| -> Result<(), StateError> {
            for (peer, id) in &entries {
                tx.remove_unshown(peer, id)?;
            }
            Ok(())
        })?;
        Ok(self.shown_log.clear()?)
    }
}
