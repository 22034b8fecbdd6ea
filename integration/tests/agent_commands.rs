//! The interactive commands that tell a user where things stand (docs/AGENT.md 4):
//! `/status` while the relay is up, down and back, `/history`, unread counts in `/peers`,
//! a readable `/help`, one report per failed message (without an id for what was never
//! sent), and a relay address that is not `host:port` refused at start.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::process::{binary, RelayProcess};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

fn relay_on(listen: &str, dir: &Path) -> RelayProcess {
    let env = [("E2EE_RELAY_STORE__FSYNC", "false")];
    RelayProcess::start_with_env(listen, dir, &[], &env).expect("relay starts")
}

fn agent(name: &str, relay: &RelayProcess, dir: &Path) -> AgentProcess {
    AgentConfig::new(name, relay.addr, &dir.join(name))
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "200")
        .start()
        .expect("agent starts")
}

fn last_of(agent: &mut AgentProcess, kind: &str) -> Value {
    agent
        .events_of(kind)
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} event: {}", agent.report()))
}

#[test]
fn status_history_and_unread_counts_tell_where_things_stand() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay_dir = tmp.path().join("relay");
    let mut relay = relay_on("127.0.0.1:0", &relay_dir);
    let addr = relay.addr;
    let mut bob = agent("bob", &relay, tmp.path());
    relay.wait_log("name claimed", WAIT).expect("bob's name");
    let mut alice = agent("alice", &relay, tmp.path());
    alice.send_line("/msg bob one").expect("stdin");
    bob.wait_message("alice", "one", WAIT).expect("delivered");
    alice.send_line("/msg bob two").expect("stdin");
    bob.wait_message("alice", "two", WAIT).expect("delivered");

    // Two unread from alice, and when the last message was written.
    bob.send_line("/peers").expect("stdin");
    bob.wait_event("peers", WAIT).expect("peers");
    let peers = last_of(&mut bob, "peers");
    let entry = &peers["peers"][0];
    assert_eq!(
        (entry["name"].as_str(), entry["unread"].as_u64()),
        (Some("alice"), Some(2)),
        "{peers}"
    );
    assert!(
        entry["last_activity_ms"].as_u64().is_some_and(|t| t > 0),
        "{peers}"
    );

    // The conversation from the store, oldest first; reading it clears the count.
    bob.send_line("/history alice 5").expect("stdin");
    let history = bob.wait_event("history", WAIT).expect("history");
    let texts: Vec<(&str, bool)> = (history["messages"].as_array().expect("messages").iter())
        .map(|m| {
            (
                m["text"].as_str().unwrap_or_default(),
                m["sent"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    assert_eq!(texts, vec![("one", false), ("two", false)], "{history}");
    bob.send_line("/history alice 1").expect("stdin");
    bob.wait_count("history", 2, WAIT, |e| e["event"] == "history")
        .expect("again");
    let one = last_of(&mut bob, "history");
    assert_eq!(
        one["messages"].as_array().map(Vec::len),
        Some(1),
        "the newest only: {one}"
    );
    bob.send_line("/peers").expect("stdin");
    bob.wait_count("peers", 2, WAIT, |e| e["event"] == "peers")
        .expect("peers");
    assert_eq!(last_of(&mut bob, "peers")["peers"][0]["unread"], 0);

    // Up: connected, trusted by the pinned key, nothing waiting.
    alice.send_line("/status").expect("stdin");
    let status = alice.wait_event("status", WAIT).expect("status");
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["outbox"], 0, "{status}");
    assert!(
        status["trust"]
            .as_str()
            .is_some_and(|t| t.contains("pinned sha256:")),
        "{status}"
    );

    // Down: not connected, with the reason; a message written meanwhile waits.
    relay.kill9().expect("kill the relay");
    alice
        .wait_for("the link is down", WAIT, |e| {
            e["event"] == "connection" && e["state"] != "connected" && e["reason"].is_string()
        })
        .unwrap_or_else(|e| panic!("{e}: {}", alice.report()));
    alice.send_line("/msg bob three").expect("stdin");
    alice.send_line("/status").expect("stdin");
    let down = alice
        .wait_count("status", 2, WAIT, |e| e["event"] == "status")
        .expect("status")
        .pop()
        .expect("one");
    assert_eq!(down["connected"], false, "{down}");
    assert!(down["reason"].as_str().is_some_and(|r| !r.is_empty()), "{down}");
    assert_eq!(down["outbox"], 1, "{down}");

    // Back: connected again, and the message written while down arrives.
    let _relay = relay_on(&addr.to_string(), &relay_dir);
    bob.wait_message("alice", "three", WAIT)
        .expect("delivered after the restart");
    alice.send_line("/status").expect("stdin");
    let back = alice
        .wait_count("status", 3, WAIT, |e| e["event"] == "status")
        .expect("status")
        .pop()
        .expect("one");
    assert_eq!(
        (back["connected"].as_bool(), back["outbox"].as_u64()),
        (Some(true), Some(0)),
        "{back}"
    );
}

#[test]
fn help_reads_as_lines_and_a_failed_message_is_reported_once_without_an_id() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay_on("127.0.0.1:0", &tmp.path().join("relay"));
    let mut alice = agent("alice", &relay, tmp.path());
    alice.send_line("/help").expect("stdin");
    let help = alice.wait_event("help", WAIT).expect("help");
    let text = help["text"].as_str().expect("text");
    assert!(
        text.lines().count() > 10 && text.contains("/history") && !text.contains("\\n"),
        "{text}"
    );

    alice.send_line("/msg alice to myself").expect("stdin");
    let failed = alice.wait_event("send_failed", WAIT).expect("refused");
    assert_eq!(failed["msg_id"], "", "nothing was sent, so no id: {failed}");
    // A later command's answer proves the failure was handled; it was reported once.
    alice.send_line("/peers").expect("stdin");
    alice.wait_event("peers", WAIT).expect("peers");
    assert_eq!(alice.events_of("send_failed").len(), 1, "{}", alice.report());
    assert!(
        alice.events_of("error").is_empty(),
        "no second report: {}",
        alice.report()
    );
}

#[test]
fn a_relay_address_that_is_not_host_and_port_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for bad in ["nonsense", "127.0.0.1", "relay.example:http"] {
        let out = Command::new(binary("e2ee-agent").expect("binary"))
            .args(["--name", "zed", "--relay", bad, "--state"])
            .arg(tmp.path().join("zed"))
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}: {stderr}");
        assert!(
            stderr.contains(bad) && stderr.contains("host:port"),
            "{bad}: {stderr}"
        );
        assert!(!tmp.path().join("zed").exists(), "{bad}: nothing is created");
    }
}
