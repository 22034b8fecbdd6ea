//! The state directory as files: its owner-only creation and checks, and the lock that
//! keeps one process per state (`flock` on `<state_dir>/lock`). The database itself
//! checks its own files (`crate::store`).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::error::StateError;

/// The lock file, in the state directory.
pub const LOCK_FILE: &str = "lock";
pub(super) const DIR_MODE: u32 = 0o700;
pub(super) const FILE_MODE: u32 = 0o600;
/// Permission bits that give group or others any access.
const OPEN_TO_OTHERS: u32 = 0o077;

/// True if `path` exists (a broken link counts).
pub(super) fn exists(path: &Path) -> Result<bool, StateError> {
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
pub(super) fn create_private_dir(dir: &Path) -> Result<(), StateError> {
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

/// Refuses a directory or file that other users can access.
pub(super) fn check_private(path: &Path, is_dir: bool) -> Result<(), StateError> {
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
pub(super) fn lock_dir(dir: &Path) -> Result<File, StateError> {
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

/// Removes a file if it exists.
pub(super) fn remove_if_present(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io {
            op: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Fsyncs a directory (after files in it were removed or renamed).
pub(super) fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Io {
            op: "sync directory",
            path: dir.to_path_buf(),
            source,
        })
}
