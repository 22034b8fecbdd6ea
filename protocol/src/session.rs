//! The Double Ratchet session (Signal's specification with the KDFs of
//! docs/PROTOCOL.md 2.4). Messages are sent in crypto v2 (a random salt per message);
//! v1 messages are still decrypted.
//!
//! Decryption computes every state change in locals and commits it only after the AEAD
//! opened, so a rejected message leaves the session exactly as it was. Encryption
//! advances the sending chain; the caller persists the session before the ciphertext
//! leaves the process.

use std::collections::VecDeque;

use rand_core::CryptoRngCore;
use serde::{Deserialize, Serialize};

use crate::consts::{KEY_LEN, MAX_SKIP, MAX_STORED_SKIPPED_KEYS, SALT_LEN};
use crate::error::CryptoError;
use crate::header::Header;
use crate::identity::{IdentityKey, IdentityKeyPair};
use crate::kdf::{ChainKey, MessageKey, RootKey};
use crate::keys::{KeyPair, PublicKey};
use crate::message::{Message, NormalMessage, PreKeyMessage};
use crate::prekey::{PreKeyBundle, PreKeyStore};
use crate::x3dh::{self, associated_data};

/// How many of the peer's past ratchet keys are remembered, so that a replayed message
/// of a closed chain is recognised as a replay rather than as tampering.
pub const RETIRED_RATCHET_KEYS: usize = 64;

/// How many ranges of discarded message keys are remembered, so that a message whose key
/// was discarded is reported as too old rather than as a duplicate.
pub const DISCARDED_RANGES: usize = 64;

/// How many of our own past ratchet public keys a session remembers, so that a reset
/// request naming a chain we sent on recently is recognised (docs/PROTOCOL.md 2.8).
pub const RETIRED_OWN_RATCHET_KEYS: usize = 16;

/// Message keys `from..until` of the chain of `ratchet` that the session gave up on:
/// evicted from the skipped-key store, or never derived because the gap was over
/// `MAX_SKIP`. Their messages can no longer be decrypted.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct Discarded {
    ratchet: PublicKey,
    from: u32,
    until: u32,
}

/// A message key kept for a message that has not arrived yet.
#[derive(Clone, Serialize, Deserialize)]
struct SkippedKey {
    ratchet: PublicKey,
    n: u32,
    key: MessageKey,
}

/// The X3DH fields of PreKey messages: the initiator repeats them in every message until
/// a reply decrypts; the responder remembers those that created its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct PreKeyFields {
    base_key: PublicKey,
    signed_prekey: PublicKey,
    one_time_prekey: Option<PublicKey>,
}

impl PreKeyFields {
    fn of(message: &PreKeyMessage) -> Self {
        Self {
            base_key: message.base_key,
            signed_prekey: message.signed_prekey,
            one_time_prekey: message.one_time_prekey,
        }
    }
}

/// The result of a successful decryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decrypted {
    /// The plaintext.
    pub plaintext: Vec<u8>,
    /// How many message keys this message made us skip (messages not yet seen, so a
    /// dropped message shows up here as a gap).
    pub newly_skipped: u32,
    /// True if the message was decrypted with a stored skipped key (it arrived late).
    pub late: bool,
    /// How many message keys this message made the session give up: keys of the chain it
    /// closed that were past `MAX_SKIP` (never derived), and stored skipped keys evicted
    /// past `MAX_STORED_SKIPPED_KEYS`. Their messages can never be decrypted: lost.
    pub given_up: u32,
}

/// One Double Ratchet session with one peer.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    local: IdentityKey,
    remote: IdentityKey,
    initiator: bool,
    root: RootKey,
    self_ratchet: KeyPair,
    remote_ratchet: Option<PublicKey>,
    sending: Option<ChainKey>,
    sent: u32,
    previous_sent: u32,
    receiving: Option<ChainKey>,
    received: u32,
    skipped: VecDeque<SkippedKey>,
    retired_remote: VecDeque<PublicKey>,
    #[serde(default)]
    discarded: VecDeque<Discarded>,
    #[serde(default)]
    retired_own: VecDeque<PublicKey>,
    /// Replaced by a new session at the peer's request (docs/PROTOCOL.md 2.8): its
    /// chains are never named in a granted request again.
    #[serde(default)]
    replaced_by_reset: bool,
    pending_prekey: Option<PreKeyFields>,
    accepted_from: Option<PreKeyFields>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("initiator", &self.initiator)
            .field("sent", &self.sent)
            .field("received", &self.received)
            .field("skipped", &self.skipped.len())
            .field("awaiting_reply", &self.pending_prekey.is_some())
            .finish_non_exhaustive()
    }
}

/// The outcome of [`receive`].
#[derive(Debug)]
pub struct Received {
    /// The decrypted message.
    pub decrypted: Decrypted,
    /// A new session that replaces the current one (a PreKey message started it).
    pub new_session: Option<Session>,
}

/// Derives the message keys `from..until` of a chain into `out`; returns the chain key
/// at position `until`.
fn skip_keys(
    chain: &ChainKey,
    from: u32,
    until: u32,
    ratchet: PublicKey,
    out: &mut Vec<SkippedKey>,
) -> ChainKey {
    let mut chain = chain.clone();
    for n in from..until {
        out.push(SkippedKey {
            ratchet,
            n,
            key: chain.message_key(),
        });
        chain = chain.next();
    }
    chain
}

impl Session {
    /// Starts a session as the initiator with a peer's bundle (X3DH, then the first
    /// sending chain). Draws EK_A, then the first ratchet key, from `rng`.
    pub fn initiate(
        identity: &IdentityKeyPair,
        bundle: &PreKeyBundle,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, CryptoError> {
        let ephemeral = KeyPair::generate(rng);
        let agreed = x3dh::initiate(identity, bundle, &ephemeral)?;
        let self_ratchet = KeyPair::generate(rng);
        let (root, sending) = agreed
            .shared_secret
            .ratchet(&self_ratchet.diffie_hellman(&bundle.signed_prekey)?);
        Ok(Self {
            local: *identity.public(),
            remote: bundle.identity,
            initiator: true,
            root,
            self_ratchet,
            remote_ratchet: Some(bundle.signed_prekey),
            sending: Some(sending),
            sent: 0,
            previous_sent: 0,
            receiving: None,
            received: 0,
            skipped: VecDeque::new(),
            retired_remote: VecDeque::new(),
            discarded: VecDeque::new(),
            retired_own: VecDeque::new(),
            replaced_by_reset: false,
            pending_prekey: Some(PreKeyFields {
                base_key: agreed.base_key,
                signed_prekey: bundle.signed_prekey,
                one_time_prekey: agreed.one_time_prekey,
            }),
            accepted_from: None,
        })
    }

    /// Starts a session as the responder from a PreKey message. The session exists only
    /// if the message decrypts; only then is the one-time prekey deleted from `prekeys`.
    pub fn accept(
        identity: &IdentityKeyPair,
        prekeys: &mut PreKeyStore,
        message: &PreKeyMessage,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(Self, Decrypted), CryptoError> {
        if prekeys.has_seen_base_key(&message.signed_prekey, &message.base_key) {
            return Err(CryptoError::DuplicateOrTooOld {
                n: message.inner.header.n,
            });
        }
        let signed = prekeys
            .signed_prekey(&message.signed_prekey)
            .ok_or(CryptoError::UnknownSignedPreKey)?
            .clone();
        let one_time = match &message.one_time_prekey {
            Some(public) => Some(
                prekeys
                    .one_time_prekey(public)
                    .ok_or(CryptoError::UnknownOneTimePreKey)?
                    .clone(),
            ),
            None => None,
        };
        let root = x3dh::respond(
            identity,
            &signed,
            one_time.as_ref(),
            &message.identity,
            &message.base_key,
        )?;
        let mut session = Self {
            local: *identity.public(),
            remote: message.identity,
            initiator: false,
            root,
            self_ratchet: signed,
            remote_ratchet: None,
            sending: None,
            sent: 0,
            previous_sent: 0,
            receiving: None,
            received: 0,
            skipped: VecDeque::new(),
            retired_remote: VecDeque::new(),
            discarded: VecDeque::new(),
            retired_own: VecDeque::new(),
            replaced_by_reset: false,
            pending_prekey: None,
            accepted_from: Some(PreKeyFields::of(message)),
        };
        let decrypted = session.decrypt(&message.inner, rng)?;
        if let Some(public) = &message.one_time_prekey {
            prekeys.remove_one_time(public);
        }
        prekeys.remember_base_key(message.signed_prekey, message.base_key);
        Ok((session, decrypted))
    }

    /// The peer's identity key.
    pub fn remote_identity(&self) -> &IdentityKey {
        &self.remote
    }

    /// Our identity key.
    pub fn local_identity(&self) -> &IdentityKey {
        &self.local
    }

    /// True if we started the session.
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// True while we still send PreKey messages (no reply decrypted yet).
    pub fn awaiting_reply(&self) -> bool {
        self.pending_prekey.is_some()
    }

    /// How many skipped message keys are stored.
    pub fn stored_skipped_keys(&self) -> usize {
        self.skipped.len()
    }

    /// Our current ratchet public key (changes at every DH ratchet step).
    pub fn ratchet_key(&self) -> &PublicKey {
        self.self_ratchet.public_key()
    }

    /// True if `key` is our current ratchet public key or one of the last
    /// [`RETIRED_OWN_RATCHET_KEYS`] we sent with in this session, and the session was
    /// not replaced at the peer's request: a chain of ours that a reset request may
    /// still name (docs/PROTOCOL.md 2.8).
    pub fn sent_with_ratchet_key(&self, key: &PublicKey) -> bool {
        !self.replaced_by_reset && (self.self_ratchet.public_key() == key || self.retired_own.contains(key))
    }

    /// Marks the session as replaced by a new one at the peer's request: a reset request
    /// naming one of its chains (a replay) is never granted again.
    pub fn mark_replaced_by_reset(&mut self) {
        self.replaced_by_reset = true;
    }

    /// `AD || header` (104 bytes in v1, 120 in v2).
    fn aad(&self, header: &Header) -> Vec<u8> {
        let ad = if self.initiator {
            associated_data(&self.local, &self.remote)
        } else {
            associated_data(&self.remote, &self.local)
        };
        let mut aad = Vec::with_capacity(2 * KEY_LEN + header.encoded_len());
        aad.extend_from_slice(&ad);
        aad.extend_from_slice(&header.encode());
        aad
    }

    /// Encrypts `plaintext` into crypto v2 wire bytes (a PreKey message until a reply
    /// has decrypted, a Normal message after), with a salt of 16 bytes drawn from
    /// `rng`. Advances the sending chain: persist the session before the bytes leave
    /// the process.
    pub fn encrypt(
        &mut self,
        plaintext: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>, CryptoError> {
        let mut salt = [0u8; SALT_LEN];
        rng.fill_bytes(&mut salt);
        self.encrypt_with_salt(plaintext, Some(salt))
    }

    /// [`Session::encrypt`] with a given salt: `Some` gives a crypto v2 message, `None` a
    /// crypto v1 one. For known-answer tests and peers that read v1 only: a v1 message's
    /// key and nonce depend on the chain position alone, so a sender whose state was
    /// restored from a copy encrypts under a key and nonce it used before.
    pub fn encrypt_with_salt(
        &mut self,
        plaintext: &[u8],
        salt: Option<[u8; SALT_LEN]>,
    ) -> Result<Vec<u8>, CryptoError> {
        let chain = self.sending.as_ref().ok_or(CryptoError::NoSession)?;
        let next_sent = self.sent.checked_add(1).ok_or(CryptoError::CounterOverflow)?;
        let header = Header {
            ratchet_key: *self.self_ratchet.public_key(),
            previous_chain_len: self.previous_sent,
            n: self.sent,
            salt,
        };
        let message_key = chain.message_key();
        let next_chain = chain.next();
        let ciphertext = message_key.seal(header.salt.as_ref(), &self.aad(&header), plaintext)?;
        self.sending = Some(next_chain);
        self.sent = next_sent;
        let inner = NormalMessage { header, ciphertext };
        let message = match self.pending_prekey {
            Some(pending) => Message::PreKey(Box::new(PreKeyMessage {
                identity: self.local,
                base_key: pending.base_key,
                signed_prekey: pending.signed_prekey,
                one_time_prekey: pending.one_time_prekey,
                inner,
            })),
            None => Message::Normal(inner),
        };
        Ok(message.encode())
    }

    /// Decrypts one message of this session. On any error the session is unchanged.
    pub fn decrypt(
        &mut self,
        message: &NormalMessage,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Decrypted, CryptoError> {
        let header = &message.header;
        let aad = self.aad(header);

        if let Some(index) = self
            .skipped
            .iter()
            .position(|k| k.ratchet == header.ratchet_key && k.n == header.n)
        {
            let plaintext = self.skipped[index]
                .key
                .open(header.salt.as_ref(), &aad, &message.ciphertext)?;
            self.skipped.remove(index);
            self.pending_prekey = None;
            return Ok(Decrypted {
                plaintext,
                newly_skipped: 0,
                late: true,
                given_up: 0,
            });
        }

        if self.remote_ratchet == Some(header.ratchet_key) {
            self.decrypt_in_current_chain(header, &aad, &message.ciphertext)
        } else {
            self.decrypt_with_dh_step(header, &aad, &message.ciphertext, rng)
        }
    }

    fn decrypt_in_current_chain(
        &mut self,
        header: &Header,
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Decrypted, CryptoError> {
        // Without a receiving chain no genuine message can name this ratchet key.
        let chain = self.receiving.as_ref().ok_or(CryptoError::Aead)?;
        if header.n < self.received {
            return Err(self.already_past(header));
        }
        let skip = header.n - self.received;
        if skip > MAX_SKIP {
            return Err(CryptoError::SkipLimit { skip: skip.into() });
        }
        let next_received = header.n.checked_add(1).ok_or(CryptoError::CounterOverflow)?;
        let mut staged = Vec::new();
        let chain = skip_keys(chain, self.received, header.n, header.ratchet_key, &mut staged);
        let plaintext = chain.message_key().open(header.salt.as_ref(), aad, ciphertext)?;

        self.receiving = Some(chain.next());
        self.received = next_received;
        let given_up = self.store_skipped(staged);
        self.pending_prekey = None;
        Ok(Decrypted {
            plaintext,
            newly_skipped: skip,
            late: false,
            given_up,
        })
    }

    fn decrypt_with_dh_step(
        &mut self,
        header: &Header,
        aad: &[u8],
        ciphertext: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Decrypted, CryptoError> {
        if self.retired_remote.contains(&header.ratchet_key) {
            return Err(self.already_past(header));
        }
        if header.n > MAX_SKIP {
            return Err(CryptoError::SkipLimit {
                skip: header.n.into(),
            });
        }
        let next_received = header.n.checked_add(1).ok_or(CryptoError::CounterOverflow)?;

        // Keys left in the chain being closed; a gap over MAX_SKIP is not derived, but
        // the step still happens (interoperability rule).
        let mut staged = Vec::new();
        let mut never_derived = None;
        if let (Some(chain), Some(old)) = (&self.receiving, self.remote_ratchet) {
            let gap = header.previous_chain_len.saturating_sub(self.received);
            if gap > 0 && gap <= MAX_SKIP {
                skip_keys(chain, self.received, header.previous_chain_len, old, &mut staged);
            } else if gap > MAX_SKIP {
                never_derived = Some(Discarded {
                    ratchet: old,
                    from: self.received,
                    until: header.previous_chain_len,
                });
            }
        }

        let (root, receiving) = self
            .root
            .ratchet(&self.self_ratchet.diffie_hellman(&header.ratchet_key)?);
        let self_ratchet = KeyPair::generate(rng);
        let (root, sending) = root.ratchet(&self_ratchet.diffie_hellman(&header.ratchet_key)?);
        let receiving = skip_keys(&receiving, 0, header.n, header.ratchet_key, &mut staged);
        let plaintext = receiving
            .message_key()
            .open(header.salt.as_ref(), aad, ciphertext)?;

        let newly_skipped = u32::try_from(staged.len()).unwrap_or(u32::MAX);
        if let Some(old) = self.remote_ratchet.replace(header.ratchet_key) {
            if self.retired_remote.len() >= RETIRED_RATCHET_KEYS {
                self.retired_remote.pop_front();
            }
            self.retired_remote.push_back(old);
        }
        self.root = root;
        // Only a key we sent with (a responder's first ratchet key is its signed prekey,
        // which never had a sending chain).
        if self.sending.is_some() {
            if self.retired_own.len() >= RETIRED_OWN_RATCHET_KEYS {
                self.retired_own.pop_front();
            }
            self.retired_own.push_back(*self.self_ratchet.public_key());
        }
        self.self_ratchet = self_ratchet;
        self.previous_sent = self.sent;
        self.sent = 0;
        self.sending = Some(sending);
        self.receiving = Some(receiving.next());
        self.received = next_received;
        let mut given_up = 0;
        if let Some(range) = never_derived {
            given_up = range.until - range.from;
            self.discard(range);
        }
        given_up = given_up.saturating_add(self.store_skipped(staged));
        self.pending_prekey = None;
        Ok(Decrypted {
            plaintext,
            newly_skipped,
            late: false,
            given_up,
        })
    }

    /// Appends skipped keys, evicting the oldest past the storage limit (and
    /// remembering which they were); returns how many were evicted.
    fn store_skipped(&mut self, keys: Vec<SkippedKey>) -> u32 {
        self.skipped.extend(keys);
        let excess = self.skipped.len().saturating_sub(MAX_STORED_SKIPPED_KEYS);
        let evicted: Vec<(PublicKey, u32)> = self.skipped.drain(..excess).map(|k| (k.ratchet, k.n)).collect();
        for (ratchet, n) in evicted {
            self.discard(Discarded {
                ratchet,
                from: n,
                until: n.saturating_add(1),
            });
        }
        u32::try_from(excess).unwrap_or(u32::MAX)
    }

    /// Remembers a range of discarded keys, joined to the last one when it continues it.
    fn discard(&mut self, range: Discarded) {
        if let Some(last) = self.discarded.back_mut() {
            if last.ratchet == range.ratchet && last.until == range.from {
                last.until = range.until;
                return;
            }
        }
        if self.discarded.len() >= DISCARDED_RANGES {
            self.discarded.pop_front();
        }
        self.discarded.push_back(range);
    }

    /// The error for a message at or behind its chain's position with no stored key:
    /// too old when its key was discarded, otherwise a duplicate (or a key discarded so
    /// long ago that the session no longer remembers it).
    fn already_past(&self, header: &Header) -> CryptoError {
        let discarded = self
            .discarded
            .iter()
            .any(|d| d.ratchet == header.ratchet_key && (d.from..d.until).contains(&header.n));
        if discarded {
            CryptoError::TooOld { n: header.n }
        } else {
            CryptoError::DuplicateOrTooOld { n: header.n }
        }
    }
}

/// Decrypts bytes that the transport attributes to `sender`, using our current session
/// with that sender if any. A PreKey message whose (IK_A, EK_A) matches the session is
/// a message of that session (its SPK and OPK fields must then also be the ones that
/// created the session, so no byte of the message goes unchecked); any other PreKey message runs X3DH and, if it decrypts,
/// yields a new session that the caller stores in place of the old one.
pub fn receive(
    session: Option<&mut Session>,
    identity: &IdentityKeyPair,
    prekeys: &mut PreKeyStore,
    sender: &IdentityKey,
    bytes: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<Received, CryptoError> {
    match Message::decode(bytes)? {
        Message::Normal(message) => {
            let session = session.ok_or(CryptoError::NoSession)?;
            if session.remote_identity() != sender {
                return Err(CryptoError::IdentityMismatch);
            }
            Ok(Received {
                decrypted: session.decrypt(&message, rng)?,
                new_session: None,
            })
        }
        Message::PreKey(message) => {
            if message.identity != *sender {
                return Err(CryptoError::IdentityMismatch);
            }
            if let Some(session) = session {
                let fields = PreKeyFields::of(&message);
                let same_base = session.accepted_from.map(|f| f.base_key) == Some(message.base_key);
                if same_base && session.accepted_from != Some(fields) {
                    // Same handshake, altered prekey fields: the message was tampered with.
                    return Err(CryptoError::Aead);
                }
                if same_base && session.remote == message.identity {
                    return Ok(Received {
                        decrypted: session.decrypt(&message.inner, rng)?,
                        new_session: None,
                    });
                }
            }
            let (session, decrypted) = Session::accept(identity, prekeys, &message, rng)?;
            Ok(Received {
                decrypted,
                new_session: Some(session),
            })
        }
    }
}

#[cfg(test)]
impl Session {
    pub(crate) fn root_key(&self) -> &RootKey {
        &self.root
    }
    pub(crate) fn sending_chain(&self) -> Option<&ChainKey> {
        self.sending.as_ref()
    }
}
