//! [`StateKey`]: the 32-byte key that seals every secret in the state database, and
//! where it comes from ([`KeySource`]).
//!
//! - **Passphrase**: Argon2id (`kdf`, RFC 9106) over the passphrase with a 16-byte
//!   random salt and parameters ([`KdfParams`]) chosen when the database is created and
//!   stored in it ([`KdfSpec`]), so a later release with other defaults still derives
//!   the same key.
//! - **Key file**: 32 random bytes in an owner-only file (mode 0600, `state.key` in the
//!   state directory by default), created atomically with the database. A key file
//!   that other users can read is refused, as ssh refuses such keys. The state is then
//!   protected by file permissions only: whoever copies the directory with the key
//!   file can open it.
//!
//! The key lives in a zeroizing buffer, has no `Clone`, and its `Debug` prints no
//! key bytes. Whether a key is the right one is decided by the database's key check
//! (`key_check`), not here.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use super::error::StoreError;
use super::kdf::{argon2id, KdfParams, KdfSpec, STATE_KEY_LEN};
use super::private_files::{refuse_open_to_others, sync_dir, write_new_file};

/// The default key file name, in the state directory.
pub const KEY_FILE_NAME: &str = "state.key";

/// The key that seals the state database's secrets (XChaCha20-Poly1305, see `seal`).
pub struct StateKey(Zeroizing<[u8; STATE_KEY_LEN]>);

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKey(..)")
    }
}

impl StateKey {
    /// A fresh random key from the OS generator.
    pub fn random() -> Self {
        let mut key = Zeroizing::new([0u8; STATE_KEY_LEN]);
        OsRng.fill_bytes(&mut key[..]);
        Self(key)
    }

    /// A key from given bytes (tests, vectors).
    pub fn from_bytes(bytes: [u8; STATE_KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Derives the key from `passphrase` with Argon2id (RFC 9106) under `spec`'s salt and
    /// parameters. Takes about as long as the parameters say (see [`KdfParams`]); its
    /// working memory (`spec.params.memory_kib` KiB) is zeroized before it is freed.
    ///
    /// Errors: [`StoreError::EmptyPassphrase`], [`StoreError::InvalidKdfParams`].
    pub fn derive(passphrase: &[u8], spec: &KdfSpec) -> Result<Self, StoreError> {
        argon2id(passphrase, &spec.salt, &spec.params).map(Self)
    }

    /// Reads the key from an owner-only key file of exactly [`STATE_KEY_LEN`] bytes.
    ///
    /// Errors: [`StoreError::InsecurePermissions`] if group or others have any access
    /// (`chmod 600` fixes it), [`StoreError::BadKeyFile`] if it is not 32 bytes,
    /// [`StoreError::Io`] if it cannot be read (including a missing file).
    pub fn load_key_file(path: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::io(path, "read", source);
        let mut file = File::open(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        refuse_open_to_others(path, &meta, false)?;
        if !meta.is_file() {
            return Err(bad_key_file(path, "not a regular file"));
        }
        // One byte more than a key, to tell a longer file apart; read into a fixed
        // zeroizing buffer so no copy of the key is left in freed memory.
        let mut buf = Zeroizing::new([0u8; STATE_KEY_LEN + 1]);
        let mut len = 0;
        while len < buf.len() {
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(e)),
            }
        }
        if len != STATE_KEY_LEN {
            let detail = if len > STATE_KEY_LEN {
                format!("longer than {STATE_KEY_LEN} bytes")
            } else {
                format!("{len} bytes, expected {STATE_KEY_LEN}")
            };
            return Err(bad_key_file(path, detail));
        }
        let mut key = Zeroizing::new([0u8; STATE_KEY_LEN]);
        key.copy_from_slice(&buf[..STATE_KEY_LEN]);
        Ok(Self(key))
    }

    /// Creates a key file at `path` holding a fresh random key, atomically: the key is
    /// written to `.<name>.tmp` beside it (mode 0600, fsynced), linked to `path` (which
    /// must not exist) and the directory fsynced, so `path` is either absent or
    /// complete. If `path` appeared meanwhile, that key is loaded instead.
    pub fn create_key_file(path: &Path) -> Result<Self, StoreError> {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(KEY_FILE_NAME);
        let tmp = dir.join(format!(".{name}.tmp"));
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&tmp, "remove", e)),
        }
        let key = Self::random();
        let written = write_new_file(&tmp, &key.0[..]);
        let linked = written.and_then(|()| match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(StoreError::io(path, "create", e)),
        });
        let removed = fs::remove_file(&tmp).map_err(|e| StoreError::io(&tmp, "remove", e));
        if !linked? {
            removed?;
            return Self::load_key_file(path);
        }
        removed?;
        sync_dir(dir)?;
        Ok(key)
    }

    /// The key bytes, for sealing.
    pub(super) fn bytes(&self) -> &[u8; STATE_KEY_LEN] {
        &self.0
    }
}

fn bad_key_file(path: &Path, detail: impl Into<String>) -> StoreError {
    StoreError::BadKeyFile {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Where the state key comes from when a database is opened.
pub enum KeySource {
    /// Derived from a passphrase with Argon2id. `params` apply only when the database
    /// is created; an existing one uses the parameters stored in it.
    Passphrase {
        /// The passphrase bytes (UTF-8 as typed; not normalized).
        passphrase: Zeroizing<Vec<u8>>,
        /// Argon2id parameters for a new database.
        params: KdfParams,
    },
    /// A random key in an owner-only key file, made with the database if it does not
    /// exist yet.
    KeyFile(PathBuf),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Passphrase { params, .. } => f
                .debug_struct("Passphrase")
                .field("params", params)
                .finish_non_exhaustive(),
            Self::KeyFile(path) => f.debug_tuple("KeyFile").field(path).finish(),
        }
    }
}

impl KeySource {
    /// A passphrase with the [`KdfParams::INTERACTIVE`] parameters.
    pub fn passphrase(passphrase: impl Into<Vec<u8>>) -> Self {
        Self::Passphrase {
            passphrase: Zeroizing::new(passphrase.into()),
            params: KdfParams::INTERACTIVE,
        }
    }

    /// The same source with other Argon2id parameters for a new database (tests use
    /// [`KdfParams::MINIMAL`]); a key file is unchanged.
    pub fn with_params(self, params: KdfParams) -> Self {
        match self {
            Self::Passphrase { passphrase, .. } => Self::Passphrase { passphrase, params },
            other => other,
        }
    }

    /// The key file `state.key` in the state directory `dir`.
    pub fn key_file_in(dir: &Path) -> Self {
        Self::KeyFile(dir.join(KEY_FILE_NAME))
    }

    /// `passphrase` or `key file`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Passphrase { .. } => "passphrase",
            Self::KeyFile(_) => "key file",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).map(|m| m.mode() & 0o777).unwrap_or(0)
    }

    #[test]
    fn key_files_are_created_owner_only_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILE_NAME);
        let made = StateKey::create_key_file(&path).expect("create");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::metadata(&path).map(|m| m.len()).ok(), Some(32));
        assert!(!dir.path().join(".state.key.tmp").exists());
        let read = StateKey::load_key_file(&path).expect("load");
        assert_eq!(made.bytes(), read.bytes());
        // An existing key file is never replaced.
        let again = StateKey::create_key_file(&path).expect("create again");
        assert_eq!(again.bytes(), made.bytes());
    }

    #[test]
    fn refuses_a_key_file_others_can_read_naming_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILE_NAME);
        StateKey::create_key_file(&path).expect("create");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = StateKey::load_key_file(&path).expect_err("must refuse");
        assert!(matches!(err, StoreError::InsecurePermissions { mode: 0o640, .. }));
        let text = err.to_string();
        assert!(
            text.contains("chmod 600") && text.contains(KEY_FILE_NAME),
            "{text}"
        );
    }

    #[test]
    fn refuses_key_files_of_the_wrong_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        for len in [0, 31, 33, 64] {
            let path = dir.path().join(format!("key{len}"));
            write_new_file(&path, &vec![7u8; len]).expect("write");
            assert!(
                matches!(StateKey::load_key_file(&path), Err(StoreError::BadKeyFile { .. })),
                "{len}"
            );
        }
    }

    #[test]
    fn debug_output_shows_no_key_material() {
        let key = StateKey::from_bytes([0xab; 32]);
        assert_eq!(format!("{key:?}"), "StateKey(..)");
        let source = KeySource::passphrase("hunter2").with_params(KdfParams::MINIMAL);
        let text = format!("{source:?}");
        assert!(!text.contains("hunter2") && !text.contains("104"), "{text}");
    }
}
