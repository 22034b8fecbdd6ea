//! Bot mode (docs/AGENT.md 3.1): with `--json`, one JSON command per stdin line; the
//! events a command causes carry its id; a malformed command is one error event, never
//! an exit.

use std::path::Path;
use std::time::Duration;

use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::process::RelayProcess;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn agent(name: &str, relay: &RelayProcess, dir: &Path) -> AgentProcess {
    AgentConfig::new(name, relay.addr, &dir.join(name))
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "200")
        .start()
        .expect("agent starts")
}

#[test]
fn json_commands_send_multi_line_texts_and_their_events_carry_the_id() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = [("E2EE_RELAY_STORE__FSYNC", "false")];
    let relay =
        RelayProcess::start_with_env("127.0.0.1:0", &tmp.path().join("relay"), &[], &env).expect("relay");
    let mut bob = agent("bob", &relay, tmp.path());
    relay.wait_log("name claimed", WAIT).expect("bob's name");
    let mut alice = agent("alice", &relay, tmp.path());

    let send = json!({"id": 7, "cmd": "send", "peer": "bob", "text": "two\nlines"});
    alice.send_line(&send.to_string()).expect("stdin");
    bob.wait_message("alice", "two\nlines", WAIT)
        .expect("the newline arrives");
    let sent = alice.wait_event("sent", WAIT).expect("stored");
    assert_eq!(sent["id"], 7, "{sent}");
    // bob answers, so alice's next text gets a receipt: `delivered` carries the id too.
    bob.send_line("/msg alice got it").expect("stdin");
    alice.wait_message("bob", "got it", WAIT).expect("answer");
    alice
        .send_line(r#"{"id": "second", "cmd": "send", "peer": "bob", "text": "and this"}"#)
        .expect("stdin");
    let delivered = alice
        .wait_for("a receipt", WAIT, |e| {
            e["event"] == "delivered" && e["id"] == "second"
        })
        .unwrap_or_else(|e| panic!("{e}: {}", alice.report()));
    assert_eq!(delivered["to"], "bob");

    alice
        .send_line(r#"{"id": "h", "cmd": "history", "peer": "bob", "count": 3}"#)
        .expect("stdin");
    let history = alice.wait_event("history", WAIT).expect("history");
    assert_eq!(history["id"], "h", "{history}");
    let texts: Vec<&str> = (history["messages"].as_array().expect("messages").iter())
        .map(|m| m["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(texts, vec!["two\nlines", "got it", "and this"], "{history}");

    alice.send_line(r#"{"id": 1.5, "cmd": "peers"}"#).expect("stdin");
    assert_eq!(alice.wait_event("peers", WAIT).expect("peers")["id"], 1.5);
    // Sending to oneself fails with the id, once.
    alice
        .send_line(r#"{"id": 9, "cmd": "send", "peer": "alice", "text": "me"}"#)
        .expect("stdin");
    let failed = alice.wait_event("send_failed", WAIT).expect("refused");
    assert_eq!(
        (failed["id"].as_u64(), failed["msg_id"].as_str()),
        (Some(9), Some("")),
        "{failed}"
    );

    // Malformed commands: one error each, with the id when there is one; no exit.
    let bad = [
        (r#"{"id": 10, "cmd": "fly"}"#, Some(10), "unknown cmd"),
        (r#"{"id": 11, "cmd": "send", "peer": "bob"}"#, Some(11), "text"),
        (r#"{"id": 12, "cmd": "peers", "extra": true}"#, Some(12), "extra"),
        (
            r#"{"cmd": "send", "peer": "bob", "text": "unterminated"#,
            None,
            "not a JSON command",
        ),
    ];
    for (n, (line, id, why)) in bad.iter().enumerate() {
        alice.send_line(line).expect("stdin");
        let errors = alice
            .wait_count("error", n + 1, WAIT, |e| e["event"] == "error")
            .unwrap_or_else(|e| panic!("{e}: {}", alice.report()));
        let error = errors.last().expect("one");
        assert_eq!(error["id"].as_u64(), *id, "{line}: {error}");
        assert!(
            error["message"].as_str().is_some_and(|m| m.contains(why)),
            "{line}: {error}"
        );
    }
    // Still running: a command after the bad ones is answered.
    alice.send_line(r#"{"id": 13, "cmd": "status"}"#).expect("stdin");
    let status = alice.wait_event("status", WAIT).expect("status");
    assert_eq!(
        (status["id"].as_u64(), status["connected"].as_bool()),
        (Some(13), Some(true))
    );
    alice.send_line(r#"{"id": 14, "cmd": "quit"}"#).expect("stdin");
    assert!(alice.wait_exit(WAIT).expect("quits").success());
    let texts: Vec<String> = bob
        .events_of("message")
        .iter()
        .map(|e| e["text"].to_string())
        .collect();
    assert!(
        !texts
            .iter()
            .any(|t| t.contains("unterminated") || t.contains("me")),
        "{texts:?}"
    );
    bob.close_stdin();
    bob.wait_exit(WAIT).expect("bob exits");
}
