//! The persistent state of one agent, in its state directory.
//!
//! ```text
//! <state_dir>/               0700
//!   lock                     0600  flock(2)-held while an AgentState is open
//!   identity.json            0600  name + identity key seed (written last at creation)
//!   prekeys.json             0600  signed and one-time prekeys, what the relay has yet to store
//!   pins.json                0600  name -> {identity, verified, first_seen_ms}, and per
//!                                  name the pending identity changes and rejected ones
//!   held.json                0600  undecrypted messages of pending identity changes
//!   outbox.json              0600  sent messages the relay has not acknowledged yet
//!   sessions/                0700
//!     <peer-identity-hex>.json 0600  one ratchet session + the peer's recent message ids
//! ```
//!
//! Guarantees:
//! - **Atomic writes**: every file is written to a temporary file in the same
//!   directory, fsynced, renamed over the old one, and the directory is fsynced. A crash
//!   leaves either the old or the new file, never a torn one.
//! - **Persist before send**: [`AgentState::encrypt`] saves the advanced session (then
//!   the outbox entry) before it returns the ciphertext, so a message key is never used
//!   for two different plaintexts, even across a crash.
//! - **Persist before show**: [`AgentState::decrypt`] saves the session and the message
//!   id before it returns the plaintext; a relay redelivery of that id is then reported
//!   as a [`FailureClass::Duplicate`] with `redelivery` set, so nothing is shown twice.
//! - **Commit on success**: every change is computed on copies and applied in memory
//!   only after it is on disk; a failed operation leaves the state as it was.
//! - **Owner only**: directories are 0700 and files 0600; an existing state whose
//!   directory or files are open to other users is refused, as ssh does for its keys.
//! - **One process**: the directory is locked (`flock`), so two agents never advance
//!   the same ratchet.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use e2ee_protocol::consts::MSG_TYPE_PREKEY;
use e2ee_protocol::identity::{IdentityKey, IdentityKeyPair};
use e2ee_protocol::keys::PublicKey;
use e2ee_protocol::name_claim::{validate_name, NameClaim, NameClaimError};
use e2ee_protocol::name_release::NameRelease;
use e2ee_protocol::payload::{ContentType, Payload, PayloadError, MESSAGE_ID_LEN};
use e2ee_protocol::prekey::{PreKeyBundle, PreKeyStore};
use e2ee_protocol::safety_number::SafetyNumber;
use e2ee_protocol::session::{self, Received, Session};
use e2ee_protocol::CryptoError;
use rand_core::CryptoRngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::event::{identity_hex, PeerInfo};
use crate::failure::{DecryptFailure, FailureClass};
use crate::held::{HeldMessage, HELD_PER_NAME};
use crate::hex_serde;
use crate::pins::{Candidate, KeyRole, ListedIdentity, PinBook};

/// How many received message ids are remembered per peer to recognise redeliveries.
pub const RECEIVED_IDS_KEPT: usize = 4096;
/// How many earlier sessions per peer are kept to decrypt with when the current one
/// fails (when both sides start a session at the same time, each side's messages
/// arrive for the other's handshake; the session that decrypts becomes current).
pub const ARCHIVED_SESSIONS: usize = 3;
/// The format version written in (and required of) every state file.
pub const STATE_VERSION: u32 = 1;

const IDENTITY_FILE: &str = "identity.json";
const PREKEYS_FILE: &str = "prekeys.json";
const PINS_FILE: &str = "pins.json";
const OUTBOX_FILE: &str = "outbox.json";
const HELD_FILE: &str = "held.json";
const SESSIONS_DIR: &str = "sessions";
const LOCK_FILE: &str = "lock";
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;
/// Permission bits that give group or others any access.
const OPEN_TO_OTHERS: u32 = 0o077;

/// Why the state could not be opened, read or written.
#[derive(Debug, Error)]
pub enum StateError {
    /// A file system operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `write`, `create`, `lock`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A state file does not parse or contradicts the rest of the state.
    #[error("corrupt state file {}: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong (never file contents).
        detail: String,
    },
    /// A state file or directory is accessible to other users.
    #[error(
        "{} is accessible by other users (mode {mode:04o}); restrict it with chmod {} {}",
        path.display(),
        if *is_dir { "700" } else { "600" },
        path.display()
    )]
    InsecurePermissions {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// True for a directory.
        is_dir: bool,
    },
    /// The state directory belongs to an agent of another name.
    #[error("state directory {} belongs to agent {stored:?}, not {requested:?}", dir.display())]
    NameMismatch {
        /// The state directory.
        dir: PathBuf,
        /// The name stored in `identity.json`.
        stored: String,
        /// The name this agent was started with.
        requested: String,
    },
    /// The agent name is not valid.
    #[error("invalid agent name: {0}")]
    InvalidName(#[from] NameClaimError),
    /// Another process has the state directory open.
    #[error("state directory {} is in use by another agent process", dir.display())]
    Locked {
        /// The state directory.
        dir: PathBuf,
    },
    /// The state directory holds sessions but no identity.
    #[error("state directory {} is incomplete: {detail}", dir.display())]
    Incomplete {
        /// The state directory.
        dir: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// There is no session with this peer (short identity).
    #[error("no session with peer {0}")]
    NoSession(String),
    /// The name is not pinned.
    #[error("peer {0:?} is not pinned")]
    UnknownPeer(String),
    /// A message with this id (hex) is already waiting in the outbox.
    #[error("message id {0} is already in the outbox")]
    DuplicateMsgId(String),
    /// A cryptographic operation failed (a bad bundle, a counter overflow).
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
    /// The payload cannot be encoded (too long, not UTF-8).
    #[error("cannot encode payload: {0}")]
    Payload(#[from] PayloadError),
}

/// Why [`AgentState::decrypt`] did not return a message.
#[derive(Debug, Error)]
pub enum ReceiveError {
    /// The message was not accepted: report it (unless it is a redelivery) and
    /// acknowledge it to the relay, since it will never decrypt.
    #[error("{0}")]
    Failed(#[from] DecryptFailure),
    /// The state could not be saved: do not acknowledge the message; the relay
    /// delivers it again later.
    #[error(transparent)]
    State(#[from] StateError),
}

pub use crate::pins::{Pin, PinOutcome};

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
}

/// One peer's ratchet and its recently received message ids, in memory.
#[derive(Clone)]
struct PeerState {
    /// The session messages are sent with and tried first.
    session: Session,
    /// Earlier sessions with the peer, newest first, at most [`ARCHIVED_SESSIONS`].
    archived: Vec<Session>,
    received: ReceivedIds,
}

/// The ids of the messages recently received from one peer, each list oldest first and
/// at most [`RECEIVED_IDS_KEPT`] long.
///
/// Duplicates are decided on the end-to-end `message_id` inside the decrypted payload
/// (authenticated by the sender). The relay's `msg_id` is not authenticated: a relay
/// could relabel a fresh message with a seen id, so it only tells a failed decryption
/// of a known id (the message key was used already) apart as a quiet redelivery.
#[derive(Clone, Default)]
struct ReceivedIds {
    relay: VecDeque<[u8; MESSAGE_ID_LEN]>,
    payload: VecDeque<[u8; MESSAGE_ID_LEN]>,
}

impl ReceivedIds {
    fn record(&mut self, relay: [u8; MESSAGE_ID_LEN], payload: Option<[u8; MESSAGE_ID_LEN]>) {
        push_capped(&mut self.relay, relay);
        if let Some(id) = payload {
            push_capped(&mut self.payload, id);
        }
    }
}

fn push_capped(ids: &mut VecDeque<[u8; MESSAGE_ID_LEN]>, id: [u8; MESSAGE_ID_LEN]) {
    if ids.len() >= RECEIVED_IDS_KEPT {
        ids.pop_front();
    }
    ids.push_back(id);
}

/// Puts `old` in front of the archived sessions, dropping the oldest past the limit.
fn archive(old: Session, mut archived: Vec<Session>) -> Vec<Session> {
    archived.insert(0, old);
    archived.truncate(ARCHIVED_SESSIONS);
    archived
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentityFile {
    version: u32,
    name: String,
    identity: IdentityKeyPair,
    /// Set by `/release-name`: the agent no longer claims its name at the relay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name_release: Option<NameReleaseState>,
}

/// A release of our own name (`/release-name`, docs/PROTOCOL.md 5.6): while it is
/// set the agent does not publish its name claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameReleaseState {
    /// The `issued_ms` signed into the release (ms since the Unix epoch); the same
    /// release is sent again until the relay confirms it.
    pub issued_ms: u64,
    /// True once the relay answered that it binds no name to us.
    pub confirmed: bool,
}

/// The prekeys and their publication state (the contents of `prekeys.json`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrekeysFile {
    version: u32,
    /// False until the relay confirmed that it stores the current signed prekey.
    signed_published: bool,
    /// One-time prekeys the relay has not confirmed storing yet, oldest first.
    #[serde(with = "hex_serde::public_keys")]
    unpublished: Vec<PublicKey>,
    store: PreKeyStore,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionFile {
    version: u32,
    #[serde(with = "hex_serde::identity")]
    peer: IdentityKey,
    #[serde(with = "hex_serde::msg_ids")]
    received_ids: VecDeque<[u8; MESSAGE_ID_LEN]>,
    /// End-to-end message ids of the payloads received (absent in older files).
    #[serde(default, with = "hex_serde::msg_ids")]
    message_ids: VecDeque<[u8; MESSAGE_ID_LEN]>,
    session: Session,
    #[serde(default)]
    archived: Vec<Session>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinsFile {
    version: u32,
    pins: BTreeMap<String, Pin>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pending: BTreeMap<String, Vec<ListedIdentity>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    rejected: BTreeMap<String, Vec<ListedIdentity>>,
    /// Written by earlier releases: the identities the `block` policy held back, now
    /// read as pending changes.
    #[serde(default, skip_serializing)]
    blocked: BTreeMap<String, Vec<ListedIdentity>>,
}

impl PinsFile {
    fn into_book(self) -> PinBook {
        let mut book = PinBook {
            pins: self.pins,
            pending: self.pending,
            rejected: self.rejected,
        };
        for (name, ids) in self.blocked {
            for id in ids {
                book.hold(&name, &id.0);
            }
        }
        book
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeldFile {
    version: u32,
    messages: Vec<HeldMessage>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxFile {
    version: u32,
    entries: Vec<OutboxEntry>,
}

/// The persistent state of one agent: identity, prekeys, one session per peer, pins
/// and the outbox. See the module documentation for the layout and guarantees.
pub struct AgentState {
    dir: PathBuf,
    /// Holds the flock for as long as the state is open.
    _lock: File,
    name: String,
    identity: IdentityKeyPair,
    prekeys: PrekeysFile,
    peers: HashMap<IdentityKey, PeerState>,
    book: PinBook,
    held: Vec<HeldMessage>,
    outbox: Vec<OutboxEntry>,
    name_release: Option<NameReleaseState>,
    is_new: bool,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .field("identity", self.identity.public())
            .field("peers", &self.peers.len())
            .field("pins", &self.book.pins.len())
            .field("held", &self.held.len())
            .field("outbox", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

impl AgentState {
    /// Opens the state in `dir`, creating it (directory, identity, a signed prekey and
    /// `initial_opks` one-time prekeys) on first start. Fails if the stored name is not
    /// `name`, if a file is corrupt or open to other users, or if another process has
    /// the directory open.
    pub fn open(
        dir: &Path,
        name: &str,
        initial_opks: usize,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, StateError> {
        validate_name(name)?;
        create_private_dir(dir)?;
        let lock = lock_dir(dir)?;
        if exists(&dir.join(IDENTITY_FILE))? {
            Self::load(dir, name, lock)
        } else {
            Self::create(dir, name, initial_opks, rng, lock)
        }
    }

    fn create(
        dir: &Path,
        name: &str,
        initial_opks: usize,
        rng: &mut impl CryptoRngCore,
        lock: File,
    ) -> Result<Self, StateError> {
        set_mode(dir, DIR_MODE)?;
        let sessions = dir.join(SESSIONS_DIR);
        if exists(&sessions)? {
            if !session_files(&sessions)?.is_empty() {
                return Err(StateError::Incomplete {
                    dir: dir.to_path_buf(),
                    detail: format!(
                        "{SESSIONS_DIR}/ holds sessions but {IDENTITY_FILE} is missing; \
                         refusing to create a new identity over them"
                    ),
                });
            }
            set_mode(&sessions, DIR_MODE)?;
        } else {
            create_private_dir(&sessions)?;
        }
        remove_temp_files(dir)?;

        let identity = IdentityKeyPair::generate(rng);
        let store = PreKeyStore::generate(&identity, initial_opks, rng);
        let prekeys = PrekeysFile {
            version: STATE_VERSION,
            signed_published: false,
            unpublished: store.bundle(identity.public()).one_time_prekeys,
            store,
        };
        let state = Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            name: name.to_owned(),
            identity,
            prekeys,
            peers: HashMap::new(),
            book: PinBook::default(),
            held: Vec::new(),
            outbox: Vec::new(),
            name_release: None,
            is_new: true,
        };
        state.save_prekeys(&state.prekeys)?;
        state.save_pins(&state.book)?;
        state.save_held(&state.held)?;
        state.save_outbox(&state.outbox)?;
        // identity.json marks a complete state: an interrupted creation starts over.
        state.save_identity()?;
        Ok(state)
    }

    fn load(dir: &Path, name: &str, lock: File) -> Result<Self, StateError> {
        check_private(dir, true)?;
        remove_temp_files(dir)?;

        let identity_path = dir.join(IDENTITY_FILE);
        let stored: IdentityFile = read_json(&identity_path)?;
        check_version(&identity_path, stored.version)?;
        if stored.name != name {
            return Err(StateError::NameMismatch {
                dir: dir.to_path_buf(),
                stored: stored.name,
                requested: name.to_owned(),
            });
        }
        let identity = stored.identity;
        let name_release = stored.name_release;

        let prekeys_path = dir.join(PREKEYS_FILE);
        let prekeys: PrekeysFile = read_json(&prekeys_path)?;
        check_version(&prekeys_path, prekeys.version)?;

        let pins_path = dir.join(PINS_FILE);
        let pins: PinsFile = read_json(&pins_path)?;
        check_version(&pins_path, pins.version)?;
        let book = pins.into_book();
        for pin_name in book
            .pins
            .keys()
            .chain(book.pending.keys())
            .chain(book.rejected.keys())
        {
            validate_name(pin_name).map_err(|e| StateError::Corrupt {
                path: pins_path.clone(),
                detail: format!("pinned name {pin_name:?}: {e}"),
            })?;
        }

        // Written by this release on; absent in older state directories.
        let held_path = dir.join(HELD_FILE);
        let held = if exists(&held_path)? {
            let file: HeldFile = read_json(&held_path)?;
            check_version(&held_path, file.version)?;
            file.messages
        } else {
            Vec::new()
        };

        let outbox_path = dir.join(OUTBOX_FILE);
        let outbox: OutboxFile = read_json(&outbox_path)?;
        check_version(&outbox_path, outbox.version)?;

        let sessions_dir = dir.join(SESSIONS_DIR);
        check_private(&sessions_dir, true)?;
        remove_temp_files(&sessions_dir)?;
        let mut peers = HashMap::new();
        for path in session_files(&sessions_dir)? {
            let file: SessionFile = read_json(&path)?;
            check_version(&path, file.version)?;
            let corrupt = |detail: &str| StateError::Corrupt {
                path: path.clone(),
                detail: detail.to_owned(),
            };
            if path.file_stem().and_then(|s| s.to_str()) != Some(identity_hex(&file.peer).as_str()) {
                return Err(corrupt("file name does not match the peer identity inside"));
            }
            for session in std::iter::once(&file.session).chain(&file.archived) {
                if session.remote_identity() != &file.peer {
                    return Err(corrupt("session is with another peer than the file says"));
                }
                if session.local_identity() != identity.public() {
                    return Err(corrupt("session belongs to another local identity"));
                }
            }
            if file.archived.len() > ARCHIVED_SESSIONS {
                return Err(corrupt("too many archived sessions"));
            }
            if file.received_ids.len() > RECEIVED_IDS_KEPT || file.message_ids.len() > RECEIVED_IDS_KEPT {
                return Err(corrupt("too many received message ids"));
            }
            peers.insert(
                file.peer,
                PeerState {
                    session: file.session,
                    archived: file.archived,
                    received: ReceivedIds {
                        relay: file.received_ids,
                        payload: file.message_ids,
                    },
                },
            );
        }

        Ok(Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            name: name.to_owned(),
            identity,
            prekeys,
            peers,
            book,
            held,
            outbox: outbox.entries,
            name_release,
            is_new: false,
        })
    }

    /// True if this `open` created the state (a new identity).
    pub fn is_new(&self) -> bool {
        self.is_new
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Our identity key pair.
    pub fn identity(&self) -> &IdentityKeyPair {
        &self.identity
    }

    /// Our name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The release of our name, if `/release-name` was used (and not undone by
    /// `/claim-name`).
    pub fn name_release(&self) -> Option<NameReleaseState> {
        self.name_release
    }

    /// Records a release of our name issued at `issued_ms` (or, with `None`, that the
    /// name is claimed again) and saves it before anything is sent.
    pub fn set_name_release(&mut self, release: Option<NameReleaseState>) -> Result<(), StateError> {
        let before = std::mem::replace(&mut self.name_release, release);
        self.save_identity().inspect_err(|_| self.name_release = before)
    }

    /// Signs a release of our name issued at `issued_ms`.
    pub fn sign_name_release(&self, issued_ms: u64) -> Result<NameRelease, StateError> {
        Ok(NameRelease::sign(&self.identity, &self.name, issued_ms)?)
    }

    fn save_identity(&self) -> Result<(), StateError> {
        write_json(
            &self.dir,
            IDENTITY_FILE,
            &IdentityFile {
                version: STATE_VERSION,
                name: self.name.clone(),
                identity: self.identity.clone(),
                name_release: self.name_release,
            },
        )
    }

    // ---- prekeys ----------------------------------------------------------------

    /// The full bundle: the signed prekey and every unused one-time prekey held. To
    /// publish, use [`AgentState::bundle_to_publish`]: the relay adds one-time prekeys
    /// to those it holds, so one it already handed out must never be published again.
    pub fn bundle(&self) -> PreKeyBundle {
        self.prekeys.store.bundle(self.identity.public())
    }

    /// How many unused one-time prekeys are held (including those the relay has handed
    /// out to peers whose first message has not arrived yet).
    pub fn one_time_count(&self) -> usize {
        self.prekeys.store.one_time_count()
    }

    /// True while the relay has not confirmed storing the signed prekey or some
    /// one-time prekeys: after creation, [`AgentState::replenish`] or
    /// [`AgentState::rotate_signed_prekey`], and after a restart that happened before
    /// the confirmation (`PreKeysStored`).
    pub fn needs_publish(&self) -> bool {
        !self.prekeys.signed_published || !self.prekeys.unpublished.is_empty()
    }

    /// The bundle to send in `PublishPreKeys`: the signed prekey and only the one-time
    /// prekeys the relay has not confirmed storing yet.
    pub fn bundle_to_publish(&self) -> PreKeyBundle {
        let store = &self.prekeys.store;
        let mut bundle = store.bundle(self.identity.public());
        bundle.one_time_prekeys = (self.prekeys.unpublished.iter())
            .filter(|opk| store.one_time_prekey(opk).is_some())
            .copied()
            .collect();
        bundle
    }

    /// Records that the relay stored what [`AgentState::bundle_to_publish`] returned
    /// (`PreKeysStored`). With two publications in flight, the first confirmation
    /// covers both: a lost second one leaves some one-time prekeys unused, never reused.
    pub fn mark_published(&mut self) -> Result<(), StateError> {
        if self.needs_publish() {
            let mut prekeys = self.prekeys.clone();
            prekeys.signed_published = true;
            prekeys.unpublished.clear();
            self.save_prekeys(&prekeys)?;
            self.prekeys = prekeys;
        }
        Ok(())
    }

    /// Makes enough fresh one-time prekeys that the relay, which says it holds
    /// `relay_remaining` (`PreKeysLow.remaining` or `PreKeysStored.opks`), will hold
    /// `target`; saves them and returns [`AgentState::bundle_to_publish`].
    pub fn replenish(
        &mut self,
        relay_remaining: usize,
        target: usize,
        rng: &mut impl CryptoRngCore,
    ) -> Result<PreKeyBundle, StateError> {
        let missing = target.saturating_sub(relay_remaining);
        let mut prekeys = self.prekeys.clone();
        let fresh = prekeys.store.generate_one_time(missing, rng);
        prekeys.unpublished.extend(fresh);
        self.save_prekeys(&prekeys)?;
        self.prekeys = prekeys;
        Ok(self.bundle_to_publish())
    }

    /// Replaces the signed prekey at `now_ms` (the retired one still opens PreKey
    /// messages in flight), saves it and returns [`AgentState::bundle_to_publish`].
    pub fn rotate_signed_prekey(
        &mut self,
        rng: &mut impl CryptoRngCore,
        now_ms: u64,
    ) -> Result<PreKeyBundle, StateError> {
        let mut prekeys = self.prekeys.clone();
        prekeys.store.rotate_signed_at(&self.identity, rng, now_ms);
        prekeys.signed_published = false;
        self.save_prekeys(&prekeys)?;
        self.prekeys = prekeys;
        Ok(self.bundle_to_publish())
    }

    /// Prekey hygiene at `now_ms`: deletes retired signed prekeys after `grace_ms`
    /// (with the handshakes remembered under them) and rotates the signed prekey when it
    /// is `rotation_ms` old or has accepted too many handshakes. Saved. Returns the
    /// bundle to publish if the signed prekey changed.
    pub fn maintain_signed_prekey(
        &mut self,
        now_ms: u64,
        rotation_ms: u64,
        grace_ms: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Option<PreKeyBundle>, StateError> {
        let mut prekeys = self.prekeys.clone();
        let expired = prekeys.store.expire_retired(now_ms, grace_ms);
        let rotate = prekeys.store.rotation_due(now_ms, rotation_ms);
        if rotate {
            prekeys.store.rotate_signed_at(&self.identity, rng, now_ms);
            prekeys.signed_published = false;
        }
        if expired > 0 || rotate {
            self.save_prekeys(&prekeys)?;
            self.prekeys = prekeys;
        }
        Ok(rotate.then(|| self.bundle_to_publish()))
    }

    /// Ages out one-time prekeys the relay handed out that no peer used, knowing the
    /// relay holds `relay_holds` (see [`PreKeyStore::age_out_one_time`]). Saved.
    /// Returns how many were deleted.
    pub fn age_out_one_time(
        &mut self,
        relay_holds: usize,
        now_ms: u64,
        grace_ms: u64,
        max_held: usize,
    ) -> Result<usize, StateError> {
        let mut prekeys = self.prekeys.clone();
        let unconfirmed = prekeys.unpublished.len();
        let (marked, deleted) =
            prekeys
                .store
                .age_out_one_time(relay_holds, unconfirmed, now_ms, grace_ms, max_held);
        // Marks of newly found handed-out keys are saved too, so the grace counts from
        // when they were first found, across restarts.
        if marked > 0 || deleted > 0 {
            self.save_prekeys(&prekeys)?;
            self.prekeys = prekeys;
        }
        Ok(deleted)
    }

    /// How many retired signed prekeys and remembered handshake base keys are held.
    pub fn prekey_counts(&self) -> (usize, usize) {
        (
            self.prekeys.store.retired_signed_prekeys(),
            self.prekeys.store.remembered_base_keys(),
        )
    }

    /// Our signed name claim, to publish to the relay.
    pub fn name_claim(&self, now_ms: u64) -> Result<NameClaim, StateError> {
        Ok(NameClaim::sign(&self.identity, &self.name, now_ms)?)
    }

    // ---- sessions ---------------------------------------------------------------

    /// True if a session with this identity exists.
    pub fn has_session(&self, peer: &IdentityKey) -> bool {
        self.peers.contains_key(peer)
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
        let session = Session::initiate(&self.identity, bundle, rng)?;
        let peer = bundle.identity;
        let state = match self.peers.get(&peer) {
            Some(p) => PeerState {
                session,
                archived: archive(p.session.clone(), p.archived.clone()),
                received: p.received.clone(),
            },
            None => PeerState {
                session,
                archived: Vec::new(),
                received: ReceivedIds::default(),
            },
        };
        self.save_session(&peer, &state)?;
        self.peers.insert(peer, state);
        Ok(())
    }

    /// Encrypts `payload` for `peer` and returns the outbox entry to send.
    ///
    /// Persist before send: the advanced session is saved, then the outbox entry,
    /// before this returns. (In this order: a crash in between loses the unsent
    /// message but never lets a later message reuse its key.) The relay message id is
    /// the payload's message id; it must not already be in the outbox.
    pub fn encrypt(&mut self, peer: &IdentityKey, payload: &Payload) -> Result<OutboxEntry, StateError> {
        if self.outbox.iter().any(|e| e.msg_id == payload.message_id) {
            return Err(StateError::DuplicateMsgId(hex::encode(payload.message_id)));
        }
        let plaintext = payload.encode()?;
        let mut state = self
            .peers
            .get(peer)
            .ok_or_else(|| StateError::NoSession(peer.short()))?
            .clone();
        let wire = state.session.encrypt(&plaintext)?;
        self.save_session(peer, &state)?;
        self.peers.insert(*peer, state);

        let entry = OutboxEntry {
            msg_id: payload.message_id,
            recipient: *peer,
            wire,
            created_ms: payload.timestamp_ms,
            text: payload.content_type == ContentType::Text,
        };
        let mut outbox = self.outbox.clone();
        outbox.push(entry.clone());
        self.save_outbox(&outbox)?;
        self.outbox = outbox;
        Ok(entry)
    }

    /// The relay stored message `msg_id` (`SentAck`): removes it from the outbox.
    /// Returns false (and writes nothing) if it was not there.
    pub fn acked(&mut self, msg_id: &[u8; MESSAGE_ID_LEN]) -> Result<bool, StateError> {
        if !self.outbox.iter().any(|e| &e.msg_id == msg_id) {
            return Ok(false);
        }
        let outbox: Vec<OutboxEntry> = self
            .outbox
            .iter()
            .filter(|e| &e.msg_id != msg_id)
            .cloned()
            .collect();
        self.save_outbox(&outbox)?;
        self.outbox = outbox;
        Ok(true)
    }

    /// Messages not yet acknowledged by the relay, oldest first: send them again after
    /// a restart or reconnect (the relay deduplicates by message id).
    pub fn outbox(&self) -> Vec<OutboxEntry> {
        self.outbox.clone()
    }

    /// Decrypts a message the relay attributes to `sender`.
    ///
    /// Every message is decrypted, whatever its relay id. A message that fails as a
    /// duplicate under a relay id already received from `sender`, or that decrypts to an
    /// end-to-end `message_id` already received, is a redelivery
    /// ([`FailureClass::Duplicate`] with `redelivery` set; acknowledge it, show
    /// nothing). On success the session (and the prekeys, if a PreKey message consumed a
    /// one-time prekey) and both ids are saved before this returns. A message that decrypts but whose payload does not
    /// parse is a [`FailureClass::Malformed`] failure (its id is recorded all the same).
    ///
    /// This does not consult pins: the identity policy is applied by the caller.
    pub fn decrypt(
        &mut self,
        sender: &IdentityKey,
        msg_id: [u8; MESSAGE_ID_LEN],
        wire: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Incoming, ReceiveError> {
        let current = self.peers.get(sender).cloned();
        // Not trusted to skip decryption (see `ReceivedIds`): only to classify a failure.
        let known_relay_id = current
            .as_ref()
            .is_some_and(|p| p.received.relay.contains(&msg_id));
        let failed = |err: CryptoError| -> ReceiveError {
            let duplicate = matches!(
                err,
                CryptoError::DuplicateOrTooOld { .. } | CryptoError::TooOld { .. }
            );
            if known_relay_id && duplicate {
                DecryptFailure::redelivery().into()
            } else {
                DecryptFailure::from(err).into()
            }
        };
        // Only a PreKey message can change the prekeys: work on a copy then.
        let mut prekeys_copy = (wire.first() == Some(&MSG_TYPE_PREKEY)).then(|| self.prekeys.clone());
        let prekeys = match prekeys_copy.as_mut() {
            Some(copy) => &mut copy.store,
            None => &mut self.prekeys.store,
        };

        let mut session = current.as_ref().map(|p| p.session.clone());
        let outcome = session::receive(session.as_mut(), &self.identity, prekeys, sender, wire, rng);
        let (decrypted, next, is_new_session) = match (outcome, session, current) {
            // A new handshake: its session becomes current, the old one is archived.
            (
                Ok(Received {
                    decrypted,
                    new_session: Some(new),
                }),
                _,
                previous,
            ) => {
                let next = match previous {
                    Some(p) => PeerState {
                        session: new,
                        archived: archive(p.session, p.archived),
                        received: p.received,
                    },
                    None => PeerState {
                        session: new,
                        archived: Vec::new(),
                        received: ReceivedIds::default(),
                    },
                };
                (decrypted, next, true)
            }
            (
                Ok(Received {
                    decrypted,
                    new_session: None,
                }),
                Some(session),
                Some(p),
            ) => (
                decrypted,
                PeerState {
                    session,
                    archived: p.archived,
                    received: p.received,
                },
                false,
            ),
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
                for (index, archived) in p.archived.iter().enumerate() {
                    let mut candidate = archived.clone();
                    let outcome =
                        session::receive(Some(&mut candidate), &self.identity, prekeys, sender, wire, rng);
                    if let Ok(Received {
                        decrypted,
                        new_session: None,
                    }) = outcome
                    {
                        found = Some((index, candidate, decrypted));
                        break;
                    }
                }
                let Some((index, promoted, decrypted)) = found else {
                    return Err(failed(err));
                };
                let mut archived = p.archived;
                archived.remove(index);
                let next = PeerState {
                    session: promoted,
                    archived: archive(p.session, archived),
                    received: p.received,
                };
                (decrypted, next, false)
            }
        };

        let mut next = next;
        let payload = Payload::decode(&decrypted.plaintext);
        let payload_id = payload.as_ref().ok().map(|p| p.message_id);
        let seen_payload = payload_id.is_some_and(|id| next.received.payload.contains(&id));
        if !seen_payload {
            next.received.record(msg_id, payload_id);
        }
        // Session first: if the prekeys then fail to save, the one-time prekey is
        // still on disk, which is harmless (the session remembers its handshake).
        self.save_session(sender, &next)?;
        self.peers.insert(*sender, next);
        if is_new_session {
            if let Some(mut prekeys) = prekeys_copy {
                let store = &prekeys.store;
                prekeys
                    .unpublished
                    .retain(|opk| store.one_time_prekey(opk).is_some());
                self.save_prekeys(&prekeys)?;
                self.prekeys = prekeys;
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
        })
    }

    /// True if `msg_id` is among the ids recently received from `peer`.
    pub fn has_received(&self, peer: &IdentityKey, msg_id: &[u8; MESSAGE_ID_LEN]) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.received.relay.contains(msg_id))
    }

    // ---- pins and held messages -------------------------------------------------

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
            self.save_pins(&book)?;
            self.book = book;
        }
        Ok(outcome)
    }

    /// Holds `identity` as a pending change of `name` until the user decides. Saved; it
    /// applies in memory even when saving fails (the error is returned): a full disk
    /// must not lift a hold.
    pub fn hold_change(&mut self, name: &str, identity: &IdentityKey) -> Result<(), StateError> {
        validate_name(name)?;
        let mut book = self.book.clone();
        book.hold(name, identity);
        let saved = self.save_pins(&book);
        self.book = book;
        saved
    }

    /// Binds `name` to `identity` (verified if the user compared its safety number),
    /// clearing its pending changes. The session with the identity it replaces is
    /// dropped unless another name still pins it; held messages of the other pending
    /// identities are deleted. Held messages of `identity` stay for
    /// [`AgentState::held_from`] to release.
    pub fn accept_identity(
        &mut self,
        name: &str,
        identity: &IdentityKey,
        verified: bool,
        now_ms: u64,
    ) -> Result<(), StateError> {
        validate_name(name)?;
        let others: Vec<IdentityKey> = self
            .book
            .pending(name)
            .into_iter()
            .filter(|p| p != identity)
            .collect();
        let mut book = self.book.clone();
        let previous = book.repin(name, identity, verified, now_ms);
        self.save_pins(&book)?;
        self.book = book;
        self.discard_held(|m| others.contains(&m.sender))?;
        for old in previous.into_iter().chain(others) {
            if !self.book.is_pinned(&old) {
                self.drop_session(&old)?;
            }
        }
        Ok(())
    }

    /// Rejects the pending changes of `name` (kept as rejected) and deletes their held
    /// messages unread. Returns the rejected identities (empty if nothing was pending).
    pub fn reject_pending(&mut self, name: &str) -> Result<Vec<IdentityKey>, StateError> {
        let mut book = self.book.clone();
        let rejected = book.reject(name);
        if rejected.is_empty() {
            return Ok(rejected);
        }
        self.save_pins(&book)?;
        self.book = book;
        self.discard_held(|m| rejected.contains(&m.sender))?;
        for identity in &rejected {
            if !self.book.is_pinned(identity) {
                self.drop_session(identity)?;
            }
        }
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
        if self
            .held
            .iter()
            .any(|m| m.sender == message.sender && m.msg_id == message.msg_id)
        {
            return Ok(true);
        }
        if self.held.iter().filter(|m| m.name == message.name).count() >= HELD_PER_NAME {
            return Ok(false);
        }
        let mut held = self.held.clone();
        held.push(message);
        self.save_held(&held)?;
        self.held = held;
        Ok(true)
    }

    /// The messages held from `sender`, in the order they arrived.
    pub fn held_from(&self, sender: &IdentityKey) -> Vec<HeldMessage> {
        self.held
            .iter()
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
        self.discard_held(|m| &m.sender == sender && &m.msg_id == msg_id)
    }

    fn discard_held(&mut self, doomed: impl Fn(&HeldMessage) -> bool) -> Result<(), StateError> {
        if !self.held.iter().any(&doomed) {
            return Ok(());
        }
        let held: Vec<HeldMessage> = self.held.iter().filter(|m| !doomed(m)).cloned().collect();
        self.save_held(&held)?;
        self.held = held;
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
                self.save_pins(&book)?;
                self.book = book;
                Ok(())
            }
        }
    }

    /// The pin of `name`.
    pub fn pin(&self, name: &str) -> Option<&Pin> {
        self.book.pins.get(name)
    }

    /// The (first, by name) pinned name of an identity.
    pub fn name_of(&self, identity: &IdentityKey) -> Option<String> {
        self.book.name_of(identity).map(str::to_owned)
    }

    /// Every pin, by name.
    pub fn pins(&self) -> &BTreeMap<String, Pin> {
        &self.book.pins
    }

    /// Every pin as the `peers` event lists it.
    pub fn peer_list(&self) -> Vec<PeerInfo> {
        self.book
            .pins
            .iter()
            .map(|(name, pin)| PeerInfo {
                name: name.clone(),
                identity: identity_hex(&pin.identity),
                verified: pin.verified,
                has_session: self.peers.contains_key(&pin.identity),
                first_seen_ms: pin.first_seen_ms,
                pending_change: !self.book.pending(name).is_empty(),
                held: self.held_count(name),
            })
            .collect()
    }

    /// The safety number with the identity pinned as `name`, with the names as stable ids.
    pub fn safety_number(&self, name: &str) -> Option<SafetyNumber> {
        self.candidates(name)
            .into_iter()
            .find(|c| c.role == KeyRole::Pinned)
            .map(|c| c.number)
    }

    /// The pinned identity of `name` and its pending changes, each with its safety number.
    pub fn candidates(&self, name: &str) -> Vec<Candidate> {
        self.book.candidates(self.identity.public(), &self.name, name)
    }

    // ---- persistence ------------------------------------------------------------

    fn drop_session(&mut self, peer: &IdentityKey) -> Result<(), StateError> {
        let sessions = self.dir.join(SESSIONS_DIR);
        let path = sessions.join(session_file_name(peer));
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&sessions)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StateError::Io {
                    op: "remove",
                    path,
                    source,
                })
            }
        }
        self.peers.remove(peer);
        Ok(())
    }

    fn save_session(&self, peer: &IdentityKey, state: &PeerState) -> Result<(), StateError> {
        write_json(
            &self.dir.join(SESSIONS_DIR),
            &session_file_name(peer),
            &SessionFile {
                version: STATE_VERSION,
                peer: *peer,
                received_ids: state.received.relay.clone(),
                message_ids: state.received.payload.clone(),
                session: state.session.clone(),
                archived: state.archived.clone(),
            },
        )
    }

    fn save_prekeys(&self, prekeys: &PrekeysFile) -> Result<(), StateError> {
        write_json(&self.dir, PREKEYS_FILE, prekeys)
    }

    fn save_pins(&self, book: &PinBook) -> Result<(), StateError> {
        write_json(
            &self.dir,
            PINS_FILE,
            &PinsFile {
                version: STATE_VERSION,
                pins: book.pins.clone(),
                pending: book.pending.clone(),
                rejected: book.rejected.clone(),
                blocked: BTreeMap::new(),
            },
        )
    }

    fn save_held(&self, messages: &[HeldMessage]) -> Result<(), StateError> {
        write_json(
            &self.dir,
            HELD_FILE,
            &HeldFile {
                version: STATE_VERSION,
                messages: messages.to_vec(),
            },
        )
    }

    fn save_outbox(&self, entries: &[OutboxEntry]) -> Result<(), StateError> {
        write_json(
            &self.dir,
            OUTBOX_FILE,
            &OutboxFile {
                version: STATE_VERSION,
                entries: entries.to_vec(),
            },
        )
    }
}

fn session_file_name(peer: &IdentityKey) -> String {
    format!("{}.json", identity_hex(peer))
}

fn exists(path: &Path) -> Result<bool, StateError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(StateError::Io {
            op: "inspect",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist.
fn create_private_dir(dir: &Path) -> Result<(), StateError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| StateError::Io {
            op: "create directory",
            path: dir.to_path_buf(),
            source,
        })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), StateError> {
    fs::set_permissions(path, Permissions::from_mode(mode)).map_err(|source| StateError::Io {
        op: "set permissions of",
        path: path.to_path_buf(),
        source,
    })
}

/// Refuses a directory or file that other users can access.
fn check_private(path: &Path, is_dir: bool) -> Result<(), StateError> {
    let meta = fs::metadata(path).map_err(|source| StateError::Io {
        op: "inspect",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.mode() & 0o7777;
    if mode & OPEN_TO_OTHERS != 0 {
        return Err(StateError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
            is_dir,
        });
    }
    Ok(())
}

/// Takes the exclusive lock on `dir/lock`, or fails with [`StateError::Locked`].
fn lock_dir(dir: &Path) -> Result<File, StateError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(|source| StateError::Io {
            op: "open",
            path: path.clone(),
            source,
        })?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(errno) if errno == rustix::io::Errno::WOULDBLOCK => Err(StateError::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(errno) => Err(StateError::Io {
            op: "lock",
            path,
            source: errno.into(),
        }),
    }
}

/// The `*.json` files of the sessions directory, sorted.
fn session_files(sessions: &Path) -> Result<Vec<PathBuf>, StateError> {
    let io = |source| StateError::Io {
        op: "list",
        path: sessions.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(sessions).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let visible = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.'));
        if visible && path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Removes `.<name>.tmp` files that a crash left behind in `dir`.
fn remove_temp_files(dir: &Path) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        op: "clean up",
        path: dir.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let is_temp = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp"));
        if is_temp {
            fs::remove_file(&path).map_err(|source| StateError::Io {
                op: "remove",
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

fn check_version(path: &Path, version: u32) -> Result<(), StateError> {
    if version == STATE_VERSION {
        Ok(())
    } else {
        Err(StateError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("unsupported format version {version} (expected {STATE_VERSION})"),
        })
    }
}

/// Reads and parses a state file that only the owner may access.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StateError> {
    let io = |source| StateError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.mode() & 0o7777;
    if mode & OPEN_TO_OTHERS != 0 {
        return Err(StateError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
            is_dir: false,
        });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Writes `value` as JSON to `dir/name` atomically: a 0600 temporary file in `dir`,
/// fsync, rename, fsync of `dir`.
fn write_json<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), StateError> {
    let path = dir.join(name);
    let bytes = serde_json::to_vec(value).map_err(|e| StateError::Io {
        op: "serialize",
        path: path.clone(),
        source: io::Error::other(e),
    })?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StateError::Io { op, path, source }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .map_err(io("create", &tmp))?;
    // The mode above applies only to a new file; a leftover one is fixed here.
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(io("set permissions of", &tmp))?;
    file.write_all(&bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(io("replace", &path))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Io {
            op: "sync directory",
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use e2ee_protocol::message::Message;
    use rand_core::{OsRng, RngCore};

    use super::*;

    fn open(dir: &Path, name: &str) -> AgentState {
        AgentState::open(dir, name, 5, &mut OsRng).expect("open state")
    }

    fn new_id() -> [u8; 16] {
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        id
    }

    fn text(s: &str) -> Payload {
        Payload::text(new_id(), 1_700_000_000_000, s)
    }

    fn ik(state: &AgentState) -> IdentityKey {
        *state.identity().public()
    }

    /// Encrypts `s` from `from` to `to`, starting a session with `to`'s bundle if needed.
    fn send(from: &mut AgentState, to: &AgentState, s: &str) -> OutboxEntry {
        if !from.has_session(&ik(to)) {
            from.start_session(&to.bundle(), &mut OsRng)
                .expect("start session");
        }
        from.encrypt(&ik(to), &text(s)).expect("encrypt")
    }

    fn recv(to: &mut AgentState, from: &IdentityKey, entry: &OutboxEntry) -> Result<Incoming, ReceiveError> {
        to.decrypt(from, entry.msg_id, &entry.wire, &mut OsRng)
    }

    fn recv_text(to: &mut AgentState, from: &IdentityKey, entry: &OutboxEntry) -> String {
        let incoming = recv(to, from, entry).expect("decrypt");
        incoming.payload.as_text().expect("text").to_owned()
    }

    fn failure(result: Result<Incoming, ReceiveError>) -> DecryptFailure {
        match result {
            Err(ReceiveError::Failed(f)) => f,
            other => panic!("expected a decrypt failure, got {other:?}"),
        }
    }

    /// The ratchet counter `n` of a message.
    fn counter(wire: &[u8]) -> u32 {
        match Message::decode(wire).expect("message") {
            Message::PreKey(m) => m.inner.header.n,
            Message::Normal(m) => m.header.n,
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").mode() & 0o7777
    }

    /// Copies a state directory as it is on disk right now (a crash image).
    fn copy_dir(from: &Path, to: &Path) {
        fs::create_dir_all(to).expect("mkdir");
        fs::set_permissions(to, Permissions::from_mode(0o700)).expect("chmod");
        for entry in fs::read_dir(from).expect("read dir") {
            let path = entry.expect("entry").path();
            let target = to.join(path.file_name().expect("name"));
            if path.is_dir() {
                copy_dir(&path, &target);
            } else {
                fs::copy(&path, &target).expect("copy");
            }
        }
    }

    #[test]
    fn creates_owner_only_directories_and_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("nested").join("alice");
        let mut alice = open(&dir, "alice");
        let bob_dir = tmp.path().join("bob");
        let bob = open(&bob_dir, "bob");
        assert!(alice.is_new());
        send(&mut alice, &bob, "hi");

        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(SESSIONS_DIR)), 0o700);
        for file in [IDENTITY_FILE, PREKEYS_FILE, PINS_FILE, OUTBOX_FILE, LOCK_FILE] {
            assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
        }
        let session = dir.join(SESSIONS_DIR).join(session_file_name(&ik(&bob)));
        assert_eq!(mode(&session), 0o600);
        // No temporary file is left behind.
        let leftovers: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn reopening_loads_the_same_identity() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = open(tmp.path(), "alice");
        let identity = ik(&first);
        assert!(first.is_new() && first.needs_publish());
        drop(first);
        let again = open(tmp.path(), "alice");
        assert!(!again.is_new());
        assert_eq!(ik(&again), identity);
        assert_eq!(again.name(), "alice");
        assert_eq!(again.one_time_count(), 5);
        assert_eq!(again.bundle().one_time_prekeys.len(), 5);
        assert_eq!(again.bundle().verify(), Ok(()));
    }

    #[test]
    fn refuses_another_name_and_invalid_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        drop(open(tmp.path(), "alice"));
        let err = AgentState::open(tmp.path(), "bob", 5, &mut OsRng).expect_err("wrong name");
        assert!(
            matches!(err, StateError::NameMismatch { ref stored, .. } if stored == "alice"),
            "{err}"
        );
        let err = AgentState::open(tmp.path(), "Alice", 5, &mut OsRng).expect_err("invalid name");
        assert!(matches!(err, StateError::InvalidName(_)));
    }

    #[test]
    fn a_second_process_cannot_open_the_same_state() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let first = open(tmp.path(), "alice");
        let err = AgentState::open(tmp.path(), "alice", 5, &mut OsRng).expect_err("locked");
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        drop(first);
        assert!(AgentState::open(tmp.path(), "alice", 5, &mut OsRng).is_ok());
    }

    #[test]
    fn persist_before_send_never_reuses_a_message_key() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut alice = open(&tmp.path().join("alice"), "alice");
        let mut bob = open(&tmp.path().join("bob"), "bob");
        let first = send(&mut alice, &bob, "first");
        assert_eq!(counter(&first.wire), 0);

        // Crash right after encrypt returned: the disk image must already hold the
        // advanced chain, so the next message gets the next counter.
        let crash = tmp.path().join("alice-crash");
        copy_dir(&tmp.path().join("alice"), &crash);
        drop(alice);
        let mut alice = open(&crash, "alice");
        let second = send(&mut alice, &bob, "second");
        assert_eq!(counter(&second.wire), 1);
        assert_ne!(first.wire, second.wire);
        // The first message is still in the recovered outbox, to be resent.
        assert_eq!(alice.outbox(), vec![first.clone(), second.clone()]);

        let alice_ik = ik(&alice);
        assert_eq!(recv_text(&mut bob, &alice_ik, &first), "first");
        assert_eq!(recv_text(&mut bob, &alice_ik, &second), "second");
    }

    #[test]
    fn conversation_survives_restarts_on_both_sides() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
        let mut alice = open(&alice_dir, "alice");
        let mut bob = open(&bob_dir, "bob");
        let (a, b) = (ik(&alice), ik(&bob));

        let m = send(&mut alice, &bob, "hello bob");
        let incoming = recv(&mut bob, &a, &m).expect("decrypt");
        assert!(incoming.new_session);
        assert_eq!(bob.one_time_count(), 4, "the used one-time prekey is gone");
        let r = send(&mut bob, &alice, "hello alice");
        assert_eq!(recv_text(&mut alice, &b, &r), "hello alice");
        assert_eq!(alice.awaiting_reply(&b), Some(false));

        // Bob restarts mid-conversation.
        drop(bob);
        let mut bob = open(&bob_dir, "bob");
        assert_eq!(bob.one_time_count(), 4, "the consumed prekey stays consumed");
        let m2 = send(&mut alice, &bob, "still there?");
        assert_eq!(recv_text(&mut bob, &a, &m2), "still there?");
        let r2 = send(&mut bob, &alice, "yes");

        // Alice restarts with a message waiting for her.
        drop(alice);
        let mut alice = open(&alice_dir, "alice");
        assert_eq!(recv_text(&mut alice, &b, &r2), "yes");
        let m3 = send(&mut alice, &bob, "good");
        assert!(matches!(Message::decode(&m3.wire), Ok(Message::Normal(_))));
        assert_eq!(recv_text(&mut bob, &a, &m3), "good");
    }

    #[test]
    fn sessions_started_by_both_sides_at_once_still_talk() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bob_dir = tmp.path().join("bob");
        let mut alice = open(&tmp.path().join("alice"), "alice");
        let mut bob = open(&bob_dir, "bob");
        let (a, b) = (ik(&alice), ik(&bob));
        // Both send first: two handshakes cross on the relay.
        let from_alice = send(&mut alice, &bob, "hi bob");
        let from_bob = send(&mut bob, &alice, "hi alice");
        assert_eq!(recv_text(&mut bob, &a, &from_alice), "hi bob");
        assert_eq!(recv_text(&mut alice, &b, &from_bob), "hi alice");
        // Both keep talking at once, across a restart, in crossing pairs.
        for round in 0..4 {
            if round == 2 {
                drop(bob);
                bob = open(&bob_dir, "bob");
            }
            let x = send(&mut alice, &bob, &format!("a{round}"));
            let y = send(&mut bob, &alice, &format!("b{round}"));
            assert_eq!(recv_text(&mut bob, &a, &x), format!("a{round}"));
            assert_eq!(recv_text(&mut alice, &b, &y), format!("b{round}"));
        }
        // And in turns.
        for round in 0..3 {
            let x = send(&mut alice, &bob, &format!("turn a{round}"));
            assert_eq!(recv_text(&mut bob, &a, &x), format!("turn a{round}"));
            let y = send(&mut bob, &alice, &format!("turn b{round}"));
            assert_eq!(recv_text(&mut alice, &b, &y), format!("turn b{round}"));
        }
    }

    #[test]
    fn out_of_order_messages_report_gaps_and_late_arrivals() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut alice = open(&tmp.path().join("alice"), "alice");
        let mut bob = open(&tmp.path().join("bob"), "bob");
        let a = ik(&alice);
        let m1 = send(&mut alice, &bob, "one");
        let m2 = send(&mut alice, &bob, "two");
        let m3 = send(&mut alice, &bob, "three");
        let third = recv(&mut bob, &a, &m3).expect("third");
        assert_eq!((third.newly_skipped, third.late), (2, false));
        let first = recv(&mut bob, &a, &m1).expect("first");
        assert_eq!((first.newly_skipped, first.late), (0, true));
        assert!(
            !first.new_session,
            "the session from the third message serves the first"
        );
        assert_eq!(recv_text(&mut bob, &a, &m2), "two");
    }

    #[test]
    fn redelivered_message_ids_are_duplicates_even_after_a_restart() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut alice = open(&tmp.path().join("alice"), "alice");
        let bob_dir = tmp.path().join("bob");
        let mut bob = open(&bob_dir, "bob");
        let a = ik(&alice);
        let m = send(&mut alice, &bob, "once");
        assert_eq!(recv_text(&mut bob, &a, &m), "once");
        assert!(bob.has_received(&a, &m.msg_id));

        let again = failure(recv(&mut bob, &a, &m));
        assert_eq!((again.class, again.redelivery), (FailureClass::Duplicate, true));

        drop(bob);
        let mut bob = open(&bob_dir, "bob");
        let again = failure(recv(&mut bob, &a, &m));
        assert_eq!((again.class, again.redelivery), (FailureClass::Duplicate, true));

        // The same ciphertext under a fresh id is a replay caught by the ratchet.
        let m2 = send(&mut alice, &bob, "twice");
        assert_eq!(recv_text(&mut bob, &a, &m2), "twice");
        let replay = failure(bob.decrypt(&a, new_id(), &m2.wire, &mut OsRng));
        assert_eq!(
            (replay.class, replay.redelivery),
            (FailureClass::Duplicate, false)
        );
    }

    /// A relay that relabels fresh messages with relay ids already seen cannot make them
    /// disappear as "duplicates": the relay id is not authenticated, the payload's is.
    #[test]
    fn a_fresh_message_under_a_seen_relay_id_is_still_shown() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut alice = open(&tmp.path().join("alice"), "alice");
        let mut bob = open(&tmp.path().join("bob"), "bob");
        let a = ik(&alice);
        let first = send(&mut alice, &bob, "first");
        assert_eq!(recv_text(&mut bob, &a, &first), "first");
        for text in ["second", "third"] {
            let fresh = send(&mut alice, &bob, text);
            let shown = bob
                .decrypt(&a, first.msg_id, &fresh.wire, &mut OsRng)
                .expect("decrypts under a relabelled id");
            assert_eq!(shown.payload.as_text(), Some(text));
        }
        // A true redelivery under the seen id is still quiet.
        let again = failure(recv(&mut bob, &a, &first));
        assert_eq!((again.class, again.redelivery), (FailureClass::Duplicate, true));
    }

    #[test]
    fn tampered_messages_fail_and_leave_the_session_intact() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut alice = open(&tmp.path().join("alice"), "alice");
        let mut bob = open(&tmp.path().join("bob"), "bob");
        let a = ik(&alice);
        let m1 = send(&mut alice, &bob, "one");
        assert_eq!(recv_text(&mut bob, &a, &m1), "one");
        let m2 = send(&mut alice, &bob, "two");
        let mut tampered = m2.wire.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let f = failure(bob.decrypt(&a, m2.msg_id, &tampered, &mut OsRng));
        assert_eq!(f.class, FailureClass::Tampered);
        assert!(!bob.has_received(&a, &m2.msg_id), "a failure records no id");
        // The genuine message (same relay id) still decrypts.
        assert_eq!(recv_text(&mut bob, &a, &m2), "two");
        // Garbage is malformed; a message from a stranger has no session.
        let f = failure(bob.decrypt(&a, new_id(), &[0x02, 1, 2], &mut OsRng));
        assert_eq!(f.class, FailureClass::Malformed);
        let mut carol = open(&tmp.path().join("carol"), "carol");
        let r = send(&mut bob, &alice, "reply");
        assert_eq!(recv_text(&mut alice, &ik(&bob), &r), "reply");
        let normal = send(&mut alice, &bob, "normal now");
        let f = failure(recv(&mut carol, &a, &normal));
        assert_eq!(f.class, FailureClass::UnknownSession);
    }

    #[test]
    fn a_payload_that_does_not_parse_is_malformed_and_recorded() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let alice = open(&tmp.path().join("alice"), "alice");
        let mut bob = open(&tmp.path().join("bob"), "bob");
        let mut raw = Session::initiate(alice.identity(), &bob.bundle(), &mut OsRng).expect("initiate");
        let wire = raw.encrypt(b"not a payload").expect("encrypt");
        let id = new_id();
        let f = failure(bob.decrypt(&ik(&alice), id, &wire, &mut OsRng));
        assert_eq!((f.class, f.redelivery), (FailureClass::Malformed, false));
        assert!(f.detail.starts_with("payload: "), "{}", f.detail);
        assert!(bob.has_session(&ik(&alice)), "the session is kept");
        let f = failure(bob.decrypt(&ik(&alice), id, &wire, &mut OsRng));
        assert!(f.redelivery);
    }

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

    #[test]
    fn corrupt_files_give_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("alice");
        let mut alice = open(&dir, "alice");
        let bob = open(&tmp.path().join("bob"), "bob");
        send(&mut alice, &bob, "hi");
        drop(alice);
        let session = dir.join(SESSIONS_DIR).join(session_file_name(&ik(&bob)));

        let cases: [(&Path, &[u8]); 5] = [
            (&dir.join(PINS_FILE), b"{not json"),
            (&dir.join(IDENTITY_FILE), b"{\"version\":1,\"name\":\"alice\"}"),
            (&dir.join(PREKEYS_FILE), b""),
            (&dir.join(OUTBOX_FILE), b"{\"version\":2,\"entries\":[]}"),
            (
                &session,
                b"{\"version\":1,\"peer\":\"zz\",\"received_ids\":[],\"session\":{}}",
            ),
        ];
        for (path, bytes) in cases {
            let good = fs::read(path).expect("read");
            fs::write(path, bytes).expect("corrupt");
            let err = AgentState::open(&dir, "alice", 5, &mut OsRng).expect_err("corrupt");
            assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
            let shown = err.to_string();
            assert!(shown.contains(&*path.to_string_lossy()), "{shown}");
            fs::write(path, good).expect("restore");
        }
        // Another session renamed to the wrong peer is caught too.
        let wrong = dir.join(SESSIONS_DIR).join(format!("{}.json", "ab".repeat(32)));
        fs::rename(&session, &wrong).expect("rename");
        let err = AgentState::open(&dir, "alice", 5, &mut OsRng).expect_err("mismatch");
        assert!(err.to_string().contains("does not match"), "{err}");
        fs::rename(&wrong, &session).expect("rename back");
        assert!(AgentState::open(&dir, "alice", 5, &mut OsRng).is_ok());
    }

    #[test]
    fn refuses_state_open_to_other_users() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("alice");
        drop(open(&dir, "alice"));
        let identity = dir.join(IDENTITY_FILE);
        fs::set_permissions(&identity, Permissions::from_mode(0o644)).expect("chmod");
        let err = AgentState::open(&dir, "alice", 5, &mut OsRng).expect_err("insecure");
        assert!(
            matches!(err, StateError::InsecurePermissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        fs::set_permissions(&identity, Permissions::from_mode(0o600)).expect("chmod");
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).expect("chmod");
        let err = AgentState::open(&dir, "alice", 5, &mut OsRng).expect_err("insecure dir");
        assert!(err.to_string().contains("chmod 700"), "{err}");
    }

    #[test]
    fn interrupted_creation_starts_over_but_orphaned_sessions_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("alice");
        let first = ik(&open(&dir, "alice"));
        fs::remove_file(dir.join(IDENTITY_FILE)).expect("remove");
        let again = open(&dir, "alice");
        assert!(again.is_new());
        assert_ne!(ik(&again), first);

        let mut alice = again;
        let bob = open(&tmp.path().join("bob"), "bob");
        send(&mut alice, &bob, "hi");
        drop(alice);
        fs::remove_file(dir.join(IDENTITY_FILE)).expect("remove");
        let err = AgentState::open(&dir, "alice", 5, &mut OsRng).expect_err("orphans");
        assert!(matches!(err, StateError::Incomplete { .. }), "{err}");
    }

    #[test]
    fn pins_record_new_identities_and_report_changes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("alice");
        let mut alice = open(&dir, "alice");
        let bob = open(&tmp.path().join("bob"), "bob");
        let mallory = open(&tmp.path().join("mallory"), "mallory");
        let (b, m) = (ik(&bob), ik(&mallory));

        assert_eq!(
            alice.observe_identity("bob", &b, 10).expect("pin"),
            PinOutcome::New
        );
        assert_eq!(
            alice.observe_identity("bob", &b, 20).expect("pin"),
            PinOutcome::Same
        );
        assert_eq!(
            alice.observe_identity("bob", &m, 30).expect("pin"),
            PinOutcome::Changed {
                previous: b,
                verified: false
            }
        );
        assert_eq!(
            alice.pin("bob").map(|p| p.identity),
            Some(b),
            "a change is not applied"
        );
        assert_eq!(alice.name_of(&b).as_deref(), Some("bob"));
        assert_eq!(alice.name_of(&m), None);

        alice.set_verified("bob", true).expect("verify");
        assert!(matches!(
            alice.set_verified("nobody", true),
            Err(StateError::UnknownPeer(_))
        ));
        let mut alice_b = alice;
        send(&mut alice_b, &bob, "hi");
        drop(alice_b);
        let mut alice = open(&dir, "alice");
        assert_eq!(
            alice.pin("bob"),
            Some(&Pin {
                identity: b,
                verified: true,
                first_seen_ms: 10
            })
        );
        assert!(alice.has_session(&b));
        let listed = alice.peer_list();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].verified && listed[0].has_session);

        alice.accept_identity("bob", &m, false, 40).expect("accept");
        assert_eq!(
            alice.pin("bob"),
            Some(&Pin {
                identity: m,
                verified: false,
                first_seen_ms: 40
            })
        );
        assert!(!alice.has_session(&b), "the old identity's session is dropped");
        assert!(!dir.join(SESSIONS_DIR).join(session_file_name(&b)).exists());
        drop(alice);
        let alice = open(&dir, "alice");
        assert_eq!(alice.pin("bob").map(|p| p.identity), Some(m));
        assert!(!alice.has_session(&b));
    }

    #[test]
    fn held_changes_and_their_messages_hold_across_restarts_until_the_user_decides() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("alice");
        let mut alice = open(&dir, "alice");
        let bob = open(&tmp.path().join("bob"), "bob");
        let mut bob2 = open(&tmp.path().join("bob2"), "bob");
        let mut bob3 = open(&tmp.path().join("bob3"), "bob");
        let (b, b2, b3) = (ik(&bob), ik(&bob2), ik(&bob3));
        alice.observe_identity("bob", &b, 10).expect("pin");
        alice.set_verified("bob", true).expect("verify");
        alice.hold_change("bob", &b2).expect("hold");
        alice.hold_change("bob", &b3).expect("hold");
        alice.hold_change("bob", &b3).expect("holding twice is one hold");
        // Their messages are kept undecrypted.
        let from2 = send(&mut bob2, &alice, "from bob2");
        let from3 = send(&mut bob3, &alice, "from bob3");
        for (sender, entry) in [(b2, &from2), (b3, &from3)] {
            let held = HeldMessage {
                name: "bob".into(),
                sender,
                msg_id: entry.msg_id,
                wire: entry.wire.clone(),
                held_ms: 5,
            };
            assert!(alice.hold_message(held.clone()).expect("held"));
            assert!(alice.hold_message(held).expect("held once"));
        }
        drop(alice);

        let mut alice = open(&dir, "alice");
        assert_eq!(alice.pending_changes("bob"), vec![b2, b3]);
        assert_eq!(alice.pending_name_of(&b3).as_deref(), Some("bob"));
        assert_eq!(
            alice.pin("bob").map(|p| (p.identity, p.verified)),
            Some((b, true)),
            "the pin is kept"
        );
        assert_eq!(alice.held_count("bob"), 2);
        let candidates = alice.candidates("bob");
        assert_eq!(
            candidates
                .iter()
                .map(|c| (c.role, c.identity))
                .collect::<Vec<_>>(),
            vec![(KeyRole::Pinned, b), (KeyRole::New, b2), (KeyRole::New, b3)]
        );
        assert!(alice.observe_identity("bob", &b3, 11).expect("observe") == PinOutcome::Pending);

        // Accepting b3: pinned and verified; b2's held message is deleted unread, b3's
        // stays until it is released after decryption.
        alice.accept_identity("bob", &b3, true, 30).expect("accept");
        assert_eq!(
            alice.pin("bob").map(|p| (p.identity, p.verified)),
            Some((b3, true))
        );
        assert!(alice.pending_changes("bob").is_empty());
        assert!(alice.held_from(&b2).is_empty());
        let held = alice.held_from(&b3);
        assert_eq!(held.len(), 1);
        assert_eq!(recv_text(&mut alice, &b3, &from3), "from bob3");
        alice.release_held(&b3, &held[0].msg_id).expect("release");
        drop(alice);
        let alice = open(&dir, "alice");
        assert_eq!(alice.held_count("bob"), 0);
        assert_eq!(alice.pin("bob").map(|p| p.identity), Some(b3));
    }

    #[test]
    fn rejected_changes_are_remembered_and_their_held_messages_deleted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("alice");
        let mut alice = open(&dir, "alice");
        let bob = open(&tmp.path().join("bob"), "bob");
        let mut mallory = open(&tmp.path().join("mallory"), "bob");
        let (b, m) = (ik(&bob), ik(&mallory));
        alice.observe_identity("bob", &b, 10).expect("pin");
        assert!(alice.reject_pending("bob").expect("nothing").is_empty());
        alice.hold_change("bob", &m).expect("hold");
        let entry = send(&mut mallory, &alice, "it is me");
        let held = HeldMessage {
            name: "bob".into(),
            sender: m,
            msg_id: entry.msg_id,
            wire: entry.wire,
            held_ms: 1,
        };
        alice.hold_message(held).expect("held");
        assert_eq!(alice.reject_pending("bob").expect("reject"), vec![m]);
        assert_eq!(alice.held_count("bob"), 0);
        drop(alice);
        let mut alice = open(&dir, "alice");
        assert_eq!(alice.rejected_name_of(&m).as_deref(), Some("bob"));
        assert_eq!(
            alice.observe_identity("bob", &m, 20).expect("observe"),
            PinOutcome::Rejected
        );
        assert_eq!(alice.pin("bob").map(|p| p.identity), Some(b));
    }

    #[test]
    fn pins_written_by_the_earlier_release_read_blocked_identities_as_pending() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("alice");
        let alice = open(&dir, "alice");
        let b = *IdentityKeyPair::from_seed(&[1; 32]).public();
        let b2 = *IdentityKeyPair::from_seed(&[2; 32]).public();
        drop(alice);
        let old = format!(
            "{{\"version\":1,\"pins\":{{\"bob\":{{\"identity\":\"{}\",\"verified\":true,\"first_seen_ms\":3}}}},\
             \"blocked\":{{\"bob\":[\"{}\"]}}}}",
            hex::encode(b.as_bytes()),
            hex::encode(b2.as_bytes())
        );
        fs::write(dir.join(PINS_FILE), old).expect("write");
        fs::remove_file(dir.join(HELD_FILE)).expect("an older state has no held.json");
        let alice = open(&dir, "alice");
        assert_eq!(alice.pending_changes("bob"), vec![b2]);
        assert_eq!(
            alice.pin("bob").map(|p| (p.identity, p.verified)),
            Some((b, true))
        );
    }

    #[test]
    fn safety_numbers_match_on_both_sides() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut alice = open(&tmp.path().join("alice"), "alice");
        let mut bob = open(&tmp.path().join("bob"), "bob");
        assert!(alice.safety_number("bob").is_none());
        alice.observe_identity("bob", &ik(&bob), 1).expect("pin");
        bob.observe_identity("alice", &ik(&alice), 1).expect("pin");
        let from_alice = alice.safety_number("bob").expect("number");
        let from_bob = bob.safety_number("alice").expect("number");
        assert_eq!(from_alice, from_bob);
        assert_eq!(from_alice.digits().len(), 60);
    }

    #[test]
    fn publishes_only_what_the_relay_has_not_stored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("bob");
        let mut bob = open(&dir, "bob");
        assert!(bob.needs_publish());
        assert_eq!(bob.bundle_to_publish(), bob.bundle(), "first: everything");
        bob.mark_published().expect("published");
        assert!(!bob.needs_publish());
        assert!(bob.bundle_to_publish().one_time_prekeys.is_empty());

        // The relay handed out 3 of 5 and says 2 are left: top it up to 12.
        let held_before = bob.bundle().one_time_prekeys;
        let bundle = bob.replenish(2, 12, &mut OsRng).expect("replenish");
        assert_eq!(bundle.one_time_prekeys.len(), 10, "only the fresh ones");
        assert!(bundle.one_time_prekeys.iter().all(|k| !held_before.contains(k)));
        assert_eq!(bundle.verify(), Ok(()));
        assert_eq!(bob.one_time_count(), 15);
        assert!(bob.needs_publish());

        // Unconfirmed at a restart: published again, the same keys.
        drop(bob);
        let mut bob = open(&dir, "bob");
        assert!(bob.needs_publish());
        assert_eq!(bob.bundle_to_publish(), bundle);
        bob.mark_published().expect("published");
        drop(bob);
        let mut bob = open(&dir, "bob");
        assert!(!bob.needs_publish());
        assert!(bob
            .replenish(40, 12, &mut OsRng)
            .expect("nothing")
            .one_time_prekeys
            .is_empty());

        // A new signed prekey must be published; the old one still opens messages.
        let alice_dir = tmp.path().join("alice");
        let mut alice = open(&alice_dir, "alice");
        let in_flight = send(&mut alice, &bob, "before rotation");
        let rotated = bob.rotate_signed_prekey(&mut OsRng, 1).expect("rotate");
        assert_ne!(rotated.signed_prekey, bundle.signed_prekey);
        assert!(bob.needs_publish());
        assert_eq!(recv_text(&mut bob, &ik(&alice), &in_flight), "before rotation");
    }

    #[test]
    fn a_used_one_time_prekey_is_never_published_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut alice = open(&tmp.path().join("alice"), "alice");
        let mut bob = open(&tmp.path().join("bob"), "bob");
        // Alice fetched a bundle before Bob's first publication was confirmed.
        let m = send(&mut alice, &bob, "early");
        let used = match Message::decode(&m.wire).expect("message") {
            Message::PreKey(p) => p.one_time_prekey.expect("an opk"),
            Message::Normal(_) => panic!("a PreKey message"),
        };
        assert_eq!(recv_text(&mut bob, &ik(&alice), &m), "early");
        assert_eq!(bob.one_time_count(), 4);
        assert!(!bob.bundle_to_publish().one_time_prekeys.contains(&used));
        assert_eq!(bob.bundle_to_publish().one_time_prekeys.len(), 4);
    }

    #[test]
    fn name_claim_is_signed_by_the_identity() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let alice = open(tmp.path(), "alice");
        let claim = alice.name_claim(42).expect("claim");
        assert_eq!(
            (claim.name.as_str(), claim.identity, claim.issued_ms),
            ("alice", ik(&alice), 42)
        );
        assert_eq!(NameClaim::decode_verified(&claim.encode()), Ok(claim));
    }
}
