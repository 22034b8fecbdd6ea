//! The relay against real clients on loopback: authentication, prekeys, store-and-forward,
//! idempotency, TTL, quota, abuse, slow consumers, crash recovery and shutdown; the name
//! registry (reverse lookups, releases, leases) and the limits that reconnecting or many
//! identities cannot get around.

use std::time::{Duration, Instant};

use e2ee_integration::client::{login_message, msg_id, open_link, RelayClient};
use e2ee_integration::process::{rss_kib, spawn_relay, RelayProcess};
use e2ee_protocol::codec::FrameCodec;
use e2ee_protocol::frame::{ErrorCode, Frame, AWAY_NEVER};
use e2ee_protocol::identity::IdentityKeyPair;
use e2ee_protocol::name_claim::NameClaim;
use e2ee_protocol::name_release::NameRelease;
use e2ee_protocol::prekey::{PreKeyBundle, PreKeyStore};
use e2ee_protocol::session::{receive, Session};
use e2ee_relay::settings::StoreEngine;
use e2ee_relay::{RelayHandle, RelaySettings};
use futures_util::{SinkExt, StreamExt};
use rand_core::OsRng;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Framed;

const WAIT: Duration = Duration::from_secs(10);

fn relay(tune: impl FnOnce(&mut RelaySettings)) -> (RelayHandle, tempfile::TempDir) {
    spawn_relay(tune).expect("relay starts")
}

/// Both store engines: SQLite behind group commit, and memory written directly.
const ENGINES: [StoreEngine; 2] = [StoreEngine::Sqlite, StoreEngine::Memory];

/// Runs a scenario on each store engine, saying which one a failure belongs to.
async fn on_both_engines<F, Fut>(scenario: F)
where
    F: Fn(StoreEngine) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for engine in ENGINES {
        eprintln!("store engine: {engine:?}");
        scenario(engine).await;
    }
}

fn relay_on(engine: StoreEngine, tune: impl FnOnce(&mut RelaySettings)) -> (RelayHandle, tempfile::TempDir) {
    relay(|settings| {
        settings.store.engine = engine;
        tune(settings);
    })
}

fn identity() -> IdentityKeyPair {
    IdentityKeyPair::generate(&mut OsRng)
}

async fn connect(handle: &RelayHandle) -> RelayClient {
    RelayClient::connect(handle.addr, identity())
        .await
        .expect("connect")
}

/// Expects the relay to answer with an error frame of `code` and then close.
async fn expect_closed_with<S>(framed: &mut Framed<S, FrameCodec>, code: ErrorCode)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = tokio::time::timeout(WAIT, framed.next())
        .await
        .expect("an answer in time");
    match frame {
        Some(Ok(Frame::Error { code: got, .. })) => assert_eq!(got, code),
        other => panic!("expected error {code:?}, got {other:?}"),
    }
    let end = tokio::time::timeout(WAIT, framed.next())
        .await
        .expect("closed in time");
    assert!(
        matches!(end, None | Some(Err(_))),
        "connection closed, got {end:?}"
    );
}

/// A well-behaved pair exchanges one message each way.
async fn pair_exchange(alice: &mut RelayClient, bob: &mut RelayClient, n: u64) {
    let mut other = Vec::new();
    alice
        .send_message(bob.me(), msg_id(n), format!("a->b {n}").into_bytes(), &mut other)
        .await
        .expect("alice sends");
    let got = bob.receive_messages(1, WAIT).await.expect("bob receives");
    assert_eq!(got[0].2, format!("a->b {n}").into_bytes());
    bob.send_message(
        alice.me(),
        msg_id(n),
        format!("b->a {n}").into_bytes(),
        &mut other,
    )
    .await
    .expect("bob sends");
    let got = alice.receive_messages(1, WAIT).await.expect("alice receives");
    assert_eq!(got[0].2, format!("b->a {n}").into_bytes());
}

#[tokio::test]
async fn two_clients_exchange_bundles_and_encrypted_messages() {
    on_both_engines(two_clients_exchange_bundles_and_encrypted_messages_on).await;
}

async fn two_clients_exchange_bundles_and_encrypted_messages_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |_| {});
    let mut alice = connect(&handle).await;
    let mut bob = connect(&handle).await;

    let mut bob_prekeys = PreKeyStore::generate(&bob.identity, 3, &mut OsRng);
    let bundle = bob_prekeys.bundle(bob.identity.public()).encode();
    bob.send(Frame::PublishPreKeys { bundle }).await.expect("publish");
    assert_eq!(
        bob.recv(WAIT).await.expect("stored"),
        Frame::PreKeysStored { opks: 3 }
    );

    alice
        .send(Frame::FetchBundle {
            request_id: 7,
            identity: bob.me(),
        })
        .await
        .expect("fetch");
    let Frame::Bundle {
        request_id: 7,
        bundle: Some(bytes),
    } = alice.recv(WAIT).await.expect("bundle")
    else {
        panic!("expected bob's bundle");
    };
    let fetched = PreKeyBundle::decode_verified(&bytes).expect("verifies");
    assert_eq!(
        fetched.one_time_prekeys.len(),
        1,
        "a fetched bundle carries one OPK"
    );

    let mut session = Session::initiate(&alice.identity, &fetched, &mut OsRng).expect("x3dh");
    let wire = session.encrypt(b"hello bob", &mut OsRng).expect("encrypt");
    let mut other = Vec::new();
    alice
        .send_message(bob.me(), msg_id(1), wire, &mut other)
        .await
        .expect("sent");
    let got = bob.receive_messages(1, WAIT).await.expect("delivered");
    assert_eq!(got[0].0, alice.me(), "the relay names the authenticated sender");
    let received = receive(
        None,
        &bob.identity,
        &mut bob_prekeys,
        alice.identity.public(),
        &got[0].2,
        &mut OsRng,
    )
    .expect("bob decrypts");
    assert_eq!(received.decrypted.plaintext, b"hello bob");

    pair_exchange(&mut alice, &mut bob, 2).await;

    // A bundle of someone else is refused without closing the connection.
    let foreign = PreKeyStore::generate(&alice.identity, 1, &mut OsRng)
        .bundle(alice.identity.public())
        .encode();
    bob.send(Frame::PublishPreKeys { bundle: foreign })
        .await
        .expect("send");
    assert!(matches!(
        bob.recv(WAIT).await.expect("answer"),
        Frame::Error {
            code: ErrorCode::NotOwner,
            ..
        }
    ));
    // An unknown identity has no bundle.
    alice
        .send(Frame::FetchBundle {
            request_id: 8,
            identity: identity().public().as_bytes().to_owned(),
        })
        .await
        .expect("fetch");
    assert_eq!(
        alice.recv(WAIT).await.expect("answer"),
        Frame::Bundle {
            request_id: 8,
            bundle: None
        }
    );
    pair_exchange(&mut alice, &mut bob, 3).await;
}

#[tokio::test]
async fn fetching_hands_out_each_one_time_prekey_once_and_warns_the_owner() {
    on_both_engines(fetching_hands_out_each_one_time_prekey_once_and_warns_the_owner_on).await;
}

async fn fetching_hands_out_each_one_time_prekey_once_and_warns_the_owner_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |s| s.limits.prekey_low_threshold = 2);
    let mut alice = connect(&handle).await;
    let mut bob = connect(&handle).await;
    let prekeys = PreKeyStore::generate(&bob.identity, 3, &mut OsRng);
    bob.send(Frame::PublishPreKeys {
        bundle: prekeys.bundle(bob.identity.public()).encode(),
    })
    .await
    .expect("publish");
    bob.recv(WAIT).await.expect("stored");
    let mut seen = Vec::new();
    for request_id in 0..4 {
        alice
            .send(Frame::FetchBundle {
                request_id,
                identity: bob.me(),
            })
            .await
            .expect("fetch");
        let Frame::Bundle {
            bundle: Some(bytes), ..
        } = alice.recv(WAIT).await.expect("bundle")
        else {
            panic!("bundle");
        };
        seen.push(
            PreKeyBundle::decode_verified(&bytes)
                .expect("verifies")
                .one_time_prekeys,
        );
    }
    assert_eq!(seen.iter().filter(|o| o.len() == 1).count(), 3);
    assert!(
        seen[3].is_empty(),
        "without one-time prekeys left, a bundle without one"
    );
    assert_ne!(seen[0], seen[1]);
    assert_eq!(
        bob.recv(WAIT).await.expect("notice"),
        Frame::PreKeysLow { remaining: 1 }
    );
}

#[tokio::test]
async fn a_burst_of_bundle_fetches_is_rate_limited_and_cannot_drain_one_time_prekeys() {
    let (handle, _dir) = relay(|s| {
        s.limits.request_rate_capacity = 5;
        s.limits.request_rate_refill_per_sec = 1;
    });
    let mut mallory = connect(&handle).await;
    let mut bob = connect(&handle).await;
    let prekeys = PreKeyStore::generate(&bob.identity, 50, &mut OsRng);
    bob.send(Frame::PublishPreKeys {
        bundle: prekeys.bundle(bob.identity.public()).encode(),
    })
    .await
    .expect("publish");
    assert_eq!(
        bob.recv(WAIT).await.expect("stored"),
        Frame::PreKeysStored { opks: 50 }
    );
    for request_id in 0..20 {
        mallory
            .feed(Frame::FetchBundle {
                request_id,
                identity: bob.me(),
            })
            .await
            .expect("fetch");
    }
    mallory.flush().await.expect("flush");
    let (mut bundles, mut limited) = (0, 0);
    for _ in 0..20 {
        match mallory.recv(WAIT).await.expect("answer") {
            Frame::Bundle { bundle: Some(_), .. } => bundles += 1,
            Frame::RateLimited {
                msg_id: None,
                retry_after_ms,
            } => {
                assert!(retry_after_ms > 0 && retry_after_ms <= 1000);
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((bundles, limited), (5, 15), "five fetches, then refusals");
    // Bob's own requests have their own bucket, and sends are not affected.
    bob.send(Frame::FetchBundle {
        request_id: 1,
        identity: bob.me(),
    })
    .await
    .expect("fetch");
    let Frame::Bundle {
        bundle: Some(bytes), ..
    } = bob.recv(WAIT).await.expect("bundle")
    else {
        panic!("bob's fetch is served");
    };
    assert_eq!(
        PreKeyBundle::decode_verified(&bytes)
            .expect("verifies")
            .one_time_prekeys
            .len(),
        1
    );
    pair_exchange(&mut mallory, &mut bob, 1).await;
    assert_eq!(handle.metrics.rate_limited.get(), 15);
}

#[tokio::test]
async fn wrong_signature_and_early_frames_are_refused() {
    let (handle, _dir) = relay(|_| {});
    // Signing with a key other than the one claimed.
    let (mut framed, _binding) = open_link(handle.addr).await.expect("connect");
    let Some(Ok(Frame::Challenge { relay_id, nonce })) = framed.next().await else {
        panic!("challenge");
    };
    let claimed = identity();
    let signer = identity();
    let me = *claimed.public().as_bytes();
    let signature = signer.sign(&login_message(&relay_id, &nonce, &me, _binding.as_ref()));
    framed
        .send(Frame::Auth {
            identity: me,
            signature,
        })
        .await
        .expect("send");
    expect_closed_with(&mut framed, ErrorCode::AuthFailed).await;

    // A frame other than Auth first.
    let (mut framed, _binding) = open_link(handle.addr).await.expect("connect");
    framed.next().await.expect("challenge").expect("frame");
    framed
        .send(Frame::Send {
            recipient: me,
            msg_id: msg_id(1),
            payload: b"x".to_vec(),
        })
        .await
        .expect("send");
    expect_closed_with(&mut framed, ErrorCode::NotAuthenticated).await;
    assert_eq!(handle.metrics.messages_stored.get(), 0);
}

#[tokio::test]
async fn offline_recipient_gets_its_queue_in_order() {
    on_both_engines(offline_recipient_gets_its_queue_in_order_on).await;
}

async fn offline_recipient_gets_its_queue_in_order_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |_| {});
    let mut alice = connect(&handle).await;
    let bob_id = identity();
    let bob_key = *bob_id.public().as_bytes();
    let mut other = Vec::new();
    for n in 0..20u64 {
        alice
            .send_message(bob_key, msg_id(n), n.to_be_bytes().to_vec(), &mut other)
            .await
            .expect("stored");
    }
    let mut bob = RelayClient::connect(handle.addr, bob_id)
        .await
        .expect("bob connects");
    assert_eq!(bob.queued, 20);
    let got = bob.receive_messages(20, WAIT).await.expect("queue");
    let order: Vec<u64> = got
        .iter()
        .map(|m| u64::from_be_bytes(m.2.clone().try_into().expect("8 bytes")))
        .collect();
    assert_eq!(order, (0..20).collect::<Vec<_>>());
    // Live messages continue after the queue.
    pair_exchange(&mut alice, &mut bob, 100).await;
}

#[tokio::test]
async fn messages_acknowledged_just_before_a_reconnect_are_not_delivered_again() {
    on_both_engines(messages_acknowledged_just_before_a_reconnect_are_not_delivered_again_on).await;
}

async fn messages_acknowledged_just_before_a_reconnect_are_not_delivered_again_on(engine: StoreEngine) {
    // fsync makes each commit slow, so an acknowledgement is still being committed when
    // the recipient's next connection reads its queue.
    let (handle, _dir) = relay_on(engine, |s| s.store.fsync = true);
    let mut alice = connect(&handle).await;
    let bob_id = identity();
    let bob_key = *bob_id.public().as_bytes();
    let mut other = Vec::new();
    let mut next = 0u64;
    for round in 0..5u64 {
        for _ in 0..20 {
            alice
                .send_message(bob_key, msg_id(next), next.to_be_bytes().to_vec(), &mut other)
                .await
                .expect("stored");
            next += 1;
        }
        let mut bob = RelayClient::connect(handle.addr, bob_id.clone())
            .await
            .expect("bob connects");
        assert_eq!(bob.queued, 20, "round {round}: only the new messages are queued");
        bob.receive_messages(20, WAIT).await.expect("queue");
        // The Pong proves the relay has read the acks (frames are handled in order); their
        // commit may still be running. Then gone at once: the next connection must not
        // see those messages again.
        bob.send(Frame::Ping { nonce: round }).await.expect("ping");
        assert_eq!(bob.recv(WAIT).await.expect("pong"), Frame::Pong { nonce: round });
        drop(bob);
        let mut bob = RelayClient::connect(handle.addr, bob_id.clone())
            .await
            .expect("bob reconnects");
        assert_eq!(
            bob.queued, 0,
            "round {round}: acknowledged messages are not queued"
        );
        let marker = 1_000_000 + round;
        alice
            .send_message(bob_key, msg_id(marker), marker.to_be_bytes().to_vec(), &mut other)
            .await
            .expect("stored");
        let got = bob.receive_messages(1, WAIT).await.expect("live message");
        assert_eq!(
            got[0].2,
            marker.to_be_bytes().to_vec(),
            "round {round}: the first delivery is the new message, not a redelivery"
        );
    }
    // Not `messages_delivered == 105`: a Deliver written to a connection the client has
    // already dropped (the relay has not read its end yet) counts too, and that message
    // stays queued, as at-least-once delivery requires. What a reader sees is checked above.
    assert_eq!(handle.metrics.messages_stored.get(), 105);
}

#[tokio::test]
async fn retransmission_with_the_same_id_stores_one_copy() {
    on_both_engines(retransmission_with_the_same_id_stores_one_copy_on).await;
}

async fn retransmission_with_the_same_id_stores_one_copy_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |_| {});
    let mut alice = connect(&handle).await;
    let bob_id = identity();
    let bob_key = *bob_id.public().as_bytes();
    let mut other = Vec::new();
    for _ in 0..3 {
        alice
            .send_message(bob_key, msg_id(42), b"once".to_vec(), &mut other)
            .await
            .expect("acked each time");
    }
    assert_eq!(handle.metrics.messages_stored.get(), 1);
    assert_eq!(handle.metrics.messages_duplicate.get(), 2);
    let mut bob = RelayClient::connect(handle.addr, bob_id).await.expect("bob");
    assert_eq!(bob.queued, 1);
    bob.receive_messages(1, WAIT).await.expect("one copy");
    // Even after delivery and ack, a retransmission is not stored again.
    alice
        .send_message(bob_key, msg_id(42), b"once".to_vec(), &mut other)
        .await
        .expect("acked");
    assert_eq!(handle.metrics.messages_stored.get(), 1);
    pair_exchange(&mut alice, &mut bob, 1).await;
}

#[tokio::test]
async fn acknowledged_ids_are_forgotten_after_the_dedup_window() {
    on_both_engines(acknowledged_ids_are_forgotten_after_the_dedup_window_on).await;
}

async fn acknowledged_ids_are_forgotten_after_the_dedup_window_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |s| s.limits.dedup_window_secs = 1);
    let mut alice = connect(&handle).await;
    let mut bob = connect(&handle).await;
    let mut other = Vec::new();
    alice
        .send_message(bob.me(), msg_id(7), b"first".to_vec(), &mut other)
        .await
        .expect("stored");
    let got = bob
        .receive_messages(1, WAIT)
        .await
        .expect("delivered and acknowledged");
    assert_eq!(got[0].2, b"first".to_vec());
    for _ in 0..100 {
        if handle.metrics.messages_acked.get() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(handle.metrics.messages_acked.get(), 1);
    // Within the window a retransmission is a duplicate.
    alice
        .send_message(bob.me(), msg_id(7), b"first".to_vec(), &mut other)
        .await
        .expect("acked");
    assert_eq!(handle.metrics.messages_stored.get(), 1);
    assert_eq!(handle.metrics.messages_duplicate.get(), 1);
    // Once expiry has passed the window (1 s; it runs every second), the id is new.
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        alice
            .send_message(bob.me(), msg_id(7), b"first".to_vec(), &mut other)
            .await
            .expect("acked");
        if handle.metrics.messages_stored.get() == 2 {
            break;
        }
    }
    assert_eq!(
        handle.metrics.messages_stored.get(),
        2,
        "stored again after the window"
    );
    let again = bob.receive_messages(1, WAIT).await.expect("delivered again");
    assert_eq!(again[0].2, b"first".to_vec());
}

#[tokio::test]
async fn sent_acks_and_deliveries_keep_the_order_of_a_burst_of_sends() {
    on_both_engines(sent_acks_and_deliveries_keep_the_order_of_a_burst_of_sends_on).await;
}

async fn sent_acks_and_deliveries_keep_the_order_of_a_burst_of_sends_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |_| {});
    let mut alice = connect(&handle).await;
    let mut bob = connect(&handle).await;
    let ids: Vec<[u8; 16]> = (0..80).map(msg_id).collect();
    for id in &ids {
        alice
            .feed(Frame::Send {
                recipient: bob.me(),
                msg_id: *id,
                payload: id.to_vec(),
            })
            .await
            .expect("feed");
    }
    alice.flush().await.expect("flush");
    let mut acked = Vec::new();
    while acked.len() < ids.len() {
        if let Frame::SentAck { msg_id } = alice.recv(WAIT).await.expect("ack") {
            acked.push(msg_id);
        }
    }
    assert_eq!(acked, ids, "SentAcks come in the order of the Sends");
    let delivered: Vec<Vec<u8>> = (bob.receive_messages(ids.len(), WAIT).await.expect("delivered"))
        .into_iter()
        .map(|m| m.2)
        .collect();
    let sent: Vec<Vec<u8>> = ids.iter().map(|id| id.to_vec()).collect();
    assert_eq!(delivered, sent, "delivered oldest first");
}

#[tokio::test]
async fn full_queue_answers_with_a_quota_error() {
    on_both_engines(full_queue_answers_with_a_quota_error_on).await;
}

async fn full_queue_answers_with_a_quota_error_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |s| {
        s.limits.queue_quota = 3;
        s.limits.quota_retry_after_ms = 1234;
    });
    let mut alice = connect(&handle).await;
    let bob = *identity().public().as_bytes();
    let mut other = Vec::new();
    for n in 0..3 {
        alice
            .send_message(bob, msg_id(n), vec![1], &mut other)
            .await
            .expect("fits");
    }
    alice
        .send(Frame::Send {
            recipient: bob,
            msg_id: msg_id(3),
            payload: vec![1],
        })
        .await
        .expect("send");
    assert_eq!(
        alice.recv(WAIT).await.expect("answer"),
        Frame::QuotaExceeded {
            msg_id: msg_id(3),
            recipient: bob,
            retry_after_ms: 1234,
        }
    );
}

#[tokio::test]
async fn messages_past_the_ttl_are_dropped() {
    on_both_engines(messages_past_the_ttl_are_dropped_on).await;
}

async fn messages_past_the_ttl_are_dropped_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |s| s.limits.message_ttl_secs = 1);
    let mut alice = connect(&handle).await;
    let bob_id = identity();
    let mut other = Vec::new();
    alice
        .send_message(*bob_id.public().as_bytes(), msg_id(1), vec![1], &mut other)
        .await
        .expect("stored");
    // Wait for the expiry pass to report (bounded).
    for _ in 0..100 {
        if handle.metrics.messages_expired.get() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handle.metrics.messages_expired.get(), 1);
    let bob = RelayClient::connect(handle.addr, bob_id).await.expect("bob");
    assert_eq!(bob.queued, 0);
}

#[tokio::test]
async fn the_sender_of_an_expired_message_is_told_until_it_acknowledges() {
    on_both_engines(the_sender_of_an_expired_message_is_told_until_it_acknowledges_on).await;
}

/// The next `Expired` frame, skipping notices the relay may send on the way.
async fn next_expired(client: &mut RelayClient) -> Frame {
    loop {
        match client.recv(WAIT).await.expect("a frame") {
            frame @ Frame::Expired { .. } => return frame,
            Frame::PreKeysLow { .. } | Frame::Ping { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn the_sender_of_an_expired_message_is_told_until_it_acknowledges_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |s| {
        s.limits.message_ttl_secs = 1;
        s.limits.heartbeat_interval_ms = 400;
    });
    let alice_id = identity();
    let mut alice = RelayClient::connect(handle.addr, alice_id.clone())
        .await
        .expect("alice");
    let (bob, carol) = (*identity().public().as_bytes(), *identity().public().as_bytes());
    let mut other = Vec::new();
    for (recipient, n) in [(bob, 1), (carol, 2)] {
        alice
            .send_message(recipient, msg_id(n), vec![1], &mut other)
            .await
            .expect("stored");
    }
    // Subscribed before they expire: the notices come on this connection.
    alice
        .send(Frame::ExpiredAck { through: 0 })
        .await
        .expect("subscribe");
    // (The two may expire in two passes of the expiry, one frame each: an expiry pass
    // can fall between the two messages' times.)
    let (mut told, mut through) = (Vec::new(), 0);
    while told.len() < 2 {
        let Frame::Expired {
            through: upto,
            notices,
        } = next_expired(&mut alice).await
        else {
            unreachable!()
        };
        told.extend(notices.iter().map(|n| (n.recipient, n.msg_id)));
        through = upto;
    }
    assert_eq!(told, vec![(bob, msg_id(1)), (carol, msg_id(2))]);
    assert!(through > 0);
    // Not acknowledged: the next connection is told again.
    drop(alice);
    let mut again = RelayClient::connect(handle.addr, alice_id.clone())
        .await
        .expect("alice");
    again
        .send(Frame::ExpiredAck { through: 0 })
        .await
        .expect("subscribe");
    let Frame::Expired {
        through: same,
        notices,
    } = next_expired(&mut again).await
    else {
        unreachable!()
    };
    assert_eq!((same, notices.len()), (through, 2));
    again.send(Frame::ExpiredAck { through }).await.expect("ack");
    // Acknowledged: a later connection that asks hears nothing.
    let mut quiet = RelayClient::connect(handle.addr, alice_id).await.expect("alice");
    quiet
        .send(Frame::ExpiredAck { through: 0 })
        .await
        .expect("subscribe");
    match quiet.recv(Duration::from_millis(1500)).await {
        Err(_) | Ok(Frame::PreKeysLow { .. } | Frame::Ping { .. }) => {}
        Ok(other) => panic!("nothing expected, got {other:?}"),
    }
}

#[tokio::test]
async fn a_second_connection_replaces_the_first() {
    on_both_engines(a_second_connection_replaces_the_first_on).await;
}

async fn a_second_connection_replaces_the_first_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |_| {});
    let id = identity();
    let seed_copy = id.clone();
    let mut first = RelayClient::connect(handle.addr, id).await.expect("first");
    let mut second = RelayClient::connect(handle.addr, seed_copy)
        .await
        .expect("second");
    expect_closed_with(first.framed(), ErrorCode::Replaced).await;
    let mut alice = connect(&handle).await;
    pair_exchange(&mut alice, &mut second, 1).await;
}

#[tokio::test]
async fn abusive_clients_get_their_documented_reaction_while_a_pair_keeps_talking() {
    on_both_engines(abusive_clients_get_their_documented_reaction_while_a_pair_keeps_talking_on).await;
}

async fn abusive_clients_get_their_documented_reaction_while_a_pair_keeps_talking_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |s| {
        s.limits.auth_timeout_ms = 300;
        s.limits.rate_capacity = 20;
        s.limits.rate_refill_per_sec = 10;
        s.limits.max_frame_len = 4096;
    });
    let mut alice = connect(&handle).await;
    let mut bob = connect(&handle).await;

    // Garbage bytes: a valid length prefix with an unknown version.
    let (mut garbage, _) = open_link(handle.addr).await.expect("connect");
    garbage
        .get_mut()
        .write_all(&[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef])
        .await
        .expect("write");
    garbage.get_mut().flush().await.expect("flush");
    garbage.next().await.expect("challenge").expect("frame");
    expect_closed_with(&mut garbage, ErrorCode::Malformed).await;
    pair_exchange(&mut alice, &mut bob, 1).await;

    // An oversized length prefix.
    let (mut big, _) = open_link(handle.addr).await.expect("connect");
    big.get_mut()
        .write_all(&[0x7f, 0xff, 0xff, 0xff])
        .await
        .expect("write");
    big.get_mut().flush().await.expect("flush");
    big.next().await.expect("challenge").expect("frame");
    expect_closed_with(&mut big, ErrorCode::FrameTooLarge).await;
    pair_exchange(&mut alice, &mut bob, 2).await;

    // Half a frame that never completes, before authentication: auth timeout. (Its
    // length is within the 98 bytes of an Auth: a longer one is refused at once.)
    let (mut half, _) = open_link(handle.addr).await.expect("connect");
    half.get_mut()
        .write_all(&[0, 0, 0, 90, 1, 2])
        .await
        .expect("write");
    half.get_mut().flush().await.expect("flush");
    half.next().await.expect("challenge").expect("frame");
    expect_closed_with(&mut half, ErrorCode::AuthTimeout).await;

    pair_exchange(&mut alice, &mut bob, 3).await;

    // A flood past the rate limit: refused with a retry delay, the quota is readable.
    let mut flooder = connect(&handle).await;
    let target = bob.me();
    for n in 0..60u64 {
        flooder
            .feed(Frame::Send {
                recipient: target,
                msg_id: msg_id(1000 + n),
                payload: vec![0],
            })
            .await
            .expect("feed");
    }
    flooder.flush().await.expect("flush");
    let (mut acked, mut limited) = (0, 0);
    while acked + limited < 60 {
        match flooder.recv(WAIT).await.expect("answer") {
            Frame::SentAck { .. } => acked += 1,
            Frame::RateLimited {
                retry_after_ms,
                msg_id: Some(_),
            } => {
                assert!(retry_after_ms > 0 && retry_after_ms <= 1000);
                limited += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(acked >= 20 && limited >= 30, "acked {acked}, limited {limited}");
    flooder.send(Frame::QueryQuota).await.expect("query");
    let Frame::Quota {
        capacity: 20,
        refill_per_sec: 10,
        remaining,
    } = flooder.recv(WAIT).await.expect("quota")
    else {
        panic!("quota frame");
    };
    assert!(remaining < 20);
    // Bob got the flooder's accepted messages; drain them, then the pair still talks.
    bob.receive_messages(acked, WAIT)
        .await
        .expect("accepted messages arrive");
    pair_exchange(&mut alice, &mut bob, 4).await;

    assert_eq!(handle.metrics.rejects(ErrorCode::Malformed), 1);
    assert_eq!(handle.metrics.rejects(ErrorCode::FrameTooLarge), 1);
    assert_eq!(handle.metrics.rejects(ErrorCode::AuthTimeout), 1);
    assert_eq!(handle.metrics.rate_limited.get(), limited as u64);
}

#[tokio::test]
async fn a_half_frame_after_authentication_hits_the_idle_timeout() {
    let (handle, _dir) = relay(|s| {
        s.limits.idle_timeout_ms = 400;
        s.limits.heartbeat_interval_ms = 100;
    });
    let mut stalled = connect(&handle).await;
    stalled
        .framed()
        .get_mut()
        .write_all(&[0, 0, 0, 100, 1])
        .await
        .expect("write");
    // The relay pings (the half frame does not count as activity), then gives up.
    let mut pings = 0;
    loop {
        match tokio::time::timeout(WAIT, stalled.framed().next())
            .await
            .expect("in time")
        {
            Some(Ok(Frame::Ping { .. })) => pings += 1,
            Some(Ok(Frame::Error { code, .. })) => {
                assert_eq!(code, ErrorCode::IdleTimeout);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 1);
    assert_eq!(handle.metrics.rejects(ErrorCode::IdleTimeout), 1);
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_and_keeps_its_messages() {
    const COUNT: u64 = 50_000;
    // 50 000 deliveries of this size are about 100 MiB: unbounded output would show.
    const SIZE: usize = 2048;
    let dir = tempfile::tempdir().expect("tempdir");
    // The unacknowledged-message limit is raised so that the output budget is what bites.
    let relay = RelayProcess::start_with_env(
        "127.0.0.1:0",
        dir.path(),
        &[],
        &[
            ("E2EE_RELAY_LIMITS__MAX_UNACKED", "1000000"),
            ("E2EE_RELAY_LIMITS__RATE_CAPACITY", "1000000"),
            ("E2EE_RELAY_LIMITS__RATE_REFILL_PER_SEC", "1000000"),
            ("E2EE_RELAY_LIMITS__SENDER_QUOTA_MESSAGES", "1000000"),
            ("E2EE_RELAY_LIMITS__SENDER_QUOTA_BYTES", "1000000000"),
        ],
    )
    .expect("relay");
    let pid = relay.child.id();
    let rss_before = rss_kib(pid).unwrap_or(0);

    let bob_id = identity();
    let bob_key = *bob_id.public().as_bytes();
    // Bob authenticates, then never reads again.
    let stalled = RelayClient::connect(relay.addr, bob_id.clone())
        .await
        .expect("bob");

    // Alice sends in windows of 500, so the relay never holds more than one window of
    // her writes: what grows is Bob's side only.
    let mut alice = RelayClient::connect(relay.addr, identity()).await.expect("alice");
    let mut acked = 0u64;
    for window in 0..COUNT / 500 {
        for n in window * 500..(window + 1) * 500 {
            alice
                .feed(Frame::Send {
                    recipient: bob_key,
                    msg_id: msg_id(n),
                    payload: vec![0x5a; SIZE],
                })
                .await
                .expect("feed");
        }
        alice.flush().await.expect("flush");
        while acked < (window + 1) * 500 {
            match alice
                .recv(Duration::from_secs(60))
                .await
                .expect("acks keep coming")
            {
                Frame::SentAck { .. } => acked += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let rss_after = rss_kib(pid).unwrap_or(0);
    println!("slow consumer: acked {acked}, relay RSS {rss_before} KiB -> {rss_after} KiB");

    // The relay cut Bob off once his output went unread for the write timeout (the log
    // says so) and still holds every acked message.
    let closed = relay
        .wait_log("closing connection", Duration::from_secs(30))
        .expect("slow consumer disconnected");
    assert_eq!(closed["code"], "slow_consumer", "{closed}");
    drop(stalled);
    let mut bob = RelayClient::connect(relay.addr, bob_id).await.expect("bob again");
    assert_eq!(
        u64::from(bob.queued),
        acked,
        "every acked message is still stored"
    );
    let first = bob.receive_messages(100, WAIT).await.expect("delivery resumes");
    assert_eq!(first.len(), 100);
    assert!(
        rss_after.saturating_sub(rss_before) < 48 * 1024,
        "relay RSS grew by less than half of the undelivered bytes: {rss_before} KiB -> {rss_after} KiB"
    );
}

#[tokio::test]
async fn acked_messages_survive_kill_9_and_are_delivered_exactly_once() {
    const COUNT: u64 = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut relay = RelayProcess::start(dir.path(), &[]).expect("relay");
    let mut alice = RelayClient::connect(relay.addr, identity()).await.expect("alice");
    let bob_id = identity();
    let bob_key = *bob_id.public().as_bytes();
    let mut other = Vec::new();
    for n in 0..COUNT {
        alice
            .send_message(bob_key, msg_id(n), n.to_be_bytes().to_vec(), &mut other)
            .await
            .expect("acked");
    }
    relay.kill9().expect("kill -9");
    drop(relay);

    let relay = RelayProcess::start(dir.path(), &[]).expect("restart on the same data");
    let mut bob = RelayClient::connect(relay.addr, bob_id.clone())
        .await
        .expect("bob");
    assert_eq!(u64::from(bob.queued), COUNT);
    let got = bob
        .receive_messages(COUNT as usize, WAIT)
        .await
        .expect("all delivered");
    let order: Vec<u64> = got
        .iter()
        .map(|m| u64::from_be_bytes(m.2.clone().try_into().expect("8 bytes")))
        .collect();
    assert_eq!(order, (0..COUNT).collect::<Vec<_>>(), "each once, in order");
    // A ping answered means the relay has read every acknowledgement before we leave.
    bob.send(Frame::Ping { nonce: 9 }).await.expect("ping");
    assert_eq!(bob.recv(WAIT).await.expect("pong"), Frame::Pong { nonce: 9 });
    drop(bob);
    // Once the acknowledgements are committed nothing is delivered again (bounded wait).
    let mut queued = u32::MAX;
    for _ in 0..100 {
        let again = RelayClient::connect(relay.addr, bob_id.clone())
            .await
            .expect("bob again");
        queued = again.queued;
        if queued == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(queued, 0);
}

#[tokio::test]
async fn sigterm_closes_connections_with_a_reason_and_exits_cleanly() {
    const BURST: u64 = 500;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut relay = RelayProcess::start(dir.path(), &[]).expect("relay");
    let mut alice = RelayClient::connect(relay.addr, identity()).await.expect("alice");
    let bob_id = identity();
    let bob = *bob_id.public().as_bytes();
    let mut other = Vec::new();
    alice
        .send_message(bob, msg_id(0), vec![0], &mut other)
        .await
        .expect("stored");
    // A burst still being committed when the signal arrives.
    for n in 1..=BURST {
        alice
            .feed(Frame::Send {
                recipient: bob,
                msg_id: msg_id(n),
                payload: vec![n as u8],
            })
            .await
            .expect("feed");
    }
    alice.flush().await.expect("flush");
    // A client that has not authenticated yet is told as well.
    let (mut unauthenticated, _binding) = open_link(relay.addr).await.expect("connect");
    let challenge = tokio::time::timeout(WAIT, unauthenticated.next())
        .await
        .expect("in time");
    assert!(
        matches!(challenge, Some(Ok(Frame::Challenge { .. }))),
        "{challenge:?}"
    );
    let pid = relay.child.id();
    e2ee_integration::process::signal(pid, "TERM").expect("signal");
    expect_closed_with(&mut unauthenticated, ErrorCode::ServerShutdown).await;
    let mut acked = vec![msg_id(0)];
    let mut reason = None;
    while let Some(frame) = alice.recv_or_closed(WAIT).await.expect("closed in time") {
        match frame {
            Frame::SentAck { msg_id } => acked.push(msg_id),
            Frame::Error { code, .. } => reason = Some(code),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(reason, Some(ErrorCode::ServerShutdown), "told why");
    let status =
        e2ee_integration::process::wait_exit(&mut relay.child, Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "exit status {status:?}");

    // Every acknowledged message is there after a restart, in order.
    let relay = RelayProcess::start(dir.path(), &[]).expect("restart");
    let mut bob = RelayClient::connect(relay.addr, bob_id).await.expect("bob");
    assert!(
        u64::from(bob.queued) >= acked.len() as u64,
        "{} stored, {} acked",
        bob.queued,
        acked.len()
    );
    let got = bob
        .receive_messages(bob.queued as usize, WAIT)
        .await
        .expect("queue");
    let ids: Vec<[u8; 16]> = got.iter().map(|m| m.1).collect();
    assert_eq!(
        ids, acked,
        "what was stored was acknowledged before the close, in order"
    );
    println!(
        "SIGTERM during a burst of {BURST}: {} acked, {} stored",
        acked.len(),
        ids.len()
    );
}

#[test]
fn the_relay_explains_its_options_prints_its_settings_and_starts_without_a_config_file() {
    use std::process::{Command, Stdio};
    let bin = e2ee_integration::process::binary("e2ee-relay").expect("built");
    let help = Command::new(&bin).arg("--help").output().expect("--help");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{text}");
    for flag in [
        "--listen",
        "--config",
        "--data-dir",
        "--log-format",
        "--log-level",
        "--print-config",
    ] {
        assert!(text.contains(flag), "--help explains {flag}:\n{text}");
    }
    // The deliberate-misbehaviour mode is only in e2ee-relay-adversary.
    assert!(
        !text.contains("adversary"),
        "no adversary mode in e2ee-relay:\n{text}"
    );

    // Defaults, then the environment, then flags.
    let printed = Command::new(&bin)
        .args(["--print-config", "--listen", "127.0.0.1:7999"])
        .env("E2EE_RELAY_LIMITS__QUEUE_QUOTA", "77")
        .output()
        .expect("--print-config");
    let text = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.status.success(), "{text}");
    assert!(
        text.contains("# metrics_listen = (not set"),
        "every setting shown:\n{text}"
    );
    for line in [
        "listen = \"127.0.0.1:7999\"",
        "queue_quota = 77",
        "engine = \"sqlite\"",
        "[names]",
        "lease_days = 90",
        "away_notice_days = 7",
        "opk_handout_capacity = 50",
        "opk_handout_refill_per_hour = 120",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
    }
    assert!(!text.contains("adversary"), "no [adversary] settings:\n{text}");

    // A config file that is missing or holds a bad value: a clear error, exit 1.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "listen = 5\n").expect("write");
    for (config, says) in [
        (dir.path().join("missing.toml"), "does not exist".to_string()),
        (bad, "listen = \"5\": invalid socket address".to_string()),
    ] {
        let out = Command::new(&bin)
            .current_dir(dir.path())
            .arg("--config")
            .arg(&config)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&says), "{says:?} in {err}");
    }

    // A value serde accepts but the relay cannot work with: a clear error, exit 1.
    let out = Command::new(&bin)
        .current_dir(dir.path())
        .args(["--listen", "127.0.0.1:0"])
        .env("E2EE_RELAY_NAMES__LEASE_DAYS", "0")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("names.lease_days must be above 0"), "{err}");

    // No config file and no data directory: embedded defaults, data in ./e2ee-relay-data.
    let mut child = Command::new(&bin)
        .current_dir(dir.path())
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let lines = e2ee_integration::process::forward_lines(child.stderr.take().expect("stderr"));
    let listening = loop {
        let line = lines.recv_timeout(WAIT).expect("a log line");
        if line.contains("\"msg\":\"relay listening\"") {
            break line;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening.contains("e2ee-relay-data"), "{listening}");
    assert!(dir.path().join("e2ee-relay-data").is_dir());
}

/// The data directory is owner-only, and so is every file in it; one that others may
/// read is refused with the path and the fix, and a database that is not one is named.
#[test]
fn the_data_directory_is_owner_only_and_one_open_to_others_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let chmod = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    };
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("relay");
    {
        let mut relay = RelayProcess::start(&data, &[]).expect("relay");
        // While it runs, SQLite's -wal and -shm are there too (a clean stop removes them).
        assert_eq!(mode(&data), 0o700);
        for name in ["relay.db", "relay.db-wal", "relay.db-shm", "relay-id"] {
            assert_eq!(mode(&data.join(name)), 0o600, "{name}");
        }
        relay.terminate(WAIT).expect("stops");
    }

    let bin = e2ee_integration::process::binary("e2ee-relay").expect("built");
    let refused = |says: &str| {
        let out = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(says), "{says:?} in {err}");
    };
    chmod(&data, 0o755);
    refused(&format!("restrict it with `chmod 700 {}`", data.display()));
    assert_eq!(mode(&data), 0o755, "refused, not changed");
    chmod(&data, 0o700);
    let db = data.join("relay.db");
    chmod(&db, 0o644);
    refused(&format!("restrict it with `chmod 600 {}`", db.display()));
    chmod(&db, 0o600);
    for companion in ["relay.db-wal", "relay.db-shm"] {
        let _ = std::fs::remove_file(data.join(companion));
    }
    std::fs::write(&db, vec![0x5a; 8192]).expect("overwrite");
    refused(&format!(
        "cannot open the store {}: file is not a database",
        db.display()
    ));
}

/// `identity`'s signed claim of `name`, issued at `issued_ms`.
fn claim(identity: &IdentityKeyPair, name: &str, issued_ms: u64) -> Vec<u8> {
    NameClaim::sign(identity, name, issued_ms)
        .expect("a valid name")
        .encode()
}

/// `identity`'s signed release of `name`, issued at `issued_ms`.
fn release(identity: &IdentityKeyPair, name: &str, issued_ms: u64) -> Vec<u8> {
    NameRelease::sign(identity, name, issued_ms)
        .expect("a valid name")
        .encode()
}

/// The claim a `NameClaim` answer carries (`None` when absent).
fn claim_in(answer: Frame) -> Option<Vec<u8>> {
    match answer {
        Frame::NameClaim { claim, .. } => claim,
        other => panic!("expected a NameClaim, got {other:?}"),
    }
}

/// The reason of an `Error` answer of `code`.
fn refused_with(answer: Frame, code: ErrorCode) -> String {
    match answer {
        Frame::Error { code: got, reason } if got == code => reason,
        other => panic!("expected Error({code:?}), got {other:?}"),
    }
}

#[tokio::test]
async fn the_reverse_lookup_answers_the_claim_bound_to_an_identity() {
    on_both_engines(the_reverse_lookup_answers_the_claim_bound_to_an_identity_on).await;
}

async fn the_reverse_lookup_answers_the_claim_bound_to_an_identity_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |_| {});
    let mut alice = connect(&handle).await;
    let mut bob = connect(&handle).await;
    let unbound = alice.lookup_identity(1, alice.me()).await.expect("answer");
    assert_eq!(
        unbound,
        Frame::NameClaim {
            request_id: 1,
            claim: None
        },
        "no name bound yet"
    );
    let alices = claim(&alice.identity, "alice", 10);
    let stored = alice.publish_name("alice", alices.clone()).await.expect("answer");
    assert_eq!(stored, Ok(Some(alices.clone())));

    // Anyone may ask; the answer is the signed claim, which the asker verifies.
    let bound = claim_in(bob.lookup_identity(2, alice.me()).await.expect("answer"));
    assert_eq!(bound.as_ref(), Some(&alices));
    let verified = NameClaim::decode_verified(&alices).expect("verifies");
    assert_eq!(
        (verified.identity.as_bytes(), verified.name.as_str()),
        (&alice.me(), "alice")
    );
    assert_eq!(
        claim_in(bob.lookup_identity(3, bob.me()).await.expect("answer")),
        None,
        "bob holds no name"
    );

    let released = alice
        .release_name(4, release(&alice.identity, "alice", 20))
        .await
        .expect("answer");
    assert_eq!(
        released,
        Frame::NameClaim {
            request_id: 4,
            claim: None
        }
    );
    assert_eq!(
        claim_in(bob.lookup_identity(5, alice.me()).await.expect("answer")),
        None,
        "unbound after the release"
    );
}

#[tokio::test]
async fn a_released_name_is_free_for_another_identity() {
    on_both_engines(a_released_name_is_free_for_another_identity_on).await;
}

async fn a_released_name_is_free_for_another_identity_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |_| {});
    let mut alice = connect(&handle).await;
    let mut bob = connect(&handle).await;
    let alices = claim(&alice.identity, "shared", 10);
    assert_eq!(
        alice
            .publish_name("shared", alices.clone())
            .await
            .expect("answer"),
        Ok(Some(alices.clone()))
    );
    let bobs = claim(&bob.identity, "shared", 11);
    let (code, _) = bob
        .publish_name("shared", bobs.clone())
        .await
        .expect("answer")
        .expect_err("held by alice");
    assert_eq!(code, ErrorCode::NotOwner);

    let released = alice
        .release_name(1, release(&alice.identity, "shared", 12))
        .await
        .expect("answer");
    assert_eq!(claim_in(released), None, "released");
    assert_eq!(
        claim_in(bob.lookup_name(2, "shared").await.expect("answer")),
        None,
        "the name is free"
    );
    assert_eq!(
        bob.publish_name("shared", bobs.clone()).await.expect("answer"),
        Ok(Some(bobs.clone())),
        "claimable by another identity"
    );
    assert_eq!(
        claim_in(alice.lookup_identity(3, bob.me()).await.expect("answer")),
        Some(bobs)
    );
    assert_eq!(
        claim_in(alice.lookup_identity(4, alice.me()).await.expect("answer")),
        None
    );
}

#[tokio::test]
async fn a_release_not_signed_by_the_holder_is_refused() {
    on_both_engines(a_release_not_signed_by_the_holder_is_refused_on).await;
}

async fn a_release_not_signed_by_the_holder_is_refused_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |_| {});
    let mut alice = connect(&handle).await;
    let mut bob = connect(&handle).await;
    let alices = claim(&alice.identity, "alice", 10);
    alice
        .publish_name("alice", alices.clone())
        .await
        .expect("answer")
        .expect("claimed");

    // Bob's own release of a name he does not hold.
    let answer = bob
        .release_name(1, release(&bob.identity, "alice", 20))
        .await
        .expect("answer");
    let reason = refused_with(answer, ErrorCode::NotOwner);
    assert!(reason.contains("not held"), "{reason}");
    // A release signed by alice, sent by bob: not his to send.
    let answer = bob
        .release_name(2, release(&alice.identity, "alice", 20))
        .await
        .expect("answer");
    let reason = refused_with(answer, ErrorCode::NotOwner);
    assert!(reason.contains("another identity"), "{reason}");
    // Neither closed the connection nor freed the name.
    assert_eq!(
        claim_in(bob.lookup_name(3, "alice").await.expect("answer")),
        Some(alices)
    );
    assert_eq!(handle.metrics.rejects(ErrorCode::NotOwner), 2);
}

#[tokio::test]
async fn a_release_older_than_the_claim_is_refused() {
    on_both_engines(a_release_older_than_the_claim_is_refused_on).await;
}

async fn a_release_older_than_the_claim_is_refused_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |_| {});
    let mut alice = connect(&handle).await;
    // A release signed at 150 that did not reach the relay before a claim signed at 200.
    let stale = release(&alice.identity, "alice", 150);
    let first = claim(&alice.identity, "alice", 100);
    let current = claim(&alice.identity, "alice", 200);
    alice
        .publish_name("alice", first)
        .await
        .expect("answer")
        .expect("claimed");
    alice
        .publish_name("alice", current.clone())
        .await
        .expect("answer")
        .expect("claimed again");
    let answer = alice.release_name(1, stale).await.expect("answer");
    let reason = refused_with(answer, ErrorCode::NotOwner);
    assert!(reason.contains("older than the claim"), "{reason}");
    assert_eq!(
        claim_in(alice.lookup_name(2, "alice").await.expect("answer")),
        Some(current),
        "the later claim stays"
    );
    // A release issued at the claim's time is not older: it frees the name.
    let answer = alice
        .release_name(3, release(&alice.identity, "alice", 200))
        .await
        .expect("answer");
    assert_eq!(claim_in(answer), None);
    assert_eq!(
        claim_in(alice.lookup_name(4, "alice").await.expect("answer")),
        None
    );
}

#[tokio::test]
async fn a_release_that_does_not_verify_is_refused_as_an_invalid_claim() {
    on_both_engines(a_release_that_does_not_verify_is_refused_as_an_invalid_claim_on).await;
}

async fn a_release_that_does_not_verify_is_refused_as_an_invalid_claim_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |_| {});
    let mut alice = connect(&handle).await;
    let alices = claim(&alice.identity, "alice", 10);
    alice
        .publish_name("alice", alices.clone())
        .await
        .expect("answer")
        .expect("claimed");
    let mut tampered = release(&alice.identity, "alice", 20);
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut renamed = release(&alice.identity, "alice", 20);
    // "alice" -> "alicf": the signature no longer covers the name.
    renamed[33 + 5] ^= 0x07;
    for (request_id, bytes) in [
        (1, tampered),
        (2, renamed),
        (3, alices.clone()),
        (4, b"not a release".to_vec()),
    ] {
        let answer = alice.release_name(request_id, bytes).await.expect("answer");
        refused_with(answer, ErrorCode::InvalidClaim);
    }
    assert_eq!(
        claim_in(alice.lookup_name(5, "alice").await.expect("answer")),
        Some(alices),
        "still alice's, and the connection is open"
    );
    assert_eq!(handle.metrics.rejects(ErrorCode::InvalidClaim), 4);
}

/// Publishes `claim` of `name` every 100 ms until the relay accepts it (bounded); the
/// time it was accepted.
async fn publish_until_accepted(client: &mut RelayClient, name: &str, claim: &[u8]) -> Instant {
    let deadline = Instant::now() + WAIT;
    loop {
        match client.publish_name(name, claim.to_vec()).await.expect("answer") {
            Ok(stored) => {
                assert_eq!(stored.as_deref(), Some(claim));
                return Instant::now();
            }
            Err((code, _)) => assert_eq!(code, ErrorCode::NotOwner),
        }
        assert!(Instant::now() < deadline, "the name was never taken over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `at`.
async fn sleep_until(at: Instant) {
    tokio::time::sleep_until(at.into()).await;
}

/// The lease the lease tests give a relay.
const LEASE: Duration = Duration::from_secs(2);
/// The lease of the tests that check a login renews it: they need a refusal between the
/// login and a lease after it, so they get more slack (half of it).
const RENEWED_LEASE: Duration = Duration::from_secs(6);
/// Attempts of a renewal scenario before a machine too slow for it is a failure (an
/// attempt whose refusal came a lease or more after the login proves nothing).
const RENEWAL_ATTEMPTS: usize = 3;

#[tokio::test]
async fn a_name_is_taken_over_only_after_its_holders_lease_ran_out() {
    on_both_engines(a_name_is_taken_over_only_after_its_holders_lease_ran_out_on).await;
}

async fn a_name_is_taken_over_only_after_its_holders_lease_ran_out_on(engine: StoreEngine) {
    let (handle, _dir) = relay_on(engine, |s| s.names.lease_secs = LEASE.as_secs());
    let mut alice = connect(&handle).await;
    let mut bob = connect(&handle).await;
    let before_claim = Instant::now();
    alice
        .publish_name("alice", claim(&alice.identity, "alice", 10))
        .await
        .expect("answer")
        .expect("claimed");
    let bobs = claim(&bob.identity, "alice", 11);
    let (code, _) = bob
        .publish_name("alice", bobs.clone())
        .await
        .expect("answer")
        .expect_err("a live name");
    assert_eq!(code, ErrorCode::NotOwner);

    // Alice stays connected but does not log in again: her lease runs from her claim.
    let taken = publish_until_accepted(&mut bob, "alice", &bobs).await;
    assert!(
        taken.duration_since(before_claim) > LEASE,
        "taken over {:?} after the claim",
        taken.duration_since(before_claim)
    );
    assert_eq!(
        claim_in(alice.lookup_name(1, "alice").await.expect("answer")),
        Some(bobs.clone())
    );
    assert_eq!(
        claim_in(alice.lookup_identity(2, alice.me()).await.expect("answer")),
        None
    );
    assert_eq!(
        claim_in(alice.lookup_identity(3, bob.me()).await.expect("answer")),
        Some(bobs)
    );
    // Bob's lease is fresh: alice cannot take it back.
    let (code, _) = alice
        .publish_name("alice", claim(&alice.identity, "alice", 12))
        .await
        .expect("answer")
        .expect_err("bob's now");
    assert_eq!(code, ErrorCode::NotOwner);
}

#[tokio::test]
async fn a_holder_that_logged_in_within_the_lease_keeps_its_name() {
    on_both_engines(a_holder_that_logged_in_within_the_lease_keeps_its_name_on).await;
}

async fn a_holder_that_logged_in_within_the_lease_keeps_its_name_on(engine: StoreEngine) {
    for attempt in 1..=RENEWAL_ATTEMPTS {
        if login_renews_the_lease(engine).await {
            return;
        }
        eprintln!("attempt {attempt}: the refusal came a lease after the login; trying again");
    }
    panic!("the machine was too slow for this test in {RENEWAL_ATTEMPTS} attempts");
}

/// One attempt; false if it proved nothing (the machine stalled past the lease).
async fn login_renews_the_lease(engine: StoreEngine) -> bool {
    const LEASE: Duration = RENEWED_LEASE;
    let (handle, _dir) = relay_on(engine, |s| s.names.lease_secs = LEASE.as_secs());
    let alice_id = identity();
    let mut alice = RelayClient::connect(handle.addr, alice_id.clone())
        .await
        .expect("alice");
    let mut bob = connect(&handle).await;
    alice
        .publish_name("alice", claim(&alice_id, "alice", 10))
        .await
        .expect("answer")
        .expect("claimed");
    let claimed = Instant::now();

    // Alice logs in again before her lease runs out.
    sleep_until(claimed + LEASE * 6 / 10).await;
    let login = Instant::now();
    let _alice = RelayClient::connect(handle.addr, alice_id)
        .await
        .expect("alice again");
    drop(alice);

    // Past the lease counted from the claim, within the lease counted from the login.
    sleep_until(claimed + LEASE + LEASE / 10).await;
    let bobs = claim(&bob.identity, "alice", 11);
    let answer = bob.publish_name("alice", bobs.clone()).await.expect("answer");
    if login.elapsed() >= LEASE {
        return false;
    }
    let (code, _) = answer.expect_err("alice logged in within the lease");
    assert_eq!(code, ErrorCode::NotOwner);

    // Her lease runs from the login now.
    let taken = publish_until_accepted(&mut bob, "alice", &bobs).await;
    assert!(taken.duration_since(login) > LEASE);
    true
}

#[tokio::test]
async fn a_names_holder_and_its_last_login_survive_a_relay_restart() {
    for attempt in 1..=RENEWAL_ATTEMPTS {
        if holder_and_login_survive_a_restart().await {
            return;
        }
        eprintln!("attempt {attempt}: the refusal came a lease after the login; trying again");
    }
    panic!("the machine was too slow for this test in {RENEWAL_ATTEMPTS} attempts");
}

/// One attempt; false if it proved nothing (the machine stalled past the lease).
async fn holder_and_login_survive_a_restart() -> bool {
    const LEASE: Duration = RENEWED_LEASE;
    let dir = tempfile::tempdir().expect("tempdir");
    let lease = LEASE.as_secs().to_string();
    let env = [("E2EE_RELAY_NAMES__LEASE_SECS", lease.as_str())];
    let start = || RelayProcess::start_with_env("127.0.0.1:0", dir.path(), &[], &env).expect("relay");
    let mut relay = start();
    let alice_id = identity();
    let alices = claim(&alice_id, "alice", 10);
    let mut alice = RelayClient::connect(relay.addr, alice_id.clone())
        .await
        .expect("alice");
    alice
        .publish_name("alice", alices.clone())
        .await
        .expect("answer")
        .expect("claimed");
    let claimed = Instant::now();
    drop(alice);
    sleep_until(claimed + LEASE * 6 / 10).await;
    let login = Instant::now();
    let alice = RelayClient::connect(relay.addr, alice_id)
        .await
        .expect("alice again");
    drop(alice);
    let status = relay.terminate(WAIT).expect("stops");
    assert!(status.success(), "{status:?}");

    let relay = start();
    let mut bob = RelayClient::connect(relay.addr, identity()).await.expect("bob");
    assert_eq!(
        claim_in(bob.lookup_name(1, "alice").await.expect("answer")),
        Some(alices.clone()),
        "the holder survived"
    );
    let alice_key = *NameClaim::decode(&alices).expect("decodes").identity.as_bytes();
    assert_eq!(
        claim_in(bob.lookup_identity(2, alice_key).await.expect("answer")),
        Some(alices)
    );
    sleep_until(claimed + LEASE + LEASE / 10).await;
    let bobs = claim(&bob.identity, "alice", 11);
    let answer = bob.publish_name("alice", bobs.clone()).await.expect("answer");
    if login.elapsed() >= LEASE {
        return false;
    }
    let (code, _) = answer.expect_err("the login before the restart still counts");
    assert_eq!(code, ErrorCode::NotOwner);
    let taken = publish_until_accepted(&mut bob, "alice", &bobs).await;
    assert!(taken.duration_since(login) > LEASE);
    true
}

#[tokio::test]
async fn replacing_connections_cannot_refill_an_identitys_request_bucket() {
    const CAPACITY: u32 = 5;
    let (handle, _dir) = relay(|s| {
        s.limits.request_rate_capacity = CAPACITY;
        s.limits.request_rate_refill_per_sec = 1;
    });
    let mallory = identity();
    let target = *identity().public().as_bytes();
    let start = Instant::now();
    let mut current = RelayClient::connect(handle.addr, mallory.clone())
        .await
        .expect("mallory");
    let (mut served, mut attempts) = (0u32, 0u32);
    let mut fetch = |answer: Frame| match answer {
        Frame::Bundle { bundle: None, .. } => served += 1,
        Frame::RateLimited { msg_id: None, .. } => {}
        other => panic!("unexpected {other:?}"),
    };
    for request_id in 0..CAPACITY {
        fetch(current.fetch_bundle(request_id, target).await.expect("answer"));
    }
    // Each new connection authenticates while the previous one is still open, which
    // it then replaces (the relay reads a replaced connection that its client leaves
    // open for 200 ms more before the new one's AuthOk: about 5 a second).
    while attempts < 10 && start.elapsed() < Duration::from_secs(10) {
        let next = RelayClient::connect(handle.addr, mallory.clone())
            .await
            .expect("mallory again");
        drop(std::mem::replace(&mut current, next));
        attempts += 1;
        fetch(current.fetch_bundle(attempts, target).await.expect("answer"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!("{attempts} replacing connections in {elapsed:.2} s: {served} fetches served");
    assert!(attempts >= 10, "only {attempts} reconnects");
    let allowed = f64::from(CAPACITY) + elapsed.ceil();
    assert!(
        f64::from(served) <= allowed,
        "{served} fetches served, at most {allowed} allowed"
    );
    assert!(handle.metrics.rejects(ErrorCode::Replaced) >= 10);
}

#[tokio::test]
async fn one_time_prekey_handouts_per_target_are_limited_whoever_fetches() {
    on_both_engines(one_time_prekey_handouts_per_target_are_limited_whoever_fetches_on).await;
}

async fn one_time_prekey_handouts_per_target_are_limited_whoever_fetches_on(engine: StoreEngine) {
    const CAPACITY: usize = 5;
    const PUBLISHED: usize = 20;
    let (handle, _dir) = relay_on(engine, |s| {
        s.limits.opk_handout_capacity = CAPACITY as u32;
        s.limits.opk_handout_refill_per_hour = 120;
        // Every fetch that hands one out leaves fewer than this: the owner is told.
        s.limits.prekey_low_threshold = PUBLISHED as u32;
    });
    let mut bob = connect(&handle).await;
    let prekeys = PreKeyStore::generate(&bob.identity, PUBLISHED, &mut OsRng);
    bob.send(Frame::PublishPreKeys {
        bundle: prekeys.bundle(bob.identity.public()).encode(),
    })
    .await
    .expect("publish");
    assert_eq!(
        bob.recv(WAIT).await.expect("stored"),
        Frame::PreKeysStored {
            opks: PUBLISHED as u32
        }
    );

    // Ten throwaway identities, three fetches each.
    let start = Instant::now();
    let mut handed_out = Vec::new();
    let mut without = 0;
    for _ in 0..10 {
        let mut fetcher = connect(&handle).await;
        for request_id in 0..3 {
            let Frame::Bundle {
                bundle: Some(bytes), ..
            } = fetcher.fetch_bundle(request_id, bob.me()).await.expect("answer")
            else {
                panic!("every fetch is answered with a bundle");
            };
            let bundle = PreKeyBundle::decode_verified(&bytes).expect("verifies");
            assert_eq!(
                bundle.signed_prekey,
                prekeys.bundle(bob.identity.public()).signed_prekey
            );
            match bundle.one_time_prekeys.as_slice() {
                [] => without += 1,
                [opk] => handed_out.push(*opk),
                more => panic!("{} one-time prekeys in one bundle", more.len()),
            }
        }
    }
    // 120 an hour: one more every 30 s.
    let allowed = CAPACITY + (start.elapsed().as_secs() / 30) as usize + 1;
    assert!(
        (CAPACITY..=allowed).contains(&handed_out.len()),
        "{} bundles with a one-time prekey",
        handed_out.len()
    );
    assert_eq!(
        handed_out.len() + without,
        30,
        "the rest carry the signed prekey only"
    );
    let mut distinct = handed_out.clone();
    distinct.sort_by_key(|k| *k.as_bytes());
    distinct.dedup();
    assert_eq!(distinct.len(), handed_out.len(), "each handed out once");
    assert_eq!(handle.metrics.opk_handouts_limited.get(), without as u64);

    // Bob's other one-time prekeys are all still there (republishing adds none), and
    // he was told of the handouts only.
    let republish = PreKeyStore::generate(&bob.identity, 0, &mut OsRng);
    bob.send(Frame::PublishPreKeys {
        bundle: republish.bundle(bob.identity.public()).encode(),
    })
    .await
    .expect("publish");
    let mut notices = 0;
    loop {
        match bob.recv(WAIT).await.expect("frame") {
            Frame::PreKeysLow { .. } => notices += 1,
            Frame::PreKeysStored { opks } => {
                assert_eq!(opks as usize, PUBLISHED - handed_out.len());
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Notices travel through the Router: wait for those still on their way, then make
    // sure no more come.
    while notices < handed_out.len() {
        match bob.recv(WAIT).await.expect("notice") {
            Frame::PreKeysLow { .. } => notices += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    bob.send(Frame::Ping { nonce: 1 }).await.expect("ping");
    loop {
        match bob.recv(WAIT).await.expect("frame") {
            Frame::Pong { nonce: 1 } => break,
            Frame::PreKeysLow { .. } => notices += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        notices,
        handed_out.len(),
        "no notice for a fetch that handed out nothing"
    );
}

/// The notice period the away tests give a relay.
const AWAY_NOTICE: Duration = Duration::from_secs(1);
/// Comfortably past [`AWAY_NOTICE`].
const PAST_AWAY_NOTICE: Duration = Duration::from_millis(2_500);

/// `away_days` of an `Away` answer.
fn away_days(answer: Frame) -> u32 {
    match answer {
        Frame::Away { away_days, .. } => away_days,
        other => panic!("expected an Away answer, got {other:?}"),
    }
}

/// Waits until the relay counts `count` authenticated connections.
async fn wait_authenticated(handle: &RelayHandle, count: u64) {
    let deadline = Instant::now() + WAIT;
    while handle.metrics.authenticated.get() != count {
        assert!(
            Instant::now() < deadline,
            "never {count} authenticated connections"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_away_query_tells_present_long_away_and_never_seen_apart() {
    on_both_engines(an_away_query_tells_present_long_away_and_never_seen_apart_on).await;
}

async fn an_away_query_tells_present_long_away_and_never_seen_apart_on(engine: StoreEngine) {
    for attempt in 1..=RENEWAL_ATTEMPTS {
        if away_answers(engine).await {
            return;
        }
        eprintln!("attempt {attempt}: an answer came a notice period after the login; trying again");
    }
    panic!("the machine was too slow for this test in {RENEWAL_ATTEMPTS} attempts");
}

/// One attempt; false if it proved nothing (the machine stalled past the notice period
/// where an answer must come within it).
async fn away_answers(engine: StoreEngine) -> bool {
    let (handle, _dir) = relay_on(engine, |s| s.names.away_notice_secs = AWAY_NOTICE.as_secs());
    let bob_id = identity();
    let bob_key = *bob_id.public().as_bytes();
    let before_login = Instant::now();
    let bob = RelayClient::connect(handle.addr, bob_id.clone())
        .await
        .expect("bob");
    drop(bob);
    let mut alice = connect(&handle).await;

    // Never authenticated here.
    let stranger = *identity().public().as_bytes();
    assert_eq!(
        away_days(alice.query_away(1, stranger).await.expect("answer")),
        AWAY_NEVER
    );
    // Bob logged in just now (connected or not any more: the answer does not say).
    let recent = away_days(alice.query_away(2, bob_key).await.expect("answer"));
    if before_login.elapsed() >= AWAY_NOTICE {
        return false;
    }
    assert_eq!(recent, 0, "seen within the notice period");

    // Past the notice period: away, in whole days, at least 1.
    tokio::time::sleep(PAST_AWAY_NOTICE).await;
    let gone = away_days(alice.query_away(3, bob_key).await.expect("answer"));
    assert!((1..AWAY_NEVER).contains(&gone), "away for {gone} days");
    // Alice logged in as long ago, but her connection is open: present.
    assert_eq!(
        away_days(alice.query_away(4, alice.me()).await.expect("answer")),
        0
    );

    // Her connection ends: absent from then on, not from her login.
    let alice_key = alice.me();
    let mut carol = connect(&handle).await;
    wait_authenticated(&handle, 2).await;
    drop(alice);
    wait_authenticated(&handle, 1).await;
    let left = Instant::now();
    let just_left = away_days(carol.query_away(5, alice_key).await.expect("answer"));
    if left.elapsed() >= AWAY_NOTICE {
        return false;
    }
    assert_eq!(just_left, 0, "seen until her connection ended");
    tokio::time::sleep(PAST_AWAY_NOTICE).await;
    let gone = away_days(carol.query_away(6, alice_key).await.expect("answer"));
    assert!((1..AWAY_NEVER).contains(&gone), "away for {gone} days");

    // A new login makes bob present again.
    let _bob = RelayClient::connect(handle.addr, bob_id)
        .await
        .expect("bob again");
    assert_eq!(away_days(carol.query_away(7, bob_key).await.expect("answer")), 0);
    true
}

#[tokio::test]
async fn away_queries_take_tokens_from_the_request_bucket() {
    let (handle, _dir) = relay(|s| {
        s.limits.request_rate_capacity = 2;
        s.limits.request_rate_refill_per_sec = 1;
    });
    let mut alice = connect(&handle).await;
    let target = *identity().public().as_bytes();
    for request_id in 0..2 {
        assert_eq!(
            away_days(alice.query_away(request_id, target).await.expect("answer")),
            AWAY_NEVER
        );
    }
    let refused = alice.query_away(2, target).await.expect("answer");
    assert!(
        matches!(refused, Frame::RateLimited { msg_id: None, .. }),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_away_notice_period_is_set_through_the_environment_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let notice = AWAY_NOTICE.as_secs().to_string();
    let env = [("E2EE_RELAY_NAMES__AWAY_NOTICE_SECS", notice.as_str())];
    let start = || RelayProcess::start_with_env("127.0.0.1:0", dir.path(), &[], &env).expect("relay");
    let mut relay = start();
    let bob_id = identity();
    let bob_key = *bob_id.public().as_bytes();
    drop(RelayClient::connect(relay.addr, bob_id).await.expect("bob"));
    let logged_in = Instant::now();
    let status = relay.terminate(WAIT).expect("stops");
    assert!(status.success(), "{status:?}");

    let relay = start();
    let mut alice = RelayClient::connect(relay.addr, identity()).await.expect("alice");
    tokio::time::sleep_until((logged_in + PAST_AWAY_NOTICE).into()).await;
    let gone = away_days(alice.query_away(1, bob_key).await.expect("answer"));
    assert!(
        (1..AWAY_NEVER).contains(&gone),
        "bob's login survived the restart and is a notice period old: {gone}"
    );
    let stranger = *identity().public().as_bytes();
    assert_eq!(
        away_days(alice.query_away(2, stranger).await.expect("answer")),
        AWAY_NEVER
    );
}

#[tokio::test]
async fn a_slow_reader_drains_a_large_backlog_without_being_cut_off() {
    // A reader of about 800 KB/s behind a small receive buffer, a write timeout of
    // 500 ms: half the 1 MiB output budget takes it over half a second to read, so
    // pacing the drain by a deadline would cut it off once the backlog (6.4 MB) has
    // filled the kernel's buffers; pacing by the budget alone does not. The backlog can
    // be made larger for a one-off run: E2EE_TEST_SLOW_READER_MESSAGES=5000 is the
    // issue's 80 MB (about 100 s).
    const SIZE: usize = 16 * 1024;
    let count: u64 = std::env::var("E2EE_TEST_SLOW_READER_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(400);
    let quota = (count * SIZE as u64 * 2).max(64 << 20).to_string();
    let burst = count.max(2_000).to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = RelayProcess::start_with_env(
        "127.0.0.1:0",
        dir.path(),
        &[],
        &[
            ("E2EE_RELAY_STORE__FSYNC", "false"),
            ("E2EE_RELAY_LIMITS__WRITE_TIMEOUT_MS", "500"),
            ("E2EE_RELAY_LIMITS__SENDER_QUOTA_BYTES", quota.as_str()),
            ("E2EE_RELAY_LIMITS__RATE_CAPACITY", burst.as_str()),
        ],
    )
    .expect("relay");
    let bob_id = identity();
    let bob_key = *bob_id.public().as_bytes();
    let mut alice = RelayClient::connect(relay.addr, identity()).await.expect("alice");
    let mut other = Vec::new();
    for n in 0..count {
        alice
            .send_message(bob_key, msg_id(n), vec![0x5a; SIZE], &mut other)
            .await
            .expect("stored");
    }
    let mut bob = RelayClient::connect_with_receive_buffer(relay.addr, bob_id, 16 * 1024)
        .await
        .expect("bob");
    assert_eq!(u64::from(bob.queued), count);
    let mut got = 0;
    while got < count {
        let frame = match bob.recv(WAIT).await {
            Ok(frame) => frame,
            Err(e) => panic!(
                "after {got} messages: {e}\nrelay log: {:?}",
                relay.wait_log("closing connection", WAIT)
            ),
        };
        if let Frame::Deliver { sender, msg_id, .. } = frame {
            bob.send(Frame::DeliveryAck { sender, msg_id })
                .await
                .expect("ack");
            got += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // No connection was cut off as a slow consumer. (In a long run alice, idle since her
    // sends, may be closed for her idle timeout: that is not the point here.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cut: Vec<String> = (relay.drain_log().into_iter())
        .filter(|line| line.contains("closing connection") && line.contains("slow_consumer"))
        .collect();
    assert!(cut.is_empty(), "the relay cut a reader off: {cut:?}");
}
