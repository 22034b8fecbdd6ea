//! Stored once, delivered once, and a `SentAck` that tells the truth:
//!
//! - acknowledge, then reconnect at once: a client acknowledges what it received and
//!   opens its next connection right away, without waiting for anything. The replacing
//!   connection must not deliver again what the old one was acknowledged for
//!   (docs/PROTOCOL.md 1.5 step 5), whether the old connection had read the
//!   acknowledgements yet or not, and whether the client closed it or left it open;
//! - a message id reused for another recipient is refused (`MsgIdReused`), not
//!   answered `SentAck` as a copy of the first message (docs/PROTOCOL.md 1.6).

use std::time::Duration;

use e2ee_integration::client::{msg_id, RelayClient};
use e2ee_integration::process::spawn_relay;
use e2ee_protocol::frame::{ErrorCode, Frame};
use e2ee_protocol::identity::IdentityKeyPair;
use e2ee_relay::settings::StoreEngine;
use e2ee_relay::RelayHandle;
use futures_util::SinkExt;
use rand_core::OsRng;

const WAIT: Duration = Duration::from_secs(10);
const PER_ATTEMPT: u64 = 5;

fn relay(engine: StoreEngine) -> (RelayHandle, tempfile::TempDir) {
    spawn_relay(|settings| {
        settings.store.engine = engine;
        // fsync makes each commit slow: acknowledgements are still being committed
        // when the next connection reads the queue.
        settings.store.fsync = true;
    })
    .expect("relay starts")
}

async fn ack_then_reconnect(engine: StoreEngine, close_old: bool, attempts: u64) {
    let (handle, _dir) = relay(engine);
    let alice_id = IdentityKeyPair::generate(&mut OsRng);
    let mut alice = RelayClient::connect(handle.addr, alice_id).await.expect("alice");
    let bob_id = IdentityKeyPair::generate(&mut OsRng);
    let bob_key = *bob_id.public().as_bytes();
    let mut other = Vec::new();
    let mut bob = RelayClient::connect(handle.addr, bob_id.clone())
        .await
        .expect("bob");
    let mut redelivered = Vec::new();
    for attempt in 0..attempts {
        let first = attempt * PER_ATTEMPT;
        for n in first..first + PER_ATTEMPT {
            alice
                .send_message(bob_key, msg_id(n), n.to_be_bytes().to_vec(), &mut other)
                .await
                .expect("stored");
        }
        // Received and acknowledged (the acks written, not waited for), then at once a
        // new connection of the same identity.
        let got = bob
            .receive_messages(PER_ATTEMPT as usize, WAIT)
            .await
            .expect("delivered");
        assert!(
            got.iter().all(|m| m.1 >= msg_id(first)),
            "attempt {attempt}: an old message came again"
        );
        SinkExt::<Frame>::flush(bob.framed()).await.expect("acks written");
        let old = bob;
        if close_old {
            drop(old);
            bob = RelayClient::connect(handle.addr, bob_id.clone())
                .await
                .expect("reconnect");
        } else {
            bob = RelayClient::connect(handle.addr, bob_id.clone())
                .await
                .expect("reconnect");
            drop(old);
        }
        if bob.queued > 0 {
            redelivered.push((attempt, bob.queued));
            // Take them, so that the next attempt starts clean.
            bob.receive_messages(bob.queued as usize, WAIT)
                .await
                .expect("redelivered");
        }
    }
    assert!(
        redelivered.is_empty(),
        "{engine:?}, old connection {}: acknowledged messages queued again after {} of {attempts} reconnections: {redelivered:?}",
        if close_old { "closed first" } else { "left open" },
        redelivered.len()
    );
}

#[tokio::test]
async fn acknowledged_then_closed_and_reconnected_at_once_is_not_delivered_again() {
    for engine in [StoreEngine::Sqlite, StoreEngine::Memory] {
        ack_then_reconnect(engine, true, 200).await;
    }
}

#[tokio::test]
async fn acknowledged_then_reconnected_with_the_old_connection_open_is_not_delivered_again() {
    for engine in [StoreEngine::Sqlite, StoreEngine::Memory] {
        // Each replaced connection that its client leaves open is read for 200 ms more.
        ack_then_reconnect(engine, false, 50).await;
    }
}

async fn id_reused_for_another_recipient_is_refused(engine: StoreEngine) {
    let (handle, _dir) = relay(engine);
    let mut alice = RelayClient::connect(handle.addr, IdentityKeyPair::generate(&mut OsRng))
        .await
        .expect("alice");
    let bob_id = IdentityKeyPair::generate(&mut OsRng);
    let carol_id = IdentityKeyPair::generate(&mut OsRng);
    let (bob, carol) = (*bob_id.public().as_bytes(), *carol_id.public().as_bytes());
    let mut other = Vec::new();
    alice
        .send_message(bob, msg_id(1), b"to bob".to_vec(), &mut other)
        .await
        .expect("stored");
    for round in 0..2 {
        alice
            .send(Frame::Send {
                recipient: carol,
                msg_id: msg_id(1),
                payload: b"to carol".to_vec(),
            })
            .await
            .expect("send");
        match alice.recv(WAIT).await.expect("an answer") {
            Frame::Error {
                code: ErrorCode::MsgIdReused,
                ..
            } => {}
            other => panic!("{engine:?} round {round}: expected MsgIdReused, got {other:?}"),
        }
        // The same id to the same recipient is still the quiet duplicate it was.
        alice
            .send_message(bob, msg_id(1), b"to bob".to_vec(), &mut other)
            .await
            .expect("duplicate");
        if round == 0 {
            // Delivered and acknowledged: the id stays taken.
            let mut bob_client = RelayClient::connect(handle.addr, bob_id.clone())
                .await
                .expect("bob");
            bob_client
                .receive_messages(1, WAIT)
                .await
                .expect("delivered once");
            SinkExt::<Frame>::flush(bob_client.framed())
                .await
                .expect("ack written");
            drop(bob_client);
        }
    }
    let carol_client = RelayClient::connect(handle.addr, carol_id).await.expect("carol");
    assert_eq!(carol_client.queued, 0, "{engine:?}: nothing was stored for carol");
    // The connection stayed open.
    alice
        .send_message(carol, msg_id(2), b"fresh id".to_vec(), &mut other)
        .await
        .expect("stored");
}

#[tokio::test]
async fn a_message_id_reused_for_another_recipient_is_refused_not_acknowledged() {
    for engine in [StoreEngine::Sqlite, StoreEngine::Memory] {
        id_reused_for_another_recipient_is_refused(engine).await;
    }
}

/// An `Auth` that arrives late on a connection accepted before the identity's current
/// one (an attempt its client gave up) does not replace the current connection: it is
/// closed with `Replaced` itself, and the current one keeps receiving.
#[tokio::test]
async fn a_late_auth_of_an_older_connection_does_not_replace_the_newer_one() {
    use e2ee_integration::client::{login_message, open_link};
    use futures_util::StreamExt;

    let (handle, _dir) = relay(StoreEngine::Sqlite);
    let bob_id = IdentityKeyPair::generate(&mut OsRng);
    let bob_key = *bob_id.public().as_bytes();
    // The older attempt: challenged, its Auth held back.
    let (mut older, binding) = open_link(handle.addr).await.expect("connect");
    let Some(Ok(Frame::Challenge { relay_id, nonce })) = older.next().await else {
        panic!("no challenge");
    };
    // The newer connection authenticates first.
    let mut newer = RelayClient::connect(handle.addr, bob_id.clone())
        .await
        .expect("newer");
    let signature = bob_id.sign(&login_message(&relay_id, &nonce, &bob_key, binding.as_ref()));
    older
        .send(Frame::Auth {
            identity: bob_key,
            signature,
        })
        .await
        .expect("late auth");
    match tokio::time::timeout(WAIT, older.next()).await.expect("an answer") {
        Some(Ok(Frame::Error {
            code: ErrorCode::Replaced,
            ..
        })) => {}
        other => panic!("expected Replaced on the older connection, got {other:?}"),
    }
    let mut alice = RelayClient::connect(handle.addr, IdentityKeyPair::generate(&mut OsRng))
        .await
        .expect("alice");
    let mut other = Vec::new();
    alice
        .send_message(bob_key, msg_id(1), b"still here".to_vec(), &mut other)
        .await
        .expect("stored");
    let got = newer
        .receive_messages(1, WAIT)
        .await
        .expect("the newer connection receives");
    assert_eq!(got[0].2, b"still here".to_vec());
}
