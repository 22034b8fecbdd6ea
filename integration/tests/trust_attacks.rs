//! Attacks on the trust layer found by review, replayed against real relay and agent
//! processes on loopback (the attacker is the project's own relay client):
//! - many unnamed senders at once: the agent's reverse lookups stay within the relay's
//!   rate limit instead of multiplying on every refusal, and every message is processed;
//! - a message stored while the agent was offline is shown on its next connection, every
//!   time (it used to race the agent's "connected" notice and wait for a reconnect);
//! - a flood of texts from an identity never written to gets at most a small budget of
//!   receipts, so it cannot use up the victim's storage quota at the relay;
//! - a flood of messages from a pending identity past the held limit is acknowledged and
//!   deleted, so other senders' messages keep arriving;
//! - floods of unnamed senders neither hold back known peers nor starve a new
//!   conversation, and a relay that leaves lookups unanswered cannot hold messages.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::client::RelayClient;
use e2ee_integration::process::RelayProcess;
use e2ee_protocol::frame::Frame;
use e2ee_protocol::identity::IdentityKeyPair;
use e2ee_protocol::name_claim::NameClaim;
use e2ee_protocol::payload::Payload;
use e2ee_protocol::prekey::PreKeyBundle;
use e2ee_protocol::session::Session;
use rand_core::{OsRng, RngCore};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn relay(dir: &Path, env: &[(&str, &str)]) -> RelayProcess {
    let mut all = vec![("E2EE_RELAY_STORE__FSYNC", "false")];
    all.extend_from_slice(env);
    RelayProcess::start_with_env("127.0.0.1:0", dir, &[], &all).expect("relay starts")
}

fn agent(name: &str, relay: SocketAddr, dir: &Path) -> AgentConfig {
    AgentConfig::new(name, relay, dir)
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "300")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn key_bytes(hex_key: &str) -> [u8; 32] {
    hex::decode(hex_key).expect("hex").try_into().expect("32 bytes")
}

fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    id
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Starts an agent, waits until the relay binds its name, and stops it (offline from
/// then on). Returns its identity (hex).
fn register_then_stop(relay: &RelayProcess, name: &str, dir: &Path) -> String {
    let mut agent: AgentProcess = agent(name, relay.addr, dir).start().expect("agent starts");
    let identity = agent.identity(WAIT).expect("identity");
    relay.wait_log("prekeys published", WAIT).expect("published");
    agent.send_line("/quit").expect("stdin");
    assert!(agent.wait_exit(WAIT).expect("exits").success());
    identity
}

/// Each of `senders` fresh identities, without a name, stores one junk message of `len`
/// bytes for `victim` (it decrypts to nothing).
fn store_junk_from_unnamed_senders(relay: &RelayProcess, victim: [u8; 32], senders: usize, len: usize) {
    runtime().block_on(async {
        for _ in 0..senders {
            let mut sender = RelayClient::connect(relay.addr, IdentityKeyPair::generate(&mut OsRng))
                .await
                .expect("connect");
            let mut other = Vec::new();
            sender
                .send_message(victim, random_id(), vec![0x02; len], &mut other)
                .await
                .expect("stored");
        }
    });
}

/// A session of `sender` with `victim`, started (X3DH) on the bundle the relay gives.
async fn session_with(client: &mut RelayClient, sender: &IdentityKeyPair, victim: [u8; 32]) -> Session {
    let Frame::Bundle {
        bundle: Some(bytes), ..
    } = client.fetch_bundle(1, victim).await.expect("bundle")
    else {
        panic!("the victim has a bundle");
    };
    let bundle = PreKeyBundle::decode_verified(&bytes).expect("verifies");
    Session::initiate(sender, &bundle, &mut OsRng).expect("x3dh")
}

fn count(agent: &mut AgentProcess, pred: impl Fn(&Value) -> bool) -> usize {
    agent.events().iter().filter(|e| pred(e)).count()
}

#[test]
fn many_unnamed_senders_are_all_processed_without_a_storm_of_lookups() {
    const SENDERS: usize = 240;
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay(&tmp.path().join("relay"), &[]);
    let alice_dir = tmp.path().join("alice");
    let victim = key_bytes(&register_then_stop(&relay, "alice", &alice_dir));

    // Each throwaway identity stores one junk message (it decrypts to nothing).
    store_junk_from_unnamed_senders(&relay, victim, SENDERS, 200);

    let mut alice = agent("alice", relay.addr, &alice_dir)
        .start()
        .expect("agent starts");
    let start = Instant::now();
    alice
        .wait_count("every message processed", SENDERS, Duration::from_secs(90), |e| {
            e["event"] == "decrypt_failure"
        })
        .expect("all processed");
    let limited = count(&mut alice, |e| {
        e["event"] == "info" && e["message"].as_str().is_some_and(|m| m.contains("rate-limited"))
    });
    println!(
        "{SENDERS} unnamed senders processed in {:.1} s; {limited} rate-limit retries",
        start.elapsed().as_secs_f64()
    );
    // One retry per refusal period at most: far fewer than the messages.
    assert!(limited <= SENDERS / 4, "{limited} rate-limit retries");
    for failure in alice.events_of("decrypt_failure") {
        let from = failure["from"].as_str().unwrap_or_default();
        assert!(
            from.starts_with('#') && from.len() == 17,
            "unnamed sender shown as {from:?}"
        );
    }
    alice.send_line("/quit").expect("stdin");
    assert!(alice.wait_exit(WAIT).expect("exits").success());
}

#[test]
fn a_message_stored_while_offline_is_shown_on_the_next_connection_every_time() {
    const ROUNDS: usize = 6;
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay(&tmp.path().join("relay"), &[]);
    let alice_dir = tmp.path().join("alice");
    let victim = key_bytes(&register_then_stop(&relay, "alice", &alice_dir));
    let rt = runtime();
    for round in 0..ROUNDS {
        let text = format!("stored while alice was offline, round {round}");
        rt.block_on(async {
            let sender = IdentityKeyPair::generate(&mut OsRng);
            let name = format!("sender{round}");
            let mut client = RelayClient::connect(relay.addr, sender.clone())
                .await
                .expect("connect");
            client
                .publish_name(
                    &name,
                    NameClaim::sign(&sender, &name, now_ms()).expect("claim").encode(),
                )
                .await
                .expect("sent")
                .expect("claimed");
            let mut session = session_with(&mut client, &sender, victim).await;
            let payload = Payload::text(random_id(), now_ms(), &text);
            let wire = session
                .encrypt(&payload.encode().expect("encodes"), &mut OsRng)
                .expect("encrypts");
            let mut other = Vec::new();
            client
                .send_message(victim, payload.message_id, wire, &mut other)
                .await
                .expect("stored");
        });
        let mut alice = agent("alice", relay.addr, &alice_dir)
            .start()
            .expect("agent starts");
        alice
            .wait_message(&format!("sender{round}"), &text, WAIT)
            .unwrap_or_else(|e| panic!("round {round}: {e:#}"));
        alice.send_line("/quit").expect("stdin");
        assert!(alice.wait_exit(WAIT).expect("exits").success());
    }
}

#[test]
fn a_flood_past_the_held_limit_is_discarded_and_other_senders_still_get_through() {
    const HELD_LIMIT: usize = 1000;
    const FLOOD: usize = HELD_LIMIT + 150;
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay(
        &tmp.path().join("relay"),
        &[("E2EE_RELAY_NAMES__LEASE_SECS", "1")],
    );
    let mut alice = agent("alice", relay.addr, &tmp.path().join("alice"))
        .start()
        .expect("alice starts");
    let mut bob = agent("bob", relay.addr, &tmp.path().join("bob"))
        .start()
        .expect("bob starts");
    let mut carol = agent("carol", relay.addr, &tmp.path().join("carol"))
        .start()
        .expect("carol starts");
    let alice_id = alice.identity(WAIT).expect("alice");
    bob.identity(WAIT).expect("bob");
    carol.identity(WAIT).expect("carol");
    // Each name is bound before anyone looks it up (the claim follows the prekeys).
    for _ in 0..3 {
        relay.wait_log("name claimed", WAIT).expect("claimed");
    }
    bob.send_line("/msg alice hello from bob").expect("stdin");
    alice
        .wait_message("bob", "hello from bob", WAIT)
        .expect("bob's message");
    // Alice verifies bob: a later change of bob is held, whatever the policy.
    alice.send_line("/verify bob").expect("stdin");
    let number = alice.wait_event("safety_number", WAIT).expect("number");
    let digits = number["digits"].as_str().expect("digits").to_string();
    alice.send_line(&format!("/trust bob {digits}")).expect("stdin");
    alice.wait_event("peer_verified", WAIT).expect("verified");
    carol.send_line("/msg alice carol one").expect("stdin");
    alice
        .wait_message("carol", "carol one", WAIT)
        .expect("carol's message");
    bob.send_line("/quit").expect("stdin");
    assert!(bob.wait_exit(WAIT).expect("exits").success());
    std::thread::sleep(Duration::from_millis(1_500));

    // Mallory takes the name bob after the lease and floods alice with junk.
    let victim = key_bytes(&alice_id);
    runtime().block_on(async {
        let mallory = IdentityKeyPair::generate(&mut OsRng);
        let mut client = RelayClient::connect(relay.addr, mallory.clone())
            .await
            .expect("connect");
        client
            .publish_name(
                "bob",
                NameClaim::sign(&mallory, "bob", now_ms())
                    .expect("claim")
                    .encode(),
            )
            .await
            .expect("sent")
            .expect("claimed after the lease");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut sent = 0;
        while sent < FLOOD {
            assert!(Instant::now() < deadline, "flood not stored in time");
            let mut other = Vec::new();
            match client
                .send_message(victim, random_id(), vec![0x02; 120], &mut other)
                .await
            {
                Ok(()) => sent += 1,
                // Rate-limited: wait for the bucket.
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    alice
        .wait_count("the held limit", HELD_LIMIT, Duration::from_secs(90), |e| {
            e["event"] == "message_held"
        })
        .expect("held up to the limit");
    alice
        .wait_count(
            "the rest discarded",
            FLOOD - HELD_LIMIT,
            Duration::from_secs(60),
            |e| e["event"] == "held_discarded",
        )
        .expect("the rest acknowledged and deleted");
    carol
        .send_line("/msg alice carol two, after the flood")
        .expect("stdin");
    alice
        .wait_message("carol", "carol two, after the flood", WAIT)
        .expect("other senders still get through");
    for agent in [&mut alice, &mut carol] {
        agent.send_line("/quit").expect("stdin");
        assert!(agent.wait_exit(WAIT).expect("exits").success());
    }
}

#[test]
fn texts_from_an_identity_never_written_to_get_few_receipts_and_cannot_use_up_our_quota() {
    const FLOOD: usize = 80;
    let tmp = tempfile::tempdir().expect("tempdir");
    // A sender quota below the flood: receipts to the flooder would use it up.
    let relay = relay(
        &tmp.path().join("relay"),
        &[("E2EE_RELAY_LIMITS__SENDER_QUOTA_MESSAGES", "40")],
    );
    let mut alice = agent("alice", relay.addr, &tmp.path().join("alice"))
        .start()
        .expect("alice starts");
    let mut carol = agent("carol", relay.addr, &tmp.path().join("carol"))
        .start()
        .expect("carol starts");
    let alice_id = alice.identity(WAIT).expect("alice");
    carol.identity(WAIT).expect("carol");
    for _ in 0..2 {
        relay.wait_log("name claimed", WAIT).expect("claimed");
    }
    // A conversation: alice wrote to carol, so carol's texts get receipts.
    carol.send_line("/msg alice hi alice").expect("stdin");
    alice.wait_message("carol", "hi alice", WAIT).expect("shown");
    alice.send_line("/msg carol hi carol").expect("stdin");
    carol.wait_message("alice", "hi carol", WAIT).expect("shown");

    // Mallory, whom alice never wrote to, floods her and never reads anything.
    let victim = key_bytes(&alice_id);
    let mallory = IdentityKeyPair::generate(&mut OsRng);
    let rt = runtime();
    rt.block_on(async {
        let mut client = RelayClient::connect(relay.addr, mallory.clone())
            .await
            .expect("connect");
        let mut session = session_with(&mut client, &mallory, victim).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        for i in 0..FLOOD {
            let payload = Payload::text(random_id(), now_ms(), &format!("spam {i}"));
            let wire = session
                .encrypt(&payload.encode().expect("encodes"), &mut OsRng)
                .expect("encrypts");
            // Mallory's own quota refuses it until alice has read enough: wait.
            loop {
                assert!(Instant::now() < deadline, "flood not stored in time");
                let mut other = Vec::new();
                match client
                    .send_message(victim, payload.message_id, wire.clone(), &mut other)
                    .await
                {
                    Ok(()) => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    });
    alice
        .wait_count("the flood shown", FLOOD, Duration::from_secs(60), |e| {
            e["event"] == "message" && e["text"].as_str().is_some_and(|t| t.starts_with("spam "))
        })
        .expect("shown");
    // Alice can still write, and her correspondent's texts still get receipts.
    alice.send_line("/msg carol after the flood").expect("stdin");
    carol
        .wait_message("alice", "after the flood", WAIT)
        .expect("alice can still send");
    carol.send_line("/msg alice me too").expect("stdin");
    alice.wait_message("carol", "me too", WAIT).expect("shown");
    carol
        .wait_for("a receipt", WAIT, |e| e["event"] == "delivered")
        .expect("carol's texts are acknowledged end to end");
    // At most the first-contact receipt budget waits for mallory at the relay.
    let queued = rt.block_on(async {
        RelayClient::connect(relay.addr, mallory.clone())
            .await
            .expect("connect")
            .queued
    });
    println!("{FLOOD} texts from an identity alice never wrote to: {queued} receipts to it");
    assert!(
        queued as usize <= e2ee_agent::receipt_budget::BURST as usize + 1,
        "{queued} receipts were sent to an identity alice never wrote to"
    );
    for agent in [&mut alice, &mut carol] {
        agent.send_line("/quit").expect("stdin");
        assert!(agent.wait_exit(WAIT).expect("exits").success());
    }
}

#[test]
fn a_flood_of_unnamed_senders_does_not_hold_back_a_known_peer() {
    const SENDERS: usize = 600;
    let tmp = tempfile::tempdir().expect("tempdir");
    // A window of unacknowledged messages smaller than the flood: deliveries the agent
    // keeps unacknowledged while it looks their senders up would fill it.
    let relay = relay(
        &tmp.path().join("relay"),
        &[("E2EE_RELAY_LIMITS__MAX_UNACKED", "300")],
    );
    let alice_dir = tmp.path().join("alice");
    let mut alice = agent("alice", relay.addr, &alice_dir)
        .start()
        .expect("alice starts");
    let mut carol = agent("carol", relay.addr, &tmp.path().join("carol"))
        .start()
        .expect("carol starts");
    let alice_id = alice.identity(WAIT).expect("alice");
    carol.identity(WAIT).expect("carol");
    for _ in 0..2 {
        relay.wait_log("name claimed", WAIT).expect("claimed");
    }
    carol.send_line("/msg alice before").expect("stdin");
    alice.wait_message("carol", "before", WAIT).expect("shown");
    alice.send_line("/quit").expect("stdin");
    assert!(alice.wait_exit(WAIT).expect("exits").success());

    let victim = key_bytes(&alice_id);
    store_junk_from_unnamed_senders(&relay, victim, SENDERS, 100);
    carol.send_line("/msg alice behind the flood").expect("stdin");
    carol.wait_event("sent", WAIT).expect("stored");

    let mut alice = agent("alice", relay.addr, &alice_dir)
        .start()
        .expect("alice starts");
    let start = Instant::now();
    alice
        .wait_message("carol", "behind the flood", WAIT)
        .expect("the known peer's message is not held back by the flood");
    println!(
        "carol's message behind {SENDERS} unnamed senders shown after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    alice
        .wait_count(
            "every junk message processed",
            SENDERS,
            Duration::from_secs(90),
            |e| e["event"] == "decrypt_failure",
        )
        .expect("all processed");
    for agent in [&mut alice, &mut carol] {
        agent.send_line("/quit").expect("stdin");
        assert!(agent.wait_exit(WAIT).expect("exits").success());
    }
}

#[test]
fn a_relay_that_never_answers_reverse_lookups_does_not_hold_messages_for_good() {
    use e2ee_protocol::codec::FrameCodec;
    use futures_util::{SinkExt, StreamExt};
    use tokio_util::codec::Framed;

    const DELIVERIES: usize = 20;
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("listen");
    let addr = listener.local_addr().expect("addr");
    // (The stand-in relay speaks plain TCP.)
    let mut alice = agent("alice", addr, &tmp.path().join("alice"))
        .env("E2EE_AGENT_INSECURE_PLAINTEXT", "true")
        .start()
        .expect("alice starts");
    // A relay that logs alice in, delivers junk from unnamed senders, answers nothing.
    let (acked, lookups) = rt.block_on(async {
        let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
            .await
            .expect("alice connects")
            .expect("accept");
        let mut framed = Framed::new(stream, FrameCodec::default());
        framed
            .send(Frame::Challenge {
                relay_id: [7; 32],
                nonce: [9; 32],
            })
            .await
            .expect("challenge");
        match tokio::time::timeout(WAIT, framed.next()).await {
            Ok(Some(Ok(Frame::Auth { .. }))) => {}
            other => panic!("expected Auth, got {other:?}"),
        }
        framed.send(Frame::AuthOk { queued: 0 }).await.expect("ok");
        for _ in 0..DELIVERIES {
            let sender = IdentityKeyPair::generate(&mut OsRng);
            framed
                .send(Frame::Deliver {
                    sender: *sender.public().as_bytes(),
                    msg_id: random_id(),
                    timestamp_ms: now_ms(),
                    payload: vec![0x02; 100],
                })
                .await
                .expect("deliver");
        }
        let (mut acked, mut lookups) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(40);
        while acked < DELIVERIES && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(1), framed.next()).await {
                Ok(Some(Ok(Frame::DeliveryAck { .. }))) => acked += 1,
                Ok(Some(Ok(Frame::LookupIdentity { .. }))) => lookups += 1,
                Ok(Some(Ok(_))) | Err(_) => {}
                Ok(None) | Ok(Some(Err(_))) => break,
            }
        }
        (acked, lookups)
    });
    println!(
        "a silent relay: {acked} of {DELIVERIES} deliveries acknowledged after {lookups} unanswered lookups"
    );
    assert_eq!(
        acked, DELIVERIES,
        "every delivery processed although no lookup was answered"
    );
    // The acknowledgement leaves before the event is read from alice's stdout: wait for it.
    alice
        .wait_count("each junk message reported", DELIVERIES, WAIT, |e| {
            e["event"] == "decrypt_failure"
        })
        .expect("each junk message reported");
    alice.kill9().expect("stopped");
}

#[test]
fn a_new_conversation_starts_during_a_flood_of_unnamed_senders() {
    const SENDERS: usize = 800;
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay(&tmp.path().join("relay"), &[]);
    let alice_dir = tmp.path().join("alice");
    let victim = key_bytes(&register_then_stop(&relay, "alice", &alice_dir));
    let mut dave = agent("dave", relay.addr, &tmp.path().join("dave"))
        .start()
        .expect("dave starts");
    dave.identity(WAIT).expect("dave");
    relay.wait_log("name claimed", WAIT).expect("dave's name");
    store_junk_from_unnamed_senders(&relay, victim, SENDERS, 100);
    let mut alice = agent("alice", relay.addr, &alice_dir)
        .start()
        .expect("alice starts");
    alice
        .wait_for("the flood to start", WAIT, |e| e["event"] == "decrypt_failure")
        .expect("processing");
    let start = Instant::now();
    alice
        .send_line("/msg dave hello during the flood")
        .expect("stdin");
    dave.wait_message("alice", "hello during the flood", WAIT)
        .expect("the new conversation is not starved by the flood's lookups");
    println!(
        "a first message to a new peer during a flood of {SENDERS} unnamed senders arrived after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    for agent in [&mut alice, &mut dave] {
        agent.send_line("/quit").expect("stdin");
        assert!(agent.wait_exit(WAIT).expect("exits").success());
    }
}
