//! Property and behaviour tests of the Double Ratchet session through the public API:
//! out-of-order delivery, duplicates, tampering, skip limits, eviction, persistence.

use e2ee_protocol::identity::{IdentityKey, IdentityKeyPair};
use e2ee_protocol::message::Message;
use e2ee_protocol::prekey::PreKeyStore;
use e2ee_protocol::session::{receive, Received, Session};
use e2ee_protocol::session_reset::ResetReason;
use e2ee_protocol::CryptoError;
use proptest::prelude::*;
use rand_core::OsRng;

/// One side of a conversation: identity, prekeys and the session with the other side.
struct Party {
    identity: IdentityKeyPair,
    prekeys: PreKeyStore,
    session: Option<Session>,
}

impl Party {
    fn new() -> Self {
        let identity = IdentityKeyPair::generate(&mut OsRng);
        let prekeys = PreKeyStore::generate(&identity, 3, &mut OsRng);
        Self {
            identity,
            prekeys,
            session: None,
        }
    }

    fn public(&self) -> IdentityKey {
        *self.identity.public()
    }

    fn send(&mut self, text: &[u8]) -> Vec<u8> {
        self.session
            .as_mut()
            .expect("a session")
            .encrypt(text, &mut OsRng)
            .expect("encrypt")
    }

    fn receive(&mut self, from: &IdentityKey, bytes: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let Received {
            decrypted,
            new_session,
        } = receive(
            self.session.as_mut(),
            &self.identity,
            &mut self.prekeys,
            from,
            bytes,
            &mut OsRng,
        )?;
        if let Some(session) = new_session {
            self.session = Some(session);
        }
        Ok(decrypted.plaintext)
    }

    fn snapshot(&self) -> String {
        serde_json::to_string(&(&self.session, &self.prekeys)).expect("serialize")
    }
}

/// Alice with a session to Bob (Bob has none yet).
fn pair() -> (Party, Party) {
    let mut alice = Party::new();
    let bob = Party::new();
    let bundle = bob.prekeys.bundle(&bob.public());
    alice.session = Some(
        Session::initiate(
            &alice.identity,
            &bundle.with_one_time_prekey(bundle.one_time_prekeys.first().copied()),
            &mut OsRng,
        )
        .expect("initiate"),
    );
    (alice, bob)
}

/// Both sides established: Alice sent one message, Bob read it and replied, Alice read it.
fn established() -> (Party, Party) {
    let (mut alice, mut bob) = pair();
    let (a, b) = (alice.public(), bob.public());
    let m = alice.send(b"hello");
    assert_eq!(bob.receive(&a, &m).expect("first"), b"hello");
    let r = bob.send(b"hi");
    assert_eq!(alice.receive(&b, &r).expect("reply"), b"hi");
    (alice, bob)
}

#[derive(Debug, Clone)]
struct Sent {
    from_alice: bool,
    text: Vec<u8>,
    wire: Vec<u8>,
}

/// Runs `turns` alternating batches; after each batch one message of it (chosen by
/// `firsts`) is delivered at once so the next batch carries a new ratchet key. Returns
/// the parties and every message not yet delivered.
fn conversation(batches: &[usize], firsts: &[usize]) -> (Party, Party, Vec<Sent>) {
    let (mut alice, mut bob) = pair();
    let (a, b) = (alice.public(), bob.public());
    let mut pending = Vec::new();
    for (turn, &size) in batches.iter().enumerate() {
        let from_alice = turn % 2 == 0;
        let mut batch: Vec<Sent> = (0..size)
            .map(|i| {
                let text = format!("turn {turn} message {i}").into_bytes();
                let sender = if from_alice { &mut alice } else { &mut bob };
                let wire = sender.send(&text);
                Sent {
                    from_alice,
                    text,
                    wire,
                }
            })
            .collect();
        let first = batch.remove(firsts[turn] % size);
        let (receiver, from) = if from_alice {
            (&mut bob, &a)
        } else {
            (&mut alice, &b)
        };
        assert_eq!(
            receiver.receive(from, &first.wire).expect("first of batch"),
            first.text
        );
        pending.extend(batch);
    }
    (alice, bob, pending)
}

fn deliver(alice: &mut Party, bob: &mut Party, m: &Sent) -> Result<Vec<u8>, CryptoError> {
    let (a, b) = (alice.public(), bob.public());
    if m.from_alice {
        bob.receive(&a, &m.wire)
    } else {
        alice.receive(&b, &m.wire)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_arrival_order_decrypts_each_exactly_once(
        batches in prop::collection::vec(1usize..10, 2..7),
        firsts in prop::collection::vec(any::<usize>(), 7),
        order in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        let (mut alice, mut bob, mut pending) = conversation(&batches, &firsts);
        // A permutation derived from the generated seed.
        let mut state = seed | 1;
        for i in (1..pending.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            let j = (state % (i as u64 + 1)) as usize;
            pending.swap(i, j);
        }
        for m in &pending {
            prop_assert_eq!(deliver(&mut alice, &mut bob, m).expect("decrypts"), m.text.clone());
        }
        if !pending.is_empty() {
            let again = &pending[order.index(pending.len())];
            let duplicate = matches!(
                deliver(&mut alice, &mut bob, again),
                Err(CryptoError::DuplicateOrTooOld { .. })
            );
            prop_assert!(duplicate, "a second delivery is rejected as a duplicate");
        }
    }

    #[test]
    fn flipping_any_bit_is_rejected_and_changes_nothing(
        batches in prop::collection::vec(1usize..5, 2..5),
        firsts in prop::collection::vec(any::<usize>(), 5),
        pick in any::<prop::sample::Index>(),
        bit in any::<prop::sample::Index>(),
    ) {
        let (mut alice, mut bob, pending) = conversation(&batches, &firsts);
        prop_assume!(!pending.is_empty());
        let genuine = &pending[pick.index(pending.len())];
        let mut tampered = genuine.clone();
        let bit = bit.index(tampered.wire.len() * 8);
        tampered.wire[bit / 8] ^= 1 << (bit % 8);
        let before = (alice.snapshot(), bob.snapshot());
        prop_assert!(deliver(&mut alice, &mut bob, &tampered).is_err());
        prop_assert_eq!(&before, &(alice.snapshot(), bob.snapshot()));
        prop_assert_eq!(deliver(&mut alice, &mut bob, genuine).expect("genuine still decrypts"), genuine.text.clone());
    }
}

#[test]
fn tampered_first_message_creates_no_session_and_keeps_the_one_time_prekey() {
    let (mut alice, mut bob) = pair();
    let a = alice.public();
    let wire = alice.send(b"first");
    let opks = bob.prekeys.one_time_count();
    for bit in [8 * 40, 8 * 70, wire.len() * 8 - 1] {
        let mut bad = wire.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(bob.receive(&a, &bad).is_err());
        assert!(bob.session.is_none());
        assert_eq!(bob.prekeys.one_time_count(), opks);
    }
    assert_eq!(bob.receive(&a, &wire).expect("genuine"), b"first");
    assert_eq!(bob.prekeys.one_time_count(), opks - 1);
}

#[test]
fn replayed_prekey_message_is_a_duplicate_even_after_the_session_moved_on() {
    let (mut alice, mut bob) = pair();
    let (a, b) = (alice.public(), bob.public());
    let first = alice.send(b"one");
    bob.receive(&a, &first).expect("first");
    assert!(matches!(
        bob.receive(&a, &first),
        Err(CryptoError::DuplicateOrTooOld { .. })
    ));
    // Several ratchet turns later the same bytes are still refused.
    for _ in 0..3 {
        let r = bob.send(b"r");
        alice.receive(&b, &r).expect("reply");
        let m = alice.send(b"m");
        bob.receive(&a, &m).expect("m");
    }
    assert!(matches!(
        bob.receive(&a, &first),
        Err(CryptoError::DuplicateOrTooOld { .. })
    ));
}

#[test]
fn message_from_a_closed_chain_replayed_is_a_duplicate() {
    let (mut alice, mut bob) = established();
    let (a, b) = (alice.public(), bob.public());
    let old = alice.send(b"old chain");
    bob.receive(&a, &old).expect("old");
    let r = bob.send(b"turn");
    alice.receive(&b, &r).expect("turn");
    let new = alice.send(b"new chain");
    bob.receive(&a, &new).expect("new");
    assert!(matches!(
        bob.receive(&a, &old),
        Err(CryptoError::DuplicateOrTooOld { .. })
    ));
}

#[test]
fn rejects_skip_over_the_limit_in_a_new_chain() {
    let (mut alice, mut bob) = established();
    let a = alice.public();
    let sent: Vec<Vec<u8>> = (0..1002).map(|i| alice.send(format!("{i}").as_bytes())).collect();
    let before = bob.snapshot();
    assert!(matches!(
        bob.receive(&a, &sent[1001]),
        Err(CryptoError::SkipLimit { skip: 1001 })
    ));
    assert_eq!(before, bob.snapshot());
    assert_eq!(
        bob.receive(&a, &sent[1000])
            .expect("a skip of exactly 1000 is allowed"),
        b"1000"
    );
    assert_eq!(bob.session.as_ref().map(Session::stored_skipped_keys), Some(1000));
}

#[test]
fn rejects_skip_over_the_limit_in_the_current_chain() {
    let (mut alice, mut bob) = established();
    let a = alice.public();
    let sent: Vec<Vec<u8>> = (0..1003).map(|i| alice.send(format!("{i}").as_bytes())).collect();
    bob.receive(&a, &sent[0]).expect("n=0");
    assert!(matches!(
        bob.receive(&a, &sent[1002]),
        Err(CryptoError::SkipLimit { skip: 1001 })
    ));
    assert_eq!(bob.receive(&a, &sent[1001]).expect("skip 1000"), b"1001");
}

#[test]
fn the_2001st_skipped_key_evicts_the_oldest() {
    let (mut alice, mut bob) = established();
    let (a, b) = (alice.public(), bob.public());
    // Chain 1: 1001 messages, only the last read: 1000 skipped keys.
    let chain1: Vec<Vec<u8>> = (0..1001)
        .map(|i| alice.send(format!("c1 {i}").as_bytes()))
        .collect();
    bob.receive(&a, &chain1[1000]).expect("c1 last");
    let r = bob.send(b"turn");
    alice.receive(&b, &r).expect("turn");
    // Chain 2: again 1000 skipped keys: 2000 stored.
    let chain2: Vec<Vec<u8>> = (0..1001)
        .map(|i| alice.send(format!("c2 {i}").as_bytes()))
        .collect();
    bob.receive(&a, &chain2[1000]).expect("c2 last");
    let stored = |p: &Party| p.session.as_ref().map(Session::stored_skipped_keys);
    assert_eq!(stored(&bob), Some(2000));
    // One more skipped key (in the same chain) evicts chain 1's n=0.
    let more: Vec<Vec<u8>> = (0..2)
        .map(|i| alice.send(format!("c2 more {i}").as_bytes()))
        .collect();
    bob.receive(&a, &more[1]).expect("skips one");
    assert_eq!(stored(&bob), Some(2000));
    assert!(matches!(
        bob.receive(&a, &chain1[0]),
        Err(CryptoError::TooOld { n: 0 })
    ));
    // What was read is a duplicate, not too old.
    assert!(matches!(
        bob.receive(&a, &chain1[1000]),
        Err(CryptoError::DuplicateOrTooOld { n: 1000 })
    ));
    assert_eq!(bob.receive(&a, &chain1[1]).expect("n=1 is still stored"), b"c1 1");
    assert_eq!(bob.receive(&a, &more[0]).expect("newest skipped"), b"c2 more 0");
}

#[test]
fn messages_of_a_chain_closed_with_a_gap_over_the_limit_are_too_old() {
    let (mut alice, mut bob) = established();
    let (a, b) = (alice.public(), bob.public());
    let chain1: Vec<Vec<u8>> = (0..1002)
        .map(|i| alice.send(format!("c1 {i}").as_bytes()))
        .collect();
    bob.receive(&a, &chain1[0]).expect("c1 first");
    let r = bob.send(b"turn");
    alice.receive(&b, &r).expect("turn");
    // Closing chain 1 would skip 1001 keys: the step happens, the keys are not derived.
    let next = alice.send(b"c2 0");
    assert_eq!(bob.receive(&a, &next).expect("new chain"), b"c2 0");
    assert_eq!(bob.session.as_ref().map(Session::stored_skipped_keys), Some(0));
    for i in [1, 500, 1001] {
        assert!(
            matches!(bob.receive(&a, &chain1[i]), Err(CryptoError::TooOld { .. })),
            "c1 {i}"
        );
    }
    assert!(matches!(
        bob.receive(&a, &chain1[0]),
        Err(CryptoError::DuplicateOrTooOld { n: 0 })
    ));
    // The discarded ranges survive a save and restore.
    let saved = serde_json::to_string(bob.session.as_ref().expect("session")).expect("save");
    let restored: Session = serde_json::from_str(&saved).expect("restore");
    bob.session = Some(restored);
    assert!(matches!(
        bob.receive(&a, &chain1[7]),
        Err(CryptoError::TooOld { n: 7 })
    ));
}

#[test]
fn session_saved_and_restored_mid_conversation_continues() {
    let (mut alice, mut bob) = established();
    let (a, b) = (alice.public(), bob.public());
    let in_flight = alice.send(b"sent before the save");
    let late = alice.send(b"arrives after the restore");
    bob.receive(&a, &in_flight).expect("in flight");

    let saved = serde_json::to_string(&(&bob.identity, &bob.prekeys, &bob.session)).expect("save");
    drop(bob);
    let (identity, prekeys, session): (IdentityKeyPair, PreKeyStore, Option<Session>) =
        serde_json::from_str(&saved).expect("restore");
    let mut bob = Party {
        identity,
        prekeys,
        session,
    };
    assert_eq!(bob.public(), b);
    assert_eq!(
        bob.receive(&a, &late).expect("late"),
        b"arrives after the restore"
    );
    let r = bob.send(b"after restore");
    assert_eq!(alice.receive(&b, &r).expect("reply"), b"after restore");
    let m = alice.send(b"and on");
    assert_eq!(bob.receive(&a, &m).expect("on"), b"and on");
}

#[test]
fn normal_message_without_session_is_unknown_session() {
    let (mut alice, mut bob) = established();
    let (a, b) = (alice.public(), bob.public());
    let m = alice.send(b"x");
    let mut stranger = Party::new();
    assert!(matches!(stranger.receive(&a, &m), Err(CryptoError::NoSession)));
    // The transport's sender must be the session's peer.
    assert!(matches!(
        bob.receive(&stranger.public(), &m),
        Err(CryptoError::IdentityMismatch)
    ));
    let _ = b;
}

#[test]
fn initiator_refuses_a_bundle_with_a_bad_signature() {
    let alice = Party::new();
    let bob = Party::new();
    let mut bundle = bob.prekeys.bundle(&bob.public());
    bundle.signature[0] ^= 1;
    assert!(matches!(
        Session::initiate(&alice.identity, &bundle, &mut OsRng),
        Err(CryptoError::BadSignature)
    ));
}

#[test]
fn previous_signed_prekey_still_accepts_and_used_one_time_prekey_never_twice() {
    let mut alice = Party::new();
    let mut bob = Party::new();
    let a = alice.public();
    let bundle = bob.prekeys.bundle(&bob.public());
    let one = bundle.with_one_time_prekey(bundle.one_time_prekeys.first().copied());
    bob.prekeys.rotate_signed(&bob.identity, &mut OsRng);
    alice.session = Some(Session::initiate(&alice.identity, &one, &mut OsRng).expect("initiate"));
    let m = alice.send(b"via previous spk");
    assert_eq!(
        bob.receive(&a, &m).expect("previous spk works"),
        b"via previous spk"
    );
    // A second initiator using the same (now deleted) one-time prekey is refused.
    let mut carol = Party::new();
    let c = carol.public();
    carol.session = Some(Session::initiate(&carol.identity, &one, &mut OsRng).expect("initiate"));
    let m = carol.send(b"same opk");
    assert!(matches!(
        bob.receive(&c, &m),
        Err(CryptoError::UnknownOneTimePreKey)
    ));
}

/// A PreKey message without a one-time prekey, accepted once, is refused on replay
/// however many other handshakes come in between (the base keys of a signed prekey are
/// kept for its whole life, not in a window of recent ones).
#[test]
fn a_prekey_message_without_opk_is_never_accepted_twice_after_many_handshakes() {
    let mut bob = Party::new();
    let spk_only = bob.prekeys.bundle(&bob.public()).with_one_time_prekey(None);
    let mut alice = Party::new();
    let a = alice.public();
    alice.session = Some(Session::initiate(&alice.identity, &spk_only, &mut OsRng).expect("initiate"));
    let first = alice.send(b"once");
    assert_eq!(bob.receive(&a, &first).expect("first time"), b"once");
    // 5 000 other handshakes by throwaway identities, each accepted.
    for _ in 0..5_000 {
        let mut other = Party::new();
        let o = other.public();
        other.session = Some(Session::initiate(&other.identity, &spk_only, &mut OsRng).expect("initiate"));
        let m = other.send(b"x");
        bob.session = None;
        bob.receive(&o, &m).expect("other handshake");
    }
    bob.session = None;
    assert!(matches!(
        bob.receive(&a, &first),
        Err(CryptoError::DuplicateOrTooOld { .. })
    ));
    // Still refused after a rotation (the signed prekey it used is now the previous one)
    // and across a save and load of the store.
    bob.prekeys.rotate_signed_at(&bob.identity, &mut OsRng, 10);
    let json = serde_json::to_string(&bob.prekeys).expect("serialize");
    bob.prekeys = serde_json::from_str(&json).expect("deserialize");
    assert!(matches!(
        bob.receive(&a, &first),
        Err(CryptoError::DuplicateOrTooOld { .. })
    ));
    // Once the signed prekey is deleted, the message cannot be decrypted at all.
    assert_eq!(bob.prekeys.expire_retired(10 + 1_000, 1_000), 1);
    assert!(matches!(
        bob.receive(&a, &first),
        Err(CryptoError::UnknownSignedPreKey)
    ));
}

#[test]
fn signed_prekey_rotation_is_due_by_age_and_retired_keys_expire_after_the_grace() {
    let identity = IdentityKeyPair::generate(&mut OsRng);
    let mut store = PreKeyStore::generate_at(&identity, 0, &mut OsRng, 1_000);
    assert!(!store.rotation_due(1_999, 1_000));
    assert!(store.rotation_due(2_000, 1_000));
    store.rotate_signed_at(&identity, &mut OsRng, 2_000);
    assert!(!store.rotation_due(2_500, 1_000));
    // A grace longer than the rotation period keeps two retired keys.
    store.rotate_signed_at(&identity, &mut OsRng, 3_000);
    assert_eq!(store.retired_signed_prekeys(), 2);
    assert_eq!(store.expire_retired(3_999, 2_000), 0);
    assert_eq!(store.expire_retired(4_000, 2_000), 1);
    assert_eq!(store.retired_signed_prekeys(), 1);
    assert_eq!(store.expire_retired(5_000, 2_000), 1);
    assert_eq!(store.retired_signed_prekeys(), 0);
    // Rotations past the cap delete the oldest retired key early.
    for t in 0..10 {
        store.rotate_signed_at(&identity, &mut OsRng, 6_000 + t);
    }
    assert_eq!(
        store.retired_signed_prekeys(),
        e2ee_protocol::prekey::MAX_RETIRED_SIGNED_PREKEYS
    );
}

/// A message in flight across a rotation (made against the old signed prekey, arriving
/// after it) still decrypts within the grace period.
#[test]
fn a_message_in_flight_across_a_rotation_still_decrypts() {
    let mut alice = Party::new();
    let mut bob = Party::new();
    let a = alice.public();
    let bundle = bob.prekeys.bundle(&bob.public()).with_one_time_prekey(None);
    alice.session = Some(Session::initiate(&alice.identity, &bundle, &mut OsRng).expect("initiate"));
    let in_flight = alice.send(b"in flight");
    bob.prekeys.rotate_signed_at(&bob.identity, &mut OsRng, 5);
    assert_eq!(bob.prekeys.expire_retired(6, 100), 0);
    assert_eq!(bob.receive(&a, &in_flight).expect("decrypts"), b"in flight");
}

#[test]
fn handed_out_one_time_prekeys_age_out_after_the_grace_and_beyond_the_cap() {
    let identity = IdentityKeyPair::generate(&mut OsRng);
    let mut store = PreKeyStore::generate_at(&identity, 10, &mut OsRng, 0);
    let oldest = store.bundle(identity.public()).one_time_prekeys;
    // The relay holds 4 of the 10: the 6 oldest were handed out; marked now, kept.
    assert_eq!(store.age_out_one_time(4, 0, 100, 1_000, 1_000), (6, 0));
    assert_eq!(store.one_time_count(), 10);
    // After the grace they go; the 4 the relay holds stay.
    assert_eq!(store.age_out_one_time(4, 0, 1_100, 1_000, 1_000), (0, 6));
    assert_eq!(store.one_time_count(), 4);
    assert!(oldest[..6].iter().all(|k| store.one_time_prekey(k).is_none()));
    assert!(oldest[6..].iter().all(|k| store.one_time_prekey(k).is_some()));
    // Beyond the cap, handed-out ones go at once, oldest first.
    store.generate_one_time(10, &mut OsRng);
    assert_eq!(store.age_out_one_time(2, 0, 1_200, 1_000, 8), (12, 6));
    assert_eq!(store.one_time_count(), 8);
}

#[test]
fn a_sender_restored_from_a_copy_never_reuses_a_key_and_nonce() {
    let (mut alice, mut bob) = established();
    let a = alice.public();
    let backup = alice.session.clone();
    let first = alice.send(b"attack at dawn");
    alice.session = backup;
    let second = alice.send(b"retreat at six");
    let (Ok(Message::Normal(m1)), Ok(Message::Normal(m2))) =
        (Message::decode(&first), Message::decode(&second))
    else {
        panic!("two Normal messages expected");
    };
    // Same chain position (the rolled-back state), different salts: other key and nonce.
    assert_eq!(
        (m1.header.ratchet_key, m1.header.n),
        (m2.header.ratchet_key, m2.header.n)
    );
    assert!(m1.header.salt.is_some() && m1.header.salt != m2.header.salt);
    let ct_xor: Vec<u8> = m1
        .ciphertext
        .iter()
        .zip(&m2.ciphertext)
        .map(|(x, y)| x ^ y)
        .collect();
    let pt_xor: Vec<u8> = b"attack at dawn"
        .iter()
        .zip(b"retreat at six")
        .map(|(x, y)| x ^ y)
        .collect();
    assert_ne!(&ct_xor[..pt_xor.len()], &pt_xor[..]);
    // The receiver reads the first and refuses the second as a reused chain position,
    // a reason a new session cures.
    assert_eq!(bob.receive(&a, &first).expect("first"), b"attack at dawn");
    let err = bob.receive(&a, &second).expect_err("a reused position");
    assert_eq!(ResetReason::of(&err), Some(ResetReason::ReusedPosition));
}

#[test]
fn closing_a_chain_past_the_skip_limit_gives_up_its_keys_and_says_how_many() {
    let (mut alice, mut bob) = established();
    let (a, b) = (alice.public(), bob.public());
    let first = alice.send(b"c1 0");
    let lost = 1010;
    for i in 1..=lost {
        alice.send(format!("c1 {i}").as_bytes());
    }
    bob.receive(&a, &first).expect("c1 first");
    let r = bob.send(b"turn");
    alice.receive(&b, &r).expect("turn");
    let next = alice.send(b"c2 0");
    let received = receive(
        bob.session.as_mut(),
        &bob.identity,
        &mut bob.prekeys,
        &a,
        &next,
        &mut OsRng,
    )
    .expect("the new chain decrypts");
    assert_eq!(received.decrypted.plaintext, b"c2 0");
    assert_eq!(received.decrypted.given_up, lost);
    // A gap within the limit gives nothing up.
    let later = alice.send(b"c2 2 after one lost");
    alice.send(b"c2 3");
    let received = receive(
        bob.session.as_mut(),
        &bob.identity,
        &mut bob.prekeys,
        &a,
        &later,
        &mut OsRng,
    )
    .expect("decrypts");
    assert_eq!(
        (received.decrypted.newly_skipped, received.decrypted.given_up),
        (0, 0)
    );
}

#[test]
fn a_session_recognises_its_own_recent_ratchet_keys_and_a_new_session_does_not() {
    let (mut alice, mut bob) = established();
    let (a, b) = (alice.public(), bob.public());
    let first = alice.send(b"one");
    let key = match Message::decode(&first) {
        Ok(message) => message.header().ratchet_key,
        Err(err) => panic!("decode: {err}"),
    };
    bob.receive(&a, &first).expect("one");
    let session = alice.session.as_ref().expect("session");
    assert!(session.sent_with_ratchet_key(&key));
    // After a DH step the old key is still recognised (a reset request may name it).
    let r = bob.send(b"turn");
    alice.receive(&b, &r).expect("turn");
    let session = alice.session.as_ref().expect("session");
    assert!(session.sent_with_ratchet_key(&key));
    assert_ne!(session.ratchet_key(), &key);
    // A new session knows nothing of the old one's keys: an old request is stale.
    let bundle = bob.prekeys.bundle(&b);
    let fresh = Session::initiate(&alice.identity, &bundle, &mut OsRng).expect("initiate");
    assert!(!fresh.sent_with_ratchet_key(&key));
}

#[test]
fn a_session_replaced_by_a_reset_names_no_chain_and_a_responder_never_names_its_signed_prekey() {
    let (mut alice, mut bob) = established();
    let (a, b) = (alice.public(), bob.public());
    let first = alice.send(b"one");
    bob.receive(&a, &first).expect("one");
    let key = *alice.session.as_ref().expect("session").ratchet_key();
    let mut replaced = alice.session.clone().expect("session");
    assert!(replaced.sent_with_ratchet_key(&key));
    replaced.mark_replaced_by_reset();
    assert!(!replaced.sent_with_ratchet_key(&key));
    // Survives a save and restore (it is stored with the archived session).
    let saved = serde_json::to_string(&replaced).expect("save");
    let restored: Session = serde_json::from_str(&saved).expect("restore");
    assert!(!restored.sent_with_ratchet_key(&key));
    // Bob answered alice's first message as responder: his signed prekey was his first
    // ratchet key, never sent with.
    let spk = *bob.prekeys.bundle(&b).signed_prekey.as_bytes();
    let spk = e2ee_protocol::keys::PublicKey::from_bytes(spk);
    assert!(!bob.session.as_ref().expect("session").sent_with_ratchet_key(&spk));
}
