//! Trust: pins, pending and rejected identity changes, held messages.

use super::super::test_util::*;
use crate::held::HeldMessage;
use crate::pins::KeyRole;
use crate::state::inspect::StateView;
use crate::state::{Pin, PinOutcome, StateError};

#[test]
fn pins_record_new_identities_and_report_changes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("alice");
    let mut alice = open(&dir, "alice");
    let bob = open(&tmp.path().join("bob"), "bob");
    let mallory = open(&tmp.path().join("mallory"), "mallory");
    let (b, m) = (ik(&bob), ik(&mallory));

    assert_eq!(
        alice.observe_identity("bob", &b, 10).expect("pin"),
        PinOutcome::New
    );
    assert_eq!(
        alice.observe_identity("bob", &b, 20).expect("pin"),
        PinOutcome::Same
    );
    assert_eq!(
        alice.observe_identity("bob", &m, 30).expect("pin"),
        PinOutcome::Changed {
            previous: b,
            verified: false
        }
    );
    assert_eq!(
        alice.pin("bob").map(|p| p.identity),
        Some(b),
        "a change is not applied"
    );
    assert_eq!(alice.name_of(&b).as_deref(), Some("bob"));
    assert_eq!(alice.name_of(&m), None);

    alice.set_verified("bob", true).expect("verify");
    assert!(matches!(
        alice.set_verified("nobody", true),
        Err(StateError::UnknownPeer(_))
    ));
    let mut alice_b = alice;
    send(&mut alice_b, &bob, "hi");
    drop(alice_b);
    let mut alice = open(&dir, "alice");
    assert_eq!(
        alice.pin("bob"),
        Some(&Pin {
            identity: b,
            verified: true,
            first_seen_ms: 10
        })
    );
    assert!(alice.has_session(&b));
    let listed = alice.peer_list();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].verified && listed[0].has_session);

    alice.accept_identity("bob", &m, false, 40).expect("accept");
    assert_eq!(
        alice.pin("bob"),
        Some(&Pin {
            identity: m,
            verified: false,
            first_seen_ms: 40
        })
    );
    assert!(!alice.has_session(&b), "the old identity's session is dropped");
    let view = StateView::read(&dir).expect("view");
    assert!(!view.sessions.contains_key(b.as_bytes()), "and its rows");
    drop(alice);
    let alice = open(&dir, "alice");
    assert_eq!(alice.pin("bob").map(|p| p.identity), Some(m));
    assert!(!alice.has_session(&b));
}

#[test]
fn held_changes_and_their_messages_hold_across_restarts_until_the_user_decides() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("alice");
    let mut alice = open(&dir, "alice");
    let bob = open(&tmp.path().join("bob"), "bob");
    let mut bob2 = open(&tmp.path().join("bob2"), "bob");
    let mut bob3 = open(&tmp.path().join("bob3"), "bob");
    let (b, b2, b3) = (ik(&bob), ik(&bob2), ik(&bob3));
    alice.observe_identity("bob", &b, 10).expect("pin");
    alice.set_verified("bob", true).expect("verify");
    alice.hold_change("bob", &b2).expect("hold");
    alice.hold_change("bob", &b3).expect("hold");
    alice.hold_change("bob", &b3).expect("holding twice is one hold");
    // Their messages are kept undecrypted.
    let from2 = send(&mut bob2, &alice, "from bob2");
    let from3 = send(&mut bob3, &alice, "from bob3");
    for (sender, entry) in [(b2, &from2), (b3, &from3)] {
        let held = HeldMessage {
            name: "bob".into(),
            sender,
            msg_id: entry.msg_id,
            wire: entry.wire.clone(),
            held_ms: 5,
        };
        assert!(alice.hold_message(held.clone()).expect("held"));
        assert!(alice.hold_message(held).expect("held once"));
    }
    drop(alice);

    let mut alice = open(&dir, "alice");
    assert_eq!(alice.pending_changes("bob"), vec![b2, b3]);
    assert_eq!(alice.pending_name_of(&b3).as_deref(), Some("bob"));
    assert_eq!(
        alice.pin("bob").map(|p| (p.identity, p.verified)),
        Some((b, true)),
        "the pin is kept"
    );
    assert_eq!(alice.held_count("bob"), 2);
    let candidates = alice.candidates("bob");
    assert_eq!(
        candidates
            .iter()
            .map(|c| (c.role, c.identity))
            .collect::<Vec<_>>(),
        vec![(KeyRole::Pinned, b), (KeyRole::New, b2), (KeyRole::New, b3)]
    );
    assert!(alice.observe_identity("bob", &b3, 11).expect("observe") == PinOutcome::Pending);

    // Accepting b3: pinned and verified; b2's held message is deleted unread, b3's
    // stays until it is released after decryption.
    alice.accept_identity("bob", &b3, true, 30).expect("accept");
    assert_eq!(
        alice.pin("bob").map(|p| (p.identity, p.verified)),
        Some((b3, true))
    );
    assert!(alice.pending_changes("bob").is_empty());
    assert!(alice.held_from(&b2).is_empty());
    let held = alice.held_from(&b3);
    assert_eq!(held.len(), 1);
    assert_eq!(recv_text(&mut alice, &b3, &from3), "from bob3");
    alice.release_held(&b3, &held[0].msg_id).expect("release");
    drop(alice);
    let alice = open(&dir, "alice");
    assert_eq!(alice.held_count("bob"), 0);
    assert_eq!(alice.pin("bob").map(|p| p.identity), Some(b3));
}

#[test]
fn rejected_changes_are_remembered_and_their_held_messages_deleted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("alice");
    let mut alice = open(&dir, "alice");
    let bob = open(&tmp.path().join("bob"), "bob");
    let mut mallory = open(&tmp.path().join("mallory"), "bob");
    let (b, m) = (ik(&bob), ik(&mallory));
    alice.observe_identity("bob", &b, 10).expect("pin");
    assert!(alice.reject_pending("bob").expect("nothing").is_empty());
    alice.hold_change("bob", &m).expect("hold");
    let entry = send(&mut mallory, &alice, "it is me");
    let held = HeldMessage {
        name: "bob".into(),
        sender: m,
        msg_id: entry.msg_id,
        wire: entry.wire,
        held_ms: 1,
    };
    alice.hold_message(held).expect("held");
    assert_eq!(alice.reject_pending("bob").expect("reject"), vec![m]);
    assert_eq!(alice.held_count("bob"), 0);
    drop(alice);
    let mut alice = open(&dir, "alice");
    assert_eq!(alice.rejected_name_of(&m).as_deref(), Some("bob"));
    assert_eq!(
        alice.observe_identity("bob", &m, 20).expect("observe"),
        PinOutcome::Rejected
    );
    assert_eq!(alice.pin("bob").map(|p| p.identity), Some(b));
}

#[test]
fn safety_numbers_match_on_both_sides() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut alice = open(&tmp.path().join("alice"), "alice");
    let mut bob = open(&tmp.path().join("bob"), "bob");
    assert!(alice.safety_number("bob").is_none());
    alice.observe_identity("bob", &ik(&bob), 1).expect("pin");
    bob.observe_identity("alice", &ik(&alice), 1).expect("pin");
    let from_alice = alice.safety_number("bob").expect("number");
    let from_bob = bob.safety_number("alice").expect("number");
    assert_eq!(from_alice, from_bob);
    assert_eq!(from_alice.digits().len(), 60);
}

#[test]
fn accepting_an_identity_commits_pins_held_messages_and_sessions_together() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("alice");
    let mut alice = open(&dir, "alice");
    let mut bob = open(&tmp.path().join("bob"), "bob");
    let mut bob2 = open(&tmp.path().join("bob2"), "bob");
    let (b, b2) = (ik(&bob), ik(&bob2));
    alice.observe_identity("bob", &b, 10).expect("pin");
    let hi = send(&mut bob, &alice, "hi");
    assert_eq!(recv_text(&mut alice, &b, &hi), "hi");
    alice.hold_change("bob", &b2).expect("hold");
    let entry = send(&mut bob2, &alice, "new phone");
    let held = HeldMessage {
        name: "bob".into(),
        sender: b2,
        msg_id: entry.msg_id,
        wire: entry.wire,
        held_ms: 1,
    };
    assert!(alice.hold_message(held).expect("held"));

    alice.set_read_only_for_test(true);
    let err = alice
        .accept_identity("bob", &b2, true, 20)
        .expect_err("read-only");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(alice.pin("bob").map(|p| p.identity), Some(b), "nothing changed");
    assert!(alice.has_session(&b));
    assert_eq!(alice.pending_changes("bob"), vec![b2]);
    alice.set_read_only_for_test(false);

    alice.accept_identity("bob", &b2, true, 20).expect("accept");
    drop(alice);
    let alice = open(&dir, "alice");
    assert_eq!(
        alice.pin("bob").map(|p| (p.identity, p.verified)),
        Some((b2, true))
    );
    assert!(!alice.has_session(&b), "the replaced identity's session is gone");
    assert_eq!(
        alice.held_from(&b2).len(),
        1,
        "the accepted identity's message stays"
    );
}

#[test]
fn a_forgotten_pending_identity_takes_its_held_messages_and_reject_clears_the_name() {
    use crate::pins::MAX_PENDING_PER_NAME;
    use e2ee_protocol::identity::IdentityKeyPair;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("alice");
    let mut alice = open(&dir, "alice");
    let bob = open(&tmp.path().join("bob"), "bob");
    alice.observe_identity("bob", &ik(&bob), 1).expect("pin");
    let held = |sender, n: u8| HeldMessage {
        name: "bob".into(),
        sender,
        msg_id: [n; 16],
        wire: vec![n; 40],
        held_ms: u64::from(n),
    };
    let first = *IdentityKeyPair::from_seed(&[200; 32]).public();
    alice.hold_change("bob", &first).expect("hold");
    for n in 0..5 {
        assert!(alice.hold_message(held(first, n)).expect("held"));
    }
    // The list is full after MAX_PENDING_PER_NAME more: `first` is forgotten, and
    // its held messages with it, on disk too.
    for seed in 0..MAX_PENDING_PER_NAME as u8 {
        let other = *IdentityKeyPair::from_seed(&[seed; 32]).public();
        alice.hold_change("bob", &other).expect("hold");
    }
    assert!(!alice.pending_changes("bob").contains(&first));
    assert!(alice.held_from(&first).is_empty());
    assert_eq!(alice.held_count("bob"), 0);
    drop(alice);
    let mut alice = open(&dir, "alice");
    assert_eq!(alice.held_count("bob"), 0, "deleted on disk as well");

    // /reject clears every message held for the name.
    let last = alice.pending_changes("bob").last().copied().expect("pending");
    assert!(alice.hold_message(held(last, 9)).expect("held"));
    alice.reject_pending("bob").expect("reject");
    assert_eq!(alice.held_count("bob"), 0);
}
