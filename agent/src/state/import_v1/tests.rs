//! The import of a JSON state of the earlier release.
//!
//! The JSON directories are written by [`write_v1`] with the serde types of that
//! release (kept in `import_v1`), from a state made by this one: the same files, field
//! for field, as the earlier release wrote.

use std::collections::VecDeque;
use std::fs::{self, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use e2ee_protocol::identity::IdentityKeyPair;
use e2ee_protocol::message::Message;
use rand_core::OsRng;
use serde::Serialize;

use super::*;
use crate::state::test_util::*;
use crate::state::AgentState;

fn write_file(dir: &Path, name: &str, value: &impl Serialize) {
    let path = dir.join(name);
    fs::write(&path, serde_json::to_vec(value).expect("json")).expect("write");
    fs::set_permissions(&path, Permissions::from_mode(0o600)).expect("chmod");
}

/// Writes `state` as the earlier release's JSON files into `dir` (a new directory).
fn write_v1(state: &AgentState, dir: &Path) {
    let sessions = dir.join(SESSIONS_DIR);
    fs::create_dir_all(&sessions).expect("mkdir");
    for d in [dir, &sessions] {
        fs::set_permissions(d, Permissions::from_mode(0o700)).expect("chmod");
    }
    let identity = IdentityFile {
        version: STATE_VERSION,
        name: state.name.clone(),
        identity: state.identity.clone(),
        name_release: state.name_release,
    };
    write_file(dir, IDENTITY_FILE, &identity);
    let prekeys = PrekeysFile {
        version: STATE_VERSION,
        signed_published: state.prekeys.signed_published,
        unpublished: state.prekeys.unpublished.clone(),
        store: state.prekeys.store.clone(),
    };
    write_file(dir, PREKEYS_FILE, &prekeys);
    let pins = PinsFile {
        version: STATE_VERSION,
        pins: state.book.pins.clone(),
        pending: state.book.pending.clone(),
        rejected: state.book.rejected.clone(),
        blocked: Default::default(),
    };
    write_file(dir, PINS_FILE, &pins);
    let held = HeldFile {
        version: STATE_VERSION,
        messages: state.held.clone(),
    };
    write_file(dir, HELD_FILE, &held);
    let outbox = OutboxFile {
        version: STATE_VERSION,
        entries: state.outbox(),
    };
    write_file(dir, OUTBOX_FILE, &outbox);
    for (peer, p) in &state.peers {
        let ids = |kind| -> VecDeque<[u8; 16]> {
            (state.db.rows().received_ids(peer.as_bytes(), kind))
                .expect("ids")
                .into_iter()
                .collect()
        };
        let file = SessionFile {
            version: STATE_VERSION,
            peer: *peer,
            received_ids: ids(IdKind::Relay),
            message_ids: ids(IdKind::Payload),
            session: p.session.clone(),
            archived: p.archived.iter().map(|(_, s)| s.clone()).collect(),
        };
        write_file(
            &sessions,
            &format!("{}.json", hex::encode(peer.as_bytes())),
            &file,
        );
    }
}

/// A JSON state of `name` mid-conversation: `(tmp, json dir, the peer's state)`.
fn v1_mid_conversation() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    AgentState,
    Vec<OutboxEntry>,
) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&tmp.path().join("bob-v2"), "bob");
    let a = ik(&alice);
    bob.observe_identity("alice", &a, 5).expect("pin");
    let mut seen = Vec::new();
    for n in 0..3 {
        let m = send(&mut alice, &bob, &format!("hello {n}"));
        assert_eq!(recv_text(&mut bob, &a, &m), format!("hello {n}"));
        seen.push(m);
        let r = send(&mut bob, &alice, &format!("reply {n}"));
        assert_eq!(recv_text(&mut alice, &ik(&bob), &r), format!("reply {n}"));
    }
    // Sent messages the relay has not acknowledged (none was).
    send(&mut bob, &alice, "unacknowledged");
    let dir = tmp.path().join("bob");
    write_v1(&bob, &dir);
    drop(bob);
    (tmp, dir, alice, seen)
}

#[test]
fn a_json_state_mid_conversation_is_imported_and_the_conversation_goes_on() {
    let (_tmp, dir, mut alice, seen) = v1_mid_conversation();
    let a = ik(&alice);
    let mut bob = open(&dir, "bob");
    assert!(bob.was_imported() && !bob.is_new());
    for name in [
        IDENTITY_FILE,
        PREKEYS_FILE,
        PINS_FILE,
        HELD_FILE,
        OUTBOX_FILE,
        SESSIONS_DIR,
    ] {
        assert!(!dir.join(name).exists(), "{name} removed after the import");
    }
    assert_eq!(bob.pin("alice").map(|p| p.identity), Some(a));
    assert_eq!(
        bob.outbox().len(),
        4,
        "three replies and one more, none acknowledged"
    );
    assert_eq!(bob.one_time_count(), 4);
    // Redeliveries of what was shown before the import are still duplicates.
    for m in &seen {
        assert!(failure(recv(&mut bob, &a, m)).redelivery);
    }
    // No new handshake: both sides go on with Normal messages.
    let m = send(&mut alice, &bob, "after the import");
    assert!(matches!(Message::decode(&m.wire), Ok(Message::Normal(_))));
    let incoming = recv(&mut bob, &a, &m).expect("decrypt");
    assert!(!incoming.new_session);
    assert_eq!(incoming.payload.as_text(), Some("after the import"));
    let r = send(&mut bob, &alice, "still here");
    assert!(matches!(Message::decode(&r.wire), Ok(Message::Normal(_))));
    assert_eq!(recv_text(&mut alice, &ik(&bob), &r), "still here");
    // And after a restart of the imported state.
    drop(bob);
    let mut bob = open(&dir, "bob");
    assert!(!bob.was_imported());
    let m = send(&mut alice, &bob, "and again");
    assert_eq!(recv_text(&mut bob, &a, &m), "and again");
}

#[test]
fn a_failed_import_keeps_the_json_files_and_a_later_one_succeeds() {
    let (_tmp, dir, alice, _) = v1_mid_conversation();
    let session = dir
        .join(SESSIONS_DIR)
        .join(format!("{}.json", hex::encode(ik(&alice).as_bytes())));
    let good = fs::read(&session).expect("read");
    fs::write(&session, b"{not json").expect("corrupt");
    let err = AgentState::open(&dir, "bob", 5, &mut OsRng).expect_err("corrupt");
    assert!(err.to_string().contains(&*session.to_string_lossy()), "{err}");
    assert!(dir.join(IDENTITY_FILE).exists() && dir.join(PREKEYS_FILE).exists());
    fs::write(&session, good).expect("restore");
    let bob = open(&dir, "bob");
    assert!(bob.was_imported() && bob.has_session(&ik(&alice)));
}

#[test]
fn json_files_left_by_a_crash_after_the_import_committed_are_removed() {
    let (_tmp, dir, alice, _) = v1_mid_conversation();
    let saved = fs::read(dir.join(IDENTITY_FILE)).expect("read");
    let bob = open(&dir, "bob");
    let identity = ik(&bob);
    drop(bob);
    fs::write(dir.join(IDENTITY_FILE), saved).expect("a leftover");
    let bob = open(&dir, "bob");
    assert!(!bob.was_imported(), "not imported twice");
    assert_eq!(ik(&bob), identity);
    assert!(bob.has_session(&ik(&alice)));
    assert!(!dir.join(IDENTITY_FILE).exists());
}

#[test]
fn corrupt_json_files_give_an_error_naming_the_file() {
    let (_tmp, dir, alice, _) = v1_mid_conversation();
    let session = dir
        .join(SESSIONS_DIR)
        .join(format!("{}.json", hex::encode(ik(&alice).as_bytes())));
    let cases: [(&Path, &[u8]); 5] = [
        (&dir.join(PINS_FILE), b"{not json"),
        (&dir.join(IDENTITY_FILE), b"{\"version\":1,\"name\":\"bob\"}"),
        (&dir.join(PREKEYS_FILE), b""),
        (&dir.join(OUTBOX_FILE), b"{\"version\":2,\"entries\":[]}"),
        (
            &session,
            b"{\"version\":1,\"peer\":\"zz\",\"received_ids\":[],\"session\":{}}",
        ),
    ];
    for (path, bytes) in cases {
        let good = fs::read(path).expect("read");
        fs::write(path, bytes).expect("corrupt");
        let err = AgentState::open(&dir, "bob", 5, &mut OsRng).expect_err("corrupt");
        assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        let shown = err.to_string();
        assert!(shown.contains(&*path.to_string_lossy()), "{shown}");
        fs::write(path, good).expect("restore");
    }
    // A session renamed to the wrong peer is caught too.
    let wrong = dir.join(SESSIONS_DIR).join(format!("{}.json", "ab".repeat(32)));
    fs::rename(&session, &wrong).expect("rename");
    let err = AgentState::open(&dir, "bob", 5, &mut OsRng).expect_err("mismatch");
    assert!(err.to_string().contains("does not match"), "{err}");
    fs::rename(&wrong, &session).expect("rename back");
    let err = AgentState::open(&dir, "alice", 5, &mut OsRng).expect_err("another name");
    assert!(matches!(err, StateError::NameMismatch { .. }), "{err}");
    assert!(AgentState::open(&dir, "bob", 5, &mut OsRng).is_ok());
}

#[test]
fn pins_written_by_an_earlier_release_read_blocked_identities_as_pending() {
    let (_tmp, dir, _alice, _) = v1_mid_conversation();
    let b = *IdentityKeyPair::from_seed(&[1; 32]).public();
    let b2 = *IdentityKeyPair::from_seed(&[2; 32]).public();
    let old = format!(
        "{{\"version\":1,\"pins\":{{\"carol\":{{\"identity\":\"{}\",\"verified\":true,\"first_seen_ms\":3}}}},\
         \"blocked\":{{\"carol\":[\"{}\"]}}}}",
        hex::encode(b.as_bytes()),
        hex::encode(b2.as_bytes())
    );
    fs::write(dir.join(PINS_FILE), old).expect("write");
    fs::remove_file(dir.join(HELD_FILE)).expect("an older state has no held.json");
    let bob = open(&dir, "bob");
    assert_eq!(bob.pending_changes("carol"), vec![b2]);
    assert_eq!(
        bob.pin("carol").map(|p| (p.identity, p.verified)),
        Some((b, true))
    );
}

#[test]
fn a_json_state_open_to_other_users_is_refused_not_imported() {
    let (_tmp, dir, _alice, _) = v1_mid_conversation();
    fs::set_permissions(&dir, Permissions::from_mode(0o755)).expect("chmod");
    let err = AgentState::open(&dir, "bob", 5, &mut OsRng).expect_err("insecure");
    assert!(err.to_string().contains("chmod 700"), "{err}");
    fs::set_permissions(&dir, Permissions::from_mode(0o700)).expect("chmod");
    fs::set_permissions(dir.join(PINS_FILE), Permissions::from_mode(0o644)).expect("chmod");
    let err = AgentState::open(&dir, "bob", 5, &mut OsRng).expect_err("insecure file");
    assert!(
        matches!(err, StateError::InsecurePermissions { mode: 0o644, .. }),
        "{err}"
    );
    assert!(dir.join(IDENTITY_FILE).exists(), "nothing imported");
}
