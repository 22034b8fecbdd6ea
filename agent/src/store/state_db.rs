//! [`StateDb`]: the agent's state database, `state.db` in the state directory.
//!
//! ```text
//! <state_dir>/        0700
//!   state.db          0600  SQLite, WAL journal, synchronous=NORMAL + StateDb::sync
//!   state.db-wal      0600  (while open)
//!   state.db-shm      0600  (while open)
//!   state.key         0600  the random state key, when no passphrase is used
//! ```
//!
//! - **Sealed at rest**: every secret-bearing column is sealed (`seal`) under the
//!   [`StateKey`], bound to its table and row. A key check (a sealed constant in
//!   `meta`) tells a wrong passphrase or key file apart at open
//!   ([`StoreError::WrongKey`]) before anything is written or migrated.
//! - **One transaction per change**: [`StateDb::transaction`] runs a closure in one
//!   `BEGIN IMMEDIATE` transaction and commits only if it returns `Ok`; an error (or a
//!   panic) rolls everything back. Writes exist only on [`Tx`], so nothing is written
//!   outside a transaction.
//! - **Group commit**: a commit reaches the WAL file before it returns (it survives a
//!   crash of the process: `kill -9`), and becomes durable against a power loss at the
//!   next [`StateDb::sync`] (one `fdatasync` of the WAL for all the commits since the
//!   last one). The caller lets nothing that depends on a commit leave the process (a
//!   frame, a printed event, a removed file) while [`StateDb::needs_sync`] is true: the
//!   agent's commits of one burst of messages share one sync (`agent_actor::outflow`).
//! - **Owner only**: the directory is 0700 and the files 0600; an existing database
//!   whose directory or files other users can access is refused.
//!
//! Reads go through [`Rows`] (from [`StateDb::rows`], or a [`Tx`], which derefs to
//! one); the typed accessors of each table live beside their concept (`identity`,
//! `prekeys`, `sessions`, `pins`, `held`, `outbox`, `send_log`, `history`). The
//! directory lock (one process per state) stays with the caller.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::ops::Deref;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, Transaction, TransactionBehavior};
use zeroize::Zeroizing;

use super::error::StoreError;
use super::key_check::{self, meta_value};
use super::private_files::{check_private, exists, restrict, set_mode, DIR_MODE, FILE_MODE};
use super::schema;
use super::seal::{self, place};
use super::state_key::{KeySource, StateKey};
use super::write_fault::WriteFault;

/// The database file name, in the state directory.
pub const DB_FILE: &str = "state.db";
/// How long a statement waits for a lock held by another connection.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// A 32-byte key or identity.
pub type Key32 = [u8; 32];
/// A 16-byte message id.
pub type MsgId = [u8; 16];

const STATEMENT_CACHE: usize = 64;
/// The prefix of the agent's own keys in `meta`.
const AGENT_META_PREFIX: &str = "agent.";

/// The open state database with its state key.
pub struct StateDb {
    conn: Connection,
    key: StateKey,
    path: PathBuf,
    created: bool,
    /// Refuses writes while a test's control file exists (debug builds only).
    fault: WriteFault,
    /// Commits since the last [`StateDb::sync`] (in the WAL, not yet synced to disk).
    unsynced: usize,
    /// The WAL file, opened for syncing at the first [`StateDb::sync`].
    wal: Option<std::fs::File>,
}

impl std::fmt::Debug for StateDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDb")
            .field("path", &self.path)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl StateDb {
    /// Opens `dir/state.db`, creating the directory (0700), the database (0600) and its
    /// key if there is none yet, then brings the schema up to date.
    ///
    /// With an existing database the key from `source` must pass the key check before
    /// anything is written; the kind of source must be the one the database was made
    /// with. A new database takes `source`'s Argon2id parameters and a fresh salt, or
    /// the key file (made now, unless it exists).
    ///
    /// Errors (nothing changed by any of them): [`StoreError::WrongKey`],
    /// [`StoreError::MissingKeyFile`], [`StoreError::KeySourceMismatch`],
    /// [`StoreError::InsecurePermissions`], [`StoreError::NewerSchema`],
    /// [`StoreError::NotAStateDb`]; and IO / SQLite errors naming the file.
    pub fn open(dir: &Path, source: &KeySource) -> Result<Self, StoreError> {
        let path = dir.join(DB_FILE);
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| StoreError::io(dir, "create directory", e))?;
        if exists(&path)? {
            check_private(dir, true)?;
            for file in db_files(&path) {
                if exists(&file)? {
                    check_private(&file, false)?;
                }
            }
        } else {
            set_mode(dir, DIR_MODE)?;
            create_db_file(&path)?;
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn =
            Connection::open_with_flags(&path, flags).map_err(|e| StoreError::sqlite(&path, "open", e))?;
        configure(&conn, &path)?;
        for file in db_files(&path) {
            restrict(&file)?;
        }

        let version = schema::check(&conn, &path)?;
        // The key is checked before any migration: a wrong key changes nothing.
        let stored = if version == 0 {
            None
        } else {
            key_check::stored(&conn, &path)?
        };
        let (key, created) = match stored {
            Some(stored) => {
                let key = stored.open_key(source, &path)?;
                schema::migrate(&mut conn, &path)?;
                (key, false)
            }
            None => {
                schema::migrate(&mut conn, &path)?;
                (key_check::set_up(&mut conn, source, &path)?, true)
            }
        };
        let mut db = Self {
            conn,
            key,
            path,
            created,
            fault: WriteFault::from_env(),
            // The migrations and the key set-up above committed without a sync.
            unsynced: 1,
            wal: None,
        };
        db.sync()?;
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True if this `open` set the database up (a new state: nothing stored yet).
    pub fn is_new(&self) -> bool {
        self.created
    }

    /// Reads, outside a transaction (each read sees the last commit).
    pub fn rows(&self) -> Rows<'_> {
        Rows {
            conn: &self.conn,
            key: &self.key,
            path: &self.path,
        }
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction: commits if it returns `Ok`, rolls
    /// back if it returns an error or panics. The commit is in the WAL file when this
    /// returns (it survives a crash of the process) and durable against a power loss
    /// after the next [`StateDb::sync`]. A failed commit (disk full) rolls back too
    /// and is returned as [`StoreError::DiskFull`] / [`StoreError::ReadOnly`].
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.transaction_with(f)
    }

    /// As [`StateDb::transaction`], with the caller's error type (any that a
    /// [`StoreError`] converts into): the closure can fail for its own reasons too,
    /// which roll the transaction back the same way.
    pub fn transaction_with<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let value = self.commit(f)?;
        self.unsynced += 1;
        Ok(value)
    }

    /// As [`StateDb::transaction_with`], for bookkeeping whose loss in a power failure
    /// only repeats something harmless: the commit does not make
    /// [`StateDb::needs_sync`] true (it is synced with the next sync all the same).
    pub fn transaction_unsynced<T, E: From<StoreError>>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        self.commit(f)
    }

    /// True if a commit since the last [`StateDb::sync`] is not yet durable against a
    /// power loss: nothing that depends on it may leave the process yet.
    pub fn needs_sync(&self) -> bool {
        self.unsynced > 0
    }

    /// Commits made since the last [`StateDb::sync`] that need it.
    pub fn unsynced_commits(&self) -> usize {
        self.unsynced
    }

    /// Makes every commit so far durable (`fdatasync` of the WAL file; nothing to do if
    /// none is pending). Errors: IO errors naming the WAL file. After a failed sync
    /// the commits may or may not be on disk: the caller must not act on them.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.unsynced == 0 {
            return Ok(());
        }
        let [_, wal_path, _] = db_files(&self.path);
        if self.wal.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .open(&wal_path)
                .map_err(|e| StoreError::io(&wal_path, "open for syncing", e))?;
            self.wal = Some(file);
        }
        if let Some(wal) = &self.wal {
            wal.sync_data()
                .map_err(|e| StoreError::io(&wal_path, "sync", e))?;
        }
        self.unsynced = 0;
        Ok(())
    }

    fn commit<T, E: From<StoreError>>(&mut self, f: impl FnOnce(&Tx<'_>) -> Result<T, E>) -> Result<T, E> {
        self.fault.apply(&self.conn);
        let guard = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| StoreError::sqlite(&self.path, "begin a transaction", e))?;
        let tx = Tx {
            guard,
            rows: Rows {
                conn: &self.conn,
                key: &self.key,
                path: &self.path,
            },
        };
        let value = f(&tx)?;
        tx.guard
            .commit()
            .map_err(|e| StoreError::sqlite(&self.path, "commit", e))?;
        Ok(value)
    }
}

impl Drop for StateDb {
    /// Syncs what is pending (best effort: a caller that must know calls
    /// [`StateDb::sync`] itself).
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

/// Read access to the tables (see the accessors in each table's module).
#[derive(Clone, Copy)]
pub struct Rows<'a> {
    pub(super) conn: &'a Connection,
    key: &'a StateKey,
    pub(super) path: &'a Path,
}

/// An open transaction: the writes, and through `Deref` the reads (which see the
/// transaction's own writes).
pub struct Tx<'a> {
    guard: Transaction<'a>,
    rows: Rows<'a>,
}

impl<'a> Deref for Tx<'a> {
    type Target = Rows<'a>;

    fn deref(&self) -> &Rows<'a> {
        &self.rows
    }
}

impl<'a> Rows<'a> {
    /// Maps an SQLite error of `op` on this database.
    pub(super) fn fail(&self, op: &'static str) -> impl Fn(rusqlite::Error) -> StoreError + 'a {
        let path = self.path;
        move |e| StoreError::sqlite(path, op, e)
    }

    /// A [`StoreError::Corrupt`] of this database.
    pub(super) fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::corrupt(self.path, detail)
    }

    /// Seals `plaintext` for `table` / `row_key`.
    pub(super) fn seal(&self, table: &str, row_key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        seal::seal(self.key, &place(table, row_key), plaintext)
            .map_err(|e| self.corrupt(format!("cannot seal a value for {table}: {e}")))
    }

    /// Opens a value sealed for `table` / `row_key`; one that does not open (altered,
    /// or moved from another row) is [`StoreError::Corrupt`].
    pub(super) fn open(
        &self,
        table: &str,
        row_key: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        seal::open(self.key, &place(table, row_key), sealed)
            .map_err(|e| self.corrupt(format!("sealed value in {table}: {e}")))
    }

    /// A fixed-length blob read from `what` (`table.column`).
    pub(super) fn fixed<const N: usize>(&self, bytes: Vec<u8>, what: &str) -> Result<[u8; N], StoreError> {
        let len = bytes.len();
        bytes
            .try_into()
            .map_err(|_| self.corrupt(format!("{what} is {len} bytes, expected {N}")))
    }

    /// The agent's value stored under `key` with [`Tx::put_meta`].
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        meta_value(self.conn, &format!("{AGENT_META_PREFIX}{key}")).map_err(self.fail("read meta"))
    }
}

impl Tx<'_> {
    /// Stores a small plain (unsealed) value of the agent under `key` (kept apart from
    /// the store's own bookkeeping).
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute(params![format!("{AGENT_META_PREFIX}{key}"), value]))
            .map(|_| ())
            .map_err(self.fail("put meta"))
    }

    /// Deletes the agent's value under `key`; true if it was there.
    pub fn remove_meta(&self, key: &str) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "DELETE FROM meta WHERE key = ?1",
                params![format!("{AGENT_META_PREFIX}{key}")],
            )
            .map(|n| n > 0)
            .map_err(self.fail("remove meta"))
    }
}

/// A time in ms or a sequence number as SQLite stores it (clamped to `i64::MAX`).
pub(super) fn sql_u64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A time in ms or a sequence number as SQLite returned it (negative read as 0).
pub(super) fn u64_of(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A count or bound as SQLite takes it.
pub(super) fn sql_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `a || b`, a row key made of two columns (the first of fixed length).
pub(super) fn row_key(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out
}

fn configure(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let fail = |e| StoreError::sqlite(path, "configure", e);
    conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        let detail = format!("the file system does not support a WAL journal (journal mode {mode})");
        return Err(StoreError::io(path, "configure", io::Error::other(detail)));
    }
    // Commits are synced by `StateDb::sync` (group commit), not one by one.
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(fail)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(fail)?;
    // Deleted rows (used one-time prekeys) are zeroed where that costs no extra IO.
    conn.pragma_update(None, "secure_delete", "FAST").map_err(fail)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// The database file and its WAL and shared-memory files.
fn db_files(path: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [path.to_path_buf(), with("-wal"), with("-shm")]
}

/// Creates an empty database file with mode 0600 (SQLite gives its -wal and -shm files
/// the database file's mode).
fn create_db_file(path: &Path) -> Result<(), StoreError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => set_mode(path, FILE_MODE),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::io(path, "create", e)),
    }
}

#[cfg(test)]
impl StateDb {
    /// The raw connection, for tests that tamper with rows behind the store's back.
    pub(super) fn conn_for_test(&self) -> &Connection {
        &self.conn
    }

    /// Makes every later write fail as on a read-only file system (`query_only`), or
    /// writable again: for tests of failed commits.
    pub(crate) fn set_read_only_for_test(&self, read_only: bool) {
        self.conn
            .pragma_update(None, "query_only", read_only)
            .expect("query_only");
    }
}

/// A database in a fresh temporary directory, sealed with a key file (fast to open).
#[cfg(test)]
pub(super) fn test_db() -> (tempfile::TempDir, StateDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = StateDb::open(dir.path(), &KeySource::key_file_in(dir.path())).expect("open");
    (dir, db)
}

#[cfg(test)]
mod tests;
