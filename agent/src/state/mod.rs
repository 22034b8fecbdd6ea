//! The persistent state of one agent, in its state directory.
//!
//! ```text
//! <state_dir>/            0700
//!   lock                  0600  flock(2)-held while an AgentState is open
//!   state.db              0600  the state database (SQLite, WAL; `crate::store`)
//!   state.db-wal, -shm    0600  its journal, while open
//!   state.key             0600  the random state key, unless a passphrase is used
//! ```
//!
//! The modules, one concept each (dependencies point down this list, to `store`):
//! - this file: [`AgentState`], opening (create, load, import) and the identity;
//! - [`error`]: [`StateError`] and [`ReceiveError`];
//! - `sessions`: sessions, [`AgentState::encrypt`] and [`AgentState::decrypt`];
//! - `outbox`: [`OutboxEntry`], the sent messages the relay has not acknowledged;
//! - `unshown`: [`Unshown`], received texts committed but not shown yet;
//! - `trust`: pins, pending and rejected identities, held messages;
//! - `prekeys`: signed and one-time prekeys and their publication;
//! - `groups`: the MLS groups ([`crate::group::GroupBook`]) and the group outbox;
//! - `import_v1`: the one-time import of a JSON state of the earlier release;
//! - [`inspect`]: a read-only view of a state directory (tests, evidence);
//! - `values` (protocol values as row bytes) and `files` (directory, lock).
//!
//! Guarantees:
//! - **One transaction per operation**: every operation writes all the rows it
//!   changes in one transaction (see `sessions` for encrypt and decrypt), and only
//!   then changes memory: a failed write (disk full, read-only file system, reported
//!   as the retryable [`StateError::WriteFailed`]) leaves memory and disk as they were.
//! - **Persist before send / before show**: [`AgentState::encrypt`] commits the
//!   advanced session with the outbox entry before it returns the ciphertext, so a
//!   message key is never used for two plaintexts, even across a crash;
//!   [`AgentState::decrypt`] commits the session and the message ids before it returns
//!   the plaintext, so a redelivery is a quiet duplicate and nothing is shown twice;
//!   with them a text to show, deleted by [`AgentState::shown`] as it is printed, so a
//!   crash before that is made good at the next start ([`AgentState::unshown`]).
//!   A commit survives a crash of the process when it returns, and a power loss after
//!   [`AgentState::sync`] (group commit): the agent sends, acknowledges and shows
//!   nothing that depends on a commit before that sync.
//! - **Encrypted at rest**: the identity seed, prekey secrets and sessions are sealed
//!   under the state key, from a passphrase ([`KeySource::Passphrase`]) or the key file
//!   `state.key` ([`AgentState::open`]); with a key file the state is protected by
//!   file permissions only ([`AgentState::passphrase_protected`]).
//! - **Owner only**: the directory is 0700 and files 0600; a state open to other users
//!   is refused, as ssh does for its keys.
//! - **One process**: the directory is locked (`flock`), so two agents never advance
//!   the same ratchet.

pub mod error;
mod files;
mod groups;
mod import_v1;
pub mod inspect;
mod outbox;
mod prekeys;
mod relay_pins;
mod retention;
mod sessions;
mod trust;
mod unshown;
mod values;

#[cfg(test)]
mod test_util;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use e2ee_protocol::identity::{IdentityKey, IdentityKeyPair};
use e2ee_protocol::name_claim::validate_name;
use e2ee_protocol::name_release::NameRelease;
use rand_core::CryptoRngCore;

pub use self::error::{ReceiveError, StateError};
pub use self::groups::{GroupEdit, GroupIntent, GroupOutboxEntry, IntentMember};
pub use self::import_v1::STATE_VERSION;
pub use self::outbox::OutboxEntry;
pub use self::retention::{HistoryEntry, LoggedSend, Retention};
pub use self::sessions::{ARCHIVED_SESSIONS, RECEIVED_IDS_KEPT};
pub use self::unshown::Unshown;
pub use crate::incoming::Incoming;
pub use crate::pins::{Pin, PinOutcome};
pub use crate::store::KeySource;

use self::files::{check_private, create_private_dir, lock_dir};
use self::prekeys::Prekeys;
use self::sessions::PeerState;
use self::values::{identity_seed, key32};
use crate::held::HeldMessage;
use crate::pins::PinBook;
use crate::store::identity::NameReleaseRow;
use crate::store::shown_log::ShownLog;
use crate::store::StateDb;

/// A release of our own name (`/release-name`, docs/PROTOCOL.md 5.6): while it is
/// set the agent does not publish its name claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameReleaseState {
    /// The `issued_ms` signed into the release (ms since the Unix epoch); the same
    /// release is sent again until the relay confirms it.
    pub issued_ms: u64,
    /// True once the relay answered that it binds no name to us.
    pub confirmed: bool,
}

/// The persistent state of one agent: identity, prekeys, one session per peer, pins,
/// held messages and the outbox. See the module documentation for the layout and
/// guarantees.
pub struct AgentState {
    dir: PathBuf,
    /// Holds the flock for as long as the state is open.
    _lock: File,
    db: StateDb,
    name: String,
    identity: IdentityKeyPair,
    prekeys: Prekeys,
    peers: HashMap<IdentityKey, PeerState>,
    book: PinBook,
    /// The first pinned name (by name) of each pinned identity: `book` inverted, rebuilt
    /// whenever `book` changes (`trust::pinned_names`), so that naming the sender of
    /// each message does not scan every pin.
    pinned_names: HashMap<IdentityKey, String>,
    held: Vec<HeldMessage>,
    outbox: outbox::Outbox,
    name_release: Option<NameReleaseState>,
    /// The record of texts printed whose `unshown` rows are not deleted yet.
    shown_log: ShownLog,
    /// What is kept of past messages (send log, history).
    retention: Retention,
    /// The peers we have written a text to (receipts go only to them).
    correspondents: HashSet<IdentityKey>,
    /// Our MLS groups (`groups`).
    groups: crate::group::GroupBook,
    /// Group uploads the relay has not stored yet, oldest first.
    group_outbox: std::collections::VecDeque<GroupOutboxEntry>,
    is_new: bool,
    imported: bool,
    passphrase: bool,
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
    /// Opens the state in `dir` with the key file `dir/state.key` (made with the
    /// state); see [`AgentState::open_with`].
    pub fn open(
        dir: &Path,
        name: &str,
        initial_opks: usize,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, StateError> {
        Self::open_with(dir, name, initial_opks, &KeySource::key_file_in(dir), rng)
    }

    /// Opens the state in `dir` sealed under the key from `key_source`, creating it
    /// (directory, identity, a signed prekey and `initial_opks` one-time prekeys, in
    /// one transaction) on first start, or importing the JSON state of the earlier
    /// release if the directory holds one (its files are removed once the import
    /// committed). Fails if the stored name is not `name`, if the key does not open the
    /// state ([`StateError::Key`], nothing changed), if the state is corrupt or open to
    /// other users, or if another process has the directory open.
    pub fn open_with(
        dir: &Path,
        name: &str,
        initial_opks: usize,
        key_source: &KeySource,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, StateError> {
        validate_name(name)?;
        create_private_dir(dir)?;
        let lock = lock_dir(dir)?;
        if import_v1::has_v1_state(dir)? {
            // As the earlier release did: a state open to others is refused, not fixed.
            check_private(dir, true)?;
        }
        let mut db = StateDb::open(dir, key_source)?;
        let passphrase = matches!(key_source, KeySource::Passphrase { .. });
        let stored = db.rows().identity()?.is_some();
        let (is_new, imported) = if stored {
            // An import that committed but did not finish removing the old files.
            import_v1::remove_v1_files(dir)?;
            (false, false)
        } else if import_v1::has_v1_state(dir)? {
            import_v1::import(dir, name, &mut db)?;
            (false, true)
        } else {
            import_v1::refuse_orphaned_sessions(dir)?;
            Self::create(&mut db, name, initial_opks, rng)?;
            (true, false)
        };
        let mut state = Self::load(dir, name, lock, db)?;
        state.is_new = is_new;
        state.imported = imported;
        state.passphrase = passphrase;
        Ok(state)
    }

    /// Writes a new identity and its prekeys in one transaction.
    fn create(
        db: &mut StateDb,
        name: &str,
        initial_opks: usize,
        rng: &mut impl CryptoRngCore,
    ) -> Result<(), StateError> {
        let path = db.path().to_path_buf();
        let identity = IdentityKeyPair::generate(rng);
        let prekeys = Prekeys::generate(&identity, initial_opks, rng);
        let seed = identity_seed(&identity, &path)?;
        db.transaction_with(|tx| -> Result<(), StateError> {
            tx.put_identity(name, &seed[..])?;
            prekeys.insert(tx, &path)
        })
    }

    /// Reads the whole state from the database.
    fn load(dir: &Path, name: &str, lock: File, mut db: StateDb) -> Result<Self, StateError> {
        let path = db.path().to_path_buf();
        let rows = db.rows();
        let stored = rows.identity()?.ok_or_else(|| StateError::Corrupt {
            path: path.clone(),
            detail: "no identity".into(),
        })?;
        if stored.name != name {
            return Err(StateError::NameMismatch {
                dir: dir.to_path_buf(),
                stored: stored.name,
                requested: name.to_owned(),
            });
        }
        let seed = key32(&stored.seed, "identity.seed", &path)?;
        let identity = IdentityKeyPair::from_seed(&seed);
        let prekeys = Prekeys::load(&rows, &identity, &path)?;
        let peers = sessions::load_peers(&rows, identity.public(), &path)?;
        let book = trust::load_book(&rows, &path)?;
        let held = trust::load_held(&rows, &path)?;
        let outbox = outbox::load_outbox(&rows, &path)?;
        let correspondents = (rows.correspondents()?.into_iter())
            .map(|peer| values::identity_key(&peer, "correspondents.peer", &path))
            .collect::<Result<HashSet<_>, _>>()?;
        let name_release = stored.name_release.map(|r| NameReleaseState {
            issued_ms: r.issued_ms,
            confirmed: r.confirmed,
        });
        let shown_log = ShownLog::open(dir)?;
        let (groups, group_outbox) = groups::open_book(&mut db, &identity)?;
        let mut state = Self {
            dir: dir.to_path_buf(),
            _lock: lock,
            db,
            name: name.to_owned(),
            identity,
            prekeys,
            peers,
            pinned_names: trust::pinned_names(&book),
            book,
            held,
            outbox,
            name_release,
            shown_log,
            retention: Retention::default(),
            correspondents,
            groups,
            group_outbox,
            is_new: false,
            imported: false,
            passphrase: false,
        };
        // Texts printed before the last run ended are not shown again.
        state.settle_shown()?;
        Ok(state)
    }

    /// True if this `open` created the state (a new identity).
    pub fn is_new(&self) -> bool {
        self.is_new
    }

    /// True if this `open` imported a JSON state of the earlier release.
    pub fn was_imported(&self) -> bool {
        self.imported
    }

    /// True if the state key comes from a passphrase; false if it is the key file
    /// (the state is then protected by file permissions only).
    pub fn passphrase_protected(&self) -> bool {
        self.passphrase
    }

    /// True if a commit is not yet durable against a power loss (group commit,
    /// `StateDb::sync`): nothing that depends on the state may leave the agent until
    /// [`AgentState::sync`] returned.
    pub fn needs_sync(&self) -> bool {
        self.db.needs_sync()
    }

    /// Commits made since the last [`AgentState::sync`] that need it.
    pub fn unsynced_commits(&self) -> usize {
        self.db.unsynced_commits()
    }

    /// Makes every commit so far durable (one `fdatasync`, nothing if none is pending).
    pub fn sync(&mut self) -> Result<(), StateError> {
        Ok(self.db.sync()?)
    }

    /// The identity of a peer we hold a session with, by its 32 bytes: already
    /// validated, so a message from a known peer skips the curve checks of
    /// `IdentityKey::from_bytes` (a scalar multiplication each).
    pub fn known_identity(&self, bytes: &[u8; 32]) -> Option<IdentityKey> {
        self.peers.get_key_value(bytes).map(|(identity, _)| *identity)
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
        let row = release.map(|r| NameReleaseRow {
            issued_ms: r.issued_ms,
            confirmed: r.confirmed,
        });
        self.db.transaction_with(|tx| tx.set_name_release(row))?;
        self.name_release = release;
        Ok(())
    }

    /// Signs a release of our name issued at `issued_ms`.
    pub fn sign_name_release(&self, issued_ms: u64) -> Result<NameRelease, StateError> {
        Ok(NameRelease::sign(&self.identity, &self.name, issued_ms)?)
    }

    /// Makes every later write of this state fail as on a read-only file system, or
    /// writable again (tests of failed commits).
    #[cfg(test)]
    fn set_read_only_for_test(&self, read_only: bool) {
        self.db.set_read_only_for_test(read_only);
    }
}

#[cfg(test)]
mod tests;
