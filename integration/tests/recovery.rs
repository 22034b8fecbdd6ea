//! Session recovery with real processes (docs/PROTOCOL.md 2.8): an agent whose state
//! was put back from an old copy can talk with its peer again, both ways, without
//! anybody resetting anything by hand, and gets again what its peer's send log holds.

use std::path::Path;
use std::time::Duration;

use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::process::{copy_private_dir, RelayProcess};

const WAIT: Duration = Duration::from_secs(20);

fn agent(name: &str, relay: &RelayProcess, dir: &Path) -> AgentProcess {
    AgentConfig::new(name, relay.addr, &dir.join(name))
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "200")
        .start()
        .expect("agent starts")
}

fn stop(agent: &mut AgentProcess) {
    agent.close_stdin();
    let status = agent.wait_exit(WAIT).expect("exits");
    assert!(status.success(), "{} exited with {status}", agent.name());
}

fn say(from: &mut AgentProcess, to: &mut AgentProcess, text: &str) {
    from.send_line(&format!("/msg {} {text}", to.name()))
        .expect("stdin");
    let sender = from.name().to_string();
    to.wait_message(&sender, text, WAIT)
        .unwrap_or_else(|e| panic!("{e}\n{}", from.report()));
}

fn receipts(agent: &mut AgentProcess, count: usize) {
    agent
        .wait_count("receipts", count, WAIT, |e| e["event"] == "delivered")
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Alice and bob talk; bob's state is copied; three more round trips; bob stops and
/// his state is put back from the copy. Returns the two running agents.
fn restored_bob(tmp: &Path, relay: &RelayProcess) -> (AgentProcess, AgentProcess) {
    let mut bob = agent("bob", relay, tmp);
    relay.wait_log("name claimed", WAIT).expect("bob's name");
    let mut alice = agent("alice", relay, tmp);
    say(&mut alice, &mut bob, "a1");
    say(&mut bob, &mut alice, "b1");
    // Before each stop, alice's receipts have reached bob: the relay holds nothing for
    // him, so what happens after the restore does not depend on timing.
    receipts(&mut bob, 1);
    stop(&mut bob);
    copy_private_dir(&tmp.join("bob"), &tmp.join("bob-backup")).expect("backup");
    let mut bob = agent("bob", relay, tmp);
    for round in 2..=4 {
        say(&mut alice, &mut bob, &format!("a{round}"));
        say(&mut bob, &mut alice, &format!("b{round}"));
    }
    receipts(&mut bob, 3);
    stop(&mut bob);
    std::fs::remove_dir_all(tmp.join("bob")).expect("rm");
    copy_private_dir(&tmp.join("bob-backup"), &tmp.join("bob")).expect("restore");
    (alice, agent("bob", relay, tmp))
}

fn reset_event(agent: &mut AgentProcess, side: &str) -> serde_json::Value {
    agent
        .wait_for(&format!("session_reset {side}"), WAIT, |e| {
            e["event"] == "session_reset" && e["side"] == side
        })
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_receiver_restored_from_an_old_copy_asks_for_a_new_session_and_gets_what_it_lost() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = RelayProcess::start_for_test("127.0.0.1:0", &tmp.path().join("relay")).expect("relay");
    let (mut alice, mut bob) = restored_bob(tmp.path(), &relay);

    // Alice writes first: her chain is one the old bob never saw, so it cannot
    // authenticate; bob asks for a new session, alice starts one and sends again what
    // her send log holds. Bob shows what his old state had not seen, a1 not twice.
    alice.send_line("/msg bob a5 after the restore").expect("stdin");
    let failure = bob
        .wait_event("decrypt_failure", WAIT)
        .expect("the old session fails");
    assert_eq!(failure["class"], "tampered", "{failure}");
    let asked = reset_event(&mut bob, "requested");
    assert_eq!(asked["reason"], "unauthenticated");
    let granted = reset_event(&mut alice, "restarted");
    assert_eq!(granted["reason"], "unauthenticated");
    assert_eq!(granted["resent"], 5, "a1..a5 from the send log: {granted}");
    for text in ["a2", "a3", "a4", "a5 after the restore"] {
        bob.wait_message("alice", text, WAIT)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Both ways on the new session, and nothing shown twice.
    say(&mut bob, &mut alice, "b5 on the new session");
    say(&mut alice, &mut bob, "a6 on the new session");
    let a1_again = bob
        .events_of("message")
        .iter()
        .filter(|e| e["text"] == "a1")
        .count();
    assert_eq!(a1_again, 0, "a1 was shown to bob before the copy was made");
    for text in ["b2", "b3", "b4"] {
        let shown = alice
            .events_of("message")
            .iter()
            .filter(|e| e["text"] == text)
            .count();
        assert_eq!(shown, 1, "{text}");
    }
}

#[test]
fn a_sender_restored_from_an_old_copy_is_asked_for_a_new_session_and_its_text_arrives() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = RelayProcess::start_for_test("127.0.0.1:0", &tmp.path().join("relay")).expect("relay");
    let (mut alice, mut bob) = restored_bob(tmp.path(), &relay);

    // Bob writes first, from a chain position he already used before the restore (with
    // a fresh salt, so under another key and nonce): alice sees a reused position, asks
    // bob for a new session, and bob sends his send log again on it.
    bob.send_line("/msg alice b5 after the restore").expect("stdin");
    let failure = alice
        .wait_event("decrypt_failure", WAIT)
        .expect("the old chain fails");
    assert_eq!(failure["class"], "duplicate", "{failure}");
    let asked = reset_event(&mut alice, "requested");
    assert_eq!(asked["reason"], "reused_position");
    let granted = reset_event(&mut bob, "restarted");
    assert_eq!(
        granted["resent"], 2,
        "b1 and b5 (the old copy's send log): {granted}"
    );
    alice
        .wait_message("bob", "b5 after the restore", WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    say(&mut alice, &mut bob, "a5 on the new session");
    say(&mut bob, &mut alice, "b6 on the new session");
    let b1 = alice
        .events_of("message")
        .iter()
        .filter(|e| e["text"] == "b1")
        .count();
    assert_eq!(b1, 1, "b1 is not shown twice");
}

#[test]
fn both_sides_writing_at_once_after_a_restore_heal_and_lose_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = RelayProcess::start_for_test("127.0.0.1:0", &tmp.path().join("relay")).expect("relay");
    let (mut alice, mut bob) = restored_bob(tmp.path(), &relay);

    // Each side fails on the other's text and asks; each grants the other's request:
    // two new sessions started at once, which the archive of sessions reconciles.
    bob.send_line("/msg alice b5 after the restore").expect("stdin");
    alice.send_line("/msg bob a5 after the restore").expect("stdin");
    let checks = [
        (&mut alice, "bob", "b5 after the restore"),
        (&mut bob, "alice", "a5 after the restore"),
    ];
    for (agent, from, text) in checks {
        if let Err(e) = agent.wait_message(from, text, WAIT) {
            panic!("{e}");
        }
    }
    say(&mut alice, &mut bob, "a6 on the new session");
    say(&mut bob, &mut alice, "b6 on the new session");
}

#[test]
fn a_gap_of_1010_expired_messages_is_reported_lost_and_the_next_chain_decrypts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = [
        ("E2EE_RELAY_STORE__FSYNC", "false"),
        ("E2EE_RELAY_LIMITS__MESSAGE_TTL_SECS", "2"),
    ];
    let relay =
        RelayProcess::start_with_env("127.0.0.1:0", &tmp.path().join("relay"), &[], &env).expect("relay");
    let mut bob = agent("bob", &relay, tmp.path());
    relay.wait_log("name claimed", WAIT).expect("bob's name");
    let mut alice = agent("alice", &relay, tmp.path());
    say(&mut alice, &mut bob, "a1");
    say(&mut bob, &mut alice, "b1");
    receipts(&mut bob, 1);
    stop(&mut bob);

    // 1010 texts in one chain, stored at the relay, expire there unread.
    let gap = 1010;
    for i in 0..gap {
        alice.send_line(&format!("/msg bob lost {i}")).expect("stdin");
    }
    alice
        .wait_count("sent", gap + 1, Duration::from_secs(60), |e| e["event"] == "sent")
        .unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_secs(3));

    // Bob comes back to nothing; he writes, alice answers on a new chain whose pn says
    // 1011 messages were sent in the last one: bob gives those keys up and says so.
    let mut bob = agent("bob", &relay, tmp.path());
    say(&mut bob, &mut alice, "b2 back");
    say(&mut alice, &mut bob, "a after the gap");
    let lost = bob
        .wait_event("messages_lost", WAIT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lost["from"], "alice");
    assert_eq!(lost["count"], gap as u64, "{lost}");
    assert!(bob.events_of("decrypt_failure").is_empty(), "{}", bob.report());
    say(&mut bob, &mut alice, "b3 still fine");
}
