//! Acknowledge, then reconnect at once: a client acknowledges what it received and
//! opens its next connection right away, without waiting for anything. The replacing
//! connection must not deliver again what the old one was acknowledged for
//! (docs/PROTOCOL.md 1.6), whether the old connection had read the acknowledgements yet
//! or not, and whether the client closed it or left it open.

use std::time::Duration;

use e2ee_integration::client::{msg_id, RelayClient};
use e2ee_integration::process::spawn_relay;
use e2ee_protocol::frame::Frame;
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
