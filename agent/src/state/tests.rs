//! Opening, creating and protecting the state.

use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rand_core::OsRng;

use super::files::LOCK_FILE;
use super::test_util::*;
use super::{AgentState, KeySource, StateError};
use crate::store::state_key::KEY_FILE_NAME;
use crate::store::KdfParams;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every file of a state directory with its bytes.
fn raw_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            let bytes = fs::read(&path).expect("read");
            out.push((path, bytes));
        }
    }
    out
}

#[test]
fn creates_owner_only_directories_and_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("nested").join("alice");
    let mut alice = open(&dir, "alice");
    let bob_dir = tmp.path().join("bob");
    let bob = open(&bob_dir, "bob");
    assert!(alice.is_new() && !alice.was_imported() && !alice.passphrase_protected());
    send(&mut alice, &bob, "hi");

    assert_eq!(mode(&dir), 0o700);
    for file in [
        "state.db",
        "state.db-wal",
        "state.shown",
        KEY_FILE_NAME,
        LOCK_FILE,
    ] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    // Nothing else: no JSON files, no temporary files.
    let mut names: Vec<String> = (fs::read_dir(&dir).expect("list"))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "lock",
            "state.db",
            "state.db-shm",
            "state.db-wal",
            "state.key",
            "state.shown"
        ]
    );
}

#[test]
fn reopening_loads_the_same_identity() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = open(tmp.path(), "alice");
    let identity = ik(&first);
    assert!(first.is_new() && first.needs_publish());
    drop(first);
    let again = open(tmp.path(), "alice");
    assert!(!again.is_new());
    assert_eq!(ik(&again), identity);
    assert_eq!(again.name(), "alice");
    assert_eq!(again.one_time_count(), 5);
    assert_eq!(again.bundle().one_time_prekeys.len(), 5);
    assert_eq!(again.bundle().verify(), Ok(()));
}

#[test]
fn refuses_another_name_and_invalid_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    drop(open(tmp.path(), "alice"));
    let err = AgentState::open(tmp.path(), "bob", 5, &mut OsRng).expect_err("wrong name");
    assert!(
        matches!(err, StateError::NameMismatch { ref stored, .. } if stored == "alice"),
        "{err}"
    );
    let err = AgentState::open(tmp.path(), "Alice", 5, &mut OsRng).expect_err("invalid name");
    assert!(matches!(err, StateError::InvalidName(_)));
}

#[test]
fn a_second_process_cannot_open_the_same_state() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let first = open(tmp.path(), "alice");
    let err = AgentState::open(tmp.path(), "alice", 5, &mut OsRng).expect_err("locked");
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    drop(first);
    assert!(AgentState::open(tmp.path(), "alice", 5, &mut OsRng).is_ok());
}

#[test]
fn refuses_state_open_to_other_users() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("alice");
    drop(open(&dir, "alice"));
    let db = dir.join("state.db");
    fs::set_permissions(&db, Permissions::from_mode(0o644)).expect("chmod");
    let err = AgentState::open(&dir, "alice", 5, &mut OsRng).expect_err("insecure");
    assert!(
        matches!(err, StateError::InsecurePermissions { mode: 0o644, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 600"), "{err}");
    fs::set_permissions(&db, Permissions::from_mode(0o600)).expect("chmod");
    fs::set_permissions(&dir, Permissions::from_mode(0o755)).expect("chmod");
    let err = AgentState::open(&dir, "alice", 5, &mut OsRng).expect_err("insecure dir");
    assert!(err.to_string().contains("chmod 700"), "{err}");
}

#[test]
fn a_passphrase_state_needs_the_passphrase_and_a_wrong_one_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("alice");
    let key = |p: &str| KeySource::passphrase(p).with_params(KdfParams::MINIMAL);
    let alice = AgentState::open_with(&dir, "alice", 2, &key("correct horse"), &mut OsRng).expect("create");
    assert!(alice.passphrase_protected());
    let identity = ik(&alice);
    drop(alice);
    let before = raw_files(&dir);
    let err = AgentState::open_with(&dir, "alice", 2, &key("wrong"), &mut OsRng).expect_err("wrong");
    assert!(matches!(err, StateError::Key(_)), "{err}");
    assert!(!err.is_retryable());
    let err = AgentState::open(&dir, "alice", 2, &mut OsRng).expect_err("no key file");
    assert!(matches!(err, StateError::Key(_)), "{err}");
    assert!(!dir.join(KEY_FILE_NAME).exists(), "no key file is made for it");
    let after = raw_files(&dir);
    let db = |files: &[(PathBuf, Vec<u8>)]| files.iter().find(|(p, _)| p.ends_with("state.db")).cloned();
    assert_eq!(db(&before), db(&after));
    let again = AgentState::open_with(&dir, "alice", 2, &key("correct horse"), &mut OsRng).expect("reopen");
    assert_eq!(ik(&again), identity);
}

/// The identity seed, prekey secrets and session keys are sealed: none of them is in
/// the raw bytes of the database or its journal.
#[test]
fn no_secret_is_in_the_raw_database_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("bob");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&dir, "bob");
    let a = ik(&alice);
    for n in 0..3 {
        let m = send(&mut alice, &bob, &format!("secret message {n}"));
        assert_eq!(recv_text(&mut bob, &a, &m), format!("secret message {n}"));
        let r = send(&mut bob, &alice, "reply text");
        assert_eq!(recv_text(&mut alice, &ik(&bob), &r), "reply text");
    }
    let seed = super::values::identity_seed(bob.identity(), Path::new("x")).expect("seed");
    let mut secrets: Vec<(String, Vec<u8>)> = vec![("identity seed".into(), seed.to_vec())];
    let spk = bob.prekeys.store.current_signed().pair().private_key().clone();
    let spk = super::values::private_bytes(&spk, Path::new("x")).expect("spk");
    secrets.push(("signed prekey".into(), spk.to_vec()));
    for (_, private, _) in bob.prekeys.store.one_time_entries() {
        let opk = super::values::private_bytes(private, Path::new("x")).expect("opk");
        secrets.push(("one-time prekey".into(), opk.to_vec()));
    }
    // The session as the store gets it (JSON): its root key bytes as JSON numbers.
    let session = bob.peers.get(&a).expect("session").session.clone();
    let json = serde_json::to_value(&session).expect("json");
    let root = json["root"].to_string();
    secrets.push(("root key (JSON)".into(), root.clone().into_bytes()));
    secrets.push(("message text".into(), b"secret message".to_vec()));
    assert!(root.len() > 64, "{root}");
    for (path, bytes) in raw_files(&dir) {
        for (what, secret) in &secrets {
            assert!(!contains(&bytes, secret), "{what} found in {}", path.display());
        }
    }
}

#[test]
fn orphaned_json_sessions_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("alice");
    fs::create_dir_all(dir.join("sessions")).expect("mkdir");
    fs::set_permissions(&dir, Permissions::from_mode(0o700)).expect("chmod");
    fs::write(
        dir.join("sessions").join(format!("{}.json", "ab".repeat(32))),
        b"{}",
    )
    .expect("write");
    let err = AgentState::open(&dir, "alice", 5, &mut OsRng).expect_err("orphans");
    assert!(matches!(err, StateError::Incomplete { .. }), "{err}");
}

#[test]
fn a_corrupt_row_gives_an_error_naming_the_database() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("alice");
    let mut alice = open(&dir, "alice");
    let bob = open(&tmp.path().join("bob"), "bob");
    send(&mut alice, &bob, "hi");
    drop(alice);
    let conn = rusqlite::Connection::open(dir.join("state.db")).expect("open");
    conn.execute("UPDATE sessions SET state = x'00'", [])
        .expect("tamper");
    drop(conn);
    let err = AgentState::open(&dir, "alice", 5, &mut OsRng).expect_err("corrupt");
    assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("state.db"), "{err}");
}
