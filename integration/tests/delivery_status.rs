//! Delivery status that tells the truth (docs/AGENT.md 5): a message the relay stored
//! (`sent`) and later dropped unread at its message lifetime is reported `expired` to
//! its sender, once, with its id.

use std::path::Path;
use std::time::Duration;

use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::process::RelayProcess;

const WAIT: Duration = Duration::from_secs(20);

fn agent(name: &str, relay: &RelayProcess, dir: &Path) -> AgentProcess {
    AgentConfig::new(name, relay.addr, &dir.join(name))
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "200")
        .start()
        .expect("agent starts")
}

#[test]
fn a_message_that_expires_at_the_relay_is_reported_expired_to_its_sender_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = [
        ("E2EE_RELAY_STORE__FSYNC", "false"),
        ("E2EE_RELAY_LIMITS__MESSAGE_TTL_SECS", "2"),
        ("E2EE_RELAY_LIMITS__HEARTBEAT_INTERVAL_MS", "400"),
    ];
    let relay =
        RelayProcess::start_with_env("127.0.0.1:0", &tmp.path().join("relay"), &[], &env).expect("relay");
    let mut bob = agent("bob", &relay, tmp.path());
    relay.wait_log("name claimed", WAIT).expect("bob's name");
    let mut alice = agent("alice", &relay, tmp.path());
    alice.send_line("/msg bob hello").expect("stdin");
    bob.wait_message("alice", "hello", WAIT).expect("a session");
    bob.close_stdin();
    bob.wait_exit(WAIT).expect("bob stops");

    // Bob stays away past the relay's message lifetime.
    alice.send_line("/msg bob you will not read this").expect("stdin");
    let sent = alice
        .wait_count("sent", 2, WAIT, |e| e["event"] == "sent")
        .expect("stored at the relay");
    let msg_id = sent[1]["msg_id"].clone();
    let expired = alice.wait_event("expired", WAIT).expect("told");
    assert_eq!(expired["to"], "bob", "{expired}");
    assert_eq!(expired["msg_id"], msg_id, "{expired}");

    // After a reconnection nothing is told twice, and bob never gets it.
    alice.close_stdin();
    alice.wait_exit(WAIT).expect("alice stops");
    let mut alice = agent("alice", &relay, tmp.path());
    let mut bob = agent("bob", &relay, tmp.path());
    alice.send_line("/msg bob after").expect("stdin");
    bob.wait_message("alice", "after", WAIT).expect("delivered");
    assert!(alice.events_of("expired").is_empty(), "{}", alice.report());
    let texts: Vec<String> = bob
        .events_of("message")
        .iter()
        .map(|e| e["text"].to_string())
        .collect();
    assert!(!texts.iter().any(|t| t.contains("will not read")), "{texts:?}");
}
