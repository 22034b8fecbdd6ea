//! Sessions: one Double Ratchet per peer (with up to [`ARCHIVED_SESSIONS`] earlier
//! ones), starting them, encrypting and decrypting, and the rows they live in
//! (`sessions`, `archived_sessions`, `received_ids`).
//!
//! Sessions are kept in memory and written through: each operation computes the next
//! state in locals, writes every row it changes in **one transaction**, and changes
//! memory only after the commit, so a failed write (disk full) leaves memory and disk as
//! they were and the same operation can be retried.
//!
//! - [`AgentState::encrypt`]: the advanced session and the outbox entry.
//! - [`AgentState::decrypt`]: the advanced (or new, or promoted) session and archive
//!   changes, the relay and end-to-end message ids, a text to show (`unshown`, until
//!   [`AgentState::shown`]), and for a PreKey message that started a session the
//!   deletion of its one-time prekey and the record of its base key.
//!
//! Received ids are rows only (bounded per peer and kind by [`RECEIVED_IDS_KEPT`]):
//! recording one is one insert, whatever the history.

use std::collections::HashMap;
use std::path::Path;

use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::keys::PublicKey;
use e2ee_protocol::message::{is_prekey_message, Message};
use e2ee_protocol::payload::{ContentType, Payload, MESSAGE_ID_LEN};
use e2ee_protocol::prekey::PreKeyBundle;
use e2ee_protocol::session::{self, Received, Session};
use e2ee_protocol::CryptoError;
use rand_core::CryptoRngCore;

use super::error::{ReceiveError, StateError};
use super::outbox::OutboxEntry;
use super::values::{identity_key, session_bytes, session_from};
use super::AgentState;
use crate::failure::{DecryptFailure, FailureClass};
use crate::incoming::Incoming;
use crate::store::history::Direction;
use crate::store::send_log::SendLogBounds;
use crate::store::sessions::IdKind;
use crate::store::Rows;

/// A message encrypted on an advanced copy of a session, not committed yet.
struct Sealed {
    /// The encoded payload.
    plaintext: Vec<u8>,
    /// The session after the message key was used.
    session: Session,
    /// The encrypted message.
    wire: Vec<u8>,
    /// `session` as its row bytes (secret: zeroized on drop).
    bytes: zeroize::Zeroizing<Vec<u8>>,
}

/// How many received message ids are remembered per peer (of each kind) to recognise
/// redeliveries.
pub const RECEIVED_IDS_KEPT: usize = 4096;
const _: () = assert!(crate::settings::MAX_SEND_LOG_KEEP as usize * 2 <= RECEIVED_IDS_KEPT);
/// How many earlier sessions per peer are kept to decrypt with when the current one
/// fails (when both sides start a session at the same time, each side's messages
/// arrive for the other's handshake; the session that decrypts becomes current).
pub const ARCHIVED_SESSIONS: usize = 3;

/// One peer's ratchet in memory.
#[derive(Clone)]
pub(super) struct PeerState {
    /// The session messages are sent with and tried first.
    pub(super) session: Session,
    /// Earlier sessions, newest first, each with its `archived_sessions` row number.
    pub(super) archived: Vec<(u64, Session)>,
}

/// Reads every session and its archived ones.
pub(super) fn load_peers(
    rows: &Rows<'_>,
    local: &IdentityKey,
    path: &Path,
) -> Result<HashMap<IdentityKey, PeerState>, StateError> {
    let mut peers = HashMap::new();
    for (peer_bytes, state) in rows.sessions()? {
        let peer = identity_key(&peer_bytes, "sessions.peer", path)?;
        let session = session_from(&state, local, &peer, path)?;
        let mut archived = Vec::new();
        for row in rows.archived_sessions(&peer_bytes)? {
            archived.push((row.seq, session_from(&row.state, local, &peer, path)?));
        }
        archived.truncate(ARCHIVED_SESSIONS);
        peers.insert(peer, PeerState { session, archived });
    }
    Ok(peers)
}

/// Puts `(seq, old)` in front of the archived sessions, dropping the oldest past the
/// limit (as `Tx::archive_session` does with the rows).
fn archive(mut archived: Vec<(u64, Session)>, seq: Option<u64>, old: Session) -> Vec<(u64, Session)> {
    if let Some(seq) = seq {
        archived.insert(0, (seq, old));
        archived.truncate(ARCHIVED_SESSIONS);
    }
    archived
}

/// The signed prekey, base key and one-time prekey named by a PreKey message.
fn handshake_of(wire: &[u8]) -> Option<(PublicKey, PublicKey, Option<PublicKey>)> {
    match Message::decode(wire) {
        Ok(Message::PreKey(m)) => Some((m.signed_prekey, m.base_key, m.one_time_prekey)),
        _ => None,
    }
}

impl AgentState {
    /// True if a session with this identity exists.
    pub fn has_session(&self, peer: &IdentityKey) -> bool {
        self.peers.contains_key(peer)
    }

    /// True if `key` is a ratchet key we sent with recently in the current session with
    /// `peer` or in one of the earlier sessions kept for it (a reset request naming it
    /// names a chain of ours, docs/PROTOCOL.md 2.8).
    pub fn sent_with_ratchet_key(&self, peer: &IdentityKey, key: &PublicKey) -> bool {
        self.peers.get(peer).is_some_and(|p| {
            p.session.sent_with_ratchet_key(key)
                || p.archived.iter().any(|(_, s)| s.sent_with_ratchet_key(key))
        })
    }

    /// True if we started the session with this peer and no reply has decrypted yet
    /// (our messages still carry the X3DH fields); `None` without a session.
    pub fn awaiting_reply(&self, peer: &IdentityKey) -> Option<bool> {
        self.peers.get(peer).map(|p| p.session.awaiting_reply())
    }

    /// Starts (or restarts) a session with the owner of `bundle` (X3DH as initiator;
    /// the bundle's signature is checked) and saves it. A previous session with that
    /// peer is archived (still tried for decryption); received message ids are kept.
    pub fn start_session(
        &mut self,
        bundle: &PreKeyBundle,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), StateError> {
        self.replace_session(bundle, rng, &[], false).map(|_| ())
    }

    /// Starts a new session with the owner of `bundle` at its request (a granted reset
    /// request, docs/PROTOCOL.md 2.8) and encrypts `resend` on it, oldest first, each
    /// under a new random relay id (not texts for `sent` events: those were reported
    /// the first time). The session, its outbox entries and the replaced session
    /// (archived, marked so that no request naming its chains is granted again) commit
    /// in one transaction: a crash leaves either the old session alone or the new one
    /// with everything it owes the peer.
    pub fn restart_session(
        &mut self,
        bundle: &PreKeyBundle,
        rng: &mut impl CryptoRngCore,
        resend: &[Payload],
    ) -> Result<Vec<OutboxEntry>, StateError> {
        self.replace_session(bundle, rng, resend, true)
    }

    fn replace_session(
        &mut self,
        bundle: &PreKeyBundle,
        rng: &mut impl CryptoRngCore,
        resend: &[Payload],
        by_reset: bool,
    ) -> Result<Vec<OutboxEntry>, StateError> {
        let mut session = Session::initiate(&self.identity, bundle, rng)?;
        let peer = bundle.identity;
        let mut entries = Vec::with_capacity(resend.len());
        for payload in resend {
            let wire = session.encrypt(&payload.encode()?, rng)?;
            let mut entry = OutboxEntry::new(payload, peer, wire);
            rng.fill_bytes(&mut entry.msg_id);
            entry.text = false;
            entries.push(entry);
        }
        let rows: Vec<_> = entries.iter().map(OutboxEntry::row).collect();
        let path = self.db.path().to_path_buf();
        let bytes = session_bytes(&session, &path)?;
        let old = self.peers.get(&peer).map(|p| {
            let mut old = p.session.clone();
            if by_reset {
                old.mark_replaced_by_reset();
            }
            old
        });
        let old_bytes = old.as_ref().map(|s| session_bytes(s, &path)).transpose()?;
        // At the peer's request, every session kept for it is marked: a request naming
        // any of their chains is a replay from now on.
        let mut archived_marked = Vec::new();
        if by_reset {
            for (seq, session) in self
                .peers
                .get(&peer)
                .map(|p| p.archived.as_slice())
                .unwrap_or_default()
            {
                let mut session = session.clone();
                session.mark_replaced_by_reset();
                let bytes = session_bytes(&session, &path)?;
                archived_marked.push((*seq, session, bytes));
            }
        }
        let seq = self.db.transaction_with(|tx| {
            tx.put_session(peer.as_bytes(), &bytes)?;
            for row in &rows {
                if !tx.outbox_put(row)? {
                    return Err(StateError::DuplicateMsgId(hex::encode(row.msg_id)));
                }
            }
            for (seq, _, bytes) in &archived_marked {
                tx.rewrite_archived_session(peer.as_bytes(), *seq, bytes)?;
            }
            match &old_bytes {
                Some(old) => Ok(tx.archive_session(peer.as_bytes(), old, ARCHIVED_SESSIONS)?),
                None => Ok(None),
            }
        })?;
        let archived = match (self.peers.remove(&peer), old) {
            (Some(mut p), Some(old)) => {
                for (seq, session, _) in archived_marked {
                    if let Some(entry) = p.archived.iter_mut().find(|(s, _)| *s == seq) {
                        entry.1 = session;
                    }
                }
                archive(p.archived, seq, old)
            }
            _ => Vec::new(),
        };
        self.peers.insert(peer, PeerState { session, archived });
        for entry in &entries {
            self.outbox.push(entry.clone());
        }
        Ok(entries)
    }

    /// Encrypts `payload` for `peer` and returns the outbox entry to send.
    ///
    /// Persist before send: the advanced session and the outbox entry commit in one
    /// transaction before this returns, so a message key is never used for two
    /// different plaintexts, even across a crash. The relay message id is the
    /// payload's message id; it must not already be in the outbox.
    pub fn encrypt(&mut self, peer: &IdentityKey, payload: &Payload) -> Result<OutboxEntry, StateError> {
        if self.outbox.contains(&payload.message_id) {
            return Err(StateError::DuplicateMsgId(hex::encode(payload.message_id)));
        }
        let Sealed {
            plaintext,
            session,
            wire,
            bytes,
        } = self.seal_for(peer, payload)?;
        let entry = OutboxEntry::new(payload, *peer, wire);
        let row = entry.row();
        let retention = self.retention;
        let text = payload.as_text();
        crate::crash_point::reached("send.before_commit");
        self.db.transaction_with(|tx| {
            tx.put_session(peer.as_bytes(), &bytes)?;
            if !tx.outbox_put(&row)? {
                return Err(StateError::DuplicateMsgId(hex::encode(row.msg_id)));
            }
            if let Some(text) = text {
                tx.add_correspondent(peer.as_bytes(), payload.timestamp_ms)?;
                let bounds = SendLogBounds {
                    keep: retention.send_log_keep,
                    max_age_ms: retention.send_log_max_age_ms,
                };
                let id = &payload.message_id;
                tx.send_log_push(peer.as_bytes(), id, &plaintext, payload.timestamp_ms, bounds)?;
                let at = payload.timestamp_ms;
                tx.history_push(
                    peer.as_bytes(),
                    Direction::Sent,
                    id,
                    text.as_bytes(),
                    at,
                    retention.history_keep,
                )?;
            }
            Ok(())
        })?;
        if let Some(p) = self.peers.get_mut(peer) {
            p.session = session;
        }
        if text.is_some() {
            self.correspondents.insert(*peer);
        }
        self.outbox.push(entry.clone());
        Ok(entry)
    }

    /// True if we have written a text to `peer` (then, and only then, its texts get
    /// end-to-end receipts).
    pub fn is_correspondent(&self, peer: &IdentityKey) -> bool {
        self.correspondents.contains(peer)
    }

    /// Encrypts a best-effort message (an end-to-end receipt) for `peer`: the advanced
    /// session is committed before this returns (a message key is never used twice),
    /// but nothing goes to the outbox, so a relay that refuses it, or a lost
    /// connection, drops it instead of keeping it for a resend.
    pub fn encrypt_best_effort(
        &mut self,
        peer: &IdentityKey,
        payload: &Payload,
    ) -> Result<Vec<u8>, StateError> {
        let Sealed {
            session, wire, bytes, ..
        } = self.seal_for(peer, payload)?;
        self.db.transaction_with(|tx| -> Result<(), StateError> {
            Ok(tx.put_session(peer.as_bytes(), &bytes)?)
        })?;
        if let Some(p) = self.peers.get_mut(peer) {
            p.session = session;
        }
        Ok(wire)
    }

    /// Encrypts `payload` with a copy of the session with `peer` advanced by one message
    /// key; the state is unchanged until the caller commits `bytes` and keeps `session`.
    fn seal_for(&self, peer: &IdentityKey, payload: &Payload) -> Result<Sealed, StateError> {
        let plaintext = payload.encode()?;
        let mut session = (self.peers.get(peer))
            .ok_or_else(|| StateError::NoSession(peer.short()))?
            .session
            .clone();
        let wire = session.encrypt(&plaintext, &mut rand_core::OsRng)?;
        let bytes = session_bytes(&session, self.db.path())?;
        Ok(Sealed {
            plaintext,
            session,
            wire,
            bytes,
        })
    }

    /// Decrypts a message the relay attributes to `sender`.
    ///
    /// Every message is decrypted, whatever its relay id. A message that fails as a
    /// duplicate under a relay id already received from `sender`, or that decrypts to an
    /// end-to-end `message_id` already received, is a redelivery
    /// ([`FailureClass::Duplicate`] with `redelivery` set; acknowledge it, show
    /// nothing). On success everything the message changes (see the module
    /// documentation) commits in one transaction before this returns; if that fails
    /// the error is [`ReceiveError::State`] and nothing changed (do not acknowledge
    /// the message). A message that decrypts but whose payload does not parse is a
    /// [`FailureClass::Malformed`] failure (its id is recorded all the same).
    ///
    /// This does not consult pins: the identity policy is applied by the caller.
    pub fn decrypt(
        &mut self,
        sender: &IdentityKey,
        msg_id: [u8; MESSAGE_ID_LEN],
        wire: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Incoming, ReceiveError> {
        let peer = *sender.as_bytes();
        // The relay id is not trusted to skip decryption (it is not authenticated): it
        // only tells a failed duplicate apart as a quiet redelivery, so it is looked up
        // only then, not for every message.
        let db = &self.db;
        let failed = |err: CryptoError| -> ReceiveError {
            let duplicate = matches!(
                err,
                CryptoError::DuplicateOrTooOld { .. } | CryptoError::TooOld { .. }
            );
            if !duplicate {
                return DecryptFailure::from(err).into();
            }
            match db.rows().has_received(&peer, IdKind::Relay, &msg_id) {
                Ok(true) => DecryptFailure::redelivery().into(),
                Ok(false) => DecryptFailure::from(err).into(),
                Err(store) => StateError::from(store).into(),
            }
        };
        // Only a PreKey message can change the prekeys: work on a copy then.
        let is_prekey = is_prekey_message(wire);
        let mut prekeys_copy = is_prekey.then(|| self.prekeys.store.clone());
        let prekeys = match prekeys_copy.as_mut() {
            Some(copy) => copy,
            None => &mut self.prekeys.store,
        };

        let current = self.peers.get(sender);
        let mut session = current.map(|p| p.session.clone());
        let outcome = session::receive(session.as_mut(), &self.identity, prekeys, sender, wire, rng);
        // (the next current session, the one it archives, an archived one it promotes)
        let (decrypted, next, to_archive, promoted, is_new_session) = match (outcome, session, current) {
            // A new handshake: its session becomes current, the old one is archived.
            (
                Ok(Received {
                    decrypted,
                    new_session: Some(new),
                }),
                _,
                previous,
            ) => (decrypted, new, previous.map(|p| p.session.clone()), None, true),
            (
                Ok(Received {
                    decrypted,
                    new_session: None,
                }),
                Some(session),
                Some(_),
            ) => (decrypted, session, None, None, false),
            (Ok(_), _, _) => {
                return Err(
                    DecryptFailure::new(FailureClass::UnknownSession, "no session after decryption").into(),
                )
            }
            (Err(err), _, None) => return Err(failed(err)),
            // The current session failed: an archived one may be the peer's (after both
            // sides started a session at once). The one that decrypts becomes current.
            (Err(err), _, Some(p)) => {
                let mut found = None;
                for (seq, archived) in &p.archived {
                    let mut candidate = archived.clone();
                    let outcome =
                        session::receive(Some(&mut candidate), &self.identity, prekeys, sender, wire, rng);
                    if let Ok(Received {
                        decrypted,
                        new_session: None,
                    }) = outcome
                    {
                        found = Some((*seq, candidate, decrypted));
                        break;
                    }
                }
                let Some((seq, promoted, decrypted)) = found else {
                    return Err(failed(err));
                };
                (decrypted, promoted, Some(p.session.clone()), Some(seq), false)
            }
        };

        let payload = Payload::decode(&decrypted.plaintext);
        let payload_id = payload.as_ref().ok().map(|p| p.message_id);
        let seen_payload = match payload_id {
            Some(id) => (self.db.rows())
                .has_received(&peer, IdKind::Payload, &id)
                .map_err(StateError::from)?,
            None => false,
        };
        // A text is recorded to show until its event is printed (`unshown`).
        let text_id = (payload.as_ref().ok())
            .filter(|p| p.content_type == ContentType::Text && !seen_payload)
            .map(|p| p.message_id);
        let handshake = if is_new_session && is_prekey {
            handshake_of(wire)
        } else {
            None
        };

        let history_keep = self.retention.history_keep;
        let history_text = (payload.as_ref().ok())
            .filter(|_| text_id.is_some())
            .and_then(|p| p.as_text().map(|t| (t.as_bytes().to_vec(), p.timestamp_ms)));
        let path = self.db.path().to_path_buf();
        let bytes = session_bytes(&next, &path)?;
        let archive_bytes = to_archive.as_ref().map(|s| session_bytes(s, &path)).transpose()?;
        crate::crash_point::reached("receive.before_commit");
        let seq = self
            .db
            .transaction_with(|tx| -> Result<Option<u64>, StateError> {
                tx.put_session(&peer, &bytes)?;
                if let Some(seq) = promoted {
                    tx.remove_archived_session(&peer, seq)?;
                }
                let seq = match &archive_bytes {
                    Some(old) => tx.archive_session(&peer, old, ARCHIVED_SESSIONS)?,
                    None => None,
                };
                if !seen_payload {
                    tx.record_received(&peer, IdKind::Relay, &msg_id, RECEIVED_IDS_KEPT)?;
                    if let Some(id) = payload_id {
                        tx.record_received(&peer, IdKind::Payload, &id, RECEIVED_IDS_KEPT)?;
                    }
                }
                if let Some(id) = text_id {
                    let (skipped, late) = (decrypted.newly_skipped, decrypted.late);
                    tx.put_unshown(&peer, &id, &decrypted.plaintext, skipped, late)?;
                    if let Some((text, at)) = &history_text {
                        tx.history_push(&peer, Direction::Received, &id, text, *at, history_keep)?;
                    }
                }
                if let Some((signed_prekey, base_key, one_time)) = handshake {
                    if let Some(opk) = one_time {
                        tx.delete_one_time_prekey(opk.as_bytes())?;
                    }
                    tx.record_base_key(signed_prekey.as_bytes(), base_key.as_bytes())?;
                }
                Ok(seq)
            })?;

        // Committed: now memory follows.
        let mut archived = self.peers.remove(sender).map(|p| p.archived).unwrap_or_default();
        if let Some(promoted) = promoted {
            archived.retain(|(s, _)| *s != promoted);
        }
        if let Some(old) = to_archive {
            archived = archive(archived, seq, old);
        }
        self.peers.insert(
            *sender,
            PeerState {
                session: next,
                archived,
            },
        );
        if is_new_session {
            if let Some(store) = prekeys_copy {
                self.prekeys
                    .unpublished
                    .retain(|opk| store.one_time_prekey(opk).is_some());
                self.prekeys.store = store;
            }
        }

        if seen_payload {
            // The same end-to-end message again under a new message key (a sender that
            // re-encrypted it): already shown.
            return Err(DecryptFailure::redelivery().into());
        }
        let payload =
            payload.map_err(|e| DecryptFailure::new(FailureClass::Malformed, format!("payload: {e}")))?;
        Ok(Incoming {
            payload,
            newly_skipped: decrypted.newly_skipped,
            late: decrypted.late,
            new_session: is_new_session,
            given_up: decrypted.given_up,
        })
    }

    /// True if `msg_id` is among the relay ids recently received from `peer` (false
    /// also if the state database cannot be read).
    pub fn has_received(&self, peer: &IdentityKey, msg_id: &[u8; MESSAGE_ID_LEN]) -> bool {
        (self.db.rows())
            .has_received(peer.as_bytes(), IdKind::Relay, msg_id)
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests;
