//! The key bookkeeping in `meta`: which kind of key source sealed the database, the
//! Argon2id spec of a passphrase, and the key check, a known constant sealed under the
//! state key. Opening the key check tells a wrong passphrase or key file apart
//! ([`StoreError::WrongKey`]) before anything is written.
//!
//! `meta` keys: `store.key_source` (`passphrase` or `key_file`), `store.kdf` (the
//! encoded [`KdfSpec`], passphrase only), `store.key_check` (sealed, place
//! `meta` / `store.key_check`).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::error::StoreError;
use super::kdf::KdfSpec;
use super::private_files::exists;
use super::seal::{self, place, SealError};
use super::state_key::{KeySource, StateKey};

const META_KEY_SOURCE: &str = "store.key_source";
pub(super) const META_KDF: &str = "store.kdf";
const META_KEY_CHECK: &str = "store.key_check";
const SOURCE_PASSPHRASE: &[u8] = b"passphrase";
const SOURCE_KEY_FILE: &[u8] = b"key_file";
/// The constant sealed as the key check.
const KEY_CHECK: &[u8] = b"e2ee-agent state key check v1";

/// The key bookkeeping of a database whose key is set up.
pub(super) struct StoredKey {
    source: Vec<u8>,
    kdf: Option<Vec<u8>>,
    check: Vec<u8>,
}

/// The value of a `meta` key.
pub(super) fn meta_value(conn: &Connection, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")
        .and_then(|mut s| s.query_row([key], |row| row.get(0)).optional())
}

/// The key bookkeeping of `conn` (the database `path`); `None` if its key is not set up
/// yet (a new database, or a crash right after its schema was made).
pub(super) fn stored(conn: &Connection, path: &Path) -> Result<Option<StoredKey>, StoreError> {
    let read = |key| meta_value(conn, key).map_err(|e| StoreError::sqlite(path, "read the key check", e));
    let Some(check) = read(META_KEY_CHECK)? else {
        return Ok(None);
    };
    let source =
        read(META_KEY_SOURCE)?.ok_or_else(|| StoreError::corrupt(path, "key check without key source"))?;
    Ok(Some(StoredKey {
        source,
        kdf: read(META_KDF)?,
        check,
    }))
}

impl StoredKey {
    /// The key of this database from `source` (which must be of the stored kind),
    /// checked against the key check. Writes nothing.
    ///
    /// Errors: [`StoreError::KeySourceMismatch`], [`StoreError::MissingKeyFile`],
    /// [`StoreError::WrongKey`], and those of the key file or the derivation.
    pub(super) fn open_key(&self, source: &KeySource, path: &Path) -> Result<StateKey, StoreError> {
        let stored_kind = match self.source.as_slice() {
            SOURCE_PASSPHRASE => "passphrase",
            SOURCE_KEY_FILE => "key file",
            _ => return Err(StoreError::corrupt(path, "unknown key source")),
        };
        let key = match source {
            KeySource::Passphrase { passphrase, .. } if self.source == SOURCE_PASSPHRASE => {
                let kdf = (self.kdf.as_deref())
                    .ok_or_else(|| StoreError::corrupt(path, "passphrase without KDF spec"))?;
                StateKey::derive(passphrase, &KdfSpec::decode(kdf, path)?)?
            }
            KeySource::KeyFile(key_file) if self.source == SOURCE_KEY_FILE => {
                if !exists(key_file)? {
                    return Err(StoreError::MissingKeyFile {
                        db: path.to_path_buf(),
                        key_file: key_file.clone(),
                    });
                }
                StateKey::load_key_file(key_file)?
            }
            other => {
                return Err(StoreError::KeySourceMismatch {
                    path: path.to_path_buf(),
                    stored: stored_kind,
                    given: other.kind(),
                })
            }
        };
        match seal::open(&key, &place("meta", META_KEY_CHECK.as_bytes()), &self.check) {
            Ok(plain) if plain.as_slice() == KEY_CHECK => Ok(key),
            Ok(_) | Err(SealError::Rejected) => Err(StoreError::WrongKey {
                path: path.to_path_buf(),
            }),
            Err(e) => Err(StoreError::corrupt(path, format!("key check: {e}"))),
        }
    }
}

/// Makes the key of a new database from `source` (a fresh salt with the source's
/// parameters, or the key file, created now unless it exists) and stores its kind, KDF
/// spec and key check in one transaction.
pub(super) fn set_up(conn: &mut Connection, source: &KeySource, path: &Path) -> Result<StateKey, StoreError> {
    let (key, kind, spec) = match source {
        KeySource::Passphrase { passphrase, params } => {
            let spec = KdfSpec::random(*params);
            (
                StateKey::derive(passphrase, &spec)?,
                SOURCE_PASSPHRASE,
                Some(spec),
            )
        }
        KeySource::KeyFile(key_file) => {
            let key = if exists(key_file)? {
                StateKey::load_key_file(key_file)?
            } else {
                StateKey::create_key_file(key_file)?
            };
            (key, SOURCE_KEY_FILE, None)
        }
    };
    let check = seal::seal(&key, &place("meta", META_KEY_CHECK.as_bytes()), KEY_CHECK)
        .map_err(|e| StoreError::corrupt(path, format!("key check: {e}")))?;
    let fail = |e| StoreError::sqlite(path, "store the key check", e);
    let tx = conn.transaction().map_err(fail)?;
    let put = "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)";
    tx.execute(put, params![META_KEY_SOURCE, kind]).map_err(fail)?;
    if let Some(spec) = spec {
        tx.execute(put, params![META_KDF, spec.encode()]).map_err(fail)?;
    }
    tx.execute(put, params![META_KEY_CHECK, check]).map_err(fail)?;
    tx.commit().map_err(fail)?;
    Ok(key)
}
