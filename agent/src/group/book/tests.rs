//! Groups between books, with the relay's part played by hand: every upload goes to
//! every other member, in one order.

use super::*;

struct Member {
    identity: IdentityKeyPair,
    book: GroupBook,
}

fn member() -> Member {
    let identity = IdentityKeyPair::generate(&mut OsRng);
    let book = GroupBook::open(&identity, HashMap::new(), None, &BTreeMap::new()).expect("open");
    Member { identity, book }
}

impl Member {
    fn id(&self) -> IdentityKey {
        *self.identity.public()
    }

    fn package(&mut self) -> Vec<u8> {
        self.book.key_packages(1, false).expect("key package").remove(0)
    }
}

fn package_of(adder: &GroupBook, who: &mut Member) -> (IdentityKey, KeyPackage) {
    let bytes = who.package();
    (
        who.id(),
        adder.read_key_package("who", &who.id(), &bytes).expect("valid"),
    )
}

fn commit_parts(frame: &Frame) -> (Vec<u8>, Option<Vec<u8>>) {
    match frame {
        Frame::GroupCommit { commit, welcome, .. } => (commit.clone(), welcome.clone()),
        other => panic!("not a commit: {other:?}"),
    }
}

fn send_bytes(frame: &Frame) -> Vec<u8> {
    match frame {
        Frame::GroupSend { message, .. } => message.clone(),
        other => panic!("not a send: {other:?}"),
    }
}

fn text_of(events: Vec<GroupEvent>) -> String {
    match events.as_slice() {
        [GroupEvent::Message { text, .. }] => text.clone(),
        other => panic!("not one message: {other:?}"),
    }
}

#[test]
fn three_members_talk_add_a_fourth_and_remove_one() {
    let (mut a, mut b, mut c, mut d) = (member(), member(), member(), member());
    let packages = vec![package_of(&a.book, &mut b), package_of(&a.book, &mut c)];
    let (id, frame) = a.book.create("team", [1; 16], packages).expect("create");
    let (commit, welcome) = commit_parts(&frame);
    let welcome = welcome.expect("welcome");
    assert!(a.book.commit_stored(&id).expect("merge").is_some());
    for m in [&mut b, &mut c] {
        match m.book.receive(&welcome).expect("join").as_slice() {
            [GroupEvent::Joined { group, members, by }] => {
                assert_eq!(group, "team");
                assert_eq!(members.len(), 3);
                assert_eq!(*by, a.identity.public().to_owned());
            }
            other => panic!("{other:?}"),
        }
    }
    let _ = commit;

    let hello = send_bytes(&b.book.send(&id, [2; 16], "hello team").expect("send"));
    assert_eq!(text_of(a.book.receive(&hello).expect("a reads")), "hello team");
    assert_eq!(text_of(c.book.receive(&hello).expect("c reads")), "hello team");

    // C adds D; D cannot read what was said before it joined.
    let frame = c
        .book
        .add(&id, [3; 16], vec![package_of(&c.book, &mut d)])
        .expect("add");
    let (commit, welcome) = commit_parts(&frame);
    c.book.commit_stored(&id).expect("merge");
    for m in [&mut a, &mut b] {
        assert!(matches!(
            m.book.receive(&commit).expect("commit").as_slice(),
            [GroupEvent::Members { epoch: 2, .. }]
        ));
    }
    assert!(matches!(
        d.book
            .receive(&welcome.expect("welcome"))
            .expect("join")
            .as_slice(),
        [GroupEvent::Joined { .. }]
    ));
    assert!(d.book.receive(&hello).is_err(), "a message from before D joined");

    // A removes B; B learns it, and cannot read what follows.
    let frame = a.book.remove(&id, [4; 16], &[b.id()]).expect("remove");
    let (commit, _) = commit_parts(&frame);
    a.book.commit_stored(&id).expect("merge");
    assert!(matches!(
        b.book.receive(&commit).expect("removal").as_slice(),
        [GroupEvent::Removed { .. }]
    ));
    for m in [&mut c, &mut d] {
        m.book.receive(&commit).expect("commit");
    }
    let after = send_bytes(&d.book.send(&id, [5; 16], "without b").expect("send"));
    assert_eq!(text_of(a.book.receive(&after).expect("a")), "without b");
    assert_eq!(text_of(c.book.receive(&after).expect("c")), "without b");
    assert!(
        b.book.receive(&after).is_err(),
        "the removed member reads nothing after"
    );
    assert_eq!(b.book.summaries(), vec![]);
    assert_eq!(a.book.summaries()[0].members.len(), 3);
}

#[test]
fn concurrent_commits_one_wins_the_other_rebases_and_nobody_forks() {
    let (mut a, mut b, mut c, mut d) = (member(), member(), member(), member());
    let packages = vec![package_of(&a.book, &mut b)];
    let (id, frame) = a.book.create("pair", [1; 16], packages).expect("create");
    a.book.commit_stored(&id).expect("merge");
    b.book
        .receive(&commit_parts(&frame).1.expect("welcome"))
        .expect("join");

    // Both commit in epoch 1: A adds C, B adds D. The relay stores A's first.
    let from_a = a
        .book
        .add(&id, [2; 16], vec![package_of(&a.book, &mut c)])
        .expect("a adds");
    let from_b = b
        .book
        .add(&id, [3; 16], vec![package_of(&b.book, &mut d)])
        .expect("b adds");
    a.book.commit_stored(&id).expect("a merges");
    // B is refused (GroupEpoch): it drops its commit, reads A's, and commits again.
    b.book.discard_pending(&id).expect("discard");
    b.book
        .receive(&commit_parts(&from_a).0)
        .expect("b reads a's commit");
    c.book
        .receive(&commit_parts(&from_a).1.expect("welcome"))
        .expect("c joins");
    let _ = from_b;
    let again = b
        .book
        .add(&id, [3; 16], vec![package_of(&b.book, &mut d)])
        .expect("b adds again");
    b.book.commit_stored(&id).expect("b merges");
    a.book.receive(&commit_parts(&again).0).expect("a reads");
    c.book.receive(&commit_parts(&again).0).expect("c reads");
    d.book
        .receive(&commit_parts(&again).1.expect("welcome"))
        .expect("d joins");

    // One group: every member at epoch 3 with four members, and they all read each other.
    for m in [&a, &b, &c, &d] {
        let summary = &m.book.summaries()[0];
        assert_eq!((summary.epoch, summary.members.len()), (3, 4));
    }
    let text = send_bytes(&d.book.send(&id, [4; 16], "all here").expect("send"));
    for m in [&mut a, &mut b, &mut c] {
        assert_eq!(text_of(m.book.receive(&text).expect("read")), "all here");
    }
}

#[test]
fn a_leave_is_committed_by_the_lowest_remaining_member() {
    let (mut a, mut b, mut c) = (member(), member(), member());
    let packages = vec![package_of(&a.book, &mut b), package_of(&a.book, &mut c)];
    let (id, frame) = a.book.create("three", [1; 16], packages).expect("create");
    a.book.commit_stored(&id).expect("merge");
    let welcome = commit_parts(&frame).1.expect("welcome");
    b.book.receive(&welcome).expect("b");
    c.book.receive(&welcome).expect("c");
    let proposal = send_bytes(&a.book.leave(&id, [2; 16]).expect("leave"));
    let asked = |events: Vec<GroupEvent>| match events.as_slice() {
        [GroupEvent::LeaveAsked { commit_it, who, .. }] => (*commit_it, *who),
        other => panic!("{other:?}"),
    };
    let (b_commits, who) = asked(b.book.receive(&proposal).expect("b"));
    let (c_commits, _) = asked(c.book.receive(&proposal).expect("c"));
    assert_eq!(who, a.id());
    assert!(b_commits ^ c_commits, "exactly one commits");
    let (committer, other) = if b_commits {
        (&mut b, &mut c)
    } else {
        (&mut c, &mut b)
    };
    let frame = committer.book.remove(&id, [3; 16], &[who]).expect("remove");
    committer.book.commit_stored(&id).expect("merge");
    other.book.receive(&commit_parts(&frame).0).expect("other");
    assert!(matches!(
        a.book.receive(&commit_parts(&frame).0).expect("a").as_slice(),
        [GroupEvent::Removed { .. }]
    ));
    assert_eq!(other.book.summaries()[0].members.len(), 2);
}

#[test]
fn a_key_package_of_another_identity_or_a_forged_credential_is_refused() {
    let (a, mut b, c) = (member(), member(), member());
    let bytes = b.package();
    assert!(
        a.book.read_key_package("b", &c.id(), &bytes).is_err(),
        "pinned as another key"
    );
    assert!(a
        .book
        .read_key_package("b", &b.id(), &bytes[..bytes.len() - 1])
        .is_err());
    let mut flipped = bytes.clone();
    let last = flipped.len() - 10;
    flipped[last] ^= 1;
    assert!(
        a.book.read_key_package("b", &b.id(), &flipped).is_err(),
        "signature"
    );
    assert!(a.book.read_key_package("b", &b.id(), &bytes).is_ok());
}

#[test]
fn a_book_reopened_from_its_persisted_storage_goes_on() {
    let (mut a, mut b) = (member(), member());
    let (id, frame) = a
        .book
        .create("saved", [1; 16], vec![package_of(&a.book, &mut b)])
        .expect("create");
    a.book.commit_stored(&id).expect("merge");
    b.book
        .receive(&commit_parts(&frame).1.expect("welcome"))
        .expect("join");
    // Persist A's storage, then reopen it from what was persisted only.
    let changes = a.book.changes();
    let values: HashMap<Vec<u8>, Vec<u8>> = changes.put.iter().cloned().collect();
    let public = a.book.signature_public();
    let names = a.book.names();
    let mut reopened = GroupBook::open(&a.identity, values, Some(&public), &names).expect("reopen");
    let text = send_bytes(&reopened.send(&id, [2; 16], "after restart").expect("send"));
    assert_eq!(text_of(b.book.receive(&text).expect("read")), "after restart");
    assert!(reopened.changes().put.len() + reopened.changes().deleted.len() > 0);
}
