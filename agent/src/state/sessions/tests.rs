//! Sessions: encrypt, decrypt, restarts, duplicates, and failed commits.

use e2ee_protocol::message::Message;
use e2ee_protocol::session::Session;
use rand_core::OsRng;

use super::super::test_util::*;
use crate::failure::FailureClass;
use crate::state::{ReceiveError, StateError};

#[test]
fn persist_before_send_never_reuses_a_message_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&tmp.path().join("bob"), "bob");
    let first = send(&mut alice, &bob, "first");
    assert_eq!(counter(&first.wire), 0);

    // Crash right after encrypt returned: the disk image must already hold the
    // advanced chain, so the next message gets the next counter.
    let crash = tmp.path().join("alice-crash");
    copy_dir(&tmp.path().join("alice"), &crash);
    drop(alice);
    let mut alice = open(&crash, "alice");
    let second = send(&mut alice, &bob, "second");
    assert_eq!(counter(&second.wire), 1);
    assert_ne!(first.wire, second.wire);
    // The first message is still in the recovered outbox, to be resent.
    assert_eq!(alice.outbox(), vec![first.clone(), second.clone()]);

    let alice_ik = ik(&alice);
    assert_eq!(recv_text(&mut bob, &alice_ik, &first), "first");
    assert_eq!(recv_text(&mut bob, &alice_ik, &second), "second");
}

#[test]
fn conversation_survives_restarts_on_both_sides() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut alice = open(&alice_dir, "alice");
    let mut bob = open(&bob_dir, "bob");
    let (a, b) = (ik(&alice), ik(&bob));

    let m = send(&mut alice, &bob, "hello bob");
    let incoming = recv(&mut bob, &a, &m).expect("decrypt");
    assert!(incoming.new_session);
    assert_eq!(bob.one_time_count(), 4, "the used one-time prekey is gone");
    let r = send(&mut bob, &alice, "hello alice");
    assert_eq!(recv_text(&mut alice, &b, &r), "hello alice");
    assert_eq!(alice.awaiting_reply(&b), Some(false));

    // Bob restarts mid-conversation.
    drop(bob);
    let mut bob = open(&bob_dir, "bob");
    assert_eq!(bob.one_time_count(), 4, "the consumed prekey stays consumed");
    let m2 = send(&mut alice, &bob, "still there?");
    assert_eq!(recv_text(&mut bob, &a, &m2), "still there?");
    let r2 = send(&mut bob, &alice, "yes");

    // Alice restarts with a message waiting for her.
    drop(alice);
    let mut alice = open(&alice_dir, "alice");
    assert_eq!(recv_text(&mut alice, &b, &r2), "yes");
    let m3 = send(&mut alice, &bob, "good");
    assert!(matches!(Message::decode(&m3.wire), Ok(Message::Normal(_))));
    assert_eq!(recv_text(&mut bob, &a, &m3), "good");
}

#[test]
fn sessions_started_by_both_sides_at_once_still_talk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bob_dir = tmp.path().join("bob");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&bob_dir, "bob");
    let (a, b) = (ik(&alice), ik(&bob));
    // Both send first: two handshakes cross on the relay.
    let from_alice = send(&mut alice, &bob, "hi bob");
    let from_bob = send(&mut bob, &alice, "hi alice");
    assert_eq!(recv_text(&mut bob, &a, &from_alice), "hi bob");
    assert_eq!(recv_text(&mut alice, &b, &from_bob), "hi alice");
    // Both keep talking at once, across a restart, in crossing pairs.
    for round in 0..4 {
        if round == 2 {
            drop(bob);
            bob = open(&bob_dir, "bob");
        }
        let x = send(&mut alice, &bob, &format!("a{round}"));
        let y = send(&mut bob, &alice, &format!("b{round}"));
        assert_eq!(recv_text(&mut bob, &a, &x), format!("a{round}"));
        assert_eq!(recv_text(&mut alice, &b, &y), format!("b{round}"));
    }
    // And in turns.
    for round in 0..3 {
        let x = send(&mut alice, &bob, &format!("turn a{round}"));
        assert_eq!(recv_text(&mut bob, &a, &x), format!("turn a{round}"));
        let y = send(&mut bob, &alice, &format!("turn b{round}"));
        assert_eq!(recv_text(&mut alice, &b, &y), format!("turn b{round}"));
    }
}

#[test]
fn out_of_order_messages_report_gaps_and_late_arrivals() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&tmp.path().join("bob"), "bob");
    let a = ik(&alice);
    let m1 = send(&mut alice, &bob, "one");
    let m2 = send(&mut alice, &bob, "two");
    let m3 = send(&mut alice, &bob, "three");
    let third = recv(&mut bob, &a, &m3).expect("third");
    assert_eq!((third.newly_skipped, third.late), (2, false));
    let first = recv(&mut bob, &a, &m1).expect("first");
    assert_eq!((first.newly_skipped, first.late), (0, true));
    assert!(
        !first.new_session,
        "the session from the third message serves the first"
    );
    assert_eq!(recv_text(&mut bob, &a, &m2), "two");
}

#[test]
fn redelivered_message_ids_are_duplicates_even_after_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let bob_dir = tmp.path().join("bob");
    let mut bob = open(&bob_dir, "bob");
    let a = ik(&alice);
    let m = send(&mut alice, &bob, "once");
    assert_eq!(recv_text(&mut bob, &a, &m), "once");
    assert!(bob.has_received(&a, &m.msg_id));

    let again = failure(recv(&mut bob, &a, &m));
    assert_eq!((again.class, again.redelivery), (FailureClass::Duplicate, true));

    drop(bob);
    let mut bob = open(&bob_dir, "bob");
    let again = failure(recv(&mut bob, &a, &m));
    assert_eq!((again.class, again.redelivery), (FailureClass::Duplicate, true));

    // The same ciphertext under a fresh id is a replay caught by the ratchet.
    let m2 = send(&mut alice, &bob, "twice");
    assert_eq!(recv_text(&mut bob, &a, &m2), "twice");
    let replay = failure(bob.decrypt(&a, new_id(), &m2.wire, &mut OsRng));
    assert_eq!(
        (replay.class, replay.redelivery),
        (FailureClass::Duplicate, false)
    );
}

/// A relay that relabels fresh messages with relay ids already seen cannot make them
/// disappear as "duplicates": the relay id is not authenticated, the payload's is.
#[test]
fn a_fresh_message_under_a_seen_relay_id_is_still_shown() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&tmp.path().join("bob"), "bob");
    let a = ik(&alice);
    let first = send(&mut alice, &bob, "first");
    assert_eq!(recv_text(&mut bob, &a, &first), "first");
    for text in ["second", "third"] {
        let fresh = send(&mut alice, &bob, text);
        let shown = bob
            .decrypt(&a, first.msg_id, &fresh.wire, &mut OsRng)
            .expect("decrypts under a relabelled id");
        assert_eq!(shown.payload.as_text(), Some(text));
    }
    // A true redelivery under the seen id is still quiet.
    let again = failure(recv(&mut bob, &a, &first));
    assert_eq!((again.class, again.redelivery), (FailureClass::Duplicate, true));
}

#[test]
fn tampered_messages_fail_and_leave_the_session_intact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&tmp.path().join("bob"), "bob");
    let a = ik(&alice);
    let m1 = send(&mut alice, &bob, "one");
    assert_eq!(recv_text(&mut bob, &a, &m1), "one");
    let m2 = send(&mut alice, &bob, "two");
    let mut tampered = m2.wire.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let f = failure(bob.decrypt(&a, m2.msg_id, &tampered, &mut OsRng));
    assert_eq!(f.class, FailureClass::Tampered);
    assert!(!bob.has_received(&a, &m2.msg_id), "a failure records no id");
    // The genuine message (same relay id) still decrypts.
    assert_eq!(recv_text(&mut bob, &a, &m2), "two");
    // Garbage is malformed; a message from a stranger has no session.
    let f = failure(bob.decrypt(&a, new_id(), &[0x02, 1, 2], &mut OsRng));
    assert_eq!(f.class, FailureClass::Malformed);
    let mut carol = open(&tmp.path().join("carol"), "carol");
    let r = send(&mut bob, &alice, "reply");
    assert_eq!(recv_text(&mut alice, &ik(&bob), &r), "reply");
    let normal = send(&mut alice, &bob, "normal now");
    let f = failure(recv(&mut carol, &a, &normal));
    assert_eq!(f.class, FailureClass::UnknownSession);
}

#[test]
fn a_payload_that_does_not_parse_is_malformed_and_recorded() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&tmp.path().join("bob"), "bob");
    let mut raw = Session::initiate(alice.identity(), &bob.bundle(), &mut OsRng).expect("initiate");
    let wire = raw.encrypt(b"not a payload", &mut OsRng).expect("encrypt");
    let id = new_id();
    let f = failure(bob.decrypt(&ik(&alice), id, &wire, &mut OsRng));
    assert_eq!((f.class, f.redelivery), (FailureClass::Malformed, false));
    assert!(f.detail.starts_with("payload: "), "{}", f.detail);
    assert!(bob.has_session(&ik(&alice)), "the session is kept");
    let f = failure(bob.decrypt(&ik(&alice), id, &wire, &mut OsRng));
    assert!(f.redelivery);
}

/// A decrypt whose transaction cannot commit (read-only, as on a full disk) returns
/// `ReceiveError::State`, changes nothing in memory or on disk, and the same message
/// decrypts once the store is writable again, without a restart.
#[test]
fn a_decrypt_that_cannot_commit_changes_nothing_and_a_retry_succeeds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bob_dir = tmp.path().join("bob");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&bob_dir, "bob");
    let a = ik(&alice);
    let first = send(&mut alice, &bob, "first, a PreKey message");
    let opks = bob.one_time_count();

    bob.set_read_only_for_test(true);
    match recv(&mut bob, &a, &first) {
        Err(ReceiveError::State(err)) => assert!(err.is_retryable(), "{err}"),
        other => panic!("expected a state error, got {other:?}"),
    }
    assert!(!bob.has_session(&a), "no session in memory");
    assert_eq!(bob.one_time_count(), opks, "the one-time prekey is not consumed");
    assert!(!bob.has_received(&a, &first.msg_id));

    // Nothing on disk either: a restart sees the state before the message.
    drop(bob);
    let mut bob = open(&bob_dir, "bob");
    assert!(!bob.has_session(&a));
    assert_eq!(bob.one_time_count(), opks);

    // Space is back: the same message decrypts, once.
    bob.set_read_only_for_test(true);
    assert!(matches!(recv(&mut bob, &a, &first), Err(ReceiveError::State(_))));
    bob.set_read_only_for_test(false);
    assert_eq!(recv_text(&mut bob, &a, &first), "first, a PreKey message");
    assert_eq!(bob.one_time_count(), opks - 1);
    let again = failure(recv(&mut bob, &a, &first));
    assert!(again.redelivery);

    // A normal message in an established session behaves the same.
    let second = send(&mut alice, &bob, "second");
    bob.set_read_only_for_test(true);
    assert!(matches!(recv(&mut bob, &a, &second), Err(ReceiveError::State(_))));
    bob.set_read_only_for_test(false);
    assert_eq!(recv_text(&mut bob, &a, &second), "second");
    drop(bob);
    let mut bob = open(&bob_dir, "bob");
    assert!(failure(recv(&mut bob, &a, &second)).redelivery);
    let third = send(&mut alice, &bob, "third");
    assert_eq!(recv_text(&mut bob, &a, &third), "third");
}

#[test]
fn an_encrypt_that_cannot_commit_returns_no_ciphertext_and_reuses_no_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&tmp.path().join("bob"), "bob");
    let a = ik(&alice);
    let first = send(&mut alice, &bob, "first");
    alice.set_read_only_for_test(true);
    let err = alice.encrypt(&ik(&bob), &text("lost")).expect_err("read-only");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(alice.outbox(), vec![first.clone()]);
    alice.set_read_only_for_test(false);
    let second = send(&mut alice, &bob, "second");
    assert_eq!(counter(&second.wire), counter(&first.wire) + 1);
    assert_eq!(recv_text(&mut bob, &a, &first), "first");
    assert_eq!(recv_text(&mut bob, &a, &second), "second");
}

#[test]
fn a_failed_start_session_keeps_the_previous_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&tmp.path().join("bob"), "bob");
    let first = send(&mut alice, &bob, "first");
    alice.set_read_only_for_test(true);
    assert!(matches!(
        alice.start_session(&bob.bundle(), &mut OsRng),
        Err(StateError::WriteFailed(_))
    ));
    alice.set_read_only_for_test(false);
    let second = send(&mut alice, &bob, "second");
    assert_eq!(counter(&second.wire), 1, "the same session goes on");
    let a = ik(&alice);
    assert_eq!(recv_text(&mut bob, &a, &first), "first");
    assert_eq!(recv_text(&mut bob, &a, &second), "second");
}

#[test]
fn a_text_committed_but_not_shown_is_returned_after_a_restart_until_shown() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bob_dir = tmp.path().join("bob");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&bob_dir, "bob");
    let a = ik(&alice);
    let first = send(&mut alice, &bob, "first");
    let second = send(&mut alice, &bob, "second");
    let shown = recv(&mut bob, &a, &first).expect("decrypt");
    bob.shown(&a, &shown.payload.message_id).expect("shown");
    assert_eq!(recv_text(&mut bob, &a, &second), "second");
    // (A crash before the rows of what was shown are deleted: the record of "first"
    // keeps it from being shown again.)
    // A crash before "second" was shown: it is there at the next start, once.
    drop(bob);
    let mut bob = open(&bob_dir, "bob");
    let unshown = bob.unshown().expect("read");
    let texts: Vec<_> = (unshown.iter())
        .map(|u| u.payload.as_text().unwrap_or_default())
        .collect();
    assert_eq!(texts, ["second"]);
    assert_eq!(unshown[0].sender, a);
    // Its redelivery is a quiet duplicate, and once shown it is gone.
    assert!(failure(recv(&mut bob, &a, &second)).redelivery);
    bob.shown(&a, &unshown[0].payload.message_id).expect("shown");
    bob.settle_shown().expect("rows deleted");
    assert!(bob.unshown().expect("read").is_empty());
    drop(bob);
    assert!(open(&bob_dir, "bob").unshown().expect("read").is_empty());
}

#[test]
fn rows_of_shown_texts_that_cannot_be_deleted_are_deleted_with_the_next_ones() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&tmp.path().join("bob"), "bob");
    let a = ik(&alice);
    let first = send(&mut alice, &bob, "first");
    let second = send(&mut alice, &bob, "second");
    let one = recv(&mut bob, &a, &first).expect("decrypt").payload.message_id;
    let two = recv(&mut bob, &a, &second).expect("decrypt").payload.message_id;
    bob.set_read_only_for_test(true);
    bob.shown(&a, &one).expect("recorded (not in the database)");
    assert!(bob.settle_shown().expect_err("read-only").is_retryable());
    bob.set_read_only_for_test(false);
    bob.shown(&a, &two).expect("shown");
    bob.settle_shown().expect("settled");
    assert!(bob.unshown().expect("read").is_empty(), "both rows deleted");
}

#[test]
fn sent_and_received_texts_go_to_the_history_and_sent_ones_to_the_send_log() {
    use crate::state::Retention;
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&tmp.path().join("bob"), "bob");
    let (alice_ik, bob_ik) = (ik(&alice), ik(&bob));
    let hello = send(&mut alice, &bob, "hello bob");
    assert_eq!(recv_text(&mut bob, &alice_ik, &hello), "hello bob");
    let history = alice.history(&bob_ik, 10).expect("history");
    assert_eq!(history.len(), 1);
    assert!(history[0].sent);
    assert_eq!(history[0].text, "hello bob");
    let received = bob.history(&alice_ik, 10).expect("history");
    assert_eq!((received.len(), received[0].sent), (1, false));
    assert_eq!(received[0].text, "hello bob");
    let log = alice.send_log(&bob_ik).expect("send log");
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].msg_id, hello.msg_id);

    // Bounded per peer; 0 keeps none.
    alice.set_retention(Retention {
        history_keep: 2,
        send_log_keep: 0,
        ..Retention::default()
    });
    for i in 0..3 {
        send(&mut alice, &bob, &format!("more {i}"));
    }
    let texts: Vec<String> = (alice.history(&bob_ik, 10).expect("history").into_iter())
        .map(|h| h.text)
        .collect();
    assert_eq!(texts, vec!["more 1".to_string(), "more 2".to_string()]);
    assert_eq!(
        alice.send_log(&bob_ik).expect("send log").len(),
        1,
        "nothing new logged"
    );
}

#[test]
fn a_restart_at_the_peers_request_commits_the_session_and_the_resent_texts_together() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let alice_dir = tmp.path().join("alice");
    let mut alice = open(&alice_dir, "alice");
    let mut bob = open(&tmp.path().join("bob"), "bob");
    let (a, b) = (ik(&alice), ik(&bob));
    let m1 = send(&mut alice, &bob, "one");
    assert_eq!(recv_text(&mut bob, &a, &m1), "one");
    let reply = send(&mut bob, &alice, "ack");
    assert_eq!(recv_text(&mut alice, &b, &reply), "ack");
    let m2 = send(&mut alice, &bob, "two");
    let key = match Message::decode(&m2.wire) {
        Ok(message) => message.header().ratchet_key,
        Err(err) => panic!("decode: {err}"),
    };
    assert!(alice.sent_with_ratchet_key(&b, &key));
    // A session started meanwhile (crossing handshakes) archives the one "two" went in,
    // unmarked: a request naming its chain is still honest.
    alice
        .start_session(&bob.bundle(), &mut OsRng)
        .expect("another session");
    assert!(alice.sent_with_ratchet_key(&b, &key), "an archived chain of ours");

    // Bob asked (his copy lost "two"): a new session, with the send log on it.
    let logged: Vec<_> = (alice.send_log(&b).expect("log").iter())
        .map(|l| e2ee_protocol::payload::Payload::decode(&l.payload).expect("payload"))
        .collect();
    assert_eq!(logged.len(), 2);
    let entries = alice
        .restart_session(&bob.bundle(), &mut OsRng, &logged)
        .expect("restart");
    assert_eq!(entries.len(), 2);
    assert!(entries
        .iter()
        .all(|e| !e.text && e.msg_id != m1.msg_id && e.msg_id != m2.msg_id));
    assert!(
        !alice.sent_with_ratchet_key(&b, &key),
        "a replayed request is refused, whichever kept session it names"
    );

    // All of it is on disk: the mark on the replaced session, the entries in the outbox.
    drop(alice);
    let alice = open(&alice_dir, "alice");
    assert!(!alice.sent_with_ratchet_key(&b, &key), "after a restart too");
    let outbox = alice.outbox();
    for entry in &entries {
        assert!(outbox.contains(entry), "{entry:?} in the outbox");
    }
    // Bob reads the resent texts on the new session: "one" again is recognised, "two" shown.
    assert!(matches!(
        recv(&mut bob, &a, &entries[0]).map_err(|e| failure(Err(e))),
        Err(f) if f.redelivery
    ));
    assert_eq!(recv_text(&mut bob, &a, &entries[1]), "two");
}
