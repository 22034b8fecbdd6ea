//! The store contract, checked against both engines (`memory::tests`, `sqlite::tests`).

use super::*;

fn msg(recipient: u8, sender: u8, id: u8, ts: u64) -> WriteOp {
    WriteOp::Append(NewMessage {
        recipient: [recipient; 32],
        sender: [sender; 32],
        msg_id: [id; 16],
        timestamp_ms: ts,
        payload: vec![id; 10].into(),
    })
}

pub(crate) fn check(store: &mut dyn Store) {
    let r = commit_ok(
        store,
        &[msg(1, 2, 1, 100), msg(1, 3, 1, 100), msg(1, 2, 1, 100)],
        10,
    );
    assert!(matches!(r[0], WriteResult::Appended { .. }));
    assert!(matches!(r[1], WriteResult::Appended { .. }));
    assert_eq!(r[2], WriteResult::Duplicate, "same sender and id in one batch");
    assert_eq!(store.queue_len(&[1; 32]).expect("len"), 2);
    // The same sender's id for another recipient is refused, not taken as a copy.
    assert_eq!(
        commit_ok(store, &[msg(5, 2, 1, 100)], 10),
        vec![WriteResult::IdReused]
    );
    assert_eq!(store.queue_len(&[5; 32]).expect("len"), 0, "nothing stored");

    let pending = store.pending(&[1; 32], 0, 10, 0).expect("pending");
    assert_eq!(pending.len(), 2);
    assert!(pending[0].seq < pending[1].seq, "in order");
    let after_first = store.pending(&[1; 32], pending[0].seq, 10, 0).expect("pending");
    assert_eq!(after_first, vec![pending[1].clone()]);

    // Ack by another identity does nothing; by the recipient removes it for good.
    let ack = |recipient| WriteOp::Ack {
        recipient: [recipient; 32],
        sender: [2; 32],
        msg_id: [1; 16],
    };
    assert_eq!(commit_ok(store, &[ack(9)], 10), vec![WriteResult::Acked(false)]);
    assert_eq!(commit_ok(store, &[ack(1)], 10), vec![WriteResult::Acked(true)]);
    assert_eq!(store.queue_len(&[1; 32]).expect("len"), 1);
    assert_eq!(
        commit_ok(store, &[ack(1)], 10),
        vec![WriteResult::Acked(false)],
        "acked twice"
    );
    // A retransmission after delivery does not create a second copy, and the id
    // stays refused for another recipient.
    assert_eq!(
        commit_ok(store, &[msg(1, 2, 1, 100)], 10),
        vec![WriteResult::Duplicate]
    );
    assert_eq!(
        commit_ok(store, &[msg(5, 2, 1, 100)], 10),
        vec![WriteResult::IdReused],
        "after the ack too"
    );

    // Quota.
    let r = commit_ok(
        store,
        &[msg(4, 7, 1, 100), msg(4, 7, 2, 100), msg(4, 7, 3, 100)],
        2,
    );
    assert!(matches!(r[1], WriteResult::Appended { .. }));
    assert_eq!(r[2], WriteResult::QuotaExceeded(Quota::RecipientQueue));

    // TTL.
    commit_ok(store, &[msg(5, 2, 7, 50), msg(5, 2, 8, 500)], 10);
    assert_eq!(store.pending(&[5; 32], 0, 10, 100).expect("pending").len(), 1);
    let r = commit_ok(store, &[expire(100, 100)], 10);
    assert_eq!(r, vec![WriteResult::Expired(1)]);
    assert_eq!(store.queue_len(&[5; 32]).expect("len"), 1);
    // Acknowledged ids are forgotten past the deduplication window, which may be
    // shorter than the TTL; unacknowledged messages stay until the TTL.
    let r = commit_ok(store, &[expire(100, 101)], 10);
    assert_eq!(r, vec![WriteResult::Expired(0)]);
    assert_eq!(
        store.queue_len(&[1; 32]).expect("len"),
        1,
        "the unacknowledged one stays"
    );
    let r = commit_ok(store, &[msg(1, 2, 1, 600)], 10);
    assert!(
        matches!(r[0], WriteResult::Appended { .. }),
        "a new message: {r:?}"
    );
    assert_eq!(store.queue_len(&[1; 32]).expect("len"), 2);
    let r = commit_ok(store, &[msg(1, 3, 1, 100)], 10);
    assert_eq!(r, vec![WriteResult::Duplicate], "unacknowledged ids are kept");
    // Past the TTL everything goes.
    let r = commit_ok(store, &[expire(101, 101)], 10);
    assert_eq!(
        r,
        vec![WriteResult::Expired(3)],
        "the unacknowledged one to 1 and two to 4"
    );
    assert_eq!(store.queue_len(&[1; 32]).expect("len"), 1, "the new one stays");

    // Prekeys: each one-time prekey is handed out once.
    assert_eq!(store.prekey_count(&[6; 32]).expect("count"), None);
    assert_eq!(store.fetch_bundle(&[6; 32], true).expect("fetch"), None);
    let held = store
        .publish_prekeys(&[6; 32], &[7; 32], &[8; 64], &[[1; 32], [2; 32], [1; 32]], 100)
        .expect("publish");
    assert_eq!(held, 2);
    // Without leave to hand one out, a bundle carries none and every one stays.
    let kept = store
        .fetch_bundle(&[6; 32], false)
        .expect("fetch")
        .expect("bundle");
    assert_eq!((kept.one_time_prekey, kept.remaining), (None, 2));
    assert_eq!(kept.signed_prekey, [7; 32]);
    assert_eq!(store.prekey_count(&[6; 32]).expect("count"), Some(2));
    let first = store
        .fetch_bundle(&[6; 32], true)
        .expect("fetch")
        .expect("bundle");
    let second = store
        .fetch_bundle(&[6; 32], true)
        .expect("fetch")
        .expect("bundle");
    let third = store
        .fetch_bundle(&[6; 32], true)
        .expect("fetch")
        .expect("bundle");
    assert_eq!(first.signed_prekey, [7; 32]);
    assert_eq!(first.signature, vec![8; 64]);
    assert_ne!(first.one_time_prekey, second.one_time_prekey);
    assert!(first.one_time_prekey.is_some() && second.one_time_prekey.is_some());
    assert_eq!((second.remaining, third.one_time_prekey), (0, None));
    // Republishing replaces the signed prekey and caps the total.
    let held = store
        .publish_prekeys(&[6; 32], &[9; 32], &[8; 64], &[[3; 32], [4; 32], [5; 32]], 2)
        .expect("publish");
    assert_eq!(held, 2);
    assert_eq!(
        store
            .fetch_bundle(&[6; 32], true)
            .expect("fetch")
            .map(|b| b.signed_prekey),
        Some([9; 32])
    );

    check_names(store);
    check_last_seen(store);
    check_expiry_notices(store);
}

fn check_expiry_notices(store: &mut dyn Store) {
    let (alice, bob, carol) = (40u8, 41u8, 42u8);
    let notices =
        |store: &mut dyn Store, after| store.expired_notices(&[alice; 32], after, 10).expect("notices");
    // Alice writes to bob and carol; bob reads one; the rest expire unread.
    commit_ok(
        store,
        &[
            msg(bob, alice, 1, 1_000),
            msg(carol, alice, 2, 1_001),
            msg(bob, alice, 3, 1_002),
            msg(bob, alice, 4, 5_000),
        ],
        10,
    );
    let ack = WriteOp::Ack {
        recipient: [bob; 32],
        sender: [alice; 32],
        msg_id: [3; 16],
    };
    commit_ok(store, &[ack], 10);
    assert!(notices(store, 0).is_empty());
    let expire = |before_ms, notices_before_ms| WriteOp::Expire {
        before_ms,
        acked_before_ms: before_ms,
        notices_before_ms,
    };
    // (Messages of the checks before, all older, expire too.)
    let r = commit_ok(store, &[expire(2_000, 0)], 10);
    assert!(matches!(r[..], [WriteResult::Expired(n)] if n >= 2), "{r:?}");
    let got = notices(store, 0);
    let ids: Vec<([u8; 32], u8)> = got.iter().map(|(_, n)| (n.recipient, n.msg_id[0])).collect();
    assert_eq!(
        ids,
        vec![([bob; 32], 1), ([carol; 32], 2)],
        "the unread ones, in order"
    );
    assert!(got[0].0 < got[1].0);
    assert!(
        store
            .expired_notices(&[bob; 32], 0, 10)
            .expect("notices")
            .is_empty(),
        "the sender's only"
    );
    assert_eq!(notices(store, got[0].0), vec![got[1]], "after a sequence number");
    // Reading the first removes it; acknowledging again removes nothing.
    let read = |through| WriteOp::AckExpired {
        sender: [alice; 32],
        through,
    };
    assert_eq!(
        commit_ok(store, &[read(got[0].0)], 10),
        vec![WriteResult::NoticesAcked(1)]
    );
    assert_eq!(
        commit_ok(store, &[read(got[0].0)], 10),
        vec![WriteResult::NoticesAcked(0)]
    );
    assert_eq!(notices(store, 0), vec![got[1]]);
    // A notice left unread goes once its message is older than the cut-off.
    commit_ok(store, &[expire(2_000, 1_001)], 10);
    assert_eq!(notices(store, 0), vec![got[1]], "stored at 1 001: kept");
    commit_ok(store, &[expire(2_000, 1_002)], 10);
    assert!(notices(store, 0).is_empty());
    assert_eq!(
        store.queue_len(&[bob; 32]).expect("len"),
        1,
        "the later message stays"
    );
}

fn check_last_seen(store: &mut dyn Store) {
    let (x, y) = ([20; 32], [21; 32]);
    let seen = |identity: [u8; 32], at_ms: u64, precision_ms: u64| WriteOp::Seen {
        identity,
        at_ms,
        precision_ms,
    };
    assert_eq!(store.last_seen(&x).expect("seen"), None, "never seen");
    assert_eq!(
        commit_ok(store, &[seen(x, 1_000, 0)], 10),
        vec![WriteResult::Seen]
    );
    assert_eq!(store.last_seen(&x).expect("seen"), Some(1_000));
    commit_ok(store, &[seen(x, 900, 0)], 10);
    assert_eq!(store.last_seen(&x).expect("seen"), Some(1_000), "never goes back");
    commit_ok(store, &[seen(x, 1_999, 1_000)], 10);
    assert_eq!(
        store.last_seen(&x).expect("seen"),
        Some(1_000),
        "within the precision: not written"
    );
    commit_ok(store, &[seen(x, 2_001, 1_000)], 10);
    assert_eq!(store.last_seen(&x).expect("seen"), Some(2_001));
    // Any identity, whether it holds a name or not, in a batch with other writes.
    let r = commit_ok(store, &[msg(22, 21, 1, 100), seen(y, 5_000, 1_000)], 10);
    assert!(
        matches!(r[..], [WriteResult::Appended { .. }, WriteResult::Seen]),
        "{r:?}"
    );
    assert_eq!(store.last_seen(&y).expect("seen"), Some(5_000));
    assert_eq!(store.last_seen(&x).expect("seen"), Some(2_001), "per identity");
    // Authenticating records a lease only; the relay writes seen times separately.
    store.record_auth(&[23; 32], 9_000).expect("auth");
    assert_eq!(store.last_seen(&[23; 32]).expect("seen"), None);
}

/// A claim of `name` by the identity from `seed`, issued at `issued_ms`.
pub(crate) fn claim(seed: u8, name: &str, issued_ms: u64) -> (IdentityBytes, Vec<u8>) {
    let identity = e2ee_protocol::identity::IdentityKeyPair::from_seed(&[seed; 32]);
    let claim = NameClaim::sign(&identity, name, issued_ms).expect("a valid name");
    (*identity.public().as_bytes(), claim.encode())
}

fn check_names(store: &mut dyn Store) {
    const DAY_MS: u64 = 24 * 3600 * 1000;
    let lease = Lease::from_secs(24 * 3600);
    let now = 1000 * DAY_MS;
    let (alice, alice_1) = claim(1, "alice", 10);
    let (_, alice_2) = claim(1, "alice", 20);
    let (bob, bob_1) = claim(2, "alice", 30);
    let put = |store: &mut dyn Store, owner: &IdentityBytes, bytes: &[u8], at: u64| {
        store.put_claim("alice", owner, bytes, at, lease).expect("put")
    };

    // The first identity holds the name; it may publish new claims, others may not.
    assert_eq!(store.claim_of(&alice).expect("reverse"), None);
    assert_eq!(put(store, &alice, &alice_1, now), ClaimOutcome::Stored);
    assert_eq!(put(store, &alice, &alice_2, now), ClaimOutcome::Stored);
    assert_eq!(put(store, &bob, &bob_1, now), ClaimOutcome::HeldByAnother);
    assert_eq!(store.get_claim("alice").expect("get"), Some(alice_2.clone()));
    assert_eq!(store.get_claim("bob").expect("get"), None);
    assert_eq!(store.claim_of(&alice).expect("reverse"), Some(alice_2.clone()));
    assert_eq!(store.claim_of(&bob).expect("reverse"), None);

    // The lease runs from the claim, then from the holder's last authentication.
    assert_eq!(
        put(store, &bob, &bob_1, now + DAY_MS),
        ClaimOutcome::HeldByAnother
    );
    store.record_auth(&alice, now + DAY_MS / 2).expect("auth");
    assert_eq!(
        put(store, &bob, &bob_1, now + DAY_MS + 1),
        ClaimOutcome::HeldByAnother,
        "alice logged in since"
    );
    assert_eq!(
        put(store, &bob, &bob_1, now + DAY_MS + DAY_MS / 2 + 1),
        ClaimOutcome::TakenOver { from: alice }
    );
    assert_eq!(store.get_claim("alice").expect("get"), Some(bob_1.clone()));
    assert_eq!(store.claim_of(&alice).expect("reverse"), None);
    assert_eq!(store.claim_of(&bob).expect("reverse"), Some(bob_1.clone()));
    // The new holder's lease starts afresh: alice's login does not count for it.
    store.record_auth(&alice, now + 2 * DAY_MS).expect("auth");
    assert_eq!(
        put(store, &alice, &alice_2, now + 2 * DAY_MS),
        ClaimOutcome::HeldByAnother
    );

    // Releases: only by the holder, and not older than the claim.
    let later = now + 2 * DAY_MS;
    assert_eq!(
        store.release_claim("alice", &alice, 99).expect("release"),
        ReleaseOutcome::NotHeld
    );
    assert_eq!(
        store.release_claim("carol", &bob, 99).expect("release"),
        ReleaseOutcome::NotHeld
    );
    assert_eq!(
        store.release_claim("alice", &bob, 29).expect("release"),
        ReleaseOutcome::OlderThanClaim { claim_issued_ms: 30 }
    );
    assert_eq!(store.get_claim("alice").expect("get"), Some(bob_1.clone()));
    assert_eq!(
        store.release_claim("alice", &bob, 30).expect("release"),
        ReleaseOutcome::Released
    );
    assert_eq!(store.get_claim("alice").expect("get"), None);
    assert_eq!(store.claim_of(&bob).expect("reverse"), None);
    assert_eq!(
        put(store, &alice, &alice_1, later),
        ClaimOutcome::Stored,
        "free again"
    );

    // An identity holds one name at a time: claiming another name frees the first
    // (so names cannot be squatted by the hundred with one identity).
    let (carol, carol_a) = claim(3, "carol", 1);
    let (_, carol_b) = claim(3, "carol-b", 1);
    let (dave, dave_a) = claim(4, "carol", 3);
    let lease_put = |store: &mut dyn Store, name: &str, bytes: &[u8]| {
        store.put_claim(name, &carol, bytes, later, lease).expect("put")
    };
    assert_eq!(lease_put(store, "carol", &carol_a), ClaimOutcome::Stored);
    assert_eq!(lease_put(store, "carol-b", &carol_b), ClaimOutcome::Stored);
    assert_eq!(store.claim_of(&carol).expect("reverse"), Some(carol_b.clone()));
    assert_eq!(store.get_claim("carol").expect("get"), None, "freed");
    assert_eq!(store.get_claim("carol-b").expect("get"), Some(carol_b));
    assert_eq!(
        store
            .put_claim("carol", &dave, &dave_a, later, lease)
            .expect("put"),
        ClaimOutcome::Stored,
        "another identity may claim the freed name at once"
    );
    assert_eq!(store.claim_of(&dave).expect("reverse"), Some(dave_a));
    assert_eq!(
        store.release_claim("carol-b", &carol, 1).expect("release"),
        ReleaseOutcome::Released
    );
    assert_eq!(store.claim_of(&carol).expect("reverse"), None);
}

fn expire(before_ms: u64, acked_before_ms: u64) -> WriteOp {
    WriteOp::Expire {
        before_ms,
        acked_before_ms,
        notices_before_ms: 0,
    }
}

fn commit_ok(store: &mut dyn Store, ops: &[WriteOp], quota: u64) -> Vec<WriteResult> {
    let quotas = Quotas {
        queue: quota,
        ..Quotas::UNLIMITED
    };
    store.commit(ops, &quotas).expect("commit")
}

fn sized(recipient: u8, sender: u8, id: u8, len: usize) -> WriteOp {
    WriteOp::Append(NewMessage {
        recipient: [recipient; 32],
        sender: [sender; 32],
        msg_id: [id; 16],
        timestamp_ms: u64::from(id),
        payload: vec![id; len].into(),
    })
}

fn ack(recipient: u8, sender: u8, id: u8) -> WriteOp {
    WriteOp::Ack {
        recipient: [recipient; 32],
        sender: [sender; 32],
        msg_id: [id; 16],
    }
}

/// The per-sender quotas and the storage budget, on an empty store: what counts,
/// what is refused, and what frees room. (A message's timestamp is its id.)
pub(crate) fn check_quotas(store: &mut dyn Store) {
    let quotas = Quotas {
        queue: 100,
        sender_messages: 3,
        sender_bytes: 600,
        stored_bytes: 1500,
    };
    let commit = |store: &mut dyn Store, ops: &[WriteOp]| store.commit(ops, &quotas).expect("commit");
    let usage = |store: &mut dyn Store, sender: u8| store.sender_usage(&[sender; 32]).expect("usage");
    let appended = |r: &WriteResult| matches!(r, WriteResult::Appended { .. });
    // Sender 1 stores three messages to three recipients: its message quota is full,
    // whoever the next recipient is.
    let r = commit(
        store,
        &[sized(10, 1, 1, 10), sized(11, 1, 2, 10), sized(12, 1, 3, 10)],
    );
    assert!(r.iter().all(appended), "{r:?}");
    assert_eq!(usage(store, 1), Usage::of(3, 30));
    assert_eq!(usage(store, 1).bytes, 3 * stored_size(10));
    assert_eq!(
        commit(store, &[sized(13, 1, 4, 1)]),
        vec![WriteResult::QuotaExceeded(Quota::SenderMessages)]
    );
    // A retransmission of a stored message is still a duplicate, not a refusal.
    assert_eq!(
        commit(store, &[sized(10, 1, 1, 10)]),
        vec![WriteResult::Duplicate]
    );
    // An acknowledgement frees one message and its bytes.
    assert_eq!(commit(store, &[ack(11, 1, 2)]), vec![WriteResult::Acked(true)]);
    assert_eq!(usage(store, 1), Usage::of(2, 20));
    assert!(commit(store, &[sized(13, 1, 4, 10)]).iter().all(appended));
    // Sender 2 runs out of bytes (428 + 228 > 600) before messages.
    let r = commit(store, &[sized(10, 2, 1, 300), sized(10, 2, 2, 100)]);
    assert!(appended(&r[0]), "{r:?}");
    assert_eq!(r[1], WriteResult::QuotaExceeded(Quota::SenderBytes));
    assert_eq!(usage(store, 2), Usage::of(1, 300));
    assert_eq!(store.stored_usage().expect("usage"), Usage::of(4, 330));
    // 842 of the budget's 1500 bytes are used: sender 3's 528 fit, sender 4's 228
    // no longer do, nor anyone's.
    assert!(commit(store, &[sized(14, 3, 1, 400)]).iter().all(appended));
    for sender in [4, 5] {
        assert_eq!(
            commit(store, &[sized(15, sender, 1, 100)]),
            vec![WriteResult::QuotaExceeded(Quota::StorageBudget)]
        );
    }
    assert_eq!(store.stored_usage().expect("usage"), Usage::of(5, 730));
    // An acknowledgement makes room again, in the same batch.
    let r = commit(store, &[ack(10, 2, 1), sized(15, 5, 1, 100)]);
    assert_eq!(r[0], WriteResult::Acked(true));
    assert!(appended(&r[1]), "{r:?}");
    assert_eq!(usage(store, 2), Usage::default());
    assert_eq!(store.stored_usage().expect("usage"), Usage::of(5, 530));
    // Expiry frees what it drops, for each sender and for the budget.
    let r = commit(store, &[expire(3, 0)]);
    assert_eq!(r, vec![WriteResult::Expired(3)], "id 1 of senders 1, 3 and 5");
    assert_eq!(usage(store, 1), Usage::of(2, 20));
    assert_eq!(usage(store, 3), Usage::default());
    assert_eq!(store.stored_usage().expect("usage"), Usage::of(2, 20));
    // Acknowledged by another identity than the recipient: nothing changes.
    assert_eq!(commit(store, &[ack(99, 1, 3)]), vec![WriteResult::Acked(false)]);
    assert_eq!(usage(store, 1), Usage::of(2, 20));
}
