//! The group and KeyPackage contract (docs/PROTOCOL.md 8), checked against every engine
//! that [`Store::supports_groups`].

use super::group::*;
use super::*;

const GROUP: &[u8] = b"group-0123456789";

fn key(n: u8) -> IdentityBytes {
    [n; 32]
}

fn upload(sender: u8, id: u8, epoch: u64, commit: Option<CommitChange>) -> WriteOp {
    WriteOp::Group(GroupWrite {
        group_id: GROUP.to_vec(),
        sender: key(sender),
        msg_id: [id; 16],
        epoch,
        timestamp_ms: 1_000,
        message: Bytes::from(vec![0x10, id]),
        commit,
    })
}

fn change(members: &[u8], added: &[u8]) -> Option<CommitChange> {
    Some(CommitChange {
        members: members.iter().map(|m| key(*m)).collect(),
        added: added.iter().map(|m| key(*m)).collect(),
        welcome: (!added.is_empty()).then(|| Bytes::from_static(&[0x10, 0xEE])),
    })
}

fn one(store: &mut dyn Store, op: WriteOp) -> GroupResult {
    match store.commit(&[op], &Quotas::UNLIMITED).expect("commit").pop() {
        Some(WriteResult::Group(result)) => result,
        other => panic!("not a group result: {other:?}"),
    }
}

fn recipients(result: &GroupResult) -> Vec<(IdentityBytes, Vec<u8>)> {
    match result {
        GroupResult::Stored { queued, .. } => {
            queued.iter().map(|q| (q.recipient, q.payload.to_vec())).collect()
        }
        other => panic!("not stored: {other:?}"),
    }
}

/// Payloads queued for `member`, oldest first.
fn queue(store: &mut dyn Store, member: u8) -> Vec<Vec<u8>> {
    store
        .pending(&key(member), 0, 100, 0)
        .expect("pending")
        .into_iter()
        .map(|m| m.payload.to_vec())
        .collect()
}

pub(crate) fn check(store: &mut dyn Store) {
    // Nothing reaches a group that does not exist, except its creator's first commit.
    assert_eq!(one(store, upload(1, 1, 0, None)), GroupResult::UnknownGroup);
    assert_eq!(
        one(store, upload(1, 1, 3, change(&[1, 2], &[2]))),
        GroupResult::UnknownGroup
    );
    // Lists that do not fit are refused and change nothing.
    for bad in [
        change(&[2, 3], &[2, 3]), // the committer leaves itself out
        change(&[1, 2, 2], &[2]), // a member twice
        change(&[1, 2, 3], &[2]), // 3 new but not added
        change(&[1, 2], &[2, 3]), // 3 added but not a member
        Some(CommitChange {
            welcome: None,
            ..change(&[1, 2], &[2]).expect("change")
        }), // added without a Welcome
    ] {
        assert!(matches!(
            one(store, upload(1, 9, 0, bad)),
            GroupResult::Invalid(_)
        ));
    }
    assert_eq!(
        one(store, upload(1, 1, 0, None)),
        GroupResult::UnknownGroup,
        "still no group"
    );

    // Creation: 1 adds 2 and 3; both get the Welcome, not the commit.
    let created = one(store, upload(1, 1, 0, change(&[1, 2, 3], &[2, 3])));
    assert!(matches!(created, GroupResult::Stored { epoch: 1, .. }));
    assert_eq!(
        recipients(&created),
        vec![(key(2), vec![0x10, 0xEE]), (key(3), vec![0x10, 0xEE])]
    );
    // The same commit again is a duplicate; another commit for epoch 0 is stale.
    assert_eq!(
        one(store, upload(1, 1, 0, change(&[1, 2, 3], &[2, 3]))),
        GroupResult::Duplicate
    );
    assert_eq!(
        one(store, upload(2, 7, 0, change(&[1, 2, 3], &[]))),
        GroupResult::Stale { epoch: 1 }
    );

    // An application message reaches every other member once, in the group's order.
    let sent = one(store, upload(2, 2, 1, None));
    assert_eq!(
        recipients(&sent),
        vec![(key(1), vec![0x10, 2]), (key(3), vec![0x10, 2])]
    );
    assert_eq!(
        one(store, upload(2, 2, 1, None)),
        GroupResult::Stored {
            epoch: 1,
            queued: vec![]
        },
        "a resent upload queues nothing again"
    );
    // A non-member is refused; a message of an old or future epoch is stale.
    assert_eq!(one(store, upload(4, 3, 1, None)), GroupResult::NotMember);
    assert_eq!(one(store, upload(3, 3, 0, None)), GroupResult::Stale { epoch: 1 });
    assert_eq!(one(store, upload(3, 3, 5, None)), GroupResult::Stale { epoch: 1 });

    // Two commits for epoch 1 in one batch: the first wins, the second is stale.
    let both = store
        .commit(
            &[
                upload(3, 4, 1, change(&[1, 2, 3, 4], &[4])),
                upload(2, 5, 1, change(&[1, 2], &[])),
            ],
            &Quotas::UNLIMITED,
        )
        .expect("commit");
    assert!(matches!(
        both[0],
        WriteResult::Group(GroupResult::Stored { epoch: 2, .. })
    ));
    assert_eq!(both[1], WriteResult::Group(GroupResult::Stale { epoch: 2 }));

    // 2 removes 3 (epoch 2 → 3): 3 still gets the commit that removes it, then nothing.
    let removed = one(store, upload(2, 6, 2, change(&[1, 2, 4], &[])));
    assert_eq!(
        recipients(&removed).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![key(1), key(3), key(4)]
    );
    let after = one(store, upload(1, 8, 3, None));
    assert_eq!(
        recipients(&after).iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![key(2), key(4)]
    );
    assert_eq!(one(store, upload(3, 9, 3, None)), GroupResult::NotMember);

    // Every member's queue holds the group's messages in the group's order.
    assert_eq!(queue(store, 1), vec![vec![0x10, 2], vec![0x10, 4], vec![0x10, 6]]);
    assert_eq!(
        queue(store, 4),
        vec![vec![0x10, 0xEE], vec![0x10, 6], vec![0x10, 8]]
    );
    assert_eq!(
        queue(store, 3),
        vec![vec![0x10, 0xEE], vec![0x10, 2], vec![0x10, 6]],
        "the removed member's queue ends with its removal"
    );
    // Copies are acknowledged one by one, under their fan-out ids.
    let first = &store.pending(&key(1), 0, 1, 0).expect("pending")[0];
    assert_eq!(first.msg_id, e2ee_protocol::group::fan_out_id(&[2; 16], &key(1)));
    let ack = WriteOp::Ack {
        recipient: key(1),
        sender: key(2),
        msg_id: first.msg_id,
    };
    assert_eq!(
        store.commit(&[ack], &Quotas::UNLIMITED).expect("ack"),
        vec![WriteResult::Acked(true)]
    );
    assert_eq!(queue(store, 1).len(), 2);
    assert_eq!(queue(store, 3).len(), 3, "another member's copy stays");

    check_key_packages(store);
    check_group_quotas(store);
}

/// All copies of one upload are held to the quotas together: all or nothing.
fn check_group_quotas(store: &mut dyn Store) {
    let group = b"quota-group-0123".to_vec();
    let write = |sender: u8, id: u8, epoch: u64, commit: Option<CommitChange>, len: usize| {
        WriteOp::Group(GroupWrite {
            group_id: group.clone(),
            sender: key(sender),
            msg_id: [id; 16],
            epoch,
            timestamp_ms: 2_000,
            message: Bytes::from(vec![0x10; len]),
            commit,
        })
    };
    let result = |store: &mut dyn Store, op: WriteOp, quotas: &Quotas| match store
        .commit(&[op], quotas)
        .expect("commit")
        .pop()
    {
        Some(WriteResult::Group(result)) => result,
        other => panic!("{other:?}"),
    };
    // 60 fake members: a commit is held to the sender's byte quota, not to queue bounds.
    let members: Vec<u8> = (60..120).collect();
    let everyone: Vec<u8> = std::iter::once(50).chain(members.iter().copied()).collect();
    let tight = Quotas {
        queue: 0,
        sender_messages: 0,
        sender_bytes: 60 * stored_size(2) - 1,
        stored_bytes: u64::MAX,
    };
    let create = || write(50, 1, 0, change(&everyone, &members), 10);
    assert!(matches!(
        result(store, create(), &tight),
        GroupResult::QuotaExceeded(Quota::SenderBytes)
    ));
    assert_eq!(queue(store, 60), Vec::<Vec<u8>>::new(), "nothing queued");
    let roomy = Quotas {
        queue: 0,
        sender_messages: 0,
        ..Quotas::UNLIMITED
    };
    assert!(
        matches!(
            result(store, create(), &roomy),
            GroupResult::Stored { epoch: 1, .. }
        ),
        "a commit ignores queue bounds and message counts"
    );
    // A text is held to every bound: queue, messages, bytes, the budget.
    let text = || write(50, 2, 1, None, 100);
    let cases = [
        (
            Quotas {
                queue: 1,
                ..Quotas::UNLIMITED
            },
            Quota::RecipientQueue,
        ),
        (
            Quotas {
                sender_messages: 60 + 59,
                ..Quotas::UNLIMITED
            },
            Quota::SenderMessages,
        ),
        (
            Quotas {
                stored_bytes: store.stored_usage().expect("usage").bytes + 100,
                ..Quotas::UNLIMITED
            },
            Quota::StorageBudget,
        ),
    ];
    for (quotas, expected) in cases {
        assert_eq!(
            result(store, text(), &quotas),
            GroupResult::QuotaExceeded(expected)
        );
    }
    assert_eq!(
        queue(store, 61).len(),
        1,
        "only the Welcome: nothing of the refused text"
    );
    assert!(matches!(
        result(store, text(), &Quotas::UNLIMITED),
        GroupResult::Stored { epoch: 1, .. }
    ));
    assert_eq!(queue(store, 61).len(), 2);
}

/// What a take handed out: (package, remaining), the one-time flag checked against the
/// package (`8`, `9` are the last-resort ones here).
fn take(store: &mut dyn Store, owner: &IdentityBytes, one_time: bool) -> Option<(Vec<u8>, u32)> {
    let taken = store.take_key_package(owner, one_time).expect("take")?;
    assert_eq!(
        taken.one_time,
        !matches!(taken.package[..], [8] | [9]),
        "{taken:?}"
    );
    Some((taken.package, taken.remaining))
}

fn check_key_packages(store: &mut dyn Store) {
    let owner = key(40);
    assert_eq!(take(store, &owner, true), None, "never published");
    assert_eq!(
        store
            .publish_key_packages(&owner, &[vec![1], vec![2], vec![3]], None, 2)
            .expect("publish"),
        2,
        "held up to the bound"
    );
    assert_eq!(take(store, &owner, true), Some((vec![1], 1)));
    assert_eq!(take(store, &owner, true), Some((vec![2], 0)));
    assert_eq!(take(store, &owner, true), None, "no last resort yet");
    assert_eq!(
        store
            .publish_key_packages(&owner, &[], Some(&[9]), 2)
            .expect("publish"),
        0
    );
    for _ in 0..3 {
        assert_eq!(
            take(store, &owner, true),
            Some((vec![9], 0)),
            "the last resort is never used up"
        );
    }
    assert_eq!(
        store
            .publish_key_packages(&owner, &[vec![4]], Some(&[8]), 5)
            .expect("publish"),
        1
    );
    assert_eq!(take(store, &owner, true), Some((vec![4], 0)), "one-time first");
    assert_eq!(take(store, &owner, true), Some((vec![8], 0)), "replaced");
    assert_eq!(take(store, &key(41), true), None, "per owner");
    // Past the handout limit the last resort is handed out and one-time ones stay.
    store
        .publish_key_packages(&owner, &[vec![5]], None, 5)
        .expect("publish");
    assert_eq!(
        take(store, &owner, false),
        Some((vec![8], 1)),
        "limited: the last resort"
    );
    assert_eq!(
        take(store, &owner, true),
        Some((vec![5], 0)),
        "the one-time one stayed"
    );
    let fresh = key(42);
    store
        .publish_key_packages(&fresh, &[vec![6]], None, 5)
        .expect("publish");
    assert_eq!(
        take(store, &fresh, false),
        None,
        "limited and no last resort: none"
    );
    assert_eq!(take(store, &fresh, true), Some((vec![6], 0)));
}
