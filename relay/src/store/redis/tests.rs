//! The Redis engine against a `redis-server` of its own: the shared store contract, a
//! restart of Redis, the durability check, and a Redis that goes away.

use super::*;
use crate::store::contract;

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
