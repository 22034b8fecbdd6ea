//! Agents (`e2ee-agent --json` processes) against a real relay process on loopback: the
//! demo scenario, three concurrent pairwise sessions, kill -9 of an agent and of the
//! relay, identity changes under each policy, and an interactive session over stdin.
//! Every wait is for an event, bounded by a timeout.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::process::RelayProcess;
use serde_json::Value;

/// Longest wait for any one event.
const WAIT: Duration = Duration::from_secs(20);

fn start_relay(listen: &str, data_dir: &Path) -> RelayProcess {
    RelayProcess::start_for_test(listen, data_dir).expect("relay starts")
}

/// An agent with fast reconnection (the relay-restart test waits for it).
fn agent(name: &str, relay: SocketAddr, state_dir: &Path) -> AgentConfig {
    AgentConfig::new(name, relay, state_dir)
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "300")
}

fn start(config: AgentConfig) -> AgentProcess {
    config.start().expect("agent starts")
}

/// Waits until the relay has stored the name claim of each identity (hex), so that
/// interactive agents can find each other by name.
fn wait_names_claimed(relay: &RelayProcess, identities: &[&str]) {
    let mut missing: HashSet<&str> = identities.iter().map(|id| &id[..16]).collect();
    while !missing.is_empty() {
        let line = relay
            .wait_log("name claimed", WAIT)
            .unwrap_or_else(|e| panic!("names {missing:?} not claimed: {e:#}"));
        if let Some(id) = line["identity"].as_str() {
            missing.remove(id);
        }
    }
}

/// Starts interactive agents on `relay` and waits until each is connected and its
/// name is claimed at the relay.
fn start_interactive(relay: &RelayProcess, agents: &[(&str, &Path)]) -> Vec<AgentProcess> {
    let mut started: Vec<AgentProcess> = agents
        .iter()
        .map(|(name, dir)| start(agent(name, relay.addr, dir)))
        .collect();
    let ids: Vec<String> = started
        .iter_mut()
        .map(|a| a.identity(WAIT).expect("started"))
        .collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    wait_names_claimed(relay, &ids);
    started
}

/// `from` sends `text` to `to` with `/msg`; waits until `to` shows it and `from` has
/// reported it stored (`sent`).
fn talk(from: &mut AgentProcess, to: &mut AgentProcess, text: &str) -> Value {
    from.send_line(&format!("/msg {} {text}", to.name()))
        .expect("stdin");
    let message = to
        .wait_message(from.name(), text, WAIT)
        .expect("message delivered");
    let id = msg_id(&message);
    from.wait_for("its sent event", WAIT, |e| {
        e["event"] == "sent" && e["msg_id"] == id.as_str()
    })
    .expect("sent reported");
    message
}

fn is_message_from(event: &Value, from: &str) -> bool {
    event["event"] == "message" && event["from"] == from
}

fn text(event: &Value) -> &str {
    event["text"].as_str().unwrap_or_default()
}

fn msg_id(event: &Value) -> String {
    event["msg_id"].as_str().unwrap_or_default().to_string()
}

/// Messages from `from` whose text starts with `prefix`, in the order shown.
fn messages(agent: &mut AgentProcess, from: &str, prefix: &str) -> Vec<Value> {
    agent
        .events()
        .iter()
        .filter(|e| is_message_from(e, from) && text(e).starts_with(prefix))
        .cloned()
        .collect()
}

fn texts(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| text(e).to_string()).collect()
}

/// Fails on decrypt failures, refused sends and output that is not a JSON event.
fn assert_clean(agent: &mut AgentProcess) {
    let name = agent.name().to_string();
    let bad: Vec<Value> = agent
        .events()
        .iter()
        .filter(|e| {
            matches!(
                e["event"].as_str(),
                Some("decrypt_failure" | "send_failed" | "unparsed_output")
            )
        })
        .cloned()
        .collect();
    assert!(bad.is_empty(), "{name}: unexpected events {bad:#?}");
}

fn assert_unique_ids(events: &[Value], what: &str) {
    let mut seen = HashSet::new();
    for event in events {
        assert!(seen.insert(msg_id(event)), "{what}: msg_id shown twice: {event}");
    }
}

fn info_containing(agent: &mut AgentProcess, needle: &str) -> Vec<Value> {
    events_containing(agent, "info", needle)
}

/// Events of `kind` whose `message` contains `needle`.
fn events_containing(agent: &mut AgentProcess, kind: &str, needle: &str) -> Vec<Value> {
    agent
        .events()
        .iter()
        .filter(|e| e["event"] == kind && e["message"].as_str().is_some_and(|m| m.contains(needle)))
        .cloned()
        .collect()
}

/// Waits for `script_done {ok: true}` and a successful exit.
fn script_succeeds(agent: &mut AgentProcess) {
    let done = agent.wait_event("script_done", WAIT * 2).expect("script ends");
    if done["ok"] != true {
        panic!("script failed\n{}", agent.report());
    }
    let status = agent.wait_exit(WAIT).expect("agent exits");
    assert!(status.success(), "{} exited with {status}", agent.name());
}

fn write_script(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").expect("write script");
    path
}

#[test]
fn demo_scenario_runs_with_equal_safety_numbers_offline_queue_and_no_new_handshake() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo");
    let relay = start_relay("127.0.0.1:0", &tmp.path().join("relay"));
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));

    // First runs: Bob waits for Alice, who finds him by name and starts the session.
    let mut bob = start(agent("bob", relay.addr, &bob_dir).script(&demo.join("bob-1.script")));
    let mut alice = start(agent("alice", relay.addr, &alice_dir).script(&demo.join("alice-1.script")));
    script_succeeds(&mut alice);
    script_succeeds(&mut bob);
    for a in [&mut alice, &mut bob] {
        assert_clean(a);
    }
    let alice_id = alice.identity(WAIT).expect("alice identity");
    let bob_id = bob.identity(WAIT).expect("bob identity");
    let hello = bob
        .wait_message(
            "alice",
            "Hello Bob, this is Alice over a fresh X3DH session.",
            WAIT,
        )
        .expect("bob got hello");
    assert_eq!(hello["from_identity"], alice_id.as_str());
    let reply = alice
        .wait_for("bob's reply", WAIT, |e| {
            is_message_from(e, "bob") && text(e).starts_with("Hi Alice")
        })
        .expect("alice got the reply");
    assert_eq!(reply["from_identity"], bob_id.as_str());
    assert_eq!(info_containing(&mut alice, "new session with bob: X3DH").len(), 1);
    assert_eq!(info_containing(&mut bob, "alice started a new session").len(), 1);

    // Both sides show the same safety number.
    let a_number = alice.wait_event("safety_number", WAIT).expect("alice verify");
    let b_number = bob.wait_event("safety_number", WAIT).expect("bob verify");
    assert_eq!(a_number["peer"], "bob");
    assert_eq!(b_number["peer"], "alice");
    let digits = a_number["digits"].as_str().expect("digits");
    assert_eq!(digits.len(), 60);
    assert!(digits.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(a_number["digits"], b_number["digits"]);
    assert_eq!(a_number["scannable"].as_str().map(str::len), Some(130));

    // Bob is offline; Alice's two messages are acknowledged as stored (durable).
    let mut alice = start(agent("alice", relay.addr, &alice_dir).script(&demo.join("alice-2.script")));
    let sent = alice
        .wait_count("sent to bob", 2, WAIT, |e| {
            e["event"] == "sent" && e["to"] == "bob"
        })
        .expect("both stored at the relay");
    alice
        .wait_for("the stored notice", WAIT, |e| {
            e["event"] == "info"
                && e["message"] == "both messages are stored at the relay (acknowledged as durable)"
        })
        .expect("alice prints the notice");

    // Bob restarts on the same state: the queue arrives in order, no new handshake.
    let mut bob = start(agent("bob", relay.addr, &bob_dir).script(&demo.join("bob-2.script")));
    script_succeeds(&mut bob);
    script_succeeds(&mut alice);
    let got = messages(&mut bob, "alice", "");
    assert_eq!(
        texts(&got),
        [
            "First message while you were away.",
            "Second message while you were away.",
            "Welcome back."
        ]
    );
    let sent_ids: Vec<String> = sent.iter().map(msg_id).collect();
    assert_eq!(got[..2].iter().map(msg_id).collect::<Vec<_>>(), sent_ids);
    assert!(got.iter().all(|m| m["newly_skipped"] == 0 && m["late"] == false));
    alice
        .wait_message("bob", "Back online, got both of them.", WAIT)
        .expect("alice got bob's answer");
    assert!(info_containing(&mut bob, "started a new session").is_empty());
    assert!(info_containing(&mut alice, "new session with").is_empty());
    for a in [&mut alice, &mut bob] {
        assert_clean(a);
    }
}

/// `make demo` itself: the shell script with the binaries of this build. It checks the
/// safety numbers, that no plaintext reaches the relay's files and that the restarted
/// agents make no new handshake, and exits non-zero otherwise.
#[test]
fn the_make_demo_script_runs_and_its_checks_pass() {
    let agent_bin = e2ee_integration::process::binary("e2ee-agent").expect("built");
    let bin_dir = agent_bin.parent().expect("bin dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("demo")
        .join("run-demo.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .env("BIN", bin_dir)
        .output()
        .expect("run-demo.sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "run-demo.sh failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "none of the 11 plaintexts occurs in the relay's database or log",
        "the restarted agents continued their sessions: one handshake in all",
        "* no longer in group trio (by alice)",
        "demo finished",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
}

#[test]
fn a_failed_expect_ends_the_script_with_a_clear_error_and_exit_code_1() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = start_relay("127.0.0.1:0", &tmp.path().join("relay"));
    let script = write_script(
        tmp.path(),
        "expect.script",
        &[
            "print waiting for a message that never comes".to_string(),
            "expect timeout=300 bob a message bob never sends".to_string(),
            "print not reached".to_string(),
        ],
    );
    let mut alice = start(agent("alice", relay.addr, &tmp.path().join("alice")).script(&script));
    let done = alice.wait_event("script_done", WAIT).expect("script ends");
    assert_eq!(done["ok"], false);
    let status = alice.wait_exit(WAIT).expect("agent exits");
    assert_eq!(status.code(), Some(1), "exit status {status}");
    let errors = alice.events_of("error");
    assert!(
        errors.iter().any(|e| e["message"].as_str().is_some_and(|m| {
            m.starts_with("script line 2 (expect) failed") && m.contains("timed out after 300 ms")
        })),
        "{errors:#?}"
    );
    assert!(info_containing(&mut alice, "not reached").is_empty());
}

#[test]
fn three_agents_talk_pairwise_at_once_and_every_message_arrives_once() {
    const N: usize = 6;
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = start_relay("127.0.0.1:0", &tmp.path().join("relay"));
    let names = ["ann", "ben", "cy"];
    let line = |from: &str, to: &str, i: usize| format!("{from}>{to} #{i}.");
    let mut agents: Vec<AgentProcess> = names
        .iter()
        .map(|me| {
            let peers: Vec<&str> = names.iter().copied().filter(|p| p != me).collect();
            let mut script: Vec<String> = peers
                .iter()
                .map(|p| format!("wait-peer {p} timeout=20000"))
                .collect();
            // Everyone writes first, so the handshakes of every pair cross.
            for i in 1..=N {
                for p in &peers {
                    script.push(format!("send {p} {}", line(me, p, i)));
                }
            }
            for i in 1..=N {
                for p in &peers {
                    script.push(format!("expect timeout=20000 {p} {}", line(p, me, i)));
                }
            }
            script.push("quit".into());
            let path = write_script(tmp.path(), &format!("{me}.script"), &script);
            start(agent(me, relay.addr, &tmp.path().join(me)).script(&path))
        })
        .collect();
    for a in &mut agents {
        script_succeeds(a);
    }

    // Sent ids per (sender, recipient), then what each recipient showed.
    let mut sent: HashMap<(String, String), HashSet<String>> = HashMap::new();
    for a in &mut agents {
        let from = a.name().to_string();
        for event in a.events_of("sent") {
            let to = event["to"].as_str().expect("to").to_string();
            sent.entry((from.clone(), to)).or_default().insert(msg_id(&event));
        }
    }
    for a in &mut agents {
        assert_clean(a);
        let me = a.name().to_string();
        for peer in names.iter().filter(|p| **p != me) {
            let got = messages(a, peer, "");
            let expected: Vec<String> = (1..=N).map(|i| line(peer, &me, i)).collect();
            assert_eq!(texts(&got), expected, "{me} from {peer}");
            assert_unique_ids(&got, &me);
            let ids: HashSet<String> = got.iter().map(msg_id).collect();
            assert_eq!(
                Some(&ids),
                sent.get(&(peer.to_string(), me.clone())),
                "{me} shows exactly what {peer} sent"
            );
        }
    }
}

#[test]
fn kill_9_of_receiver_or_sender_loses_repeats_and_desyncs_nothing() {
    const BURST: usize = 30;
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = start_relay("127.0.0.1:0", &tmp.path().join("relay"));
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut agents = start_interactive(&relay, &[("alice", &alice_dir), ("bob", &bob_dir)]);
    let mut bob = agents.pop().expect("bob");
    let mut alice = agents.pop().expect("alice");
    talk(&mut alice, &mut bob, "hello bob");
    talk(&mut bob, &mut alice, "hello alice");

    // 1. The receiver dies (kill -9) a few messages into a burst.
    // Bob is killed while the first 10 are arriving; the other 20 wait at the relay.
    let burst: Vec<String> = (1..=BURST).map(|i| format!("burst {i:02}")).collect();
    for line in &burst[..10] {
        alice.send_line(&format!("/msg bob {line}")).expect("stdin");
    }
    bob.wait_count("burst messages", 5, WAIT, |e| {
        is_message_from(e, "alice") && text(e).starts_with("burst ")
    })
    .expect("bob receives part of the burst");
    bob.kill9().expect("kill bob");
    for line in &burst[10..] {
        alice.send_line(&format!("/msg bob {line}")).expect("stdin");
    }
    alice
        .wait_count("sent", BURST + 1, WAIT, |e| {
            e["event"] == "sent" && e["to"] == "bob"
        })
        .expect("the relay stores the whole burst");
    let first_run = messages(&mut bob, "alice", "burst ");
    eprintln!("bob showed {} of {BURST} before kill -9", first_run.len());
    assert_clean(&mut bob);

    let mut bob = start(agent("bob", relay.addr, &bob_dir));
    let second_run = bob
        .wait_count("rest of the burst", BURST - first_run.len(), WAIT, |e| {
            is_message_from(e, "alice") && text(e).starts_with("burst ")
        })
        .expect("bob gets the rest after restarting");
    let all: Vec<Value> = first_run.iter().chain(&second_run).cloned().collect();
    assert_eq!(
        texts(&all),
        burst,
        "each message once, in order, across both runs"
    );
    assert_unique_ids(&all, "bob, both runs");
    talk(&mut bob, &mut alice, "back after a crash");
    talk(&mut alice, &mut bob, "welcome back");
    assert!(info_containing(&mut bob, "started a new session").is_empty());
    // Receipts resent from the killed run's outbox are not reported as `sent`.
    assert_eq!(bob.events_of("sent").len(), 1, "only \"back after a crash\"");

    // 2. The sender dies (kill -9) a few messages into a burst.
    let second: Vec<String> = (1..=BURST).map(|i| format!("second {i:02}")).collect();
    let sent_before = alice.events_of("sent").len();
    for line in &second {
        alice.send_line(&format!("/msg bob {line}")).expect("stdin");
    }
    alice
        .wait_count("sent", sent_before + 5, WAIT, |e| e["event"] == "sent")
        .expect("part of the burst is stored");
    alice.kill9().expect("kill alice");
    let acked: Vec<String> = alice.events_of("sent")[sent_before..]
        .iter()
        .map(msg_id)
        .collect();
    assert_clean(&mut alice);

    let mut alice = start(agent("alice", relay.addr, &alice_dir));
    eprintln!("alice had {} of {BURST} stored before kill -9", acked.len());
    alice
        .wait_for("connected", WAIT, |e| {
            e["event"] == "connection" && e["state"] == "connected"
        })
        .expect("alice reconnects");
    // Sent after the outbox was resent, so it arrives after everything stored before.
    talk(&mut alice, &mut bob, "after my crash");
    let got = messages(&mut bob, "alice", "second ");
    assert_unique_ids(&got, "bob");
    let got_texts = texts(&got);
    assert!(
        got_texts.windows(2).all(|w| w[0] < w[1]),
        "in order, no repeats: {got_texts:?}"
    );
    assert!(got_texts.iter().all(|t| second.contains(t)));
    let got_ids: HashSet<String> = got.iter().map(msg_id).collect();
    for id in &acked {
        assert!(
            got_ids.contains(id),
            "message {id} was stored, so it is delivered"
        );
    }
    talk(&mut bob, &mut alice, "still in sync");
    assert!(info_containing(&mut alice, "new session with").is_empty());
    assert!(info_containing(&mut bob, "started a new session").is_empty());
    for a in [&mut alice, &mut bob] {
        assert_clean(a);
    }
    alice.send_line("/quit").expect("stdin");
    bob.send_line("/quit").expect("stdin");
    assert!(alice.wait_exit(WAIT).expect("alice exits").success());
    assert!(bob.wait_exit(WAIT).expect("bob exits").success());
}

#[test]
fn relay_restart_on_the_same_address_reconnects_agents_and_delivers_their_outbox() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay_dir = tmp.path().join("relay");
    let mut relay = start_relay("127.0.0.1:0", &relay_dir);
    let addr = relay.addr;
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut agents = start_interactive(&relay, &[("alice", &alice_dir), ("bob", &bob_dir)]);
    let mut bob = agents.pop().expect("bob");
    let mut alice = agents.pop().expect("alice");
    talk(&mut alice, &mut bob, "before the restart");
    talk(&mut bob, &mut alice, "before the restart too");

    relay.kill9().expect("kill the relay");
    for a in [&mut alice, &mut bob] {
        a.wait_for("reconnecting", WAIT, |e| {
            e["event"] == "connection" && e["state"] == "reconnecting"
        })
        .expect("the agent notices");
    }
    // Written while the relay is down: encrypted into the outbox, sent on reconnect.
    let from_alice: Vec<String> = (1..=3).map(|i| format!("during the outage {i}")).collect();
    let from_bob: Vec<String> = (1..=2).map(|i| format!("bob during the outage {i}")).collect();
    for line in &from_alice {
        alice.send_line(&format!("/msg bob {line}")).expect("stdin");
    }
    for line in &from_bob {
        bob.send_line(&format!("/msg alice {line}")).expect("stdin");
    }

    let _relay = start_relay(&addr.to_string(), &relay_dir);
    for a in [&mut alice, &mut bob] {
        a.wait_count("connected twice", 2, WAIT, |e| {
            e["event"] == "connection" && e["state"] == "connected"
        })
        .expect("the agent reconnects");
    }
    for line in &from_alice {
        bob.wait_message("alice", line, WAIT).expect("outage message");
    }
    for line in &from_bob {
        alice.wait_message("bob", line, WAIT).expect("outage message");
    }
    // The outage messages were acknowledged as stored only after reconnecting.
    for a in [&mut alice, &mut bob] {
        let stored = 1 + if a.name() == "alice" { 3 } else { 2 };
        a.wait_count("sent", stored, WAIT, |e| e["event"] == "sent")
            .expect("acknowledged");
        let events = a.events().to_vec();
        let reconnected = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e["event"] == "connection" && e["state"] == "connected")
            .nth(1)
            .map(|(i, _)| i)
            .expect("second connected");
        let sent: Vec<usize> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e["event"] == "sent")
            .map(|(i, _)| i)
            .collect();
        assert_eq!(sent.len(), stored);
        assert!(sent[1..].iter().all(|&i| i > reconnected), "{}", a.name());
    }
    talk(&mut alice, &mut bob, "after the restart");
    talk(&mut bob, &mut alice, "after the restart too");
    for (a, from) in [(&mut alice, "bob"), (&mut bob, "alice")] {
        assert_clean(a);
        let got = messages(a, from, "");
        assert_unique_ids(&got, from);
        assert_eq!(got.len(), 2 + if from == "alice" { 3 } else { 2 });
    }
}

#[test]
fn a_relay_that_lost_its_data_gets_bundles_back_and_new_peers_can_start_sessions() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut relay = start_relay("127.0.0.1:0", &tmp.path().join("relay"));
    let addr = relay.addr;
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut agents = start_interactive(&relay, &[("alice", &alice_dir), ("bob", &bob_dir)]);
    let mut bob = agents.pop().expect("bob");
    let mut alice = agents.pop().expect("alice");
    talk(&mut alice, &mut bob, "before the loss");

    // A new relay on the same address with an empty data directory: no bundles, no
    // names, no queues.
    relay.kill9().expect("kill the relay");
    // (It keeps its TLS key, as an operator restoring a relay would: agents pinned it.)
    let new_dir = tmp.path().join("relay-new");
    e2ee_integration::process::copy_private_dir(&tmp.path().join("relay"), &tmp.path().join("old-relay"))
        .expect("copy");
    std::fs::create_dir_all(&new_dir).expect("mkdir");
    for file in ["tls-cert.pem", "tls-key.pem"] {
        std::fs::copy(tmp.path().join("relay").join(file), new_dir.join(file)).expect("keep the key");
    }
    let relay = start_relay(&addr.to_string(), &new_dir);
    let ids: Vec<String> = [&mut alice, &mut bob]
        .into_iter()
        .map(|a| a.identity(WAIT).expect("identity"))
        .collect();
    wait_names_claimed(&relay, &[&ids[0], &ids[1]]);
    // Existing sessions need nothing from the relay.
    talk(&mut bob, &mut alice, "after the loss");
    // A newcomer fetches Alice's bundle, which only her reconnection can have put back.
    let mut carol = start_interactive(&relay, &[("carol", &tmp.path().join("carol"))])
        .pop()
        .expect("carol");
    talk(&mut carol, &mut alice, "hello from a newcomer");
    talk(&mut alice, &mut carol, "welcome");
    for a in [&mut alice, &mut bob, &mut carol] {
        assert_clean(a);
    }
}

/// The name-takeover attack: a second identity starts an agent as `bob` (the relay
/// refuses its claim, the name is held by the real Bob) and writes to Alice, who has
/// Bob pinned (and verified, under `block`), and to Carol, who never talked to Bob.
/// Names come from the relay's registry only, so under every policy the impostor's
/// messages are shown under its fingerprint, never as `bob`, no pin moves, and what
/// Alice and Carol then send to `bob` goes to the real Bob.
fn name_takeover_by_a_second_identity_is_refused(policy: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = start_relay("127.0.0.1:0", &tmp.path().join("relay"));
    let alice_dir = tmp.path().join("alice");
    let mut alice = start(agent("alice", relay.addr, &alice_dir).identity_policy(policy));
    let mut bob = start(agent("bob", relay.addr, &tmp.path().join("bob")));
    let mut carol = start(agent("carol", relay.addr, &tmp.path().join("carol")).identity_policy(policy));
    let alice_id = alice.identity(WAIT).expect("alice identity");
    let bob_id = bob.identity(WAIT).expect("bob identity");
    let carol_id = carol.identity(WAIT).expect("carol identity");
    wait_names_claimed(&relay, &[&alice_id, &bob_id, &carol_id]);
    talk(&mut alice, &mut bob, "hello bob");
    talk(&mut bob, &mut alice, "hi alice");
    if policy == "block" {
        alice.send_line("/verify bob").expect("stdin");
        let number = alice.wait_event("safety_number", WAIT).expect("number");
        let digits = number["digits"].as_str().expect("digits").to_string();
        alice.send_line(&format!("/trust bob {digits}")).expect("stdin");
        let verified = alice.wait_event("peer_verified", WAIT).expect("verified");
        assert_eq!(verified["identity"], bob_id.as_str());
    }

    // The impostor: a fresh identity that calls itself bob.
    let mut impostor = start(agent("bob", relay.addr, &tmp.path().join("impostor")));
    let impostor_id = impostor.identity(WAIT).expect("impostor identity");
    assert_ne!(impostor_id, bob_id);
    impostor
        .wait_for("name refused", WAIT, |e| {
            e["event"] == "error" && e["message"].as_str().is_some_and(|m| m.contains("not_owner"))
        })
        .expect("the relay keeps the name for the real bob");
    impostor
        .send_line("/msg alice it is bob, my new key")
        .expect("stdin");
    impostor
        .send_line("/msg carol hi carol, bob here")
        .expect("stdin");
    let fingerprint = format!("#{}", &impostor_id[..16]);
    for (victim, text) in [
        (&mut alice, "it is bob, my new key"),
        (&mut carol, "hi carol, bob here"),
    ] {
        let shown = victim
            .wait_for("the impostor's message", WAIT, |e| {
                e["event"] == "message" && e["text"] == text
            })
            .expect("shown");
        assert_eq!(
            shown["from"],
            fingerprint.as_str(),
            "shown under its fingerprint, not as bob"
        );
        assert_eq!(shown["from_identity"], impostor_id.as_str());
        assert!(victim.events_of("identity_changed").is_empty());
    }

    // What they now send to `bob` goes to the real Bob.
    talk(&mut alice, &mut bob, "secret for the real bob");
    talk(&mut carol, &mut bob, "first contact with bob");
    for victim in [&mut alice, &mut carol] {
        victim.send_line("/peers").expect("stdin");
        let peers = victim.wait_event("peers", WAIT).expect("peers");
        let pin = peers["peers"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "bob"))
            .expect("bob is pinned")
            .clone();
        assert_eq!(pin["identity"], bob_id.as_str(), "pinned to the real bob");
        assert_eq!(pin["pending_change"], false);
    }
    impostor.send_line("/quit").expect("stdin");
    assert!(impostor.wait_exit(WAIT).expect("impostor exits").success());
    assert!(
        !impostor.events().iter().any(|e| e["event"] == "message"),
        "nothing reached the impostor: {:?}",
        impostor.events_of("message")
    );
    assert_clean(&mut bob);
}

#[test]
fn name_takeover_is_refused_under_block_policy() {
    name_takeover_by_a_second_identity_is_refused("block");
}

#[test]
fn name_takeover_is_refused_under_warn_policy() {
    name_takeover_by_a_second_identity_is_refused("warn");
}

#[test]
fn name_takeover_is_refused_under_accept_policy() {
    name_takeover_by_a_second_identity_is_refused("accept");
}

/// Bob loses his state and starts again under the same name; once his old identity's
/// lease on the name has run out (2 s here) the relay's registry binds `bob` to the new
/// identity, and Alice learns of the change from it (a reverse lookup of the new
/// sender). `verified`: Alice had verified the old key (then the change is held under
/// any policy). `decision`: what Alice does with a held change.
fn identity_change_after_the_lease(policy: &str, verified: bool, decision: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = RelayProcess::start_with_env(
        "127.0.0.1:0",
        &tmp.path().join("relay"),
        &[],
        &[
            ("E2EE_RELAY_STORE__FSYNC", "false"),
            ("E2EE_RELAY_NAMES__LEASE_SECS", "1"),
        ],
    )
    .expect("relay starts");
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut alice = start(agent("alice", relay.addr, &alice_dir).identity_policy(policy));
    let mut bob = start(agent("bob", relay.addr, &bob_dir));
    let alice_id = alice.identity(WAIT).expect("alice identity");
    let old_bob = bob.identity(WAIT).expect("bob identity");
    wait_names_claimed(&relay, &[&alice_id, &old_bob]);
    talk(&mut alice, &mut bob, "hello old bob");
    talk(&mut bob, &mut alice, "hi from old bob");
    if verified {
        alice.send_line("/verify bob").expect("stdin");
        let number = alice.wait_event("safety_number", WAIT).expect("number");
        let digits = number["digits"].as_str().expect("digits").to_string();
        alice.send_line(&format!("/trust bob {digits}")).expect("stdin");
        alice.wait_event("peer_verified", WAIT).expect("verified");
    }
    bob.send_line("/quit").expect("stdin");
    assert!(bob.wait_exit(WAIT).expect("bob exits").success());
    std::fs::remove_dir_all(&bob_dir).expect("delete bob's state");
    // Real time must pass for the lease to run out.
    std::thread::sleep(Duration::from_millis(1_500));

    let mut bob = start(agent("bob", relay.addr, &bob_dir));
    let new_bob = bob.identity(WAIT).expect("new bob identity");
    assert_ne!(new_bob, old_bob);
    wait_names_claimed(&relay, &[&new_bob]);
    bob.send_line("/msg alice hello from new bob").expect("stdin");
    bob.wait_event("sent", WAIT).expect("stored at the relay");

    let changed = alice.wait_event("identity_changed", WAIT).expect("alice notices");
    assert_eq!(changed["peer"], "bob");
    assert_eq!(changed["previous"], old_bob.as_str());
    assert_eq!(changed["current"], new_bob.as_str());
    assert_eq!(changed["pinned_verified"], verified);
    if policy != "block" && !verified {
        assert_eq!(
            changed["action"],
            if policy == "warn" { "warned" } else { "accepted" }
        );
        let hello = alice
            .wait_message("bob", "hello from new bob", WAIT)
            .expect("shown");
        assert_eq!(hello["from_identity"], new_bob.as_str());
        talk(&mut alice, &mut bob, "hi new bob");
        assert_clean(&mut bob);
        return;
    }

    // Held: nothing shown, nothing sent, both keys shown by /verify.
    assert_eq!(changed["action"], "held");
    let held = alice.wait_event("message_held", WAIT).expect("held");
    assert_eq!(
        (held["from"].as_str(), held["from_identity"].as_str()),
        (Some("bob"), Some(new_bob.as_str()))
    );
    alice.send_line("/msg bob are you the real bob").expect("stdin");
    let refused = alice.wait_event("send_failed", WAIT).expect("send refused");
    assert!(
        refused["reason"].as_str().is_some_and(|r| r.contains("held")),
        "{refused}"
    );
    // The hold and its message survive a restart.
    alice.send_line("/quit").expect("stdin");
    assert!(alice.wait_exit(WAIT).expect("alice exits").success());
    assert!(alice
        .events_of("message")
        .iter()
        .all(|m| m["from_identity"] == old_bob.as_str()));
    let mut alice = start(agent("alice", relay.addr, &alice_dir).identity_policy(policy));
    alice.send_line("/verify bob").expect("stdin");
    let pinned = alice.wait_event("safety_number", WAIT).expect("pinned number");
    let new = alice
        .wait_for("the new key's number", WAIT, |e| {
            e["event"] == "safety_number" && e["key"] == "new"
        })
        .expect("new number");
    assert_eq!(
        (pinned["key"].as_str(), pinned["identity"].as_str()),
        (Some("pinned"), Some(old_bob.as_str()))
    );
    assert_eq!(new["identity"], new_bob.as_str());
    bob.send_line("/verify alice").expect("stdin");
    let bobs = bob.wait_event("safety_number", WAIT).expect("bob's number");
    assert_eq!(
        bobs["digits"], new["digits"],
        "the new key's number is the one new bob sees"
    );
    assert_ne!(pinned["digits"], new["digits"]);

    if decision == "trust" {
        let digits = new["digits"].as_str().expect("digits").to_string();
        alice.send_line(&format!("/trust bob {digits}")).expect("stdin");
        let verified = alice.wait_event("peer_verified", WAIT).expect("accepted");
        assert_eq!(verified["identity"], new_bob.as_str());
        let hello = alice
            .wait_message("bob", "hello from new bob", WAIT)
            .expect("released");
        assert_eq!(hello["from_identity"], new_bob.as_str());
        talk(&mut alice, &mut bob, "welcome, new bob");
        talk(&mut bob, &mut alice, "thanks alice");
        assert_clean(&mut bob);
    } else {
        alice.send_line("/reject bob").expect("stdin");
        let rejected = alice.wait_event("identity_rejected", WAIT).expect("rejected");
        assert_eq!(rejected["discarded"], 1);
        bob.send_line("/msg alice still me").expect("stdin");
        let failure = alice.wait_event("decrypt_failure", WAIT).expect("refused");
        assert_eq!(failure["class"], "identity_changed");
        assert_eq!(failure["from_identity"], new_bob.as_str());
        assert!(
            alice.events_of("message").is_empty(),
            "nothing from the new key is shown"
        );
        alice.send_line("/peers").expect("stdin");
        let peers = alice.wait_event("peers", WAIT).expect("peers");
        assert_eq!(peers["peers"][0]["identity"], old_bob.as_str(), "the pin is kept");
    }
}

#[test]
fn identity_change_of_an_unverified_pin_under_warn_continues() {
    identity_change_after_the_lease("warn", false, "");
}

#[test]
fn identity_change_of_an_unverified_pin_under_accept_continues() {
    identity_change_after_the_lease("accept", false, "");
}

#[test]
fn identity_change_under_block_is_held_until_trusted_by_digits() {
    identity_change_after_the_lease("block", false, "trust");
}

#[test]
fn identity_change_of_a_verified_pin_is_held_under_warn_and_can_be_rejected() {
    identity_change_after_the_lease("warn", true, "reject");
}

#[test]
fn interactive_session_over_stdin_handles_commands_and_bad_input() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = start_relay("127.0.0.1:0", &tmp.path().join("relay"));
    let (alice_dir, bob_dir) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let mut agents = start_interactive(&relay, &[("alice", &alice_dir), ("bob", &bob_dir)]);
    let mut bob = agents.pop().expect("bob");
    let mut alice = agents.pop().expect("alice");
    let bob_id = bob.identity(WAIT).expect("bob identity");

    alice.send_line("/help").expect("stdin");
    let help = alice
        .wait_for("help", WAIT, |e| {
            e["event"] == "help" && e["text"].as_str().is_some_and(|m| m.starts_with("commands:"))
        })
        .expect("help");
    for command in [
        "/msg", "/peers", "/history", "/status", "/verify", "/trust", "/reject", "/help", "/quit",
    ] {
        assert!(help["text"].as_str().is_some_and(|m| m.contains(command)));
    }

    // Bad input: one error event each, and the agent keeps going.
    let bad = [
        ("hello there", "unknown input"),
        ("/frobnicate", "unknown command /frobnicate"),
        ("/msg", "missing peer name"),
        ("/msg bob", "missing message text"),
        ("/msg Bad!Name hi", "invalid peer name"),
        ("/peers extra", "too many arguments"),
        ("/verify", "missing peer name"),
        ("/verify carol", "no identity pinned for carol"),
        ("/help me", "too many arguments"),
    ];
    for (line, expected) in bad {
        alice.send_line(line).expect("stdin");
        alice.send_line("   ").expect("stdin");
        let error = alice.wait_event("error", WAIT).expect("error event");
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{line:?} gave {message:?}");
    }
    alice.send_line("/msg nobody hi").expect("stdin");
    let failed = alice.wait_event("send_failed", WAIT).expect("unknown peer");
    assert_eq!(failed["to"], "nobody");
    // Reported once: no `error` line repeats it.
    let errors = alice.events_of("error").len();

    // Messages both ways; the text keeps its inner spacing, peer names any case.
    alice
        .send_line("/msg BOB  hello   bob, with  spaces  ")
        .expect("stdin");
    bob.wait_message("alice", "hello   bob, with  spaces", WAIT)
        .expect("bob gets it");
    talk(&mut bob, &mut alice, "hi alice");
    alice
        .wait_for("sent to bob", WAIT, |e| e["event"] == "sent" && e["to"] == "bob")
        .expect("sent");
    assert_eq!(alice.events_of("error").len(), errors, "{}", alice.report());
    // Receipts go only to peers one has written to (bob has now): alice's next text
    // gets one.
    talk(&mut alice, &mut bob, "and this one gets a receipt");
    alice
        .wait_for("delivered to bob", WAIT, |e| {
            e["event"] == "delivered" && e["to"] == "bob"
        })
        .expect("end-to-end receipt");

    alice.send_line("/peers").expect("stdin");
    let peers = alice.wait_event("peers", WAIT).expect("peers");
    let list = peers["peers"].as_array().expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["name"], "bob");
    assert_eq!(list[0]["identity"], bob_id.as_str());
    assert_eq!(list[0]["has_session"], true);
    assert_eq!(list[0]["verified"], false);

    alice.send_line("/verify bob").expect("stdin");
    bob.send_line("/verify alice").expect("stdin");
    let a = alice.wait_event("safety_number", WAIT).expect("alice's number");
    let b = bob.wait_event("safety_number", WAIT).expect("bob's number");
    assert_eq!(a["digits"], b["digits"]);
    assert_eq!(a["scannable"].as_str().map(str::len), Some(130));
    let grouped = a["grouped"].as_str().expect("grouped");
    assert_eq!(grouped.lines().count(), 3);
    assert_eq!(
        grouped.split_whitespace().collect::<String>(),
        a["digits"].as_str().expect("digits")
    );

    // Digits that match no key change nothing; the compared ones verify Bob's key.
    alice
        .send_line(&format!("/trust bob {}", "0".repeat(60)))
        .expect("stdin");
    alice
        .wait_for("refused digits", WAIT, |e| {
            e["event"] == "error" && e["message"].as_str().is_some_and(|m| m.contains("match no key"))
        })
        .expect("wrong digits refused");
    let digits = a["digits"].as_str().expect("digits").to_string();
    alice.send_line(&format!("/trust bob {digits}")).expect("stdin");
    let verified = alice.wait_event("peer_verified", WAIT).expect("trusted");
    assert_eq!(verified["safety_number"], a["digits"]);
    alice.send_line("/peers").expect("stdin");
    let peers = alice.wait_event("peers", WAIT).expect("peers");
    assert_eq!(peers["peers"][0]["verified"], true);

    alice.send_line("/quit").expect("stdin");
    assert!(alice.wait_exit(WAIT).expect("alice quits").success());
    bob.close_stdin();
    assert!(bob.wait_exit(WAIT).expect("bob stops at end of input").success());
    // One per bad line, and the wrong digits: the failed /msg was a send_failed only.
    assert_eq!(
        alice.events_of("error").len(),
        bad.len() + 1,
        "{}",
        alice.report()
    );
    assert_eq!(alice.events_of("unparsed_output").len(), 0);
    assert!(alice.events_of("decrypt_failure").is_empty());
    assert_clean(&mut bob);
}

#[test]
fn a_released_name_goes_to_the_next_claimant_and_is_not_claimed_again_on_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = start_relay("127.0.0.1:0", &tmp.path().join("relay"));
    let old_dir = tmp.path().join("bob-old");
    let mut agents = start_interactive(&relay, &[("bob", &old_dir), ("alice", &tmp.path().join("alice"))]);
    let mut alice = agents.pop().expect("alice");
    let mut old = agents.pop().expect("bob");
    talk(&mut alice, &mut old, "hello first bob");

    old.send_line("/release-name").expect("stdin");
    let released = old.wait_event("name_released", WAIT).expect("release confirmed");
    assert_eq!(released["name"], "bob");
    relay
        .wait_log("name released", WAIT)
        .expect("the relay released it");
    old.send_line("/quit").expect("stdin");
    assert!(old.wait_exit(WAIT).expect("exits").success());

    // A new identity takes the free name. Alice's next message to bob goes to the key
    // she pinned, and the registry check made on that first send of the connection
    // reports the identity change of an unverified pin (default policy warn: re-pinned);
    // what she sends after that goes to the new holder.
    let mut new = start(agent("bob", relay.addr, &tmp.path().join("bob-new")));
    let new_id = new.identity(WAIT).expect("new identity");
    wait_names_claimed(&relay, &[&new_id]);
    alice.send_line("/msg bob still there?").expect("stdin");
    let changed = alice
        .wait_event("identity_changed", WAIT)
        .expect("change reported");
    assert_eq!(changed["current"], new_id.as_str());
    assert_eq!(changed["action"], "warned");
    talk(&mut alice, &mut new, "hello second bob");
    assert!(
        messages(&mut new, "alice", "still there?").is_empty(),
        "the message sent before the change went to the pinned key"
    );
    new.send_line("/msg alice hello from the second bob")
        .expect("stdin");
    alice
        .wait_message("bob", "hello from the second bob", WAIT)
        .expect("shown as bob");

    // The first identity, restarted, does not claim the name again by itself...
    let mut old = start(agent("bob", relay.addr, &old_dir));
    old.wait_for("connected", WAIT, |e| {
        e["event"] == "connection" && e["state"] == "connected"
    })
    .expect("connects");
    talk(&mut alice, &mut new, "after the old bob reconnected");
    assert!(
        events_containing(&mut old, "error", "not_owner").is_empty(),
        "the released name was claimed again on connecting: {:?}",
        old.events_of("error")
    );
    // ...and /claim-name says who holds it now.
    old.send_line("/claim-name").expect("stdin");
    old.wait_for("refusal", WAIT, |e| {
        e["event"] == "error"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("another identity"))
    })
    .expect("told the name is held by another identity");
    assert!(old.events_of("name_claimed").is_empty());
    for agent in [&mut old, &mut new, &mut alice] {
        agent.send_line("/quit").expect("stdin");
        assert!(agent.wait_exit(WAIT).expect("exits").success());
    }
    assert_clean(&mut new);
}

#[test]
fn release_name_and_claim_name_script_steps_wait_for_the_relay() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = start_relay("127.0.0.1:0", &tmp.path().join("relay"));
    let dir = tmp.path().join("carol");
    std::fs::create_dir_all(tmp.path().join("scripts")).expect("mkdir");
    let script = write_script(
        &tmp.path().join("scripts"),
        "carol.script",
        &["release-name".into(), "claim-name".into(), "release-name".into()],
    );
    let mut carol = start(agent("carol", relay.addr, &dir).script(&script));
    script_succeeds(&mut carol);
    assert_eq!(carol.events_of("name_released").len(), 2);
    assert_eq!(carol.events_of("name_claimed").len(), 1);
    // The release is part of the state: a restart does not claim the name.
    let script = write_script(
        &tmp.path().join("scripts"),
        "check.script",
        &["wait-peer carol timeout=2000".into()],
    );
    let mut check = start(agent("dave", relay.addr, &tmp.path().join("dave")).script(&script));
    let done = check.wait_event("script_done", WAIT).expect("script ends");
    assert_eq!(
        done["ok"],
        false,
        "nobody holds the name carol: {}",
        check.report()
    );
}

/// A recipient that has not connected to the relay for longer than its notice period
/// (1 s here) is reported to the sender (`recipient_away`) right after `sent`; one that
/// is connected is not. The send itself is unchanged.
#[test]
fn a_sender_is_told_when_the_recipient_has_been_away_past_the_notice_period() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = RelayProcess::start_with_env(
        "127.0.0.1:0",
        &tmp.path().join("relay"),
        &[],
        &[
            ("E2EE_RELAY_STORE__FSYNC", "false"),
            ("E2EE_RELAY_NAMES__AWAY_NOTICE_SECS", "1"),
        ],
    )
    .expect("relay starts");
    // Bob connects once (his bundle and name claim stay at the relay) and quits.
    let mut bob = start(agent("bob", relay.addr, &tmp.path().join("bob")));
    let bob_id = bob.identity(WAIT).expect("bob identity");
    wait_names_claimed(&relay, &[&bob_id]);
    bob.send_line("/quit").expect("stdin");
    assert!(bob.wait_exit(WAIT).expect("bob exits").success());
    let bob_left = std::time::Instant::now();
    let (alice_dir, carol_dir) = (tmp.path().join("alice"), tmp.path().join("carol"));
    let mut agents = start_interactive(&relay, &[("alice", &alice_dir), ("carol", &carol_dir)]);
    let mut carol = agents.pop().expect("carol");
    let mut alice = agents.pop().expect("alice");
    // Real time must pass for bob to be away.
    let away_from = bob_left + Duration::from_millis(2_500);
    std::thread::sleep(away_from.saturating_duration_since(std::time::Instant::now()));

    // Carol is connected: nothing to report. The relay answers a connection's queries
    // in order, so hers is answered before the one about bob below.
    talk(&mut alice, &mut carol, "hello carol");
    alice.send_line("/msg bob are you there").expect("stdin");
    let sent = alice
        .wait_for("sent to bob", WAIT, |e| e["event"] == "sent" && e["to"] == "bob")
        .expect("stored at the relay as usual");
    let away = alice.wait_event("recipient_away", WAIT).expect("alice is told");
    assert_eq!(away["peer"], "bob");
    assert_eq!(away["identity"], bob_id.as_str());
    assert!(
        away["away_days"].as_u64().is_some_and(|days| days >= 1),
        "whole days, at least 1: {away}"
    );
    let order: Vec<&Value> = alice
        .events()
        .iter()
        .filter(|e| e["event"] == "recipient_away" || e["msg_id"] == sent["msg_id"])
        .collect();
    assert_eq!(
        order.first().map(|e| &e["event"]),
        Some(&Value::from("sent")),
        "{order:?}"
    );
    assert_eq!(alice.events_of("recipient_away").len(), 1, "not for carol");
    assert_clean(&mut alice);
    assert_clean(&mut carol);
}
