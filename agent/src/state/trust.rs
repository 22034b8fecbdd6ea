//! Trust: the pins (name → identity), the pending identity changes and rejected
//! identities per name ([`PinBook`], kept in memory), the messages held for pending
//! changes, and their rows (`pins`, `pending_pins`, `rejected_pins`, `held`).
//!
//! Each operation changes a copy of the book, writes the names whose entries changed
//! (and the held messages and sessions it drops) in one transaction, and replaces the
//! memory copy after the commit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::name_claim::validate_name;
use e2ee_protocol::payload::MESSAGE_ID_LEN;
use e2ee_protocol::safety_number::SafetyNumber;

use super::error::StateError;
use super::values::identity_key;
use super::AgentState;
use crate::event::{identity_hex, PeerInfo};
use crate::held::{HeldMessage, HELD_PER_NAME};
use crate::pins::{Candidate, KeyRole, ListedIdentity, Pin, PinBook, PinOutcome};
use crate::store::held::{HeldOutcome, NewHeld};
use crate::store::pins::{PinList, PinRow};
use crate::store::{Rows, Tx};

/// Reads the pin book; every name must be valid.
pub(super) fn load_book(rows: &Rows<'_>, path: &Path) -> Result<PinBook, StateError> {
    let corrupt = |detail: String| StateError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let mut book = PinBook::default();
    for (name, row) in rows.pins()? {
        let pin = Pin {
            identity: identity_key(&row.identity, "pins.identity", path)?,
            verified: row.verified,
            first_seen_ms: row.first_seen_ms,
        };
        book.pins.insert(name, pin);
    }
    for (list, map) in [
        (PinList::Pending, &mut book.pending),
        (PinList::Rejected, &mut book.rejected),
    ] {
        for (name, identity) in rows.pin_list(list)? {
            let identity = identity_key(&identity, "pin list identity", path)?;
            map.entry(name).or_default().push(ListedIdentity(identity));
        }
    }
    let names = (book.pins.keys())
        .chain(book.pending.keys())
        .chain(book.rejected.keys());
    for name in names {
        validate_name(name).map_err(|e| corrupt(format!("pinned name {name:?}: {e}")))?;
    }
    Ok(book)
}

/// Reads the held messages in arrival order.
pub(super) fn load_held(rows: &Rows<'_>, path: &Path) -> Result<Vec<HeldMessage>, StateError> {
    let mut held = Vec::new();
    for row in rows.held(None)? {
        held.push(HeldMessage {
            name: row.name,
            sender: identity_key(&row.sender, "held.sender", path)?,
            msg_id: row.msg_id,
            wire: row.wire.to_vec(),
            held_ms: row.held_ms,
        });
    }
    Ok(held)
}

fn pin_row(pin: &Pin) -> PinRow {
    PinRow {
        identity: *pin.identity.as_bytes(),
        verified: pin.verified,
        first_seen_ms: pin.first_seen_ms,
    }
}

/// Writes the entries of the names that differ between `old` and `new` (every name
/// when `old` is `None`).
pub(super) fn sync_book(tx: &Tx<'_>, old: Option<&PinBook>, new: &PinBook) -> Result<(), StateError> {
    let empty = PinBook::default();
    let none = Vec::new();
    let old = old.unwrap_or(&empty);
    let names: BTreeSet<&String> = (old.pins.keys().chain(new.pins.keys()))
        .chain(old.pending.keys().chain(new.pending.keys()))
        .chain(old.rejected.keys().chain(new.rejected.keys()))
        .collect();
    for name in names {
        match (old.pins.get(name), new.pins.get(name)) {
            (before, Some(pin)) if before != Some(pin) => tx.put_pin(name, &pin_row(pin))?,
            (Some(_), None) => {
                tx.remove_pin(name)?;
            }
            _ => {}
        }
        let lists = [
            (PinList::Pending, &old.pending, &new.pending),
            (PinList::Rejected, &old.rejected, &new.rejected),
        ];
        for (list, before, after) in lists {
            let (before, after) = (before.get(name), after.get(name));
            // An absent list and an empty one are the same rows.
            if before.unwrap_or(&none) == after.unwrap_or(&none) {
                continue;
            }
            tx.remove_from_pin_list(list, name, None)?;
            for identity in after.into_iter().flatten() {
                tx.add_to_pin_list(list, name, identity.0.as_bytes())?;
            }
        }
    }
    Ok(())
}

/// Writes a held message (a new or imported state); false if the name is full.
pub(super) fn insert_held(tx: &Tx<'_>, message: &HeldMessage) -> Result<bool, StateError> {
    let outcome = tx.push_held(
        NewHeld {
            name: &message.name,
            sender: message.sender.as_bytes(),
            msg_id: &message.msg_id,
            wire: &message.wire,
            held_ms: message.held_ms,
        },
        HELD_PER_NAME,
    )?;
    Ok(outcome != HeldOutcome::Full)
}

impl AgentState {
    /// Writes `book` (computed from the current one), deletes the held messages of
    /// `discard_from` and the sessions of `drop_sessions`, in one transaction; then
    /// applies it all in memory.
    fn commit_trust(
        &mut self,
        book: PinBook,
        discard_from: &[IdentityKey],
        drop_sessions: &[IdentityKey],
    ) -> Result<(), StateError> {
        let old = &self.book;
        self.db.transaction_with(|tx| -> Result<(), StateError> {
            sync_book(tx, Some(old), &book)?;
            for sender in discard_from {
                tx.remove_held_from(sender.as_bytes())?;
            }
            for peer in drop_sessions {
                tx.delete_peer_sessions(peer.as_bytes())?;
            }
            Ok(())
        })?;
        self.set_book(book);
        self.held.retain(|m| !discard_from.contains(&m.sender));
        for peer in drop_sessions {
            self.peers.remove(peer);
        }
        Ok(())
    }

    /// Compares an identity the relay's registry bound to `name` with the pins (see
    /// [`PinBook::observe`]); a new pin is saved.
    pub fn observe_identity(
        &mut self,
        name: &str,
        identity: &IdentityKey,
        now_ms: u64,
    ) -> Result<PinOutcome, StateError> {
        validate_name(name)?;
        let mut book = self.book.clone();
        let outcome = book.observe(name, identity, now_ms);
        if outcome == PinOutcome::New {
            self.commit_trust(book, &[], &[])?;
        }
        Ok(outcome)
    }

    /// Holds `identity` as a pending change of `name` until the user decides. Saved; it
    /// applies in memory even when saving fails (the error is returned): a full disk
    /// must not lift a hold.
    /// The pending list is bounded ([`crate::pins::MAX_PENDING_PER_NAME`]): an identity
    /// it forgets has its held messages deleted with it, in the same transaction.
    pub fn hold_change(&mut self, name: &str, identity: &IdentityKey) -> Result<(), StateError> {
        validate_name(name)?;
        let mut book = self.book.clone();
        book.hold(name, identity);
        let still = book.pending(name);
        let evicted: Vec<IdentityKey> = (self.book.pending(name).into_iter())
            .filter(|p| !still.contains(p))
            .collect();
        let old = &self.book;
        let saved = self.db.transaction_with(|tx| -> Result<(), StateError> {
            sync_book(tx, Some(old), &book)?;
            for sender in &evicted {
                tx.remove_held_from(sender.as_bytes())?;
            }
            Ok(())
        });
        self.set_book(book);
        if saved.is_ok() {
            self.held.retain(|m| !evicted.contains(&m.sender));
        }
        saved
    }

    /// Binds `name` to `identity` (verified if the user compared its safety number),
    /// clearing its pending changes. The session with the identity it replaces is
    /// dropped unless another name still pins it; held messages of the other pending
    /// identities are deleted. Held messages of `identity` stay for
    /// [`AgentState::held_from`] to release. One transaction.
    pub fn accept_identity(
        &mut self,
        name: &str,
        identity: &IdentityKey,
        verified: bool,
        now_ms: u64,
    ) -> Result<(), StateError> {
        validate_name(name)?;
        let others: Vec<IdentityKey> = (self.book.pending(name).into_iter())
            .filter(|p| p != identity)
            .collect();
        let mut book = self.book.clone();
        let previous = book.repin(name, identity, verified, now_ms);
        let dropped: Vec<IdentityKey> = (previous.into_iter().chain(others.iter().copied()))
            .filter(|old| !book.is_pinned(old))
            .collect();
        self.commit_trust(book, &others, &dropped)
    }

    /// Rejects the pending changes of `name` (kept as rejected) and deletes their held
    /// messages unread. Returns the rejected identities (empty if nothing was pending).
    pub fn reject_pending(&mut self, name: &str) -> Result<Vec<IdentityKey>, StateError> {
        let mut book = self.book.clone();
        let rejected = book.reject(name);
        // Every message held for the name goes, also one of an identity the bounded
        // pending list forgot earlier.
        let mut discard = rejected.clone();
        for m in &self.held {
            if m.name == name && !discard.contains(&m.sender) && !book.is_pinned(&m.sender) {
                discard.push(m.sender);
            }
        }
        if discard.is_empty() {
            return Ok(rejected);
        }
        let dropped: Vec<IdentityKey> = (rejected.iter().copied())
            .filter(|identity| !book.is_pinned(identity))
            .collect();
        self.commit_trust(book, &discard, &dropped)?;
        Ok(rejected)
    }

    /// The pending changes of `name`, oldest first.
    pub fn pending_changes(&self, name: &str) -> Vec<IdentityKey> {
        self.book.pending(name)
    }

    /// The name whose pending change `identity` is.
    pub fn pending_name_of(&self, identity: &IdentityKey) -> Option<String> {
        self.book.pending_name_of(identity).map(str::to_owned)
    }

    /// The name for which the user rejected `identity`.
    pub fn rejected_name_of(&self, identity: &IdentityKey) -> Option<String> {
        self.book.rejected_name_of(identity).map(str::to_owned)
    }

    /// Keeps a delivered message of a pending identity undecrypted until the user
    /// decides (saved before this returns). False, with nothing saved, when the name
    /// already holds [`HELD_PER_NAME`] messages; true also when it is already held.
    pub fn hold_message(&mut self, message: HeldMessage) -> Result<bool, StateError> {
        if (self.held.iter()).any(|m| m.sender == message.sender && m.msg_id == message.msg_id) {
            return Ok(true);
        }
        if self.held_count(&message.name) >= HELD_PER_NAME {
            return Ok(false);
        }
        if !self.db.transaction_with(|tx| insert_held(tx, &message))? {
            return Ok(false);
        }
        self.held.push(message);
        Ok(true)
    }

    /// The messages held from `sender`, in the order they arrived.
    pub fn held_from(&self, sender: &IdentityKey) -> Vec<HeldMessage> {
        (self.held.iter())
            .filter(|m| &m.sender == sender)
            .cloned()
            .collect()
    }

    /// How many messages are held for `name`.
    pub fn held_count(&self, name: &str) -> usize {
        self.held.iter().filter(|m| m.name == name).count()
    }

    /// Deletes one held message (after it was processed).
    pub fn release_held(
        &mut self,
        sender: &IdentityKey,
        msg_id: &[u8; MESSAGE_ID_LEN],
    ) -> Result<(), StateError> {
        let held = |m: &HeldMessage| &m.sender == sender && &m.msg_id == msg_id;
        if !self.held.iter().any(held) {
            return Ok(());
        }
        self.db
            .transaction_with(|tx| tx.remove_held(sender.as_bytes(), msg_id))?;
        self.held.retain(|m| !held(m));
        Ok(())
    }

    /// Marks a pinned peer verified (or not).
    pub fn set_verified(&mut self, name: &str, verified: bool) -> Result<(), StateError> {
        match self.book.pins.get(name) {
            None => Err(StateError::UnknownPeer(name.to_owned())),
            Some(pin) if pin.verified == verified => Ok(()),
            Some(_) => {
                let mut book = self.book.clone();
                if let Some(pin) = book.pins.get_mut(name) {
                    pin.verified = verified;
                }
                self.commit_trust(book, &[], &[])
            }
        }
    }

    /// The pin of `name`.
    pub fn pin(&self, name: &str) -> Option<&Pin> {
        self.book.pins.get(name)
    }

    /// The (first, by name) pinned name of an identity.
    pub fn name_of(&self, identity: &IdentityKey) -> Option<String> {
        self.pinned_names.get(identity).cloned()
    }

    /// Replaces the book in memory (after its commit) and its inverse.
    fn set_book(&mut self, book: PinBook) {
        self.pinned_names = pinned_names(&book);
        self.book = book;
    }

    /// Every pin, by name.
    pub fn pins(&self) -> &BTreeMap<String, Pin> {
        &self.book.pins
    }

    /// Every pin as the `peers` event lists it.
    pub fn peer_list(&self) -> Vec<PeerInfo> {
        (self.book.pins.iter())
            .map(|(name, pin)| PeerInfo {
                name: name.clone(),
                identity: identity_hex(&pin.identity),
                verified: pin.verified,
                has_session: self.peers.contains_key(&pin.identity),
                first_seen_ms: pin.first_seen_ms,
                pending_change: !self.book.pending(name).is_empty(),
                held: self.held_count(name),
                unread: 0,
                last_activity_ms: None,
            })
            .collect()
    }

    /// The safety number with the identity pinned as `name`, with the names as stable ids.
    pub fn safety_number(&self, name: &str) -> Option<SafetyNumber> {
        (self.candidates(name).into_iter())
            .find(|c| c.role == KeyRole::Pinned)
            .map(|c| c.number)
    }

    /// The pinned identity of `name` and its pending changes, each with its safety number.
    pub fn candidates(&self, name: &str) -> Vec<Candidate> {
        self.book.candidates(self.identity.public(), &self.name, name)
    }
}

#[cfg(test)]
mod tests;

/// The first pinned name (by name) of each pinned identity, as [`PinBook::name_of`]
/// gives it.
pub(super) fn pinned_names(book: &PinBook) -> HashMap<IdentityKey, String> {
    let mut names = HashMap::with_capacity(book.pins.len());
    for (name, pin) in &book.pins {
        names.entry(pin.identity).or_insert_with(|| name.clone());
    }
    names
}
