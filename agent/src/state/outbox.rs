//! The outbox: sent messages the relay has not acknowledged, kept in memory and as
//! `outbox` rows. An entry is written in the same transaction as the advanced sending
//! chain ([`AgentState::encrypt`]) and removed when the relay acknowledges it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::payload::{ContentType, Payload, MESSAGE_ID_LEN};
use serde::{Deserialize, Serialize};

use super::error::StateError;
use super::values::identity_key;
use super::AgentState;
use crate::hex_serde;
use crate::store::outbox::OutboxRow;
use crate::store::Rows;

/// A sent message the relay has not acknowledged yet.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxEntry {
    /// The relay message id (the payload's message id).
    #[serde(with = "hex_serde::msg_id")]
    pub msg_id: [u8; MESSAGE_ID_LEN],
    /// The recipient's identity.
    #[serde(with = "hex_serde::identity")]
    pub recipient: IdentityKey,
    /// The exact encrypted bytes to send (and to resend after a restart).
    #[serde(with = "hex_serde::bytes")]
    pub wire: Vec<u8>,
    /// When the message was written (the payload timestamp), ms since the Unix epoch.
    pub created_ms: u64,
    /// True for a text message (reported as `sent` once acknowledged), false for a
    /// receipt or control message. Older files lack it: taken as text.
    #[serde(default = "default_text")]
    pub text: bool,
}

fn default_text() -> bool {
    true
}

impl std::fmt::Debug for OutboxEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxEntry")
            .field("msg_id", &hex::encode(self.msg_id))
            .field("recipient", &self.recipient)
            .field("wire_len", &self.wire.len())
            .field("created_ms", &self.created_ms)
            .field("text", &self.text)
            .finish()
    }
}

impl OutboxEntry {
    /// The entry for `payload` encrypted to `recipient` as `wire`.
    pub(super) fn new(payload: &Payload, recipient: IdentityKey, wire: Vec<u8>) -> Self {
        Self {
            msg_id: payload.message_id,
            recipient,
            wire,
            created_ms: payload.timestamp_ms,
            text: payload.content_type == ContentType::Text,
        }
    }

    /// The entry as a row.
    pub(super) fn row(&self) -> OutboxRow {
        OutboxRow {
            msg_id: self.msg_id,
            recipient: *self.recipient.as_bytes(),
            wire: self.wire.clone(),
            is_text: self.text,
            created_ms: self.created_ms,
        }
    }

    fn from_row(row: OutboxRow, path: &Path) -> Result<Self, StateError> {
        Ok(Self {
            msg_id: row.msg_id,
            recipient: identity_key(&row.recipient, "outbox.recipient", path)?,
            wire: row.wire,
            created_ms: row.created_ms,
            text: row.is_text,
        })
    }
}

/// The outbox in memory: entries in the order they were written (the order of their
/// chain positions), found by message id in O(log n), so that a long outbox (a peer
/// offline for days, a flood of `/msg` lines) costs no scan per message.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    by_seq: BTreeMap<u64, OutboxEntry>,
    seq_of: HashMap<[u8; MESSAGE_ID_LEN], u64>,
    next_seq: u64,
}

impl Outbox {
    /// Adds `entry` after every other; false (nothing added) if its id is there.
    pub(super) fn push(&mut self, entry: OutboxEntry) -> bool {
        if self.seq_of.contains_key(&entry.msg_id) {
            return false;
        }
        self.seq_of.insert(entry.msg_id, self.next_seq);
        self.by_seq.insert(self.next_seq, entry);
        self.next_seq += 1;
        true
    }

    /// Removes the entry of `msg_id`; false if it was not there.
    pub(super) fn remove(&mut self, msg_id: &[u8; MESSAGE_ID_LEN]) -> bool {
        match self.seq_of.remove(msg_id) {
            Some(seq) => self.by_seq.remove(&seq).is_some(),
            None => false,
        }
    }

    pub(super) fn contains(&self, msg_id: &[u8; MESSAGE_ID_LEN]) -> bool {
        self.seq_of.contains_key(msg_id)
    }

    pub(super) fn get(&self, msg_id: &[u8; MESSAGE_ID_LEN]) -> Option<&OutboxEntry> {
        self.seq_of.get(msg_id).and_then(|seq| self.by_seq.get(seq))
    }

    /// The entries, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &OutboxEntry> {
        self.by_seq.values()
    }

    pub(super) fn len(&self) -> usize {
        self.by_seq.len()
    }
}

/// Reads the outbox, oldest first.
pub(super) fn load_outbox(rows: &Rows<'_>, path: &Path) -> Result<Outbox, StateError> {
    let mut outbox = Outbox::default();
    for row in rows.outbox()? {
        outbox.push(OutboxEntry::from_row(row, path)?);
    }
    Ok(outbox)
}

impl AgentState {
    /// The relay stored message `msg_id` (`SentAck`): removes it from the outbox.
    /// Returns false (and writes nothing) if it was not there.
    pub fn acked(&mut self, msg_id: &[u8; MESSAGE_ID_LEN]) -> Result<bool, StateError> {
        if !self.outbox.contains(msg_id) {
            return Ok(false);
        }
        // Not synced: losing it in a power loss only sends the message again, and the
        // relay drops a (sender, msg_id) it already stored.
        self.db.transaction_unsynced(|tx| tx.outbox_remove(msg_id))?;
        self.outbox.remove(msg_id);
        Ok(true)
    }

    /// The relay refused message `msg_id` for good (docs/PROTOCOL.md 1.11): removes it
    /// from the outbox, so it is not sent again. Returns false if it was not there.
    pub fn refused_for_good(&mut self, msg_id: &[u8; MESSAGE_ID_LEN]) -> Result<bool, StateError> {
        // The same write as an acknowledgement: both end the message's life in the outbox.
        self.acked(msg_id)
    }

    /// Messages not yet acknowledged by the relay, oldest first: send them again after
    /// a restart or reconnect (the relay deduplicates by message id).
    pub fn outbox(&self) -> Vec<OutboxEntry> {
        self.outbox.iter().cloned().collect()
    }

    /// True if the relay has stored everything sent.
    pub fn outbox_is_empty(&self) -> bool {
        self.outbox.len() == 0
    }

    /// True if message `msg_id` waits in the outbox.
    pub fn outbox_contains(&self, msg_id: &[u8; 16]) -> bool {
        self.outbox.contains(msg_id)
    }

    /// The outbox entry of message `msg_id`, if it waits there.
    pub fn outbox_entry(&self, msg_id: &[u8; 16]) -> Option<OutboxEntry> {
        self.outbox.get(msg_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    #[test]
    fn outbox_keeps_unacked_messages_in_order_across_restarts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let alice_dir = tmp.path().join("alice");
        let mut alice = open(&alice_dir, "alice");
        let bob = open(&tmp.path().join("bob"), "bob");
        let m1 = send(&mut alice, &bob, "1");
        let m2 = send(&mut alice, &bob, "2");
        let m3 = send(&mut alice, &bob, "3");
        assert_eq!(alice.outbox(), vec![m1.clone(), m2.clone(), m3.clone()]);
        assert_eq!(m2.recipient, ik(&bob));
        assert!(alice.acked(&m2.msg_id).expect("ack"));
        assert!(!alice.acked(&m2.msg_id).expect("ack again"));
        drop(alice);
        let mut alice = open(&alice_dir, "alice");
        assert_eq!(alice.outbox(), vec![m1.clone(), m3.clone()]);
        // A message id may not be reused while it waits in the outbox.
        let dup = Payload::text(m1.msg_id, 0, "again");
        assert!(matches!(
            alice.encrypt(&ik(&bob), &dup),
            Err(StateError::DuplicateMsgId(_))
        ));
        assert!(matches!(
            alice.encrypt(&ik(&open(&tmp.path().join("carol"), "carol")), &text("x")),
            Err(StateError::NoSession(_))
        ));
    }

    #[test]
    fn outbox_remembers_which_entries_are_text_across_restarts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let alice_dir = tmp.path().join("alice");
        let mut alice = open(&alice_dir, "alice");
        let bob = open(&tmp.path().join("bob"), "bob");
        let message = send(&mut alice, &bob, "hi");
        let receipt = alice
            .encrypt(&ik(&bob), &Payload::receipt(new_id(), 0, message.msg_id))
            .expect("encrypt");
        assert!(message.text);
        assert!(!receipt.text, "a receipt is not reported as sent");
        drop(alice);
        let alice = open(&alice_dir, "alice");
        assert_eq!(alice.outbox(), vec![message, receipt]);
    }
}
