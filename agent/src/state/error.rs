//! [`StateError`] and [`ReceiveError`]: why the agent state could not be opened, read
//! or changed, and why a received message was not returned.
//!
//! Errors of the state database ([`StoreError`]) keep their kind: a write that may
//! succeed later without any change ([`StateError::WriteFailed`]: disk full, read-only
//! file system), a state key that does not open the database ([`StateError::Key`]), a
//! damaged or foreign database ([`StateError::Corrupt`], [`StateError::Store`]).

use std::io;
use std::path::PathBuf;

use e2ee_protocol::name_claim::NameClaimError;
use e2ee_protocol::payload::PayloadError;
use e2ee_protocol::CryptoError;
use thiserror::Error;

use crate::failure::DecryptFailure;
use crate::store::StoreError;

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
    /// A state file or the database does not parse or contradicts the rest of the
    /// state.
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
    /// A write to the state database failed because the disk is full or the file
    /// system is read-only. Nothing was changed, on disk or in memory: the same
    /// operation may be retried when space is back (the agent keeps a received message
    /// unacknowledged and retries it: `crate::write_retry`).
    #[error(transparent)]
    WriteFailed(StoreError),
    /// The passphrase or key file does not open the state database, is missing, or is
    /// of the wrong kind. Nothing was changed.
    #[error(transparent)]
    Key(StoreError),
    /// Any other failure of the state database (SQLite, a newer schema, another
    /// application's file).
    #[error(transparent)]
    Store(StoreError),
    /// The state directory belongs to an agent of another name.
    #[error("state directory {} belongs to agent {stored:?}, not {requested:?}", dir.display())]
    NameMismatch {
        /// The state directory.
        dir: PathBuf,
        /// The name stored in the state.
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
    /// A group operation or a group delivery failed (docs/PROTOCOL.md 8).
    #[error(transparent)]
    Group(#[from] crate::group::GroupError),
    /// The payload cannot be encoded (too long, not UTF-8).
    #[error("cannot encode payload: {0}")]
    Payload(#[from] PayloadError),
}

impl StateError {
    /// True for a failed write that may succeed later with nothing changed (disk full,
    /// read-only file system).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::WriteFailed(_))
    }
}

impl From<StoreError> for StateError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::DiskFull { .. } | StoreError::ReadOnly { .. } => Self::WriteFailed(err),
            StoreError::WrongKey { .. }
            | StoreError::MissingKeyFile { .. }
            | StoreError::KeySourceMismatch { .. }
            | StoreError::BadKeyFile { .. }
            | StoreError::EmptyPassphrase
            | StoreError::InvalidKdfParams { .. } => Self::Key(err),
            StoreError::Corrupt { path, detail } => Self::Corrupt { path, detail },
            StoreError::InsecurePermissions { path, mode, is_dir } => {
                Self::InsecurePermissions { path, mode, is_dir }
            }
            StoreError::Io { op, path, source } => Self::Io { op, path, source },
            other => Self::Store(other),
        }
    }
}

/// Why [`crate::state::AgentState::decrypt`] did not return a message.
#[derive(Debug, Error)]
pub enum ReceiveError {
    /// The message was not accepted: report it (unless it is a redelivery) and
    /// acknowledge it to the relay, since it will never decrypt.
    #[error("{0}")]
    Failed(#[from] DecryptFailure),
    /// The state could not be saved: do not acknowledge the message; retry it when
    /// the error [`StateError::is_retryable`], else the relay delivers it again after a
    /// reconnect. Nothing was changed.
    #[error(transparent)]
    State(#[from] StateError),
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn store_errors_keep_their_kind() {
        let path = Path::new("/state/state.db").to_path_buf();
        let full = StateError::from(StoreError::DiskFull {
            op: "commit",
            path: path.clone(),
        });
        assert!(full.is_retryable(), "{full}");
        assert!(full.to_string().contains("no space left"), "{full}");
        let wrong = StateError::from(StoreError::WrongKey { path: path.clone() });
        assert!(matches!(wrong, StateError::Key(_)) && !wrong.is_retryable());
        let corrupt = StateError::from(StoreError::Corrupt {
            path,
            detail: "sessions.state".into(),
        });
        assert!(matches!(corrupt, StateError::Corrupt { .. }) && !corrupt.is_retryable());
    }
}
