//! The relay bounded under abuse (docs/PROTOCOL.md 1.2, 1.6, 1.9): each abuse runs
//! against a relay process while a well-behaved pair keeps exchanging messages, and the
//! relay's resident memory is sampled throughout.
//!
//! The bounds stated here: every message of the pair is stored (SentAck) and delivered
//! within [`PAIR_WAIT`] while the abuse runs (it flows; its speed is not asserted), and
//! the relay's RSS grows by less than the bound each test names over its RSS once the
//! pair is talking. Loops are bounded in count, waits in time; everything is on
//! 127.0.0.1.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2ee_integration::client::{msg_id, RelayClient};
use e2ee_integration::process::{rss_kib, RelayProcess};
use e2ee_protocol::frame::{ErrorCode, Frame, MAX_PAYLOAD_LEN};
use e2ee_protocol::identity::IdentityKeyPair;
use futures_util::{SinkExt, StreamExt};
use rand_core::{OsRng, RngCore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The longest the pair's SentAck or delivery may take while an abuse runs.
const PAIR_WAIT: Duration = Duration::from_secs(10);
/// Any other single wait.
const WAIT: Duration = Duration::from_secs(15);
/// What a stored message counts for beyond its payload (relay `STORED_MESSAGE_OVERHEAD`).
const OVERHEAD: usize = 128;
const MIB: u64 = 1024;

fn identity() -> IdentityKeyPair {
    IdentityKeyPair::generate(&mut OsRng)
}

/// A relay process with its metrics endpoint.
struct Relay {
    process: RelayProcess,
    metrics_port: u16,
    _dir: tempfile::TempDir,
}

impl Relay {
    /// Starts `e2ee-relay` (SQLite, fsync) with `env` settings on top of the defaults.
    fn start(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let metrics = format!("127.0.0.1:{metrics_port}");
        let mut env = env.to_vec();
        env.push(("E2EE_RELAY_SUMMARY_INTERVAL_SECS", "0"));
        let process =
            RelayProcess::start_with_env("127.0.0.1:0", dir.path(), &["--metrics-listen", &metrics], &env)
                .expect("relay starts");
        Self {
            process,
            metrics_port,
            _dir: dir,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.process.addr
    }

    fn pid(&self) -> u32 {
        self.process.child.id()
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.pid()).expect("the relay's RSS")
    }

    /// The relay's Prometheus text.
    async fn metrics(&self) -> Metrics {
        let mut stream = TcpStream::connect(("127.0.0.1", self.metrics_port))
            .await
            .expect("metrics port");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await
            .expect("request");
        let mut text = String::new();
        tokio::time::timeout(WAIT, stream.read_to_string(&mut text))
            .await
            .expect("metrics in time")
            .expect("metrics");
        Metrics(text)
    }

    /// Waits until the metric `name` reaches `at_least` (bounded by [`WAIT`]); its value.
    async fn wait_metric(&self, name: &str, at_least: u64) -> u64 {
        let deadline = Instant::now() + WAIT;
        loop {
            let value = self.metrics().await.get(name);
            if value >= at_least || Instant::now() >= deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

struct Metrics(String);

impl Metrics {
    /// A metric's value (0 when not reported, as for a reject reason never counted).
    fn get(&self, name: &str) -> u64 {
        self.0
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// The relay's largest RSS while an abuse runs, sampled every 20 ms.
struct RssPeak {
    stop: Arc<AtomicBool>,
    task: JoinHandle<u64>,
}

impl RssPeak {
    fn watch(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut peak = 0;
                while !stop.load(Ordering::Relaxed) {
                    peak = peak.max(rss_kib(pid).unwrap_or(0));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                peak.max(rss_kib(pid).unwrap_or(0))
            }
        });
        Self { stop, task }
    }

    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("sampler")
    }
}

/// A well-behaved pair: Alice sends Bob a message, waits for its SentAck, Bob receives
/// and acknowledges it; again every 20 ms until stopped.
struct Pair {
    /// Alice's identity key: the sender of every message Bob gets.
    alice: [u8; 32],
    stop: Arc<AtomicBool>,
    task: JoinHandle<PairReport>,
}

struct PairReport {
    /// Messages stored and delivered.
    messages: u64,
    /// The longest send-to-delivery time.
    slowest: Duration,
    /// Alice and Bob, still connected (so that the relay has handled Bob's last
    /// acknowledgement as on an open connection).
    _clients: Option<(RelayClient, RelayClient)>,
}

impl std::fmt::Debug for PairReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} messages, slowest {:?}", self.messages, self.slowest)
    }
}

impl Pair {
    /// Connects both and exchanges a first message before returning.
    async fn start(relay: &Relay) -> Self {
        let addr = relay.addr();
        let mut alice = RelayClient::connect(addr, identity()).await.expect("alice");
        let mut bob = RelayClient::connect(addr, identity()).await.expect("bob");
        let first = exchange(&mut alice, &mut bob, 1).await;
        let alice_key = alice.me();
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut report = PairReport {
                    messages: 1,
                    slowest: first,
                    _clients: None,
                };
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    report.messages += 1;
                    let took = exchange(&mut alice, &mut bob, report.messages).await;
                    report.slowest = report.slowest.max(took);
                }
                report._clients = Some((alice, bob));
                report
            }
        });
        Self {
            alice: alice_key,
            stop,
            task,
        }
    }

    async fn finish(self) -> PairReport {
        self.stop.store(true, Ordering::Relaxed);
        let report = self.task.await.expect("the pair kept talking");
        assert!(report.messages >= 2, "{report:?}");
        report
    }
}

/// One message from Alice to Bob, stored and delivered within [`PAIR_WAIT`] each; how
/// long it took.
async fn exchange(alice: &mut RelayClient, bob: &mut RelayClient, n: u64) -> Duration {
    let started = Instant::now();
    let id = msg_id(n);
    alice
        .send(Frame::Send {
            recipient: bob.me(),
            msg_id: id,
            payload: vec![n as u8; 64],
        })
        .await
        .expect("alice sends");
    match alice.recv(PAIR_WAIT).await.expect("the pair's SentAck in time") {
        Frame::SentAck { msg_id } if msg_id == id => {}
        other => panic!("alice got {other:?}"),
    }
    match bob.recv(PAIR_WAIT).await.expect("the pair's delivery in time") {
        Frame::Deliver { sender, msg_id, .. } if msg_id == id => {
            bob.send(Frame::DeliveryAck { sender, msg_id })
                .await
                .expect("ack");
        }
        other => panic!("bob got {other:?}"),
    }
    started.elapsed()
}

/// Writes `sends` pipelined and collects the answer to each, by msg_id.
async fn send_all(client: &mut RelayClient, sends: Vec<Frame>) -> HashMap<[u8; 16], Frame> {
    let count = sends.len();
    for send in sends {
        client.feed(send).await.expect("feed");
    }
    client.flush().await.expect("flush");
    let mut answers = HashMap::new();
    while answers.len() < count {
        match client.recv(WAIT).await.expect("every Send answered") {
            frame @ (Frame::SentAck { msg_id } | Frame::QuotaExceeded { msg_id, .. }) => {
                answers.insert(msg_id, frame);
            }
            other => panic!("unexpected answer to a Send: {other:?}"),
        }
    }
    answers
}

fn report(test: &str, before: u64, peak: u64, bound_mib: u64, pair: &PairReport) {
    println!(
        "{test}: relay RSS {before} KiB before, peak {peak} KiB (+{} KiB, bound +{bound_mib} MiB); \
         pair: {} messages, slowest {:?} (bound {PAIR_WAIT:?})",
        peak.saturating_sub(before),
        pair.messages,
        pair.slowest
    );
    assert!(
        peak.saturating_sub(before) < bound_mib * MIB,
        "{test}: relay RSS {before} KiB -> {peak} KiB, over +{bound_mib} MiB"
    );
}

/// 300 000 acknowledgements of messages never delivered on the connection (random ids,
/// and the pair's own messages, which were delivered to Bob, not to the flooder): every
/// one is ignored without a store write, and Bob's acknowledgements still count.
#[tokio::test]
async fn an_ack_flood_is_ignored_without_store_writes_while_a_pair_keeps_talking() {
    const ACKS: u64 = 300_000;
    const RSS_BOUND_MIB: u64 = 32;
    // Acks are read at up to 100 000 a second (the default, 4 096, would stretch the
    // flood to over a minute).
    let relay = Relay::start(&[
        ("E2EE_RELAY_LIMITS__ACK_RATE_CAPACITY", "10000"),
        ("E2EE_RELAY_LIMITS__ACK_RATE_REFILL_PER_SEC", "100000"),
    ]);
    let pair = Pair::start(&relay).await;
    let before = relay.metrics().await;
    let rss_before = relay.rss_kib();
    let peak = RssPeak::watch(relay.pid());

    let flooder = RelayClient::connect(relay.addr(), identity())
        .await
        .expect("flooder");
    let mut framed = flooder.into_framed();
    let mut sender = [0u8; 32];
    OsRng.fill_bytes(&mut sender);
    let started = Instant::now();
    for n in 0..ACKS {
        let ack = if n < 1000 {
            // Acks for messages of the pair, as if the flooder had received them.
            Frame::DeliveryAck {
                sender: pair.alice,
                msg_id: msg_id(n),
            }
        } else {
            Frame::DeliveryAck {
                sender,
                msg_id: msg_id(n),
            }
        };
        framed.feed(ack).await.expect("feed");
        if n % 4096 == 0 {
            tokio::time::timeout(WAIT, SinkExt::<Frame>::flush(&mut framed))
                .await
                .expect("the relay keeps reading")
                .expect("flush");
        }
    }
    SinkExt::<Frame>::flush(&mut framed).await.expect("flush");
    let ignored = relay.wait_metric("e2ee_relay_acks_ignored_total", ACKS).await;
    let flood_time = started.elapsed();
    let rss_peak = peak.finish().await;
    let pair = pair.finish().await;
    let after = relay.metrics().await;

    assert_eq!(ignored, ACKS, "every flooded ack ignored, none of Bob's");
    let writes =
        after.get("e2ee_relay_store_batch_writes_total") - before.get("e2ee_relay_store_batch_writes_total");
    println!(
        "ack flood: {ACKS} acks read in {flood_time:?}; store writes meanwhile {writes} \
         (the pair's {} messages and acks); ack-rate pauses {}",
        pair.messages,
        after.get("e2ee_relay_ack_rate_waits_total")
    );
    assert!(
        writes <= 2 * pair.messages + 10,
        "{writes} store writes for {} pair messages",
        pair.messages
    );
    assert_eq!(
        relay
            .wait_metric("e2ee_relay_messages_acked_total", pair.messages)
            .await,
        pair.messages,
        "Bob's acknowledgements all count"
    );
    // The flooder is not disconnected for it: it still gets answers.
    framed.send(Frame::Ping { nonce: 7 }).await.expect("ping");
    let pong = tokio::time::timeout(WAIT, framed.next()).await.expect("in time");
    assert!(matches!(pong, Some(Ok(Frame::Pong { nonce: 7 }))), "{pong:?}");
    report("ack flood", rss_before, rss_peak, RSS_BOUND_MIB, &pair);
}

/// An acknowledgement takes a token from the identity's ack bucket; with none left the
/// relay stops reading from the connection until one is back (nothing is refused).
#[tokio::test]
async fn acknowledgements_wait_for_tokens_of_the_ack_bucket() {
    const ACKS: u64 = 1_100;
    let relay = Relay::start(&[
        ("E2EE_RELAY_LIMITS__ACK_RATE_CAPACITY", "100"),
        ("E2EE_RELAY_LIMITS__ACK_RATE_REFILL_PER_SEC", "1000"),
    ]);
    let pair = Pair::start(&relay).await;
    let mut flooder = RelayClient::connect(relay.addr(), identity())
        .await
        .expect("flooder");
    for n in 0..ACKS {
        flooder
            .feed(Frame::DeliveryAck {
                sender: [9; 32],
                msg_id: msg_id(n),
            })
            .await
            .expect("feed");
    }
    flooder.flush().await.expect("flush");
    // 1 100 acks against a bucket of 100 refilled by 1 000 a second: at least a second
    // of pauses, whatever the machine's speed.
    let ignored = relay.wait_metric("e2ee_relay_acks_ignored_total", ACKS).await;
    let pair = pair.finish().await;
    let waits = relay.metrics().await.get("e2ee_relay_ack_rate_waits_total");
    println!(
        "ack bucket: {ignored} acks, {waits} pauses; pair {} messages, slowest {:?}",
        pair.messages, pair.slowest
    );
    assert_eq!(ignored, ACKS);
    assert!(waits > 0, "the ack bucket ran dry at least once");
}

/// 1 000 connections announce a 128 KiB frame before logging in: each is refused at once
/// with FrameTooLarge, nothing of the body read. Then 1 000 connections each hold an
/// unfinished Auth until the auth timeout: they cost little.
#[tokio::test]
async fn a_thousand_large_frame_headers_before_login_are_refused_at_once() {
    const CONNECTIONS: usize = 1_000;
    const RSS_BOUND_MIB: u64 = 32;
    let relay = Relay::start(&[("E2EE_RELAY_LIMITS__AUTH_TIMEOUT_MS", "3000")]);
    let pair = Pair::start(&relay).await;
    let rss_before = relay.rss_kib();
    let peak = RssPeak::watch(relay.pid());
    let addr = relay.addr();

    // A length prefix of 128 KiB (the default maximum after login) and the first KiB.
    let mut big = Vec::new();
    for _ in 0..CONNECTIONS / 100 {
        let opened = (0..100).map(|_| async move {
            let mut framed = challenged(addr).await;
            let mut bytes = (128u32 * 1024).to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0x5a; 1024]);
            framed.get_mut().write_all(&bytes).await.expect("write");
            framed.get_mut().flush().await.expect("flush");
            let answer = tokio::time::timeout(WAIT, framed.next())
                .await
                .expect("answered in time");
            let Some(Ok(Frame::Error { code, .. })) = answer else {
                panic!("expected an error, got {answer:?}");
            };
            assert_eq!(code, ErrorCode::FrameTooLarge);
            framed
        });
        big.extend(futures_util::future::join_all(opened).await);
    }
    let rss_big = relay.rss_kib();

    // An Auth announced (98 bytes) and half written: held until the auth timeout. (In
    // batches, like the refused ones: the relay's listen backlog is 128.)
    let mut held: Vec<e2ee_integration::client::LinkFramed> = Vec::new();
    for _ in 0..CONNECTIONS / 100 {
        let opened = (0..100).map(|_| async move {
            let mut framed = challenged(addr).await;
            let mut bytes = 98u32.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[1, 2]);
            bytes.extend_from_slice(&[0; 48]);
            framed.get_mut().write_all(&bytes).await.expect("write");
            framed.get_mut().flush().await.expect("flush");
            framed
        });
        held.extend(futures_util::future::join_all(opened).await);
    }
    relay
        .wait_metric("e2ee_relay_connections_open", (CONNECTIONS + 2) as u64)
        .await;
    let rss_held = relay.rss_kib();
    let timed_out = futures_util::future::join_all(held.into_iter().map(|mut framed| async move {
        let answer = tokio::time::timeout(WAIT, framed.next())
            .await
            .expect("closed in time");
        matches!(
            answer,
            Some(Ok(Frame::Error {
                code: ErrorCode::AuthTimeout,
                ..
            }))
        )
    }))
    .await;
    let rss_peak = peak.finish().await;
    let pair = pair.finish().await;
    drop(big);

    let metrics = relay.metrics().await;
    println!(
        "pre-login: RSS {rss_before} KiB, after {CONNECTIONS} refused 128 KiB headers {rss_big} KiB, \
         with {CONNECTIONS} unfinished Auths held {rss_held} KiB"
    );
    assert_eq!(
        metrics.get("e2ee_relay_rejects_total{reason=\"frame_too_large\"}"),
        CONNECTIONS as u64
    );
    assert!(
        timed_out.iter().all(|&t| t),
        "every unfinished Auth ends with AuthTimeout"
    );
    assert_eq!(
        metrics.get("e2ee_relay_rejects_total{reason=\"auth_timeout\"}"),
        CONNECTIONS as u64
    );
    report("pre-login frames", rss_before, rss_peak, RSS_BOUND_MIB, &pair);
}

/// A raw connection that has read its Challenge.
async fn challenged(addr: std::net::SocketAddr) -> e2ee_integration::client::LinkFramed {
    let (mut framed, _) = e2ee_integration::client::open_link(addr).await.expect("connect");
    let first = tokio::time::timeout(WAIT, framed.next())
        .await
        .expect("challenge in time");
    assert!(matches!(first, Some(Ok(Frame::Challenge { .. }))), "{first:?}");
    framed
}

/// One identity stores to many random recipients until its quota of messages is full,
/// another with large messages until its quota of bytes is full; each refused Send is
/// answered QuotaExceeded, and is stored once its recipient has read a message.
#[tokio::test]
async fn a_sender_storing_to_many_random_recipients_hits_its_quota() {
    const QUOTA_MESSAGES: usize = 2_000;
    const QUOTA_BYTES: usize = 8 * 1024 * 1024;
    const RSS_BOUND_MIB: u64 = 48;
    let relay = Relay::start(&[
        ("E2EE_RELAY_LIMITS__SENDER_QUOTA_MESSAGES", "2000"),
        ("E2EE_RELAY_LIMITS__SENDER_QUOTA_BYTES", "8388608"),
        ("E2EE_RELAY_LIMITS__QUOTA_RETRY_AFTER_MS", "200"),
        ("E2EE_RELAY_LIMITS__RATE_CAPACITY", "1000000"),
        ("E2EE_RELAY_LIMITS__RATE_REFILL_PER_SEC", "1000000"),
    ]);
    let pair = Pair::start(&relay).await;
    let rss_before = relay.rss_kib();
    let peak = RssPeak::watch(relay.pid());

    // 2 200 messages of 1 KiB to 2 200 recipients nobody reads.
    let recipients: Vec<IdentityKeyPair> = (0..QUOTA_MESSAGES + 200).map(|_| identity()).collect();
    let mut spammer = RelayClient::connect(relay.addr(), identity())
        .await
        .expect("spammer");
    let sends = recipients
        .iter()
        .enumerate()
        .map(|(n, r)| Frame::Send {
            recipient: *r.public().as_bytes(),
            msg_id: msg_id(n as u64),
            payload: vec![1; 1024],
        })
        .collect();
    let answers = send_all(&mut spammer, sends).await;
    let stored = answers
        .values()
        .filter(|a| matches!(a, Frame::SentAck { .. }))
        .count();
    assert_eq!(stored, QUOTA_MESSAGES, "stored up to the quota of messages");
    for (n, r) in recipients.iter().enumerate().skip(QUOTA_MESSAGES) {
        assert_eq!(
            answers[&msg_id(n as u64)],
            Frame::QuotaExceeded {
                msg_id: msg_id(n as u64),
                recipient: *r.public().as_bytes(),
                retry_after_ms: 200,
            }
        );
    }

    // Full-size messages from another identity: the quota of bytes.
    let mut heavy = RelayClient::connect(relay.addr(), identity())
        .await
        .expect("heavy");
    let sends = (0..200u64)
        .map(|n| Frame::Send {
            recipient: *identity().public().as_bytes(),
            msg_id: msg_id(n),
            payload: vec![2; MAX_PAYLOAD_LEN],
        })
        .collect();
    let answers = send_all(&mut heavy, sends).await;
    let stored_heavy = answers
        .values()
        .filter(|a| matches!(a, Frame::SentAck { .. }))
        .count();
    assert_eq!(
        stored_heavy,
        QUOTA_BYTES / (MAX_PAYLOAD_LEN + OVERHEAD),
        "stored up to the quota of bytes"
    );

    // Once one recipient has read its message, the first refused Send goes through.
    let first_refused = QUOTA_MESSAGES;
    let mut reader = RelayClient::connect(relay.addr(), recipients[0].clone())
        .await
        .expect("a recipient");
    assert_eq!(reader.queued, 1);
    reader.receive_messages(1, WAIT).await.expect("its message");
    let resend = Frame::Send {
        recipient: *recipients[first_refused].public().as_bytes(),
        msg_id: msg_id(first_refused as u64),
        payload: vec![1; 1024],
    };
    let mut tries = 0u64;
    loop {
        tries += 1;
        spammer.send(resend.clone()).await.expect("resend");
        match spammer.recv(WAIT).await.expect("answer") {
            Frame::SentAck { .. } => break,
            Frame::QuotaExceeded { retry_after_ms, .. } if tries < 20 => {
                tokio::time::sleep(Duration::from_millis(u64::from(retry_after_ms))).await;
            }
            other => panic!("resend answered {other:?}"),
        }
    }
    let rss_peak = peak.finish().await;
    let pair = pair.finish().await;
    let metrics = relay.metrics().await;
    let refused = metrics.get("e2ee_relay_sender_quota_exceeded_total");
    println!(
        "sender quota: {stored} of {} small and {stored_heavy} of 200 full-size messages stored, \
         {refused} refused; resend stored after {tries} tries",
        QUOTA_MESSAGES + 200
    );
    assert_eq!(refused, 200 + (200 - stored_heavy as u64) + (tries - 1));
    report("sender quota", rss_before, rss_peak, RSS_BOUND_MIB, &pair);
}

/// Senders that each keep within their quota fill the relay's storage budget: then every
/// Send is refused with QuotaExceeded, the pair's too, until stored messages are read;
/// the pair's refused message is stored when resent after that and delivered.
#[tokio::test]
async fn the_storage_budget_refuses_everyone_until_messages_are_read() {
    const BUDGET: usize = 2 * 1024 * 1024;
    const RSS_BOUND_MIB: u64 = 32;
    let relay = Relay::start(&[
        ("E2EE_RELAY_STORE__MAX_STORED_BYTES", "2097152"),
        ("E2EE_RELAY_LIMITS__QUOTA_RETRY_AFTER_MS", "200"),
        ("E2EE_RELAY_LIMITS__RATE_CAPACITY", "1000000"),
        ("E2EE_RELAY_LIMITS__RATE_REFILL_PER_SEC", "1000000"),
    ]);
    let rss_before = relay.rss_kib();
    let peak = RssPeak::watch(relay.pid());
    let mut alice = RelayClient::connect(relay.addr(), identity())
        .await
        .expect("alice");
    let mut bob = RelayClient::connect(relay.addr(), identity()).await.expect("bob");
    for n in 1..=3 {
        exchange(&mut alice, &mut bob, n).await;
    }

    // Six identities send full-size messages to Carol, then messages the size of the
    // pair's, until the budget refuses them.
    let carol = identity();
    let mut stored = 0;
    let mut id = 0u64;
    for sybil in 0..6 {
        let mut client = RelayClient::connect(relay.addr(), identity())
            .await
            .expect("sybil");
        for size in [MAX_PAYLOAD_LEN, 64] {
            for _ in 0..400 {
                id += 1;
                let send = Frame::Send {
                    recipient: *carol.public().as_bytes(),
                    msg_id: msg_id(id),
                    payload: vec![sybil; size],
                };
                match send_all(&mut client, vec![send]).await.remove(&msg_id(id)) {
                    Some(Frame::SentAck { .. }) => stored += 1,
                    Some(Frame::QuotaExceeded { .. }) => break,
                    other => panic!("{other:?}"),
                }
            }
        }
    }
    let refused_before = relay
        .metrics()
        .await
        .get("e2ee_relay_storage_budget_exceeded_total");
    assert!(refused_before >= 6, "each sybil was refused: {refused_before}");
    assert!(stored * (64 + OVERHEAD) <= BUDGET);

    // The pair is refused too, with its recipient and the retry delay.
    let refused = Frame::Send {
        recipient: bob.me(),
        msg_id: msg_id(4),
        payload: vec![4; 64],
    };
    alice.send(refused.clone()).await.expect("send");
    assert_eq!(
        alice.recv(PAIR_WAIT).await.expect("answer"),
        Frame::QuotaExceeded {
            msg_id: msg_id(4),
            recipient: bob.me(),
            retry_after_ms: 200,
        }
    );
    // Carol reads her messages: room again, and the pair's resend goes through.
    let mut carol = RelayClient::connect(relay.addr(), carol).await.expect("carol");
    let queued = carol.queued as usize;
    assert_eq!(queued, stored);
    carol.receive_messages(queued, WAIT).await.expect("carol reads");
    let mut tries = 0;
    loop {
        tries += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
        alice.send(refused.clone()).await.expect("resend");
        match alice.recv(PAIR_WAIT).await.expect("answer") {
            Frame::SentAck { .. } => break,
            Frame::QuotaExceeded { .. } if tries < 20 => {}
            other => panic!("resend answered {other:?}"),
        }
    }
    match bob.recv(PAIR_WAIT).await.expect("delivered") {
        Frame::Deliver {
            msg_id: got, sender, ..
        } => {
            assert_eq!(got, msg_id(4));
            bob.send(Frame::DeliveryAck { sender, msg_id: got })
                .await
                .expect("ack");
        }
        other => panic!("bob got {other:?}"),
    }
    let took = exchange(&mut alice, &mut bob, 5).await;
    let rss_peak = peak.finish().await;
    println!(
        "storage budget: {stored} messages stored for Carol, then refused; pair resend after {tries} tries"
    );
    let pair = PairReport {
        messages: 5,
        slowest: took,
        _clients: None,
    };
    report("storage budget", rss_before, rss_peak, RSS_BOUND_MIB, &pair);
}

/// Sends to keys that are not valid identity keys are refused with InvalidRecipient,
/// nothing is stored, and the connection stays open for a valid Send.
#[tokio::test]
async fn sends_to_invalid_recipient_keys_are_refused() {
    const ROUNDS: u64 = 400;
    const RSS_BOUND_MIB: u64 = 16;
    let relay = Relay::start(&[
        ("E2EE_RELAY_LIMITS__RATE_CAPACITY", "1000000"),
        ("E2EE_RELAY_LIMITS__RATE_REFILL_PER_SEC", "1000000"),
    ]);
    let pair = Pair::start(&relay).await;
    let rss_before = relay.rss_kib();
    let peak = RssPeak::watch(relay.pid());
    let key =
        |hex_key: &str| -> [u8; 32] { hex::decode(hex_key).expect("hex").try_into().expect("32 bytes") };
    let invalid = [
        // All zero: a point of order 4.
        [0u8; 32],
        // The neutral point (order 1).
        key("0100000000000000000000000000000000000000000000000000000000000000"),
        // y = p: a non-canonical encoding of y = 0.
        key("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        // y = 2: not on the curve.
        key("0200000000000000000000000000000000000000000000000000000000000000"),
        // A valid key plus a point of order 8.
        key("5e2a648325bc9a8f481c735248eda873674ff86f0a74835f61c4b8e2eb0a4879"),
    ];
    for bytes in invalid {
        assert!(
            e2ee_protocol::identity::IdentityKey::from_bytes(bytes).is_err(),
            "{}",
            hex::encode(bytes)
        );
    }
    let stored_before = relay.metrics().await.get("e2ee_relay_messages_stored_total");
    let mut abuser = RelayClient::connect(relay.addr(), identity())
        .await
        .expect("abuser");
    let mut n = 0u64;
    for _ in 0..ROUNDS {
        for recipient in invalid {
            n += 1;
            abuser
                .feed(Frame::Send {
                    recipient,
                    msg_id: msg_id(n),
                    payload: vec![3; 1024],
                })
                .await
                .expect("feed");
        }
    }
    abuser.flush().await.expect("flush");
    for _ in 0..n {
        match abuser.recv(WAIT).await.expect("every Send answered") {
            Frame::Error {
                code: ErrorCode::InvalidRecipient,
                ..
            } => {}
            other => panic!("expected InvalidRecipient, got {other:?}"),
        }
    }
    // Still open, and a valid Send is stored.
    let mut other = Vec::new();
    abuser
        .send_message(
            *identity().public().as_bytes(),
            msg_id(n + 1),
            vec![1],
            &mut other,
        )
        .await
        .expect("a valid recipient");
    let rss_peak = peak.finish().await;
    let pair = pair.finish().await;
    let metrics = relay.metrics().await;
    assert_eq!(
        metrics.get("e2ee_relay_rejects_total{reason=\"invalid_recipient\"}"),
        n
    );
    // The pair's messages but its first, and the valid one.
    assert_eq!(
        metrics.get("e2ee_relay_messages_stored_total") - stored_before,
        pair.messages,
        "nothing stored for an invalid recipient"
    );
    println!("invalid recipients: {n} Sends refused");
    report("invalid recipients", rss_before, rss_peak, RSS_BOUND_MIB, &pair);
}

/// Four connections pipeline 400 messages of 32 KiB each (51 MB) into a write queue
/// bounded at 8 writes and 256 KiB: they stop being read while it is full, every
/// message is stored in the end, and the relay's memory stays flat.
#[tokio::test]
async fn a_flood_of_sends_waits_for_the_bounded_store_queue() {
    const FLOODERS: usize = 4;
    const MESSAGES: u64 = 400;
    const SIZE: usize = 32 * 1024;
    const RSS_BOUND_MIB: u64 = 32;
    let relay = Relay::start(&[
        ("E2EE_RELAY_STORE__MAX_QUEUED_WRITES", "8"),
        ("E2EE_RELAY_STORE__MAX_QUEUED_BYTES", "262144"),
        ("E2EE_RELAY_LIMITS__RATE_CAPACITY", "1000000"),
        ("E2EE_RELAY_LIMITS__RATE_REFILL_PER_SEC", "1000000"),
        ("E2EE_RELAY_LIMITS__SENDER_QUOTA_BYTES", "1000000000"),
    ]);
    let pair = Pair::start(&relay).await;
    let rss_before = relay.rss_kib();
    let peak = RssPeak::watch(relay.pid());
    let addr = relay.addr();
    let started = Instant::now();
    let flooders = (0..FLOODERS).map(|f| async move {
        let mut client = RelayClient::connect(addr, identity()).await.expect("flooder");
        let recipient = *identity().public().as_bytes();
        let sends = (0..MESSAGES)
            .map(|n| Frame::Send {
                recipient,
                msg_id: msg_id(n),
                payload: vec![f as u8; SIZE],
            })
            .collect();
        send_all(&mut client, sends)
            .await
            .values()
            .filter(|a| matches!(a, Frame::SentAck { .. }))
            .count()
    });
    let stored: usize = futures_util::future::join_all(flooders).await.into_iter().sum();
    let took = started.elapsed();
    let rss_peak = peak.finish().await;
    let pair = pair.finish().await;
    let waits = relay.metrics().await.get("e2ee_relay_store_queue_waits_total");
    println!(
        "store queue: {stored} messages of {SIZE} bytes stored in {took:?}; {waits} pauses for a full queue"
    );
    assert_eq!(stored, FLOODERS * MESSAGES as usize, "every message stored");
    assert!(waits > 0, "the queue was full at times");
    report("store queue", rss_before, rss_peak, RSS_BOUND_MIB, &pair);
}
