//! [`StoreError`]: every reason the state database cannot be opened, read or written.
//!
//! Each variant names the file and, where there is one, the operation. A write that
//! failed because the disk is full ([`StoreError::DiskFull`]) or the file system is
//! read-only ([`StoreError::ReadOnly`]) left the database as it was (the transaction
//! rolled back) and may succeed later: [`StoreError::is_retryable`] tells them apart.

use std::io;
use std::path::{Path, PathBuf};

use rusqlite::ErrorCode;
use rustix::io::Errno;
use thiserror::Error;

/// Why the state database could not be opened, read or written.
#[derive(Debug, Error)]
pub enum StoreError {
    /// A file system operation (outside SQLite) failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done (`create directory`, `read`, `write`, `set permissions of`, ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// SQLite failed for another reason than a full disk or a read-only file system.
    #[error("cannot {op} in {}: {source}", path.display())]
    Sqlite {
        /// What was being done (`open`, `migrate`, `put session`, ...).
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// The disk (or the file system quota) is full (`SQLITE_FULL`, `ENOSPC`): nothing
    /// was written; retry when space is back.
    #[error("cannot {op} in {}: no space left on device", path.display())]
    DiskFull {
        /// What was being done.
        op: &'static str,
        /// The database or key file.
        path: PathBuf,
    },
    /// The database or its file system cannot be written (`SQLITE_READONLY`, `EROFS`):
    /// nothing was written; retry when it is writable again.
    #[error("cannot {op} in {}: the file or its file system is read-only", path.display())]
    ReadOnly {
        /// What was being done.
        op: &'static str,
        /// The database or key file.
        path: PathBuf,
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
    /// The passphrase or key file does not open this database (its key check fails).
    /// Nothing was changed.
    #[error("wrong passphrase or key file for {}: the state key does not open it", path.display())]
    WrongKey {
        /// The database file.
        path: PathBuf,
    },
    /// The database is sealed with a key file that is missing. Nothing was changed (no
    /// new key file is made for an existing database).
    #[error(
        "{} is sealed with the key file {}, which is missing; restore it or use the passphrase",
        db.display(),
        key_file.display()
    )]
    MissingKeyFile {
        /// The database file.
        db: PathBuf,
        /// The expected key file.
        key_file: PathBuf,
    },
    /// The database was sealed with another kind of key source than the one given.
    #[error("{} is sealed with a {stored}, not a {given}", path.display())]
    KeySourceMismatch {
        /// The database file.
        path: PathBuf,
        /// The kind of key source stored (`passphrase` or `key file`).
        stored: &'static str,
        /// The kind given.
        given: &'static str,
    },
    /// The key file is not a state key file (not exactly 32 bytes).
    #[error("{} is not a state key file: {detail}", path.display())]
    BadKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong (never key bytes).
        detail: String,
    },
    /// The passphrase is empty.
    #[error("the state passphrase is empty")]
    EmptyPassphrase,
    /// The Argon2id parameters are out of bounds (given, or stored in the database).
    #[error("invalid Argon2id parameters: {detail}")]
    InvalidKdfParams {
        /// What is wrong.
        detail: String,
    },
    /// The database was written by a newer release (its schema version is higher than
    /// this release knows). Nothing was changed.
    #[error(
        "{} has schema version {found}, newer than this release supports ({supported}); \
         use a newer release",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its `PRAGMA user_version`.
        found: u32,
        /// The highest version this release knows.
        supported: u32,
    },
    /// The file is an SQLite database of something else (another `application_id`).
    #[error("{} is not an agent state database (application id {application_id:#010x})", path.display())]
    NotAStateDb {
        /// The database file.
        path: PathBuf,
        /// Its `PRAGMA application_id`.
        application_id: i32,
    },
    /// A stored value is malformed, or a sealed value does not open under the right key
    /// (tampered with, or moved from another row).
    #[error("corrupt state database {}: {detail}", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong (table and column; never contents).
        detail: String,
    },
}

impl StoreError {
    /// True for a failed write that may succeed later without any change to the state
    /// (disk full, read-only file system): the caller keeps the message unacknowledged
    /// and retries.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::DiskFull { .. } | Self::ReadOnly { .. })
    }

    /// An SQLite error while doing `op` on the database `path`, classified.
    pub(crate) fn sqlite(path: &Path, op: &'static str, source: rusqlite::Error) -> Self {
        let path = path.to_path_buf();
        match source.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Self::DiskFull { op, path },
            Some(ErrorCode::ReadOnly) => Self::ReadOnly { op, path },
            _ => Self::Sqlite { op, path, source },
        }
    }

    /// An OS error while doing `op` on `path`, classified.
    pub(crate) fn io(path: &Path, op: &'static str, source: io::Error) -> Self {
        let path = path.to_path_buf();
        // By errno: the io::ErrorKind names for these need a newer Rust than the MSRV.
        match Errno::from_io_error(&source) {
            Some(Errno::NOSPC | Errno::DQUOT) => Self::DiskFull { op, path },
            Some(Errno::ROFS) => Self::ReadOnly { op, path },
            _ => Self::Io { op, path, source },
        }
    }

    /// A malformed value in the database `path`.
    pub(crate) fn corrupt(path: &Path, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::ffi;

    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None)
    }

    #[test]
    fn disk_full_and_read_only_are_retryable_and_named() {
        let path = Path::new("/state/state.db");
        let full = StoreError::sqlite(path, "put session", failure(ffi::SQLITE_FULL));
        assert!(matches!(
            full,
            StoreError::DiskFull {
                op: "put session",
                ..
            }
        ));
        assert!(full.is_retryable());
        assert_eq!(
            full.to_string(),
            "cannot put session in /state/state.db: no space left on device"
        );
        let read_only = StoreError::sqlite(path, "commit", failure(ffi::SQLITE_READONLY));
        assert!(matches!(read_only, StoreError::ReadOnly { .. }));
        assert!(read_only.is_retryable());
        let busy = StoreError::sqlite(path, "commit", failure(ffi::SQLITE_BUSY));
        assert!(matches!(busy, StoreError::Sqlite { .. }));
        assert!(!busy.is_retryable());
    }

    #[test]
    fn os_errors_are_classified_too() {
        let path = Path::new("/state/state.key");
        let enospc = io::Error::from_raw_os_error(Errno::NOSPC.raw_os_error());
        assert!(StoreError::io(path, "write", enospc).is_retryable());
        let erofs = io::Error::from_raw_os_error(Errno::ROFS.raw_os_error());
        assert!(matches!(
            StoreError::io(path, "write", erofs),
            StoreError::ReadOnly { op: "write", .. }
        ));
        let other = io::Error::from(io::ErrorKind::NotFound);
        assert!(!StoreError::io(path, "read", other).is_retryable());
    }

    #[test]
    fn insecure_permissions_say_how_to_fix_them() {
        let err = StoreError::InsecurePermissions {
            path: PathBuf::from("/state/state.key"),
            mode: 0o644,
            is_dir: false,
        };
        assert_eq!(
            err.to_string(),
            "/state/state.key is accessible by other users (mode 0644); \
             restrict it with chmod 600 /state/state.key"
        );
    }
}
