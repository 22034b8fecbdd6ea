//! Several relays on one Redis as one service (docs/RELAY.md, "A relay cluster"):
//! delivery across relays both ways, an offline queue read through another relay,
//! replacement across relays, one-time prekeys handed out once through three relays,
//! Redis (one server, or the primary of a Redis Cluster) killed and restarted with
//! nothing acknowledged lost, a relay whose Redis is gone acknowledging nothing, and a
//! relay killed under load whose clients move to another.

use std::time::Duration;

use e2ee_integration::client::{msg_id, RelayClient};
use e2ee_integration::process::{spawn_relay, RelayProcess};
use e2ee_protocol::frame::{ErrorCode, Frame};
use e2ee_protocol::identity::IdentityKeyPair;
use e2ee_protocol::prekey::{PreKeyBundle, PreKeyStore};
use e2ee_relay::settings::StoreEngine;
use e2ee_relay::store::redis::{RedisCluster, RedisEndpoint, RedisServer, RedisStore};
use e2ee_relay::store::Store;
use e2ee_relay::RelayHandle;
use rand_core::OsRng;

const WAIT: Duration = Duration::from_secs(10);

/// A Redis server and `n` relays on it, each a named node ("relay-1", …).
struct Cluster {
    redis: RedisServer,
    relays: Vec<(RelayHandle, tempfile::TempDir)>,
    _dir: tempfile::TempDir,
}

/// A relay on the Redis at `urls` (a Redis Cluster with `cluster`) as node `node`, then
/// `tune`.
fn redis_relay(
    urls: Vec<String>,
    cluster: bool,
    node: &str,
    tune: impl FnOnce(&mut e2ee_relay::RelaySettings),
) -> anyhow::Result<(RelayHandle, tempfile::TempDir)> {
    let node = node.to_owned();
    spawn_relay(move |s| {
        s.store.engine = StoreEngine::Redis;
        s.store.redis_urls = urls;
        s.store.redis_cluster = cluster;
        s.store.node_name = node;
        tune(s);
    })
}

fn cluster(n: usize) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(&dir.path().join("redis")).expect("redis-server starts");
    let relays = (1..=n)
        .map(|i| {
            let url = redis.url();
            redis_relay(vec![url], false, &format!("relay-{i}"), |s| {
                s.limits.opk_handout_capacity = 1000;
            })
            .expect("relay starts")
        })
        .collect();
    Cluster {
        redis,
        relays,
        _dir: dir,
    }
}

impl Cluster {
    fn addr(&self, i: usize) -> std::net::SocketAddr {
        self.relays[i].0.addr
    }
}

/// An identity, as a seed: each connection of it makes its key pair again.
fn identity() -> [u8; 32] {
    let mut seed = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut OsRng, &mut seed);
    seed
}

fn key_of(seed: &[u8; 32]) -> [u8; 32] {
    *IdentityKeyPair::from_seed(seed).public().as_bytes()
}

async fn connect(addr: std::net::SocketAddr, seed: &[u8; 32]) -> RelayClient {
    RelayClient::connect(addr, IdentityKeyPair::from_seed(seed))
        .await
        .expect("connect")
}

async fn send(from: &mut RelayClient, to: [u8; 32], n: u64) {
    let mut other = Vec::new();
    from.send_message(to, msg_id(n), format!("message {n}").into_bytes(), &mut other)
        .await
        .expect("stored and acknowledged");
}

#[tokio::test]
async fn a_message_crosses_relays_both_ways_at_once() {
    let cluster = cluster(2);
    let (a, b) = (identity(), identity());
    let mut alice = connect(cluster.addr(0), &a).await;
    let mut bob = connect(cluster.addr(1), &b).await;
    for n in 1..=20 {
        send(&mut alice, bob.me(), n).await;
        let got = bob
            .receive_messages(1, WAIT)
            .await
            .expect("bob, on the other relay");
        assert_eq!(got[0].0, alice.me());
        assert_eq!(got[0].2, format!("message {n}").into_bytes());
        send(&mut bob, alice.me(), 100 + n).await;
        let got = alice
            .receive_messages(1, WAIT)
            .await
            .expect("alice, on the other relay");
        assert_eq!(got[0].2, format!("message {}", 100 + n).into_bytes());
    }
}

#[tokio::test]
async fn an_offline_queue_is_read_through_another_relay_in_order() {
    let cluster = cluster(2);
    let (a, b) = (identity(), identity());
    let mut alice = connect(cluster.addr(0), &a).await;
    let bob_key = key_of(&b);
    for n in 1..=30 {
        send(&mut alice, bob_key, n).await;
    }
    let mut bob = connect(cluster.addr(1), &b).await;
    let got = bob.receive_messages(30, WAIT).await.expect("the queue");
    let ids: Vec<[u8; 16]> = got.iter().map(|m| m.1).collect();
    assert_eq!(ids, (1..=30).map(msg_id).collect::<Vec<_>>(), "in order");
    // Acknowledged through relay 2: once the acknowledgements are committed (relay 2
    // commits them in its next batch; a reconnect within that window may see a message
    // again, which agents drop as a redelivery), not delivered again through relay 1.
    drop(bob);
    let mut store = RedisStore::open(
        RedisEndpoint {
            urls: vec![cluster.redis.url()],
            cluster: false,
            require_fsync: true,
            wait_replicas: 0,
        },
        "e2ee",
        "observer",
    )
    .expect("redis");
    let deadline = std::time::Instant::now() + WAIT;
    while store.queue_len(&bob_key).expect("queue") > 0 {
        assert!(std::time::Instant::now() < deadline, "acknowledgements committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut again = connect(cluster.addr(0), &b).await;
    assert!(
        again
            .receive_messages(1, Duration::from_millis(500))
            .await
            .is_err(),
        "nothing left"
    );
}

#[tokio::test]
async fn a_login_on_another_relay_replaces_the_older_connection() {
    let cluster = cluster(2);
    let (a, b) = (identity(), identity());
    let mut old = connect(cluster.addr(0), &b).await;
    let mut new = connect(cluster.addr(1), &b).await;
    match old.recv_or_closed(WAIT).await.expect("answer") {
        Some(Frame::Error {
            code: ErrorCode::Replaced,
            ..
        }) => {}
        other => panic!("expected Replaced on the older connection, got {other:?}"),
    }
    // Messages reach the newer connection, from either relay.
    let mut alice = connect(cluster.addr(0), &a).await;
    send(&mut alice, new.me(), 1).await;
    assert_eq!(new.receive_messages(1, WAIT).await.expect("newer").len(), 1);
    // And back on the first relay, the newest wins again.
    let mut newest = connect(cluster.addr(0), &b).await;
    match new.recv_or_closed(WAIT).await.expect("answer") {
        Some(Frame::Error {
            code: ErrorCode::Replaced,
            ..
        }) => {}
        other => panic!("expected Replaced, got {other:?}"),
    }
    send(&mut alice, newest.me(), 2).await;
    assert_eq!(newest.receive_messages(1, WAIT).await.expect("newest").len(), 1);
}

#[tokio::test]
async fn each_one_time_prekey_is_handed_out_once_through_three_relays() {
    const PREKEYS: usize = 30;
    const FETCHES: usize = 15;
    let cluster = cluster(3);
    let b = identity();
    let mut bob = connect(cluster.addr(0), &b).await;
    let store = PreKeyStore::generate(&bob.identity, PREKEYS, &mut OsRng);
    let bundle = store.bundle(bob.identity.public()).encode();
    bob.send(Frame::PublishPreKeys { bundle }).await.expect("publish");
    assert_eq!(
        bob.recv(WAIT).await.expect("stored"),
        Frame::PreKeysStored { opks: PREKEYS as u32 }
    );
    let bob_key = bob.me();
    // Three fetchers, one per relay, at the same time: 45 fetches for 30 prekeys.
    let fetchers = (0..3).map(|i| {
        let addr = cluster.addr(i);
        tokio::spawn(async move {
            let mut client = connect(addr, &identity()).await;
            let mut got = Vec::new();
            for request in 0..FETCHES as u32 {
                match client.fetch_bundle(request, bob_key).await.expect("answer") {
                    Frame::Bundle {
                        bundle: Some(bytes), ..
                    } => {
                        let bundle = PreKeyBundle::decode_verified(&bytes).expect("verifies");
                        got.extend(bundle.one_time_prekeys.iter().map(|k| *k.as_bytes()));
                    }
                    other => panic!("expected a bundle, got {other:?}"),
                }
            }
            got
        })
    });
    let mut handed: Vec<[u8; 32]> = Vec::new();
    for fetcher in fetchers {
        handed.extend(fetcher.await.expect("fetcher"));
    }
    let total = handed.len();
    handed.sort_unstable();
    handed.dedup();
    assert_eq!(handed.len(), total, "no one-time prekey handed out twice");
    assert_eq!(total, PREKEYS, "every one handed out, then none");
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_when_redis_is_killed_and_restarted() {
    let mut cluster = cluster(2);
    let (a, b) = (identity(), identity());
    let mut alice = connect(cluster.addr(0), &a).await;
    let bob_key = key_of(&b);
    for n in 1..=100 {
        send(&mut alice, bob_key, n).await;
    }
    let port = cluster.redis.port();
    cluster.redis.kill9().expect("kill -9 redis");
    // Redis away: relay 1 acknowledges nothing (it closes the connection; the client
    // sends again on its next connection).
    let mut other = Vec::new();
    let refused = alice
        .send_message(bob_key, msg_id(101), b"while redis is down".to_vec(), &mut other)
        .await;
    assert!(refused.is_err(), "no SentAck without Redis");
    let dir = cluster._dir.path().join("redis");
    cluster.redis = RedisServer::start_on(&dir, port).expect("redis restarts");
    let mut alice = connect(cluster.addr(0), &a).await;
    send(&mut alice, bob_key, 101).await;
    let mut bob = connect(cluster.addr(1), &b).await;
    let got = bob.receive_messages(101, WAIT).await.expect("all of them");
    let ids: Vec<[u8; 16]> = got.iter().map(|m| m.1).collect();
    assert_eq!(ids, (1..=101).map(msg_id).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_relay_without_redis_does_not_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let err = redis_relay(vec![format!("redis://127.0.0.1:{port}")], false, "", |_| {})
        .err()
        .expect("no Redis, no relay");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
}

/// A relay process on `redis`, named `node`.
fn relay_process(dir: &std::path::Path, redis: &RedisServer, node: &str) -> RelayProcess {
    std::fs::create_dir_all(dir).expect("dir");
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nengine = \"redis\"\nredis_urls = [{:?}]\nnode_name = {node:?}\n",
            redis.url()
        ),
    )
    .expect("config");
    let config = config.display().to_string();
    RelayProcess::start(&dir.join("data"), &["--config", &config]).expect("relay starts")
}

/// Connects to the first of `relays` that answers, starting at `*at` (moved on past the
/// ones that do not).
async fn connect_any(relays: &[std::net::SocketAddr], at: &mut usize, seed: &[u8; 32]) -> RelayClient {
    for _ in 0..50 {
        let addr = relays[*at % relays.len()];
        match RelayClient::connect(addr, IdentityKeyPair::from_seed(seed)).await {
            Ok(client) => return client,
            Err(_) => *at += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no relay of {relays:?} answers");
}

#[tokio::test]
async fn a_relay_killed_under_load_loses_nothing_its_clients_move_to_another() {
    const MESSAGES: u64 = 300;
    const KILL_AT: u64 = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(&dir.path().join("redis")).expect("redis-server");
    let mut relay_a = relay_process(&dir.path().join("a"), &redis, "relay-a");
    let relay_b = relay_process(&dir.path().join("b"), &redis, "relay-b");
    let relays = [relay_a.addr, relay_b.addr];
    let (a, b) = (identity(), identity());
    let bob_key = key_of(&b);

    // Bob receives on relay A, and moves to B when A is gone.
    let receiver = tokio::spawn(async move {
        let mut at = 0;
        let mut bob = connect_any(&relays, &mut at, &b).await;
        let (mut seen, mut deliveries) = (std::collections::BTreeSet::new(), 0u64);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while (seen.len() as u64) < MESSAGES && tokio::time::Instant::now() < deadline {
            match bob.recv(Duration::from_secs(1)).await {
                Ok(Frame::Deliver { sender, msg_id, .. }) => {
                    deliveries += 1;
                    seen.insert(msg_id);
                    if bob.send(Frame::DeliveryAck { sender, msg_id }).await.is_err() {
                        at += 1;
                        bob = connect_any(&relays, &mut at, &b).await;
                    }
                }
                Ok(_) => {}
                Err(err) if err.to_string().contains("timed out") => {}
                Err(_) => {
                    at += 1;
                    bob = connect_any(&relays, &mut at, &b).await;
                }
            }
        }
        (seen, deliveries)
    });

    // Alice sends on relay A; each message until its SentAck, again on the next relay
    // after a failure (same id: the store deduplicates).
    let mut at = 0;
    let mut alice = connect_any(&relays, &mut at, &a).await;
    let mut acked = Vec::new();
    for n in 1..=MESSAGES {
        if n == KILL_AT {
            relay_a.kill9().expect("kill -9 relay A");
        }
        loop {
            let mut other = Vec::new();
            let sent = alice
                .send_message(bob_key, msg_id(n), format!("m{n}").into_bytes(), &mut other)
                .await;
            if sent.is_ok() {
                acked.push(msg_id(n));
                break;
            }
            at += 1;
            alice = connect_any(&relays, &mut at, &a).await;
        }
    }
    let (seen, deliveries) = receiver.await.expect("receiver");
    println!(
        "relay killed at message {KILL_AT}: {} acknowledged, {} received ({deliveries} deliveries)",
        acked.len(),
        seen.len()
    );
    assert_eq!(acked.len() as u64, MESSAGES);
    for id in &acked {
        assert!(seen.contains(id), "acknowledged message {id:?} not delivered");
    }
    drop(relay_b);
}

#[tokio::test]
async fn nothing_acknowledged_is_lost_when_the_cluster_primary_is_killed_and_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut redis = RedisCluster::start(&dir.path().join("redis"), 3).expect("redis cluster");
    let relays: Vec<_> = (1..=2)
        .map(|i| {
            let urls = redis.urls();
            redis_relay(urls, true, &format!("relay-{i}"), |_| {}).expect("relay starts")
        })
        .collect();
    let (a, b) = (identity(), identity());
    let bob_key = key_of(&b);
    let mut alice = connect(relays[0].0.addr, &a).await;
    for n in 1..=100 {
        send(&mut alice, bob_key, n).await;
    }
    // The primary that holds the deployment's slot (all its keys share one).
    let primary = redis.node_of("e2ee").expect("slot owner");
    let restart = tokio::task::spawn_blocking(move || {
        redis.restart9(primary).expect("kill -9 and restart the primary");
        redis
    });
    let _redis = restart.await.expect("restarted");
    // Relay 1 reconnects to the cluster by itself; a client that lost its connection
    // meanwhile sends again on a new one (same ids: the store deduplicates).
    // The relay answers a login only once its store answers: while the restarted primary
    // loads its AOF (longer on a busy machine) a login may wait past a client's own
    // timeout, and the client tries again, within the bound of this loop.
    let mut n = 101;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while n <= 120 {
        assert!(std::time::Instant::now() < deadline, "the relay stores again");
        let mut other = Vec::new();
        let sent = alice
            .send_message(
                bob_key,
                msg_id(n),
                format!("message {n}").into_bytes(),
                &mut other,
            )
            .await;
        if sent.is_ok() {
            n += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Ok(client) = RelayClient::connect(relays[0].0.addr, IdentityKeyPair::from_seed(&a)).await {
                alice = client;
            }
        }
    }
    let mut bob = connect(relays[1].0.addr, &b).await;
    let got = bob.receive_messages(120, WAIT).await.expect("all of them");
    let mut ids: Vec<[u8; 16]> = got.iter().map(|m| m.1).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids,
        (1..=120).map(msg_id).collect::<Vec<_>>(),
        "every acknowledged message, once"
    );
}

#[tokio::test]
async fn a_message_stored_while_the_recipients_relay_looked_dead_reaches_it_without_a_reconnect() {
    let cluster = cluster(2);
    let (a, b) = (identity(), identity());
    let mut bob = connect(cluster.addr(1), &b).await;
    let mut alice = connect(cluster.addr(0), &a).await;
    send(&mut alice, bob.me(), 1).await;
    assert_eq!(bob.receive_messages(1, WAIT).await.expect("live").len(), 1);
    // Relay 2's heartbeat runs out (as after a long Redis outage): relay 1 stops
    // announcing messages to it, and stores this one only.
    let mut conn = e2ee_relay::store::redis::connection_to(&cluster.redis.url(), WAIT).expect("redis");
    let _: () = redis::cmd("DEL")
        .arg("{e2ee}:alive:relay-2")
        .query(&mut conn)
        .expect("del");
    send(&mut alice, bob.me(), 2).await;
    // Relay 2's next heartbeat finds its key gone and has its connections read their
    // queues: bob gets it on the same connection.
    let got = bob
        .receive_messages(1, Duration::from_secs(20))
        .await
        .expect("delivered on the open connection");
    assert_eq!(got[0].1, msg_id(2));
}

#[tokio::test]
async fn a_second_relay_under_a_node_name_in_use_does_not_start() {
    let cluster = cluster(1);
    let url = cluster.redis.url();
    let err = redis_relay(vec![url], false, "relay-1", |_| {})
        .err()
        .expect("the name is taken");
    assert!(
        err.to_string().contains("another relay runs as node \"relay-1\""),
        "{err}"
    );
}

#[tokio::test]
async fn every_relay_answers_query_away_the_same_for_an_identity_connected_elsewhere() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(&dir.path().join("redis")).expect("redis-server");
    let relays: Vec<_> = (1..=2)
        .map(|i| {
            let url = redis.url();
            redis_relay(vec![url], false, &format!("relay-{i}"), |s| {
                s.names.away_notice_secs = 1;
            })
            .expect("relay starts")
        })
        .collect();
    let (a, b) = (identity(), identity());
    let _bob = connect(relays[1].0.addr, &b).await;
    // Past the notice period since bob's login, while he stays connected to relay 2.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for (i, relay) in relays.iter().enumerate() {
        let mut alice = connect(relay.0.addr, &a).await;
        match alice.query_away(7, key_of(&b)).await.expect("answer") {
            Frame::Away { away_days, .. } => assert_eq!(away_days, 0, "relay {}", i + 1),
            other => panic!("expected Away, got {other:?}"),
        }
    }
}

/// A member of a group over MLS: its identity seed, its book, its connection.
struct GroupMember {
    seed: [u8; 32],
    book: e2ee_agent::group::GroupBook,
    link: RelayClient,
}

async fn group_member(addr: std::net::SocketAddr) -> GroupMember {
    let seed = identity();
    let pair = IdentityKeyPair::from_seed(&seed);
    let book = e2ee_agent::group::GroupBook::open(&pair, Default::default(), None, &Default::default())
        .expect("book");
    GroupMember {
        link: connect(addr, &seed).await,
        seed,
        book,
    }
}

impl GroupMember {
    fn identity(&self) -> e2ee_protocol::identity::IdentityKey {
        *IdentityKeyPair::from_seed(&self.seed).public()
    }

    /// Sends an upload; its answer (`SentAck` or `GroupEpoch`).
    async fn upload(&mut self, frame: Frame) -> Frame {
        self.link.send(frame).await.expect("upload");
        loop {
            match self.link.recv(WAIT).await.expect("an answer") {
                answer @ (Frame::SentAck { .. } | Frame::GroupEpoch { .. }) => return answer,
                Frame::Deliver { .. } => panic!("a delivery before the answer in this test"),
                _ => {}
            }
        }
    }

    /// Reads the next group delivery with the book, and acknowledges it.
    async fn read(&mut self) -> Vec<e2ee_agent::group::GroupEvent> {
        loop {
            if let Frame::Deliver {
                sender,
                msg_id,
                payload,
                ..
            } = self.link.recv(WAIT).await.expect("a delivery")
            {
                self.link
                    .send(Frame::DeliveryAck { sender, msg_id })
                    .await
                    .expect("ack");
                assert_eq!(payload[0], e2ee_protocol::group::MSG_TYPE_MLS);
                return self.book.receive(&payload[1..]).expect("readable");
            }
        }
    }
}

#[tokio::test]
async fn a_group_spans_three_relays_in_one_order() {
    use e2ee_agent::group::GroupEvent;
    let cluster = cluster(3);
    let mut alice = group_member(cluster.addr(0)).await;
    let mut bob = group_member(cluster.addr(1)).await;
    let mut carol = group_member(cluster.addr(2)).await;
    let mut dave = group_member(cluster.addr(0)).await;
    let mut erin = group_member(cluster.addr(1)).await;
    let package = |adder: &GroupMember, who: &mut GroupMember| {
        let bytes = who.book.key_packages(1, false).expect("key package").remove(0);
        let id = who.identity();
        (id, adder.book.read_key_package("m", &id, &bytes).expect("valid"))
    };
    // alice, on relay 1, creates the group with bob (relay 2) and carol (relay 3).
    let packages = vec![package(&alice, &mut bob), package(&alice, &mut carol)];
    let (id, create) = alice.book.create("across", msg_id(1), packages).expect("create");
    assert!(matches!(alice.upload(create).await, Frame::SentAck { .. }));
    alice.book.commit_stored(&id).expect("merge");
    for m in [&mut bob, &mut carol] {
        assert!(matches!(m.read().await.as_slice(), [GroupEvent::Joined { .. }]));
    }
    // alice and bob commit for epoch 1 at the same moment, through two relays: one is
    // stored, the other gets GroupEpoch.
    let from_alice = alice
        .book
        .add(&id, msg_id(2), vec![package(&alice, &mut dave)])
        .expect("alice adds");
    let from_bob = bob
        .book
        .add(&id, msg_id(3), vec![package(&bob, &mut erin)])
        .expect("bob adds");
    alice.link.send(from_alice).await.expect("send");
    bob.link.send(from_bob).await.expect("send");
    let answer = |frame: Frame| match frame {
        Frame::SentAck { .. } => None,
        Frame::GroupEpoch { epoch, .. } => Some(epoch),
        other => panic!("{other:?}"),
    };
    let mut answers = Vec::new();
    for m in [&mut alice, &mut bob] {
        loop {
            let frame = m.link.recv(WAIT).await.expect("an answer");
            if matches!(frame, Frame::SentAck { .. } | Frame::GroupEpoch { .. }) {
                answers.push(answer(frame));
                break;
            }
            // The winner's commit may reach the loser before its GroupEpoch: kept.
            if let Frame::Deliver {
                sender,
                msg_id,
                payload,
                ..
            } = frame
            {
                m.link
                    .send(Frame::DeliveryAck { sender, msg_id })
                    .await
                    .expect("ack");
                m.book.discard_pending(&id).expect("discard");
                m.book.receive(&payload[1..]).expect("the winning commit");
            }
        }
    }
    assert_eq!(
        answers.iter().filter(|a| a.is_none()).count(),
        1,
        "exactly one commit stored: {answers:?}"
    );
    assert!(
        answers.contains(&Some(2)),
        "the other told the epoch: {answers:?}"
    );
    // carol, on the third relay, gets the one commit that was stored: epoch 2, 4 members.
    match carol.read().await.as_slice() {
        [GroupEvent::Members { epoch: 2, added, .. }] => assert_eq!(added.len(), 1),
        other => panic!("{other:?}"),
    }
}
