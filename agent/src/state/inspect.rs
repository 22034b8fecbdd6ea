//! A read-only view of a state directory, for tests and the evidence tools (what a
//! thief with a copy of the directory and its key could read): the identity, the
//! prekeys, the sessions, the pins and the outbox, as library values.
//!
//! It opens the database without the directory lock, so it can read the state of a
//! running agent (SQLite's WAL lets a reader see the last commit); it writes nothing
//! beyond what opening an existing database does (file modes, nothing in the tables).

use std::collections::BTreeMap;
use std::path::Path;

use e2ee_protocol::identity::IdentityKeyPair;
use e2ee_protocol::prekey::PreKeyStore;
use e2ee_protocol::session::Session;

use super::error::StateError;
use super::files::exists;
use super::outbox::{load_outbox, OutboxEntry};
use super::prekeys::Prekeys;
use super::sessions::load_peers;
use super::trust::load_book;
use super::values::key32;
use crate::pins::PinBook;
use crate::store::state_db::DB_FILE;
use crate::store::{KeySource, StateDb};

/// Everything a state database holds, read once.
pub struct StateView {
    /// The agent's name.
    pub name: String,
    /// The identity key pair.
    pub identity: IdentityKeyPair,
    /// The prekey store (signed and one-time prekeys, remembered base keys).
    pub prekeys: PreKeyStore,
    /// Per peer identity: the current session and the archived ones, newest first.
    pub sessions: BTreeMap<[u8; 32], (Session, Vec<Session>)>,
    /// The pins, pending and rejected identities.
    pub book: PinBook,
    /// The unacknowledged sent messages, oldest first.
    pub outbox: Vec<OutboxEntry>,
}

impl std::fmt::Debug for StateView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView")
            .field("name", &self.name)
            .field("identity", self.identity.public())
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl StateView {
    /// Reads the state in `dir` with the key file `dir/state.key`.
    pub fn read(dir: &Path) -> Result<Self, StateError> {
        Self::read_with(dir, &KeySource::key_file_in(dir))
    }

    /// Reads the state in `dir` sealed under the key from `key_source`. Fails if there
    /// is no state database there (nothing is created).
    pub fn read_with(dir: &Path, key_source: &KeySource) -> Result<Self, StateError> {
        let db_path = dir.join(DB_FILE);
        if !exists(&db_path)? {
            return Err(StateError::Incomplete {
                dir: dir.to_path_buf(),
                detail: format!("no {DB_FILE}"),
            });
        }
        let db = StateDb::open(dir, key_source)?;
        let path = db.path().to_path_buf();
        let rows = db.rows();
        let stored = rows.identity()?.ok_or_else(|| StateError::Incomplete {
            dir: dir.to_path_buf(),
            detail: "no identity".into(),
        })?;
        let identity = IdentityKeyPair::from_seed(&*key32(&stored.seed, "identity.seed", &path)?);
        let prekeys = Prekeys::load(&rows, &identity, &path)?.store;
        let sessions = (load_peers(&rows, identity.public(), &path)?.into_iter())
            .map(|(peer, state)| {
                let archived = state.archived.into_iter().map(|(_, s)| s).collect();
                (*peer.as_bytes(), (state.session, archived))
            })
            .collect();
        Ok(Self {
            name: stored.name,
            identity,
            prekeys,
            sessions,
            book: load_book(&rows, &path)?,
            outbox: load_outbox(&rows, &path)?.iter().cloned().collect(),
        })
    }
}
