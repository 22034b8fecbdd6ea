//! Crashes and failed writes of an agent at each step of receiving, sending and prekey
//! upkeep, with real agent processes (debug builds) through a real relay on loopback.
//!
//! Each crash test aborts one agent at a named crash point (`E2EE_CRASH_AT`, see
//! `agent/src/crash_point.rs`: `std::process::abort`, as abrupt as `kill -9`), restarts
//! it on the same state, and checks:
//! - no message is shown twice (by `msg_id`), and none is lost: every text the sender
//!   committed is shown exactly once, in order, across both runs (a text whose commit
//!   the crash prevented is the only one that never leaves);
//! - no one-time prekey is accepted twice: the first PreKey message, replayed to the
//!   receiver after everything under a new relay id by its real sender, is refused,
//!   and its one-time prekey is gone from the receiver's state;
//! - no message key is used twice: among every `Send` the agents made (recorded by a
//!   proxy between them and the relay), two different ciphertexts never share a
//!   `(ratchet key, n)` header.
//!
//! The write-failure tests make the state database refuse writes while a control file
//! exists (`E2EE_TEST_READ_ONLY_WHILE`, `agent/src/store/write_fault.rs`): nothing is
//! lost, one clear `error` event per episode, recovery without a restart.
//!
//! Every wait is for an event, bounded by a timeout.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2ee_agent::state::inspect::StateView;
use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::client::RelayClient;
use e2ee_integration::process::RelayProcess;
use e2ee_integration::proxy::{Direction, RecordingProxy};
use e2ee_protocol::frame::Frame;
use e2ee_protocol::message::Message;
use serde_json::Value;

/// Longest wait for any one event.
const WAIT: Duration = Duration::from_secs(20);
/// SIGABRT, the signal `std::process::abort` ends the process with.
const SIGABRT: i32 = 6;
/// Texts alice sends in each crash test.
const TEXTS: usize = 5;

/// Ciphertext headers `(ratchet key, n)` and the different ciphertexts sent under each.
type Headers = HashMap<([u8; 32], u32), HashSet<Vec<u8>>>;
/// A PreKey message as sent, and its recipient.
type PreKeySend = (Vec<u8>, [u8; 32]);

/// A relay, a recording proxy in front of it, and the state directories of alice and
/// bob (who connect through the proxy).
struct World {
    tmp: tempfile::TempDir,
    relay: RelayProcess,
    proxy: RecordingProxy,
}

impl World {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        // Plain TCP: the proxy records the frames the relay sees (which message keys were
        // used); what is tested does not rest on the link's TLS.
        let env = [
            ("E2EE_RELAY_STORE__FSYNC", "false"),
            ("E2EE_RELAY_INSECURE_PLAINTEXT", "true"),
        ];
        let relay = RelayProcess::start_with_env("127.0.0.1:0", &tmp.path().join("relay"), &[], &env)
            .expect("relay starts");
        let proxy = RecordingProxy::start(relay.addr).expect("proxy starts");
        Self { tmp, relay, proxy }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// An interactive agent through the proxy, with fast reconnection.
    fn agent(&self, name: &str) -> AgentConfig {
        agent_config(name, self.proxy.addr, &self.dir(name))
    }

    /// Starts `config` and waits until its name is claimed at the relay.
    fn start(&self, config: AgentConfig) -> AgentProcess {
        let mut agent = config.start().expect("agent starts");
        let id = agent.identity(WAIT).expect("started");
        loop {
            let line = (self.relay.wait_log("name claimed", WAIT))
                .unwrap_or_else(|e| panic!("{} not claimed: {e:#}", agent.name()));
            if line["identity"].as_str() == Some(&id[..16]) {
                return agent;
            }
        }
    }

    /// Starts an agent on an existing state (the name is claimed already) and waits
    /// until it is connected.
    fn restart(&self, config: AgentConfig) -> AgentProcess {
        let mut agent = config.start().expect("agent restarts");
        agent
            .wait_for("connected", WAIT, |e| {
                e["event"] == "connection" && e["state"] == "connected"
            })
            .expect("reconnects");
        agent
    }

    /// Every `Send` the agents made: its ciphertext header `(ratchet key, n)` mapped to
    /// the distinct ciphertexts sent under it; and the PreKey messages, in order.
    fn sends(&self) -> (Headers, Vec<PreKeySend>) {
        let (frames, _) = self.proxy.recording().frames();
        let mut headers = Headers::new();
        let mut prekey_messages = Vec::new();
        for captured in frames {
            if captured.direction != Direction::ToRelay {
                continue;
            }
            let Frame::Send {
                recipient, payload, ..
            } = captured.frame
            else {
                continue;
            };
            let normal = match Message::decode(&payload).expect("a Send carries a message") {
                Message::PreKey(m) => {
                    prekey_messages.push((payload.clone(), recipient));
                    m.inner
                }
                Message::Normal(m) => m,
            };
            let header = (*normal.header.ratchet_key.as_bytes(), normal.header.n);
            headers.entry(header).or_default().insert(normal.ciphertext);
        }
        (headers, prekey_messages)
    }
}

fn agent_config(name: &str, relay: SocketAddr, dir: &Path) -> AgentConfig {
    AgentConfig::new(name, relay, dir)
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "300")
        .env("E2EE_AGENT_INSECURE_PLAINTEXT", "true")
}

fn text(event: &Value) -> &str {
    event["text"].as_str().unwrap_or_default()
}

fn msg_id(event: &Value) -> String {
    event["msg_id"].as_str().unwrap_or_default().to_string()
}

/// The texts alice sends: `"<tag> 1"` ... `"<tag> 5"`.
fn texts(tag: &str) -> Vec<String> {
    (1..=TEXTS).map(|i| format!("{tag} {i}")).collect()
}

/// The `message` events from `from` whose text starts with `prefix`, in order.
fn shown(agent: &mut AgentProcess, from: &str, prefix: &str) -> Vec<Value> {
    agent
        .events()
        .iter()
        .filter(|e| e["event"] == "message" && e["from"] == from && text(e).starts_with(prefix))
        .cloned()
        .collect()
}

/// Waits for the agent to abort at its crash point.
fn wait_abort(agent: &mut AgentProcess) {
    let status = agent
        .wait_exit(WAIT)
        .expect("the agent aborts at its crash point");
    if status.signal() != Some(SIGABRT) {
        panic!(
            "should have aborted at its crash point, exited with {status}\n{}",
            agent.report()
        );
    }
}

/// Fails on output that is not a JSON event, decrypt failures and refused sends.
fn assert_clean(agent: &mut AgentProcess) {
    let name = agent.name().to_string();
    let bad: Vec<Value> = (agent.events().iter())
        .filter(|e| {
            matches!(
                e["event"].as_str(),
                Some("decrypt_failure" | "send_failed" | "unparsed_output" | "error")
            )
        })
        .cloned()
        .collect();
    assert!(bad.is_empty(), "{name}: unexpected events {bad:#?}");
}

/// Alice sends `text` to bob and waits until the relay stored it (`sent`).
fn send_stored(alice: &mut AgentProcess, text: &str) {
    alice.send_line(&format!("/msg bob {text}")).expect("stdin");
    alice
        .wait_for(&format!("sent of {text:?}"), WAIT, |e| e["event"] == "sent")
        .expect("stored by the relay");
}

/// The checks after every crash test, once the last text is shown: bob's texts from
/// alice (`earlier`: those of a run before a crash, then those of `bob`) are exactly
/// `expected`, once each; no header carries two ciphertexts; the first PreKey message,
/// replayed by alice under a new relay id, is refused by bob and its one-time prekey is
/// gone from bob's state. Stops both agents.
fn check_outcome(
    world: &World,
    mut alice: AgentProcess,
    mut bob: AgentProcess,
    earlier: &[Value],
    expected: &[String],
) {
    // Still in sync both ways, without a new handshake; anything bob would show late
    // (a repeat) is in by the time alice has his reply.
    bob.send_line("/msg alice still here").expect("stdin");
    alice
        .wait_message("bob", "still here", WAIT)
        .expect("bob's reply arrives");
    let mut all = earlier.to_vec();
    all.extend(shown(&mut bob, "alice", "text "));
    let got: Vec<&str> = all.iter().map(text).collect();
    assert_eq!(got, expected, "each text once, in order, across both runs");
    let ids: HashSet<String> = all.iter().map(msg_id).collect();
    assert_eq!(ids.len(), all.len(), "a msg_id shown twice: {all:#?}");
    for agent in [&mut alice, &mut bob] {
        let new_sessions = (agent.events().iter())
            .filter(|e| {
                e["event"] == "info" && e["message"].as_str().is_some_and(|m| m.contains("new session"))
            })
            .count();
        if new_sessions > 1 {
            panic!("one handshake at most\n{}", agent.report());
        }
    }

    // No message key used twice.
    let (headers, prekey_messages) = world.sends();
    assert!(headers.len() > expected.len(), "every message seen by the proxy");
    for (header, ciphertexts) in &headers {
        assert_eq!(
            ciphertexts.len(),
            1,
            "header (ratchet key {}, n {}) carried {} different ciphertexts",
            hex::encode(header.0),
            header.1,
            ciphertexts.len()
        );
    }

    // No one-time prekey accepted twice: alice's first PreKey message replayed.
    let bob_view = StateView::read(&world.dir("bob")).expect("read bob's state");
    let bob_key = *bob_view.identity.public().as_bytes();
    let (first, _) = prekey_messages
        .iter()
        .find(|(_, to)| *to == bob_key)
        .cloned()
        .expect("alice's first message to bob is a PreKey message");
    let Ok(Message::PreKey(handshake)) = Message::decode(&first) else {
        panic!("not a PreKey message");
    };
    let opk = (handshake.one_time_prekey).expect("alice's handshake used a one-time prekey");
    assert!(
        bob_view.prekeys.one_time_prekey(&opk).is_none(),
        "the used one-time prekey is deleted"
    );
    let before = shown_in_run(&mut bob, "alice");
    alice.send_line("/quit").expect("stdin");
    assert!(alice.wait_exit(WAIT).expect("alice exits").success());
    let alice_identity = StateView::read(&world.dir("alice")).expect("read alice").identity;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut replayer = RelayClient::connect_plaintext(world.relay.addr, alice_identity)
            .await
            .expect("alice's identity logs in");
        let mut other = Vec::new();
        replayer
            .send_message(bob_key, [0xee; 16], first.clone(), &mut other)
            .await
            .expect("the relay stores the replay");
    });
    let failure = bob
        .wait_event("decrypt_failure", WAIT)
        .expect("the replayed PreKey message is refused");
    assert_eq!(failure["class"], "duplicate", "{failure}");
    assert_eq!(shown_in_run(&mut bob, "alice"), before, "nothing more shown");
    bob.send_line("/quit").expect("stdin");
    assert!(bob.wait_exit(WAIT).expect("bob exits").success());
}

/// `error` events about a state that could not be saved.
fn save_errors(agent: &mut AgentProcess) -> usize {
    (agent.events().iter())
        .filter(|e| {
            e["event"] == "error"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("cannot save a message"))
        })
        .count()
}

fn shown_in_run(agent: &mut AgentProcess, from: &str) -> usize {
    (agent.events().iter())
        .filter(|e| e["event"] == "message" && e["from"] == from)
        .count()
}

/// Bob aborts at `point` (`E2EE_CRASH_AT=point`) while alice sends five texts, and is
/// restarted: he shows each once, in order, across both runs.
fn receiver_crash(point: &str) {
    let world = World::new();
    let mut alice = world.start(world.agent("alice"));
    let mut bob = world.start(world.agent("bob").env("E2EE_CRASH_AT", point));
    let sent = texts("text");
    for line in &sent {
        send_stored(&mut alice, line);
    }
    wait_abort(&mut bob);
    let first_run = shown(&mut bob, "alice", "text ");
    eprintln!(
        "{point}: bob showed {} of {TEXTS} before the crash",
        first_run.len()
    );
    if let Some(nth) = point.strip_prefix("receive.after_show:") {
        // The point is reached right after the nth text is printed.
        let nth: usize = nth.parse().expect("a count");
        assert_eq!(
            first_run.len(),
            nth,
            "{point}: the text was printed before the crash\n{}",
            bob.report()
        );
    }
    let mut bob = world.restart(world.agent("bob"));
    bob.wait_message("alice", &sent[TEXTS - 1], WAIT)
        .expect("bob shows the rest after restarting");
    assert_clean(&mut alice);
    assert_clean(&mut bob);
    check_outcome(&world, alice, bob, &first_run, &sent);
}

/// Alice aborts at `point` (`E2EE_CRASH_AT=point:k`) on her `k`th text, is restarted
/// and sends the rest: bob shows every text alice committed, once, in order.
fn sender_crash(point: &str, k: usize, committed: bool) {
    let world = World::new();
    let mut alice = world.start(world.agent("alice").env("E2EE_CRASH_AT", &format!("{point}:{k}")));
    let mut bob = world.start(world.agent("bob"));
    let sent = texts("text");
    for line in &sent[..k - 1] {
        send_stored(&mut alice, line);
    }
    alice
        .send_line(&format!("/msg bob {}", sent[k - 1]))
        .expect("stdin");
    wait_abort(&mut alice);
    let mut alice = world.restart(world.agent("alice"));
    for line in &sent[k..] {
        send_stored(&mut alice, line);
    }
    let expected: Vec<String> = (sent.iter().enumerate())
        .filter(|(i, _)| committed || *i != k - 1)
        .map(|(_, t)| t.clone())
        .collect();
    bob.wait_message("alice", &sent[TEXTS - 1], WAIT)
        .expect("bob shows the last text");
    assert_clean(&mut alice);
    assert_clean(&mut bob);
    check_outcome(&world, alice, bob, &[], &expected);
}

#[test]
fn receiver_aborts_after_decrypting_the_first_message_before_its_commit() {
    receiver_crash("receive.before_commit:1");
}

#[test]
fn receiver_aborts_after_committing_the_first_message_before_showing_it() {
    receiver_crash("receive.after_commit:1");
}

#[test]
fn receiver_aborts_after_committing_the_third_message_before_showing_it() {
    receiver_crash("receive.after_commit:3");
}

#[test]
fn receiver_aborts_after_showing_a_message_before_its_delivery_ack() {
    receiver_crash("receive.after_show:2");
}

#[test]
fn sender_aborts_before_committing_a_message() {
    sender_crash("send.before_commit", 2, false);
}

#[test]
fn sender_aborts_after_committing_the_first_message_before_it_leaves() {
    sender_crash("send.after_commit", 1, true);
}

#[test]
fn sender_aborts_after_a_message_left_before_its_sent_ack() {
    sender_crash("send.before_sent_ack", 3, true);
}

/// Small prekey stocks, so that bob replenishes on his first connection: the relay
/// answers his first publication with 2 < 3.
const SMALL_STOCK: [(&str, &str); 3] = [
    ("E2EE_AGENT_PREKEYS__INITIAL_ONE_TIME", "2"),
    ("E2EE_AGENT_PREKEYS__REPLENISH_BELOW", "3"),
    ("E2EE_AGENT_PREKEYS__REPLENISH_TO", "4"),
];

fn with_env(mut config: AgentConfig, env: &[(&str, &str)]) -> AgentConfig {
    for (key, value) in env {
        config = config.env(key, value);
    }
    config
}

/// Bob (with `crash_env`) aborts at `point` during prekey upkeep and is restarted
/// (with `env`); then four peers start sessions with him: each message is shown, every
/// PreKey message names bob's current signed prekey and a one-time prekey no other
/// got, and the ones used are gone from bob's state.
fn prekey_crash(world: &World, point: &str, crash_env: &[(&str, &str)], env: &[(&str, &str)]) {
    let crashing = with_env(world.agent("bob"), crash_env).env("E2EE_CRASH_AT", point);
    let mut bob = crashing.start().expect("bob starts");
    wait_abort(&mut bob);
    let mut bob = world.start(with_env(world.agent("bob"), env));
    let mut peers = Vec::new();
    for name in ["alice", "carol", "dave", "erin"] {
        let mut peer = world.start(world.agent(name));
        peer.send_line(&format!("/msg bob hello from {name}"))
            .expect("stdin");
        bob.wait_message(name, &format!("hello from {name}"), WAIT)
            .expect("bob shows it");
        peers.push(peer);
    }
    let view = StateView::read(&world.dir("bob")).expect("read bob's state");
    let current = view.prekeys.bundle(view.identity.public()).signed_prekey;
    let (_, prekey_messages) = world.sends();
    let mut used = HashSet::new();
    for (wire, _) in &prekey_messages {
        let Ok(Message::PreKey(m)) = Message::decode(wire) else {
            panic!("not a PreKey message");
        };
        assert_eq!(m.signed_prekey, current, "bob's current signed prekey");
        if let Some(opk) = m.one_time_prekey {
            assert!(used.insert(*opk.as_bytes()), "a one-time prekey handed out twice");
            assert!(view.prekeys.one_time_prekey(&opk).is_none(), "used, so deleted");
        }
    }
    assert_eq!(used.len(), 4, "every peer got a one-time prekey");
    assert_clean(&mut bob);
    for peer in &mut peers {
        assert_clean(peer);
    }
}

/// Bob aborts after committing fresh one-time prekeys and before publishing them; after
/// the restart they are published with the rest.
#[test]
fn receiver_aborts_after_replenishing_prekeys_before_publishing_them() {
    prekey_crash(
        &World::new(),
        "prekeys.after_replenish:1",
        &SMALL_STOCK,
        &SMALL_STOCK,
    );
}

/// Bob aborts before recording that the relay stored his first publication (his first
/// prekey commit); after the restart he publishes the same keys again, which the relay
/// holds once.
#[test]
fn receiver_aborts_before_recording_a_publication() {
    prekey_crash(&World::new(), "prekeys.before_commit:1", &[], &[]);
}

/// Bob aborts after committing a new signed prekey and before publishing it; after the
/// restart it is published, and handshakes use it.
#[test]
fn receiver_aborts_after_rotating_the_signed_prekey_before_publishing_it() {
    let world = World::new();
    // A state whose signed prekey is a second old, then a rotation period of a second:
    // the next start rotates at once. Restarted with the default period, bob publishes
    // the signed prekey that run committed.
    let mut bob = world.start(world.agent("bob"));
    bob.send_line("/quit").expect("stdin");
    assert!(bob.wait_exit(WAIT).expect("bob exits").success());
    std::thread::sleep(Duration::from_millis(1100));
    prekey_crash(
        &world,
        "prekeys.after_rotation:1",
        &[("E2EE_AGENT_PREKEYS__SIGNED_ROTATION_SECS", "1")],
        &[],
    );
}

/// Writes of bob's state fail while `full` exists: the messages that arrive meanwhile
/// are kept unacknowledged with one error event, and shown once writes work again,
/// without a restart.
#[test]
fn receiver_whose_writes_fail_keeps_the_messages_and_shows_them_when_writes_work_again() {
    let world = World::new();
    let full = world.tmp.path().join("bob-full");
    let mut alice = world.start(world.agent("alice"));
    let mut bob = world.start(
        world
            .agent("bob")
            .env("E2EE_TEST_READ_ONLY_WHILE", &full.to_string_lossy()),
    );
    send_stored(&mut alice, "before");
    bob.wait_message("alice", "before", WAIT).expect("shown");

    std::fs::write(&full, b"").expect("make writes fail");
    let during = texts("during");
    for line in &during {
        send_stored(&mut alice, line);
    }
    // (Another write may fail too: the outbox update for the receipt of "before".)
    let error = bob
        .wait_for("the error about the message", WAIT, |e| {
            e["event"] == "error"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("cannot save a message"))
        })
        .expect("bob reports the failure");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot save a message from alice") && message.contains("read-only"),
        "names what could not be saved and why: {message}"
    );
    assert!(
        shown(&mut bob, "alice", "during").is_empty(),
        "nothing shown while unsaved"
    );

    // The failure lasts a few retries (100, 200 ms, ...) before writes work again.
    std::thread::sleep(Duration::from_millis(400));
    std::fs::remove_file(&full).expect("writes work again");
    let all = bob
        .wait_count("the kept messages", TEXTS, WAIT, |e| {
            e["event"] == "message" && e["from"] == "alice" && text(e).starts_with("during ")
        })
        .expect("shown without a restart");
    bob.wait_for("recovery info", WAIT, |e| {
        e["event"] == "info"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("can be written again"))
    })
    .expect("bob reports the recovery");
    assert_eq!(save_errors(&mut bob), 1, "one error event for the episode");
    send_stored(&mut alice, "after");
    bob.wait_message("alice", "after", WAIT).expect("shown");
    assert_eq!(save_errors(&mut bob), 1, "one error event for the episode");
    let ids: HashSet<String> = all.iter().map(msg_id).collect();
    assert_eq!(ids.len(), TEXTS);
    assert_eq!(all.iter().map(text).collect::<Vec<_>>(), during);
    assert_clean(&mut alice);
}

/// Writes of bob's state fail while `full` exists and alice, whom he has never seen,
/// sends him her first messages: the pin cannot be saved, so they are kept too, and
/// shown once writes work again, without a restart.
#[test]
fn first_messages_of_a_new_sender_while_writes_fail_are_shown_when_writes_work_again() {
    let world = World::new();
    let full = world.tmp.path().join("bob-full");
    let mut alice = world.start(world.agent("alice"));
    let mut bob = world.start(
        world
            .agent("bob")
            .env("E2EE_TEST_READ_ONLY_WHILE", &full.to_string_lossy()),
    );
    std::fs::write(&full, b"").expect("make writes fail");
    let during = texts("first");
    for line in &during {
        send_stored(&mut alice, line);
    }
    // (Bob's own bookkeeping may fail too: the prekey publication mark after his start.)
    let error = bob
        .wait_for("the error about alice", WAIT, |e| {
            e["event"] == "error" && e["message"].as_str().is_some_and(|m| m.contains("alice"))
        })
        .expect("bob reports the failure");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot record peer alice") && message.contains("read-only"),
        "names what could not be saved and why: {message}"
    );
    // The failure lasts a few retries (100, 200 ms, ...) before writes work again.
    std::thread::sleep(Duration::from_millis(400));
    std::fs::remove_file(&full).expect("writes work again");
    let all = bob
        .wait_count("the kept messages", TEXTS, WAIT, |e| {
            e["event"] == "message" && e["from"] == "alice" && text(e).starts_with("first ")
        })
        .expect("shown without a restart");
    assert_eq!(all.iter().map(text).collect::<Vec<_>>(), during);
    bob.wait_for("recovery info", WAIT, |e| {
        e["event"] == "info"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("can be written again"))
    })
    .expect("bob reports the recovery");
    let errors: Vec<Value> = (bob.events_of("error").into_iter())
        .filter(|e| e["message"].as_str().is_some_and(|m| m.contains("alice")))
        .collect();
    assert_eq!(errors.len(), 1, "one error event for the episode: {errors:#?}");
    assert_clean(&mut alice);
}

/// Writes of alice's state fail while `full` exists: a send fails at once with the real
/// reason and nothing is sent; sending works again without a restart.
#[test]
fn sender_whose_writes_fail_refuses_the_send_with_the_reason_and_sends_nothing() {
    let world = World::new();
    let full = world.tmp.path().join("alice-full");
    let mut alice = world.start(
        world
            .agent("alice")
            .env("E2EE_TEST_READ_ONLY_WHILE", &full.to_string_lossy()),
    );
    let mut bob = world.start(world.agent("bob"));
    send_stored(&mut alice, "before");
    bob.wait_message("alice", "before", WAIT).expect("shown");

    std::fs::write(&full, b"").expect("make writes fail");
    alice.send_line("/msg bob during").expect("stdin");
    let failed = alice.wait_event("send_failed", WAIT).expect("the send fails");
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("cannot save the message to bob, nothing was sent") && reason.contains("read-only"),
        "the real reason: {reason}"
    );

    std::fs::remove_file(&full).expect("writes work again");
    send_stored(&mut alice, "after");
    bob.wait_message("alice", "after", WAIT).expect("shown");
    let got: Vec<String> = shown(&mut bob, "alice", "")
        .iter()
        .map(|e| text(e).to_string())
        .collect();
    assert_eq!(got, ["before", "after"], "the failed send never left");
    assert_clean(&mut bob);
}
