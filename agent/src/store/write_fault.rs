//! `WriteFault`: a debug-build hook that makes the state database refuse writes for a
//! while, for process tests of failed writes (disk full, read-only file system) and of
//! the recovery that follows, without a restart.
//!
//! `E2EE_TEST_READ_ONLY_WHILE=<file>`: while `<file>` exists, every transaction runs
//! with SQLite's `PRAGMA query_only = ON`, so it fails inside SQLite (at `BEGIN
//! IMMEDIATE`) with `SQLITE_READONLY`, the error a read-only file system gives; that
//! goes through the same classification ([`super::StoreError::ReadOnly`], retryable)
//! and roll-back as a real one (a full disk, `SQLITE_FULL`, is classified the same
//! way: `DiskFull`, retryable). Removing the file makes writes work again at the next
//! transaction. The variable is read only in debug builds; a release build never looks
//! at it.

use std::path::PathBuf;

use rusqlite::Connection;

/// The environment variable naming the control file.
pub const ENV: &str = "E2EE_TEST_READ_ONLY_WHILE";

/// The hook's control file and whether writes are refused now.
#[derive(Debug, Default)]
pub(super) struct WriteFault {
    file: Option<PathBuf>,
    refusing: bool,
}

impl WriteFault {
    /// The hook as `E2EE_TEST_READ_ONLY_WHILE` sets it (debug builds), else none.
    pub(super) fn from_env() -> Self {
        let file = if cfg!(debug_assertions) {
            std::env::var_os(ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
        } else {
            None
        };
        Self {
            file,
            refusing: false,
        }
    }

    /// Before a transaction: refuses writes while the control file exists.
    pub(super) fn apply(&mut self, conn: &Connection) {
        let Some(file) = &self.file else {
            return;
        };
        let refuse = file.exists();
        if refuse != self.refusing && conn.pragma_update(None, "query_only", refuse).is_ok() {
            self.refusing = refuse;
        }
    }
}
