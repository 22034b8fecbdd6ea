//! The Redis engine against a `redis-server` of its own: the shared store and group
//! contracts, a restart of Redis, the durability check, and a Redis that goes away.

use super::*;
use crate::store::group::{CommitChange, GroupWrite};
use crate::store::{contract, group_contract};

fn endpoint(server: &RedisServer) -> RedisEndpoint {
    RedisEndpoint {
        urls: vec![server.url()],
        cluster: false,
        require_fsync: true,
        wait_replicas: 0,
    }
}

fn store(server: &RedisServer) -> RedisStore {
    RedisStore::open(endpoint(server), "e2ee-test", "node-a").expect("open")
}

#[test]
fn redis_store_meets_the_store_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RedisServer::start(dir.path()).expect("redis-server");
    contract::check(&mut store(&server));
}

#[test]
fn redis_store_meets_the_quota_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RedisServer::start(dir.path()).expect("redis-server");
    contract::check_quotas(&mut store(&server));
}

#[test]
fn redis_store_meets_the_store_contract_on_a_redis_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = RedisCluster::start(dir.path(), 3).expect("redis cluster");
    let endpoint = RedisEndpoint {
        urls: cluster.urls(),
        cluster: true,
        require_fsync: true,
        wait_replicas: 0,
    };
    let mut store = RedisStore::open(endpoint, "e2ee-test", "node-a").expect("open");
    contract::check(&mut store);
    contract::check_quotas(
        &mut RedisStore::open(
            RedisEndpoint {
                urls: cluster.urls(),
                cluster: true,
                require_fsync: true,
                wait_replicas: 0,
            },
            "e2ee-quotas",
            "node-a",
        )
        .expect("open"),
    );
    group_contract::check(
        &mut RedisStore::open(
            RedisEndpoint {
                urls: cluster.urls(),
                cluster: true,
                require_fsync: true,
                wait_replicas: 0,
            },
            "e2ee-groups",
            "node-a",
        )
        .expect("open"),
    );
}

#[test]
fn redis_store_meets_the_group_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RedisServer::start(dir.path()).expect("redis-server");
    let mut store = store(&server);
    assert!(store.supports_groups());
    group_contract::check(&mut store);
}

/// A commit by `sender` (1 or 2) in `epoch` of a group of 1 and 2 that keeps them both.
fn keeping_commit(sender: u8, epoch: u64) -> WriteOp {
    let mut msg_id = [sender; 16];
    msg_id[8..].copy_from_slice(&epoch.to_be_bytes());
    WriteOp::Group(GroupWrite {
        group_id: b"raced".to_vec(),
        sender: [sender; 32],
        msg_id,
        epoch,
        timestamp_ms: 1_000,
        message: vec![0x10, sender].into(),
        commit: Some(CommitChange {
            members: vec![[1; 32], [2; 32]],
            added: vec![],
            welcome: None,
        }),
    })
}

#[test]
fn two_relays_racing_commits_for_one_epoch_get_one_stored_and_one_stale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RedisServer::start(dir.path()).expect("redis-server");
    let mut first = store(&server);
    let second = RedisStore::open(endpoint(&server), "e2ee-test", "node-b").expect("open");
    let create = WriteOp::Group(GroupWrite {
        commit: Some(CommitChange {
            members: vec![[1; 32], [2; 32]],
            added: vec![[2; 32]],
            welcome: Some(vec![0x10, 0xEE].into()),
        }),
        ..match keeping_commit(1, 0) {
            WriteOp::Group(write) => write,
            _ => unreachable!("a group write"),
        }
    });
    let created = first.commit(&[create], &Quotas::UNLIMITED).expect("create");
    assert!(matches!(
        created[0],
        WriteResult::Group(GroupResult::Stored { epoch: 1, .. })
    ));
    // Each round, the two relays commit for the same epoch at once (each reads the group
    // before its script runs, so often both read the same epoch).
    let rounds = 40u64;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let race = |mut store: RedisStore, sender: u8, barrier: std::sync::Arc<std::sync::Barrier>| {
        std::thread::spawn(move || {
            (1..=rounds)
                .map(|epoch| {
                    barrier.wait();
                    let result = store
                        .commit(&[keeping_commit(sender, epoch)], &Quotas::UNLIMITED)
                        .expect("commit");
                    barrier.wait();
                    result.into_iter().next().expect("a result")
                })
                .collect::<Vec<_>>()
        })
    };
    let one = race(first, 1, barrier.clone());
    let two = race(second, 2, barrier);
    let (one, two) = (one.join().expect("relay one"), two.join().expect("relay two"));
    for (epoch, (a, b)) in (1..=rounds).zip(one.iter().zip(&two)) {
        let stale = WriteResult::Group(GroupResult::Stale { epoch: epoch + 1 });
        let stored = |r: &WriteResult| matches!(r, WriteResult::Group(GroupResult::Stored { epoch: e, queued }) if *e == epoch + 1 && queued.len() == 1);
        assert!(
            (stored(a) && *b == stale) || (*a == stale && stored(b)),
            "epoch {epoch}: {a:?} and {b:?}"
        );
    }
    // Each member's queue holds exactly the other's winning commits, in epoch order.
    let mut reader = store(&server);
    let total: usize = [1u8, 2]
        .iter()
        .map(|m| reader.pending(&[*m; 32], 0, 1_000, 0).expect("pending").len())
        .sum();
    assert_eq!(total, 1 + rounds as usize, "the welcome and one copy per epoch");
}

#[test]
fn a_group_log_keeps_the_last_commits_and_a_batch_of_commits_is_decided_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RedisServer::start(dir.path()).expect("redis-server");
    let mut store = store(&server);
    let commit = |epoch: u64| {
        let mut msg_id = [0; 16];
        msg_id[8..].copy_from_slice(&epoch.to_be_bytes());
        WriteOp::Group(GroupWrite {
            group_id: b"alone".to_vec(),
            sender: [1; 32],
            msg_id,
            epoch,
            timestamp_ms: 1_000,
            message: vec![0x10, 1].into(),
            commit: Some(CommitChange {
                members: vec![[1; 32]],
                added: vec![],
                welcome: None,
            }),
        })
    };
    // One batch: the group is made, then moved on epoch by epoch past the log's length.
    let commits: Vec<WriteOp> = (0..=GROUP_LOG_KEPT).map(commit).collect();
    let results = store.commit(&commits, &Quotas::UNLIMITED).expect("commit");
    for (epoch, result) in (0..=GROUP_LOG_KEPT).zip(&results) {
        assert_eq!(
            *result,
            WriteResult::Group(GroupResult::Stored {
                epoch: epoch + 1,
                queued: vec![]
            })
        );
    }
    let log = store.key_of("gl:", b"alone");
    let kept: u64 = store
        .command(::redis::cmd("HLEN").arg(log).clone())
        .expect("hlen");
    assert_eq!(kept, GROUP_LOG_KEPT);
    // The first commit is no longer known; the second still is.
    let now = WriteResult::Group(GroupResult::Stale {
        epoch: GROUP_LOG_KEPT + 1,
    });
    assert_eq!(
        store.commit(&[commit(0)], &Quotas::UNLIMITED).expect("resend"),
        vec![now]
    );
    assert_eq!(
        store.commit(&[commit(1)], &Quotas::UNLIMITED).expect("resend"),
        vec![WriteResult::Group(GroupResult::Duplicate)]
    );
}

#[test]
fn a_batch_whose_group_changed_since_it_was_read_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RedisServer::start(dir.path()).expect("redis-server");
    let mut store = store(&server);
    // The group "g" read as absent, but Redis holds a record for it now.
    let record = GroupRecord {
        epoch: 3,
        members: vec![[1; 32]],
    };
    let key = store.key_of("g:", b"g");
    let _: () = store
        .command(::redis::cmd("SET").arg(key).arg(record.encode()).clone())
        .expect("set");
    let unlimited = quota_arg(u64::MAX).to_string();
    let args: [&[u8]; 14] = [
        b"node-a",
        unlimited.as_bytes(),
        unlimited.as_bytes(),
        unlimited.as_bytes(),
        unlimited.as_bytes(),
        b"1",
        b"g",
        b"",
        b"A",
        &[1; 32],
        &[2; 32],
        &[3; 16],
        b"1000",
        b"payload",
    ];
    let answer = store.run(|s| &s.commit, &args).expect("run");
    assert_eq!(answer, Value::Array(vec![Value::BulkString(b"R".to_vec())]));
    assert_eq!(store.queue_len(&[1; 32]).expect("len"), 0, "nothing written");
}

#[test]
fn what_was_committed_survives_a_kill_9_of_redis() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = RedisServer::start(dir.path()).expect("redis-server");
    let port = server.port();
    let mut store = store(&server);
    let appends: Vec<WriteOp> = (0..50u8)
        .map(|i| {
            WriteOp::Append(crate::store::NewMessage {
                recipient: [1; 32],
                sender: [2; 32],
                msg_id: [i; 16],
                timestamp_ms: 1_000 + u64::from(i),
                payload: vec![i; 100].into(),
            })
        })
        .collect();
    let results = store.commit(&appends, &Quotas::UNLIMITED).expect("commit");
    assert!(results.iter().all(|r| matches!(r, WriteResult::Appended { .. })));
    server.kill9().expect("kill");
    // Redis away: a clear error naming it, no answer made up.
    let err = store.queue_len(&[1; 32]).expect_err("redis is down");
    assert!(err.to_string().contains(&server.url()), "{err}");
    let _server = RedisServer::start_on(dir.path(), port).expect("restart");
    // The same store reconnects by itself.
    assert_eq!(store.queue_len(&[1; 32]).expect("len"), 50);
    let pending = store.pending(&[1; 32], 0, 100, 0).expect("pending");
    assert_eq!(pending.len(), 50);
    assert!(pending.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
    assert_eq!(pending[49].payload.as_ref(), &[49u8; 100][..]);
}

#[test]
fn a_redis_that_does_not_fsync_every_write_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RedisServer::start(dir.path()).expect("redis-server");
    let mut conn = connection::connection_to(&server.url(), REDIS_TIMEOUT).expect("conn");
    let _: () = ::redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("everysec")
        .query(&mut conn)
        .expect("config");
    let err = RedisStore::open(endpoint(&server), "p", "n")
        .err()
        .expect("refused");
    assert!(err.to_string().contains("appendfsync \"everysec\""), "{err}");
    let relaxed = RedisEndpoint {
        require_fsync: false,
        ..endpoint(&server)
    };
    assert!(RedisStore::open(relaxed, "p", "n").is_ok());
}

#[test]
fn a_store_without_redis_fails_to_open_with_the_address() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let endpoint = RedisEndpoint {
        urls: vec![format!("redis://127.0.0.1:{port}")],
        cluster: false,
        require_fsync: false,
        wait_replicas: 0,
    };
    let err = RedisStore::open(endpoint, "p", "n").err().expect("no redis");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn an_expiry_pass_removes_a_bounded_number_and_the_next_takes_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RedisServer::start(dir.path()).expect("redis-server");
    let mut store = store(&server);
    let appends: Vec<WriteOp> = (0..25_000u32)
        .map(|i| {
            let mut msg_id = [0u8; 16];
            msg_id[..4].copy_from_slice(&i.to_be_bytes());
            WriteOp::Append(crate::store::NewMessage {
                recipient: [1 + (i % 7) as u8; 32],
                sender: [9; 32],
                msg_id,
                timestamp_ms: 1_000,
                payload: vec![0; 8].into(),
            })
        })
        .collect();
    store.commit(&appends, &Quotas::UNLIMITED).expect("commit");
    let expire = WriteOp::Expire {
        before_ms: 2_000,
        acked_before_ms: 2_000,
        notices_before_ms: 0,
    };
    let passes: Vec<WriteResult> = (0..4)
        .map(|_| {
            store
                .commit(std::slice::from_ref(&expire), &Quotas::UNLIMITED)
                .expect("expire")[0]
                .clone()
        })
        .collect();
    assert_eq!(
        passes,
        [10_000, 10_000, 5_000, 0].map(WriteResult::Expired).to_vec()
    );
    assert_eq!(store.stored_usage().expect("usage"), Usage::default());
    assert_eq!(store.sender_usage(&[9; 32]).expect("usage"), Usage::default());
    assert_eq!(
        store.expired_notices(&[9; 32], 0, 30_000).expect("notices").len(),
        25_000
    );
}

#[test]
fn with_wait_replicas_a_commit_waits_for_a_replica_and_fails_without_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let primary = RedisServer::start(&dir.path().join("primary")).expect("primary");
    let replica_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let primary_port = primary.port().to_string();
    let mut replica = RedisServer::start_with(
        &dir.path().join("replica"),
        replica_port,
        &["--replicaof", "127.0.0.1", &primary_port],
    )
    .expect("replica");
    let waiting = RedisEndpoint {
        wait_replicas: 1,
        ..endpoint(&primary)
    };
    let mut store = RedisStore::open(waiting, "e2ee-test", "node-a").expect("open");
    let append = |i: u8| {
        WriteOp::Append(crate::store::NewMessage {
            recipient: [1; 32],
            sender: [2; 32],
            msg_id: [i; 16],
            timestamp_ms: 1_000,
            payload: vec![i; 10].into(),
        })
    };
    // The replica may still be syncing: the first commits wait for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store.commit(&[append(1)], &Quotas::UNLIMITED).is_err() {
        assert!(std::time::Instant::now() < deadline, "the replica acknowledges");
    }
    // Acknowledged by the replica: it holds the message.
    let mut on_replica = RedisStore::open(endpoint(&replica), "e2ee-test", "reader").expect("replica");
    assert_eq!(on_replica.queue_len(&[1; 32]).expect("len"), 1);
    replica.kill9().expect("kill the replica");
    let err = store
        .commit(&[append(2)], &Quotas::UNLIMITED)
        .expect_err("no replica to acknowledge");
    assert!(err.to_string().contains("0 of 1 replicas"), "{err}");
}

#[test]
fn an_evicting_redis_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RedisServer::start(dir.path()).expect("redis-server");
    let mut conn = connection::connection_to(&server.url(), REDIS_TIMEOUT).expect("conn");
    let _: () = ::redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut conn)
        .expect("config");
    let err = RedisStore::open(endpoint(&server), "p", "n")
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("maxmemory-policy is \"allkeys-lru\""),
        "{err}"
    );
}

#[test]
fn a_store_whose_redis_restarted_while_idle_answers_the_first_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = RedisServer::start(dir.path()).expect("redis-server");
    let port = server.port();
    let mut store = store(&server);
    assert_eq!(store.queue_len(&[1; 32]).expect("len"), 0);
    server.kill9().expect("kill");
    let _server = RedisServer::start_on(dir.path(), port).expect("restart");
    // The old connection is dead: the first command finds out and runs again on a new one.
    assert_eq!(store.queue_len(&[1; 32]).expect("answered"), 0);
}

#[test]
fn a_release_compares_claim_times_exactly_above_2_pow_53() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RedisServer::start(dir.path()).expect("redis-server");
    let mut store = store(&server);
    let big = (1u64 << 53) + 1;
    let (alice, claim) = contract::claim(1, "alice", big);
    store
        .put_claim("alice", &alice, &claim, 1_000, Lease::from_secs(3600))
        .expect("put");
    assert_eq!(
        store.release_claim("alice", &alice, big - 1).expect("release"),
        ReleaseOutcome::OlderThanClaim { claim_issued_ms: big }
    );
    assert_eq!(
        store.release_claim("alice", &alice, big).expect("release"),
        ReleaseOutcome::Released
    );
}

#[test]
fn one_time_prekey_handouts_share_one_bucket_across_stores() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = RedisServer::start(dir.path()).expect("redis-server");
    // Two relays' stores on one Redis, each with a limit of 3 an hour.
    let mut first = store(&server).with_handout_limit(3, 1);
    let mut second = store(&server).with_handout_limit(3, 1);
    let owner = [6; 32];
    let opks: Vec<[u8; 32]> = (1..=10u8).map(|i| [i; 32]).collect();
    first
        .publish_prekeys(&owner, &[7; 32], &[8; 64], &opks, 100)
        .expect("publish");
    let mut handed = 0;
    for i in 0..6 {
        let store = if i % 2 == 0 { &mut first } else { &mut second };
        let bundle = store.fetch_bundle(&owner, true).expect("fetch").expect("bundle");
        handed += usize::from(bundle.one_time_prekey.is_some());
    }
    assert_eq!(handed, 3, "three handouts in all, not three per relay");
    assert_eq!(first.prekey_count(&owner).expect("count"), Some(7));
    // Without a limit (another deployment's setting) nothing is held back.
    let mut free = store(&server);
    assert!(free
        .fetch_bundle(&owner, true)
        .expect("fetch")
        .expect("bundle")
        .one_time_prekey
        .is_some());
}
