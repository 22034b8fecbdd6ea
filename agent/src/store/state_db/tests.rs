//! Tests of [`StateDb`]: files and permissions, keys, transactions, failures.

use std::fs::{self, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::super::held::NewHeld;
use super::super::history::Direction;
use super::super::kdf::{KdfParams, KdfSpec};
use super::super::key_check::META_KDF;
use super::super::outbox::OutboxRow;
use super::super::private_files::{set_mode, DIR_MODE};
use super::super::send_log::SendLogBounds;
use super::super::sessions::IdKind;
use super::*;

const PEER: Key32 = [0x9e; 32];

fn passphrase(text: &str) -> KeySource {
    KeySource::passphrase(text).with_params(KdfParams::MINIMAL)
}

/// A temporary directory with mode 0700, as a state directory with a database must be.
fn private_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    set_mode(dir.path(), DIR_MODE).expect("chmod");
    dir
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).map(|m| m.mode() & 0o777).unwrap_or(0)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The bytes of the database and its -wal and -shm files (absent ones empty).
fn raw_files(path: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    db_files(path)
        .into_iter()
        .map(|file| {
            let bytes = fs::read(&file).unwrap_or_default();
            (file, bytes)
        })
        .collect()
}

fn put_session(db: &mut StateDb, state: &[u8]) {
    db.transaction(|tx| tx.put_session(&PEER, state))
        .expect("put session");
}

fn session(db: &StateDb) -> Option<Vec<u8>> {
    db.rows().session(&PEER).expect("read").map(|s| s.to_vec())
}

#[test]
fn creates_an_owner_only_directory_and_files() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("state");
    let mut db = StateDb::open(&dir, &KeySource::key_file_in(&dir)).expect("open");
    assert!(db.is_new());
    put_session(&mut db, b"s");
    assert_eq!(mode(&dir), 0o700);
    for file in db_files(db.path()) {
        assert!(file.exists(), "{}", file.display());
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert_eq!(mode(&dir.join("state.key")), 0o600);

    // A directory made by someone else for a new state is restricted.
    let made = root.path().join("made");
    fs::create_dir(&made).expect("mkdir");
    fs::set_permissions(&made, Permissions::from_mode(0o755)).expect("chmod");
    StateDb::open(&made, &passphrase("pw")).expect("open");
    assert_eq!(mode(&made), 0o700);
    assert!(!made.join("state.key").exists(), "no key file with a passphrase");
}

#[test]
fn reopens_with_its_key_file_and_keeps_what_was_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let source = KeySource::key_file_in(dir.path());
    let mut db = StateDb::open(dir.path(), &source).expect("open");
    put_session(&mut db, b"ratchet v1");
    drop(db);
    let db = StateDb::open(dir.path(), &source).expect("reopen");
    assert!(!db.is_new());
    assert_eq!(session(&db), Some(b"ratchet v1".to_vec()));
}

#[test]
fn a_passphrase_database_reopens_with_the_parameters_stored_in_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut db = StateDb::open(dir.path(), &passphrase("correct horse")).expect("open");
    put_session(&mut db, b"s");
    let spec = (db
        .conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [META_KDF], |r| r.get(0)))
    .map_err(|e| StoreError::sqlite(db.path(), "read", e))
    .and_then(|bytes: Vec<u8>| KdfSpec::decode(&bytes, db.path()))
    .expect("spec");
    assert_eq!(spec.params, KdfParams::MINIMAL);
    drop(db);
    // Given the (expensive) defaults, the stored minimal parameters are used.
    let db = StateDb::open(dir.path(), &KeySource::passphrase("correct horse")).expect("reopen");
    assert_eq!(session(&db), Some(b"s".to_vec()));
}

#[test]
fn a_wrong_passphrase_is_a_clear_error_that_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut db = StateDb::open(dir.path(), &passphrase("right")).expect("open");
    put_session(&mut db, b"s");
    let path = db.path().to_path_buf();
    drop(db);
    let before = raw_files(&path);
    let err = StateDb::open(dir.path(), &passphrase("wrong")).expect_err("must refuse");
    assert!(matches!(&err, StoreError::WrongKey { path: p } if *p == path));
    assert!(err.to_string().contains("wrong passphrase"), "{err}");
    assert_eq!(raw_files(&path), before);
}

#[test]
fn a_database_copied_without_its_key_file_does_not_open() {
    let (from, mut db) = test_db();
    put_session(&mut db, b"s");
    drop(db);
    let to = private_tempdir();
    fs::copy(from.path().join(DB_FILE), to.path().join(DB_FILE)).expect("copy");
    let source = KeySource::key_file_in(to.path());
    let err = StateDb::open(to.path(), &source).expect_err("no key file");
    assert!(matches!(err, StoreError::MissingKeyFile { .. }), "{err}");
    assert!(err.to_string().contains("state.key"), "{err}");
    assert!(
        !to.path().join("state.key").exists(),
        "no key is made for an existing database"
    );
    // Another key file (the thief's own) does not open it either.
    StateKey::create_key_file(&to.path().join("state.key")).expect("key");
    let err = StateDb::open(to.path(), &source).expect_err("other key");
    assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");
}

#[test]
fn the_kind_of_key_source_must_match() {
    let (dir, db) = test_db();
    drop(db);
    let err = StateDb::open(dir.path(), &passphrase("pw")).expect_err("key file db");
    assert!(matches!(
        err,
        StoreError::KeySourceMismatch {
            stored: "key file",
            given: "passphrase",
            ..
        }
    ));
    let other = tempfile::tempdir().expect("tempdir");
    drop(StateDb::open(other.path(), &passphrase("pw")).expect("open"));
    let err = StateDb::open(other.path(), &KeySource::key_file_in(other.path())).expect_err("passphrase db");
    assert!(matches!(
        err,
        StoreError::KeySourceMismatch {
            stored: "passphrase",
            ..
        }
    ));
}

#[test]
fn no_secret_appears_in_the_database_files() {
    let seed: Key32 = std::array::from_fn(|i| 0xa5 ^ (i as u8).wrapping_mul(37));
    let chain_key: Key32 = std::array::from_fn(|i| 0x3c ^ (i as u8).wrapping_mul(101));
    let session_state = format!(
        "{{\"chain_key\":\"{}\",\"raw\":{:?}}}",
        hex::encode(chain_key),
        chain_key
    );
    let mut session_bytes = session_state.into_bytes();
    session_bytes.extend_from_slice(&chain_key);
    let text = b"the plaintext of a very secret message";

    let dir = tempfile::tempdir().expect("tempdir");
    let mut db = StateDb::open(dir.path(), &passphrase("pw")).expect("open");
    db.transaction(|tx| {
        tx.put_identity("alice", &seed)?;
        tx.put_session(&PEER, &session_bytes)?;
        tx.archive_session(&PEER, &session_bytes, 3)?;
        tx.add_one_time_prekey(&[1; 32], &chain_key, None, false)?;
        let bounds = SendLogBounds {
            keep: 10,
            max_age_ms: 1000,
        };
        tx.send_log_push(&PEER, &[2; 16], text, 5, bounds)?;
        tx.history_push(&PEER, Direction::Sent, &[2; 16], text, 5, 10)?;
        tx.put_unshown(&PEER, &[4; 16], text, 0, false)?;
        let held = NewHeld {
            name: "bob",
            sender: &PEER,
            msg_id: &[3; 16],
            wire: text,
            held_ms: 5,
        };
        tx.push_held(held, 10).map(|_| ())
    })
    .expect("write");

    let (seed_hex, chain_key_hex) = (hex::encode(seed), hex::encode(chain_key));
    let secrets: [&[u8]; 5] = [
        &seed,
        seed_hex.as_bytes(),
        &chain_key,
        chain_key_hex.as_bytes(),
        text,
    ];
    let check = |files: &[(PathBuf, Vec<u8>)]| {
        for (file, bytes) in files {
            for secret in secrets {
                assert!(!contains(bytes, secret), "a secret is in {}", file.display());
            }
        }
        // The check can see: the peer identity is stored in the clear.
        assert!(files.iter().any(|(_, bytes)| contains(bytes, &PEER)));
    };
    let open_files = raw_files(db.path());
    assert!(
        open_files.iter().all(|(_, bytes)| !bytes.is_empty()),
        "db, wal and shm exist"
    );
    check(&open_files);
    let path = db.path().to_path_buf();
    drop(db);
    check(&raw_files(&path));
    // Opened with a wrong passphrase: refused, nothing revealed either.
    assert!(matches!(
        StateDb::open(dir.path(), &passphrase("guess")),
        Err(StoreError::WrongKey { .. })
    ));
    check(&raw_files(&path));
}

#[test]
fn a_rolled_back_transaction_leaves_nothing() {
    let (_dir, mut db) = test_db();
    let write_all = |tx: &Tx<'_>| -> Result<(), StoreError> {
        tx.put_session(&PEER, b"advanced")?;
        tx.record_received(&PEER, IdKind::Relay, &[1; 16], 10)?;
        tx.outbox_put(&OutboxRow {
            msg_id: [2; 16],
            recipient: PEER,
            wire: vec![1, 2, 3],
            is_text: true,
            created_ms: 1,
        })?;
        tx.put_meta("x", b"y")
    };
    let err = db.transaction(|tx| {
        write_all(tx)?;
        Err::<(), _>(StoreError::corrupt(tx.path, "the caller gave up"))
    });
    assert!(err.is_err());
    let panicked = catch_unwind(AssertUnwindSafe(|| {
        db.transaction(|tx| -> Result<(), StoreError> {
            write_all(tx)?;
            panic!("crash in the middle");
        })
    }));
    assert!(panicked.is_err());
    assert_eq!(session(&db), None);
    assert!(db
        .rows()
        .received_ids(&PEER, IdKind::Relay)
        .expect("read")
        .is_empty());
    assert!(db.rows().outbox().expect("read").is_empty());
    assert_eq!(db.rows().meta("x").expect("read"), None);
    // And the database still takes transactions.
    db.transaction(write_all).expect("commit");
    assert_eq!(session(&db), Some(b"advanced".to_vec()));
}

#[test]
fn a_full_disk_is_retryable_and_writes_nothing() {
    let (_dir, mut db) = test_db();
    put_session(&mut db, b"before");
    let pages: i64 = (db.conn.query_row("PRAGMA page_count", [], |r| r.get(0))).expect("pages");
    db.conn
        .pragma_update(None, "max_page_count", pages)
        .expect("limit");
    let big = vec![0x42; 256 * 1024];
    let err = db
        .transaction(|tx| {
            tx.record_received(&PEER, IdKind::Relay, &[1; 16], 10)?;
            tx.put_session(&PEER, &big)
        })
        .expect_err("disk full");
    assert!(err.is_retryable(), "{err:?}");
    assert!(
        matches!(
            err,
            StoreError::DiskFull {
                op: "put a session",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("no space left"), "{err}");
    assert_eq!(session(&db), Some(b"before".to_vec()));
    assert!(db
        .rows()
        .received_ids(&PEER, IdKind::Relay)
        .expect("read")
        .is_empty());
    // Space is back: the same write succeeds without reopening.
    db.conn
        .pragma_update(None, "max_page_count", 1_000_000)
        .expect("unlimit");
    put_session(&mut db, &big);
    assert_eq!(session(&db).map(|s| s.len()), Some(big.len()));
}

#[test]
fn refuses_a_database_from_a_newer_release_untouched() {
    let (dir, db) = test_db();
    let path = db.path().to_path_buf();
    drop(db);
    let raw = Connection::open(&path).expect("raw");
    raw.pragma_update(None, "user_version", schema::SCHEMA_VERSION + 1)
        .expect("bump");
    drop(raw);
    let before = raw_files(&path);
    let err = StateDb::open(dir.path(), &KeySource::key_file_in(dir.path())).expect_err("newer");
    assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
    assert_eq!(raw_files(&path), before);
}

#[test]
fn sets_up_an_empty_file_and_refuses_another_applications_database() {
    let dir = private_tempdir();
    create_db_file(&dir.path().join(DB_FILE)).expect("empty file");
    let db = StateDb::open(dir.path(), &KeySource::key_file_in(dir.path())).expect("open");
    assert!(db.is_new());
    assert_eq!(schema::user_version(&db.conn).ok(), Some(schema::SCHEMA_VERSION));

    let other = private_tempdir();
    let path = other.path().join(DB_FILE);
    create_db_file(&path).expect("file");
    Connection::open(&path)
        .and_then(|c| c.execute_batch("CREATE TABLE messages (seq INTEGER PRIMARY KEY)"))
        .expect("relay-like");
    let err = StateDb::open(other.path(), &KeySource::key_file_in(other.path())).expect_err("foreign");
    assert!(matches!(err, StoreError::NotAStateDb { .. }), "{err}");
}

#[test]
fn refuses_a_state_open_to_other_users() {
    let (dir, db) = test_db();
    let path = db.path().to_path_buf();
    drop(db);
    let source = KeySource::key_file_in(dir.path());
    let refused = |file: &Path, file_mode: u32, is_dir: bool| {
        fs::set_permissions(file, Permissions::from_mode(file_mode)).expect("chmod");
        let err = StateDb::open(dir.path(), &source).expect_err("must refuse");
        assert!(
            matches!(&err, StoreError::InsecurePermissions { path: p, is_dir: d, .. } if p == file && *d == is_dir),
            "{err}"
        );
        let fix = if is_dir { "chmod 700" } else { "chmod 600" };
        assert!(err.to_string().contains(fix), "{err}");
        fs::set_permissions(file, Permissions::from_mode(if is_dir { 0o700 } else { 0o600 }))
            .expect("restore");
    };
    refused(dir.path(), 0o755, true);
    refused(&path, 0o644, false);
    let wal = db_files(&path)[1].clone();
    fs::write(&wal, b"").expect("stale wal");
    refused(&wal, 0o640, false);
    refused(&dir.path().join("state.key"), 0o604, false);
    StateDb::open(dir.path(), &source).expect("all private again");
}

#[test]
fn the_agents_meta_values_are_kept_apart_from_the_stores() {
    let (_dir, mut db) = test_db();
    db.transaction(|tx| tx.put_meta("imported", b"json v1"))
        .expect("put");
    assert_eq!(
        db.rows().meta("imported").expect("read"),
        Some(b"json v1".to_vec())
    );
    assert_eq!(db.rows().meta("store.key_check").expect("read"), None);
    let err = db.transaction(|tx| {
        tx.put_meta("store.key_check", b"x")
            .and_then(|()| tx.remove_meta("imported"))
    });
    assert_eq!(err.ok(), Some(true));
    // The real key check is untouched: the database still opens.
    let dir = db.path().parent().map(Path::to_path_buf).expect("dir");
    drop(db);
    StateDb::open(&dir, &KeySource::key_file_in(&dir)).expect("reopen");
}
