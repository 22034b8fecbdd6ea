//! The relay's data directory: owner-only (mode 0700), and every file the relay writes
//! in it owner-only (0600): the database `relay.db` (SQLite creates its `-wal` and
//! `-shm` beside it with the database's own mode) and `relay-id`.
//!
//! A directory that does not exist is created 0700. One that exists but holds none of
//! the relay's files yet (made by an operator or a provisioning tool) is restricted to
//! 0700. A directory or file of the relay's that group or others may access is
//! **refused**, with its path, its mode and the `chmod` that fixes it, rather than fixed
//! silently: what it holds (which identities write to which, and when) may already have
//! been read, which the operator should know, and a relay that changed the mode of data
//! it was pointed at would also hide a deployment mistake (a wrong `--data-dir`, a
//! directory shared on purpose). The agent treats its state directory the same way.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The database file.
pub const DB_FILE: &str = "relay.db";
/// The relay id (64 hex digits).
pub const RELAY_ID_FILE: &str = "relay-id";
/// The files SQLite keeps beside the database in WAL mode.
pub const DB_COMPANIONS: [&str; 2] = ["relay.db-wal", "relay.db-shm"];

/// Mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the relay writes.
pub const FILE_MODE: u32 = 0o600;

/// Permission bits that give group or others any access.
const OPEN_TO_OTHERS: u32 = 0o077;

/// Why the data directory cannot be used.
#[derive(Debug, Error)]
pub enum DataDirError {
    /// The directory holds the relay's files and group or others may access it.
    #[error(
        "the data directory {path} is open to other users (mode {mode:03o}); restrict it \
         with `chmod 700 {path}`"
    )]
    InsecureDir {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file of the relay's that group or others may access.
    #[error("{path} is open to other users (mode {mode:03o}); restrict it with `chmod 600 {path}`")]
    InsecureFile {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The path exists and is not a directory.
    #[error("the data directory {0} is not a directory")]
    NotADirectory(PathBuf),
    /// Creating, inspecting or restricting a path failed.
    #[error("cannot prepare {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The permission bits of `path`, or `None` if it does not exist.
fn mode_of(path: &Path) -> Result<Option<u32>, DataDirError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.permissions().mode() & 0o777)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_at(path)(err)),
    }
}

/// A checked, owner-only data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// Prepares `path`: creates it 0700 if missing, restricts it to 0700 if it holds
    /// none of the relay's files yet, and otherwise refuses it (or any of the relay's
    /// files in it) if group or others may access it.
    pub fn open(path: &Path) -> Result<Self, DataDirError> {
        let dir = Self {
            path: path.to_path_buf(),
        };
        if !path.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(path)
                .map_err(io_at(path))?;
        }
        let meta = fs::metadata(path).map_err(io_at(path))?;
        if !meta.is_dir() {
            return Err(DataDirError::NotADirectory(path.to_path_buf()));
        }
        let mode = meta.permissions().mode() & 0o777;
        let files = dir.relay_files();
        let mut holds_relay_files = false;
        for file in &files {
            if let Some(file_mode) = mode_of(file)? {
                holds_relay_files = true;
                if file_mode & OPEN_TO_OTHERS != 0 {
                    return Err(DataDirError::InsecureFile {
                        path: file.clone(),
                        mode: file_mode,
                    });
                }
            }
        }
        if mode & OPEN_TO_OTHERS != 0 {
            if holds_relay_files {
                return Err(DataDirError::InsecureDir {
                    path: path.to_path_buf(),
                    mode,
                });
            }
            fs::set_permissions(path, Permissions::from_mode(DIR_MODE)).map_err(io_at(path))?;
        }
        Ok(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.path.join(DB_FILE)
    }

    /// The files whose sizes make up the database's size on disk: the database and its
    /// write-ahead log (the `-shm` index is a fixed, small memory map).
    pub fn db_size_files(&self) -> Vec<PathBuf> {
        vec![self.db_path(), self.path.join(DB_COMPANIONS[0])]
    }

    /// Every file the relay writes here.
    pub fn relay_files(&self) -> Vec<PathBuf> {
        [DB_FILE, DB_COMPANIONS[0], DB_COMPANIONS[1], RELAY_ID_FILE]
            .iter()
            .map(|name| self.path.join(name))
            .collect()
    }

    /// Writes a new owner-only file `name` (0600 from its creation; an existing file is
    /// an error, so nothing the relay writes is ever readable by others in between).
    pub fn write_new_private(&self, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        let path = self.path.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        Ok(path)
    }
}

/// Creates `path` as an empty owner-only file if it does not exist (SQLite takes an
/// empty file for a new database and gives its `-wal` and `-shm` the same mode).
pub fn create_private_file(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn creates_a_missing_directory_owner_only() {
        let root = tempfile::tempdir().expect("tempdir");
        let path = root.path().join("a").join("data");
        let dir = DataDir::open(&path).expect("open");
        assert_eq!(mode(dir.path()), DIR_MODE);
        let id = dir.write_new_private(RELAY_ID_FILE, b"id").expect("write");
        assert_eq!(mode(&id), FILE_MODE);
        assert!(
            dir.write_new_private(RELAY_ID_FILE, b"id").is_err(),
            "never overwritten"
        );
    }

    #[test]
    fn restricts_an_existing_directory_without_relay_files() {
        let root = tempfile::tempdir().expect("tempdir");
        chmod(root.path(), 0o755);
        DataDir::open(root.path()).expect("open");
        assert_eq!(mode(root.path()), DIR_MODE);
    }

    #[test]
    fn refuses_a_directory_or_file_of_the_relay_open_to_others() {
        let root = tempfile::tempdir().expect("tempdir");
        let db = root.path().join(DB_FILE);
        create_private_file(&db).expect("db");
        assert_eq!(mode(&db), FILE_MODE);

        chmod(root.path(), 0o755);
        let err = DataDir::open(root.path()).expect_err("refused");
        assert!(
            matches!(err, DataDirError::InsecureDir { mode: 0o755, .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains(&format!("chmod 700 {}", root.path().display())),
            "{text}"
        );
        assert_eq!(mode(root.path()), 0o755, "not changed behind the operator's back");
        chmod(root.path(), DIR_MODE);

        for name in [DB_FILE, DB_COMPANIONS[0], DB_COMPANIONS[1], RELAY_ID_FILE] {
            let file = root.path().join(name);
            create_private_file(&file).expect("file");
            chmod(&file, 0o644);
            let err = DataDir::open(root.path()).expect_err("refused");
            assert!(
                matches!(&err, DataDirError::InsecureFile { path, mode: 0o644 } if *path == file),
                "{err}"
            );
            assert!(
                err.to_string().contains(&format!("chmod 600 {}", file.display())),
                "{err}"
            );
            chmod(&file, FILE_MODE);
        }
        DataDir::open(root.path()).expect("all private again");
    }

    #[test]
    fn refuses_a_file_in_place_of_the_directory() {
        let root = tempfile::tempdir().expect("tempdir");
        let file = root.path().join("data");
        fs::write(&file, b"").expect("file");
        let err = DataDir::open(&file).expect_err("not a directory");
        assert!(err.to_string().contains(&file.display().to_string()), "{err}");
    }
}
