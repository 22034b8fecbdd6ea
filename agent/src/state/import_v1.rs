//! The one-time import of a state directory written by the earlier release (format
//! version 1: JSON files), on the first start of this release:
//!
//! ```text
//! identity.json  prekeys.json  pins.json  held.json (optional)  outbox.json
//! sessions/<peer-identity-hex>.json
//! ```
//!
//! Every file is read and checked as that release did (versions, owner-only modes,
//! names, each session with the peer its file names), then everything is written to
//! the state database in **one transaction**; the JSON files are removed only after it
//! committed (`identity.json` last). A crash before the commit leaves the JSON state
//! to be imported again; a crash after it leaves files that the next start removes.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use e2ee_protocol::identity::{IdentityKey, IdentityKeyPair};
use e2ee_protocol::keys::PublicKey;
use e2ee_protocol::name_claim::validate_name;
use e2ee_protocol::payload::MESSAGE_ID_LEN;
use e2ee_protocol::prekey::PreKeyStore;
use e2ee_protocol::session::Session;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::StateError;
use super::files::{exists, remove_if_present, sync_dir};
use super::outbox::OutboxEntry;
use super::prekeys::Prekeys;
use super::sessions::{ARCHIVED_SESSIONS, RECEIVED_IDS_KEPT};
use super::trust::{insert_held, sync_book};
use super::values::{identity_seed, session_bytes};
use super::NameReleaseState;
use crate::held::HeldMessage;
use crate::hex_serde;
use crate::pins::{ListedIdentity, Pin, PinBook};
use crate::store::identity::NameReleaseRow;
use crate::store::sessions::IdKind;
use crate::store::StateDb;

/// The format version of the earlier release's JSON files (the only one imported).
pub const STATE_VERSION: u32 = 1;

pub(super) const IDENTITY_FILE: &str = "identity.json";
pub(super) const PREKEYS_FILE: &str = "prekeys.json";
pub(super) const PINS_FILE: &str = "pins.json";
pub(super) const OUTBOX_FILE: &str = "outbox.json";
pub(super) const HELD_FILE: &str = "held.json";
pub(super) const SESSIONS_DIR: &str = "sessions";
const FILES: [&str; 5] = [PREKEYS_FILE, PINS_FILE, OUTBOX_FILE, HELD_FILE, IDENTITY_FILE];
const OPEN_TO_OTHERS: u32 = 0o077;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IdentityFile {
    pub(super) version: u32,
    pub(super) name: String,
    pub(super) identity: IdentityKeyPair,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) name_release: Option<NameReleaseState>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PrekeysFile {
    pub(super) version: u32,
    pub(super) signed_published: bool,
    #[serde(with = "hex_serde::public_keys")]
    pub(super) unpublished: Vec<PublicKey>,
    pub(super) store: PreKeyStore,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SessionFile {
    pub(super) version: u32,
    #[serde(with = "hex_serde::identity")]
    pub(super) peer: IdentityKey,
    #[serde(with = "hex_serde::msg_ids")]
    pub(super) received_ids: VecDeque<[u8; MESSAGE_ID_LEN]>,
    #[serde(default, with = "hex_serde::msg_ids")]
    pub(super) message_ids: VecDeque<[u8; MESSAGE_ID_LEN]>,
    pub(super) session: Session,
    #[serde(default)]
    pub(super) archived: Vec<Session>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PinsFile {
    pub(super) version: u32,
    pub(super) pins: BTreeMap<String, Pin>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) pending: BTreeMap<String, Vec<ListedIdentity>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) rejected: BTreeMap<String, Vec<ListedIdentity>>,
    /// Written by still earlier releases: identities the `block` policy held back,
    /// read as pending changes.
    #[serde(default, skip_serializing)]
    pub(super) blocked: BTreeMap<String, Vec<ListedIdentity>>,
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
pub(super) struct HeldFile {
    pub(super) version: u32,
    pub(super) messages: Vec<HeldMessage>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutboxFile {
    pub(super) version: u32,
    pub(super) entries: Vec<OutboxEntry>,
}

/// True if `dir` holds a JSON state (its `identity.json`).
pub(super) fn has_v1_state(dir: &Path) -> Result<bool, StateError> {
    exists(&dir.join(IDENTITY_FILE))
}

/// Refuses to create a new identity over JSON sessions whose identity is missing.
pub(super) fn refuse_orphaned_sessions(dir: &Path) -> Result<(), StateError> {
    let sessions = dir.join(SESSIONS_DIR);
    if exists(&sessions)? && !session_files(&sessions)?.is_empty() {
        return Err(StateError::Incomplete {
            dir: dir.to_path_buf(),
            detail: format!(
                "{SESSIONS_DIR}/ holds sessions but {IDENTITY_FILE} is missing; \
                 refusing to create a new identity over them"
            ),
        });
    }
    remove_v1_files(dir)
}

/// Removes the JSON state files (after their import committed), `identity.json` last.
pub(super) fn remove_v1_files(dir: &Path) -> Result<(), StateError> {
    let sessions = dir.join(SESSIONS_DIR);
    if exists(&sessions)? {
        for file in session_files(&sessions)? {
            remove_if_present(&file)?;
        }
        // A directory that still holds files not ours is left as it is.
        if fs::remove_dir(&sessions).is_err() && exists(&sessions)? {
            return Ok(());
        }
    }
    if !exists(&dir.join(IDENTITY_FILE))? && !FILES.iter().any(|f| dir.join(f).exists()) {
        return Ok(());
    }
    for name in FILES {
        remove_if_present(&dir.join(format!(".{name}.tmp")))?;
        remove_if_present(&dir.join(name))?;
    }
    sync_dir(dir)
}

/// Imports the JSON state in `dir` into `db` (which holds no identity) in one
/// transaction, then removes the JSON files.
pub(super) fn import(dir: &Path, name: &str, db: &mut StateDb) -> Result<(), StateError> {
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
    let prekeys_path = dir.join(PREKEYS_FILE);
    let prekeys: PrekeysFile = read_json(&prekeys_path)?;
    check_version(&prekeys_path, prekeys.version)?;
    let pins_path = dir.join(PINS_FILE);
    let pins: PinsFile = read_json(&pins_path)?;
    check_version(&pins_path, pins.version)?;
    let book = pins.into_book();
    for pin_name in (book.pins.keys())
        .chain(book.pending.keys())
        .chain(book.rejected.keys())
    {
        validate_name(pin_name).map_err(|e| StateError::Corrupt {
            path: pins_path.clone(),
            detail: format!("pinned name {pin_name:?}: {e}"),
        })?;
    }
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
    let sessions = read_sessions(dir, stored.identity.public())?;

    let path = db.path().to_path_buf();
    let seed = identity_seed(&stored.identity, &path)?;
    let prekeys = Prekeys {
        store: prekeys.store,
        signed_published: prekeys.signed_published,
        unpublished: prekeys.unpublished,
    };
    db.transaction_with(|tx| -> Result<(), StateError> {
        tx.put_identity(name, &seed[..])?;
        if let Some(r) = stored.name_release {
            tx.set_name_release(Some(NameReleaseRow {
                issued_ms: r.issued_ms,
                confirmed: r.confirmed,
            }))?;
        }
        prekeys.insert(tx, &path)?;
        sync_book(tx, None, &book)?;
        for message in &held {
            insert_held(tx, message)?;
        }
        for entry in &outbox.entries {
            tx.outbox_put(&entry.row())?;
        }
        for file in &sessions {
            let peer = file.peer.as_bytes();
            // Oldest first, so the newest gets the highest number.
            for old in file.archived.iter().rev() {
                tx.archive_session(peer, &session_bytes(old, &path)?, ARCHIVED_SESSIONS)?;
            }
            tx.put_session(peer, &session_bytes(&file.session, &path)?)?;
            // A conversation of the earlier release goes on with its receipts.
            tx.add_correspondent(peer, 0)?;
            for id in &file.received_ids {
                tx.record_received(peer, IdKind::Relay, id, RECEIVED_IDS_KEPT)?;
            }
            for id in &file.message_ids {
                tx.record_received(peer, IdKind::Payload, id, RECEIVED_IDS_KEPT)?;
            }
        }
        Ok(())
    })?;
    // The files go only once the import is durable.
    db.sync()?;
    remove_v1_files(dir)
}

/// Reads and checks every session file.
fn read_sessions(dir: &Path, local: &IdentityKey) -> Result<Vec<SessionFile>, StateError> {
    let sessions_dir = dir.join(SESSIONS_DIR);
    if !exists(&sessions_dir)? {
        return Ok(Vec::new());
    }
    super::files::check_private(&sessions_dir, true)?;
    let mut out = Vec::new();
    for path in session_files(&sessions_dir)? {
        let file: SessionFile = read_json(&path)?;
        check_version(&path, file.version)?;
        let corrupt = |detail: &str| StateError::Corrupt {
            path: path.clone(),
            detail: detail.to_owned(),
        };
        let peer_hex = hex::encode(file.peer.as_bytes());
        if path.file_stem().and_then(|s| s.to_str()) != Some(peer_hex.as_str()) {
            return Err(corrupt("file name does not match the peer identity inside"));
        }
        for session in std::iter::once(&file.session).chain(&file.archived) {
            if session.remote_identity() != &file.peer {
                return Err(corrupt("session is with another peer than the file says"));
            }
            if session.local_identity() != local {
                return Err(corrupt("session belongs to another local identity"));
            }
        }
        if file.archived.len() > ARCHIVED_SESSIONS {
            return Err(corrupt("too many archived sessions"));
        }
        if file.received_ids.len() > RECEIVED_IDS_KEPT || file.message_ids.len() > RECEIVED_IDS_KEPT {
            return Err(corrupt("too many received message ids"));
        }
        out.push(file);
    }
    Ok(out)
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
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(".");
        if !name.starts_with('.') && path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        } else if name.starts_with('.') && name.ends_with(".tmp") {
            remove_if_present(&path)?;
        }
    }
    files.sort();
    Ok(files)
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
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes).map_err(io)?;
    serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
