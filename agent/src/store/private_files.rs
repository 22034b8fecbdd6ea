//! Owner-only files and directories: the checks and writes the state database and the
//! key file share (mode 0700 for directories, 0600 for files; anything open to group or
//! others is refused, as ssh refuses such keys).

use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::error::StoreError;

/// Mode of a state directory.
pub(super) const DIR_MODE: u32 = 0o700;
/// Mode of a state file.
pub(super) const FILE_MODE: u32 = 0o600;
/// Permission bits that give group or others any access.
const OPEN_TO_OTHERS: u32 = 0o077;

/// True if `path` exists (a dangling symlink counts).
pub(super) fn exists(path: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(path, "inspect", e)),
    }
}

/// Sets the permission bits of `path`.
pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    fs::set_permissions(path, Permissions::from_mode(mode))
        .map_err(|e| StoreError::io(path, "set permissions of", e))
}

/// Refuses a directory or file that other users can access.
pub(super) fn check_private(path: &Path, is_dir: bool) -> Result<(), StoreError> {
    let meta = fs::metadata(path).map_err(|e| StoreError::io(path, "inspect", e))?;
    refuse_open_to_others(path, &meta, is_dir)
}

/// [`StoreError::InsecurePermissions`] if `meta` (of `path`) gives group or others access.
pub(super) fn refuse_open_to_others(path: &Path, meta: &Metadata, is_dir: bool) -> Result<(), StoreError> {
    let mode = meta.mode() & 0o7777;
    if mode & OPEN_TO_OTHERS != 0 {
        return Err(StoreError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
            is_dir,
        });
    }
    Ok(())
}

/// Sets a file that exists to 0600 if it has other bits.
pub(super) fn restrict(path: &Path) -> Result<(), StoreError> {
    match fs::metadata(path) {
        Ok(meta) if meta.mode() & 0o777 != FILE_MODE => set_mode(path, FILE_MODE),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, "inspect", e)),
    }
}

/// Writes `bytes` to a new file at `path` with mode 0600 and fsyncs it.
pub(super) fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io = |op| move |source| StoreError::io(path, op, source);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(io("create"))?;
    // The umask may have removed bits of 0600; never adds any.
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .map_err(io("set permissions of"))?;
    file.write_all(bytes).map_err(io("write"))?;
    file.sync_all().map_err(io("sync"))
}

/// Fsyncs a directory, so a new entry in it survives a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, "sync", e))
}
