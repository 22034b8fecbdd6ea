//! Named refusals (docs/PROTOCOL.md 1.11): a client that sends `Features { flags: 1 }`
//! gets, for each request, exactly one answer, and a refusal names the request by its
//! position on the connection, however many requests are in flight; and the agent turns
//! a Send refused for good into one `send_failed` with the code, out of its outbox.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::client::{msg_id, RelayClient};
use e2ee_integration::process::{spawn_relay, RelayProcess};
use e2ee_protocol::codec::FrameCodec;
use e2ee_protocol::frame::{ErrorCode, Frame, FEATURE_NAMED_REFUSALS};
use e2ee_protocol::identity::IdentityKeyPair;
use e2ee_protocol::name_claim::NameClaim;
use e2ee_protocol::prekey::PreKeyStore;
use e2ee_relay::{RelayHandle, RelaySettings};
use futures_util::{SinkExt, StreamExt};
use rand_core::OsRng;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

const WAIT: Duration = Duration::from_secs(10);

fn relay(tune: impl FnOnce(&mut RelaySettings)) -> (RelayHandle, tempfile::TempDir) {
    spawn_relay(tune).expect("relay starts")
}

fn identity() -> IdentityKeyPair {
    IdentityKeyPair::generate(&mut OsRng)
}

/// A client that asked for named refusals.
async fn named(handle: &RelayHandle) -> RelayClient {
    let mut client = RelayClient::connect(handle.addr, identity())
        .await
        .expect("connect");
    client
        .send(Frame::Features {
            flags: FEATURE_NAMED_REFUSALS,
        })
        .await
        .expect("features");
    client
}

/// Reads `n` frames, Pongs left out.
async fn answers(client: &mut RelayClient, n: usize) -> Vec<Frame> {
    let mut got = Vec::new();
    while got.len() < n {
        match client.recv(WAIT).await.expect("an answer") {
            Frame::Pong { .. } => {}
            frame => got.push(frame),
        }
    }
    got
}

fn refusal_of(frames: &[Frame], seq: u32) -> (u8, ErrorCode, u32) {
    let found: Vec<_> = frames
        .iter()
        .filter_map(|f| match f {
            Frame::Refused {
                request_seq,
                request_type,
                code,
                retry_after_ms,
                ..
            } if *request_seq == seq => Some((*request_type, *code, *retry_after_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(found.len(), 1, "one refusal of request {seq} in {frames:?}");
    found[0]
}

#[tokio::test]
async fn pipelined_requests_each_get_one_answer_and_refusals_name_theirs() {
    let (handle, _dir) = relay(|_| {});
    let mut alice = named(&handle).await;
    let bob = identity();
    let bob_key = *bob.public().as_bytes();
    let carol_key = *identity().public().as_bytes();
    let claim = NameClaim::sign(&alice.identity, "alice", 1)
        .expect("claim")
        .encode();
    let others_bundle = PreKeyStore::generate(&bob, 2, &mut OsRng)
        .bundle(bob.public())
        .encode();

    // Written in one go, answered as the relay gets to them.
    let requests = [
        Frame::Send {
            recipient: bob_key,
            msg_id: msg_id(1),
            payload: vec![1],
        },
        Frame::Send {
            recipient: [0; 32],
            msg_id: msg_id(2),
            payload: vec![2],
        },
        Frame::PublishName { claim: vec![9; 40] },
        Frame::PublishPreKeys {
            bundle: others_bundle,
        },
        Frame::Send {
            recipient: carol_key,
            msg_id: msg_id(1),
            payload: vec![3],
        },
        Frame::LookupName {
            request_id: 77,
            name: "nobody".into(),
        },
        Frame::PublishName { claim },
        Frame::QueryQuota,
    ];
    let first = alice.next_seq();
    for request in requests {
        alice.feed(request).await.expect("feed");
    }
    alice.flush().await.expect("flush");
    let got = answers(&mut alice, 8).await;

    assert!(got.contains(&Frame::SentAck { msg_id: msg_id(1) }), "{got:?}");
    assert_eq!(
        refusal_of(&got, first + 1),
        (0x20, ErrorCode::InvalidRecipient, 0)
    );
    assert_eq!(refusal_of(&got, first + 2), (0x15, ErrorCode::InvalidClaim, 0));
    assert_eq!(refusal_of(&got, first + 3), (0x10, ErrorCode::NotOwner, 0));
    assert_eq!(refusal_of(&got, first + 4), (0x20, ErrorCode::MsgIdReused, 0));
    assert!(got.contains(&Frame::NameClaim {
        request_id: 77,
        claim: None
    }));
    assert!(got.contains(&Frame::Accepted {
        request_seq: first + 6
    }));
    assert!(got.iter().any(|f| matches!(f, Frame::Quota { .. })), "{got:?}");
    // Nothing else comes: one answer each, and no revision-7 frame besides.
    alice.send(Frame::Ping { nonce: 5 }).await.expect("ping");
    assert_eq!(alice.recv(WAIT).await.expect("pong"), Frame::Pong { nonce: 5 });
    // A refusal did not close the connection: the next Send is stored.
    let mut other = Vec::new();
    alice
        .send_message(bob_key, msg_id(3), vec![4], &mut other)
        .await
        .expect("stored");
}

#[tokio::test]
async fn rate_limited_and_over_quota_requests_are_named_with_their_delay() {
    let (handle, _dir) = relay(|s| {
        s.limits.request_rate_capacity = 3;
        s.limits.request_rate_refill_per_sec = 1;
        s.limits.queue_quota = 2;
        s.limits.quota_retry_after_ms = 1234;
    });
    let mut mallory = named(&handle).await;
    let bob = *identity().public().as_bytes();
    let first = mallory.next_seq();
    for request_id in 0..10 {
        mallory
            .feed(Frame::QueryAway {
                request_id,
                identity: bob,
            })
            .await
            .expect("feed");
    }
    for n in 0..4 {
        mallory
            .feed(Frame::Send {
                recipient: bob,
                msg_id: msg_id(n),
                payload: vec![1],
            })
            .await
            .expect("feed");
    }
    mallory.flush().await.expect("flush");
    let got = answers(&mut mallory, 14).await;
    let aways = got.iter().filter(|f| matches!(f, Frame::Away { .. })).count();
    assert_eq!(aways, 3, "the bucket's three: {got:?}");
    for seq in first + 3..first + 10 {
        let (request_type, code, retry) = refusal_of(&got, seq);
        assert_eq!((request_type, code), (0x1A, ErrorCode::RateLimited));
        assert!(retry > 0 && retry <= 1000, "{retry}");
    }
    for n in 0..2 {
        assert!(got.contains(&Frame::SentAck { msg_id: msg_id(n) }), "{got:?}");
    }
    for seq in first + 12..first + 14 {
        assert_eq!(refusal_of(&got, seq), (0x20, ErrorCode::QuotaExceeded, 1234));
    }
    assert!(
        !got.iter().any(|f| matches!(
            f,
            Frame::RateLimited { .. } | Frame::QuotaExceeded { .. } | Frame::Error { .. }
        )),
        "only named refusals: {got:?}"
    );
}

#[tokio::test]
async fn a_client_that_does_not_ask_gets_the_frames_of_revision_7() {
    let (handle, _dir) = relay(|_| {});
    let mut old = RelayClient::connect(handle.addr, identity())
        .await
        .expect("connect");
    old.send(Frame::Send {
        recipient: [0; 32],
        msg_id: msg_id(1),
        payload: vec![1],
    })
    .await
    .expect("send");
    let Frame::Error { code, .. } = old.recv(WAIT).await.expect("answer") else {
        panic!("an Error frame");
    };
    assert_eq!(code, ErrorCode::InvalidRecipient);
    old.send(Frame::PublishName {
        claim: NameClaim::sign(&old.identity, "olga", 1).expect("claim").encode(),
    })
    .await
    .expect("claim");
    // A stored claim has no answer before revision 8: the Ping's Pong comes next.
    old.send(Frame::Ping { nonce: 1 }).await.expect("ping");
    assert_eq!(old.recv(WAIT).await.expect("pong"), Frame::Pong { nonce: 1 });
}

/// What the proxy in front of the relay does to an agent's frames.
#[derive(Default)]
struct Tamper {
    /// Rewrite the recipient of every Send to bytes that are not an identity key: the
    /// relay then refuses that Send for good.
    spoil: AtomicBool,
    /// Play a relay of revision 7: answer `Features` with `Error(Malformed)` and close.
    old_relay: AtomicBool,
    /// `Features` frames seen.
    features_seen: AtomicUsize,
}

/// A frame-level proxy between an agent and the relay (plain TCP) that tampers as
/// `tamper` says. Frames pass one for one, so their positions are kept.
async fn tampering_proxy(upstream: SocketAddr, tamper: Arc<Tamper>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(relay) = TcpStream::connect(upstream).await else {
                continue;
            };
            let tamper = tamper.clone();
            tokio::spawn(async move {
                let (to_client, mut from_client) = Framed::new(client, FrameCodec::default()).split();
                let to_client = tokio::sync::Mutex::new(to_client);
                let (mut to_relay, mut from_relay) = Framed::new(relay, FrameCodec::default()).split();
                let up = async {
                    while let Some(Ok(mut frame)) = from_client.next().await {
                        match &mut frame {
                            Frame::Send { recipient, .. } if tamper.spoil.load(Ordering::SeqCst) => {
                                *recipient = [0; 32];
                            }
                            Frame::Features { .. } => {
                                tamper.features_seen.fetch_add(1, Ordering::SeqCst);
                                if tamper.old_relay.load(Ordering::SeqCst) {
                                    let refusal =
                                        Frame::error(ErrorCode::Malformed, "unknown frame type 0x04");
                                    let _ = to_client.lock().await.send(refusal).await;
                                    break;
                                }
                            }
                            _ => {}
                        }
                        if to_relay.send(frame).await.is_err() {
                            break;
                        }
                    }
                };
                let down = async {
                    while let Some(Ok(frame)) = from_relay.next().await {
                        if to_client.lock().await.send(frame).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::select! { () = up => {}, () = down => {} }
            });
        }
    });
    addr
}

fn agent(name: &str, relay: SocketAddr, dir: &Path) -> AgentProcess {
    AgentConfig::new(name, relay, &dir.join(name))
        .env("E2EE_AGENT_INSECURE_PLAINTEXT", "true")
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "200")
        .start()
        .expect("agent starts")
}

#[test]
fn a_message_the_relay_refuses_for_good_is_reported_once_with_its_code_and_leaves_the_outbox() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = [
        ("E2EE_RELAY_STORE__FSYNC", "false"),
        ("E2EE_RELAY_INSECURE_PLAINTEXT", "true"),
    ];
    let relay =
        RelayProcess::start_with_env("127.0.0.1:0", &tmp.path().join("relay"), &[], &env).expect("relay");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let tamper = Arc::new(Tamper::default());
    let spoil = &tamper.spoil;
    let proxy = runtime.block_on(tampering_proxy(relay.addr, tamper.clone()));

    let mut bob = agent("bob", relay.addr, tmp.path());
    relay.wait_log("name claimed", WAIT).expect("bob's name");
    let mut alice = agent("alice", proxy, tmp.path());
    alice.send_line("/msg bob hello").expect("stdin");
    bob.wait_message("alice", "hello", WAIT).expect("a session");

    spoil.store(true, Ordering::SeqCst);
    alice.send_line("/msg bob this one is spoiled").expect("stdin");
    let failed = alice.wait_event("send_failed", WAIT).expect("told");
    assert_eq!(failed["code"], "invalid_recipient", "{failed}");
    assert_eq!(failed["to"], "bob", "{failed}");
    assert!(
        !failed["msg_id"].as_str().unwrap_or_default().is_empty(),
        "{failed}"
    );
    spoil.store(false, Ordering::SeqCst);

    alice.send_line("/msg bob after").expect("stdin");
    bob.wait_message("alice", "after", WAIT).expect("delivered");
    // Leaving: nothing is left in the outbox (the refused message is not kept to be
    // sent again), and the failure was reported once.
    alice.close_stdin();
    assert!(alice.wait_exit(WAIT).expect("alice exits").success());
    assert!(alice.events_of("unsent").is_empty(), "{}", alice.report());
    assert_eq!(alice.events_of("send_failed").len(), 1, "{}", alice.report());
    let texts: Vec<String> = bob
        .events_of("message")
        .iter()
        .map(|e| e["text"].to_string())
        .collect();
    assert!(!texts.iter().any(|t| t.contains("spoiled")), "{texts:?}");
    bob.close_stdin();
    bob.wait_exit(WAIT).expect("bob exits");
}

#[test]
fn an_agent_behind_a_relay_of_revision_7_stops_asking_and_carries_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = [
        ("E2EE_RELAY_STORE__FSYNC", "false"),
        ("E2EE_RELAY_INSECURE_PLAINTEXT", "true"),
    ];
    let relay =
        RelayProcess::start_with_env("127.0.0.1:0", &tmp.path().join("relay"), &[], &env).expect("relay");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let tamper = Arc::new(Tamper::default());
    tamper.old_relay.store(true, Ordering::SeqCst);
    let proxy = runtime.block_on(tampering_proxy(relay.addr, tamper.clone()));

    let mut bob = agent("bob", relay.addr, tmp.path());
    relay.wait_log("name claimed", WAIT).expect("bob's name");
    let mut alice = agent("alice", proxy, tmp.path());
    alice.send_line("/msg bob hello").expect("stdin");
    bob.wait_message("alice", "hello", WAIT)
        .expect("delivered through the old relay");
    bob.send_line("/msg alice hi back").expect("stdin");
    alice.wait_message("bob", "hi back", WAIT).expect("and back");
    assert_eq!(
        tamper.features_seen.load(Ordering::SeqCst),
        1,
        "asked once, then not again: {}",
        alice.report()
    );
    alice.close_stdin();
    assert!(alice.wait_exit(WAIT).expect("alice exits").success());
    bob.close_stdin();
    bob.wait_exit(WAIT).expect("bob exits");
}
