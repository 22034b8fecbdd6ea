//! Leaving: an agent whose stdin ends (`echo "/msg bob hi" | e2ee-agent …`) waits, at
//! most `leave_wait_ms`, until the relay has stored what was written, then exits; what
//! could not go is reported (`unsent`: kept in the outbox for the next start;
//! `send_failed`: never encrypted, so not kept).

use std::path::Path;
use std::time::{Duration, Instant};

use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::process::RelayProcess;

const WAIT: Duration = Duration::from_secs(20);

fn relay_on(listen: &str, dir: &Path) -> RelayProcess {
    RelayProcess::start_for_test(listen, dir).expect("relay starts")
}

fn agent(name: &str, relay: &RelayProcess, dir: &Path, leave_wait_ms: &str) -> AgentProcess {
    AgentConfig::new(name, relay.addr, &dir.join(name))
        .env("E2EE_AGENT_LEAVE_WAIT_MS", leave_wait_ms)
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "200")
        .start()
        .expect("agent starts")
}

/// Writes `lines` to the agent's stdin, closes it, and waits for a clean exit.
fn pipe_and_wait(agent: &mut AgentProcess, lines: &[&str]) -> Duration {
    for line in lines {
        agent.send_line(line).expect("stdin");
    }
    let start = Instant::now();
    agent.close_stdin();
    let status = agent.wait_exit(WAIT).expect("exits");
    assert!(status.success(), "{} exited with {status}", agent.name());
    start.elapsed()
}

#[test]
fn piped_messages_are_stored_at_the_relay_before_the_agent_exits() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay_on("127.0.0.1:0", &tmp.path().join("relay"));
    let mut bob = agent("bob", &relay, tmp.path(), "10000");
    relay.wait_log("name claimed", WAIT).expect("bob's name");

    // A first contact: name lookup, bundle, X3DH, all after stdin already ended.
    let mut alice = agent("alice", &relay, tmp.path(), "10000");
    pipe_and_wait(
        &mut alice,
        &["/msg bob piped one", "/msg bob piped two", "/msg zed nobody"],
    );
    assert_eq!(alice.events_of("sent").len(), 2, "both stored before the exit");
    assert!(alice.events_of("unsent").is_empty());
    let failed = alice.events_of("send_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["to"], "zed");
    bob.wait_message("alice", "piped one", WAIT).expect("delivered");
    bob.wait_message("alice", "piped two", WAIT).expect("delivered");
}

#[test]
fn what_the_relay_did_not_store_in_time_is_reported_and_sent_at_the_next_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay_dir = tmp.path().join("relay");
    let mut relay = relay_on("127.0.0.1:0", &relay_dir);
    let listen = relay.addr.to_string();
    let mut bob = agent("bob", &relay, tmp.path(), "10000");
    relay.wait_log("name claimed", WAIT).expect("bob's name");
    let mut alice = agent("alice", &relay, tmp.path(), "500");
    alice.send_line("/msg bob hello").expect("stdin");
    bob.wait_message("alice", "hello", WAIT).expect("a session");

    // The relay goes away: alice encrypts (the outbox keeps it) and leaves after 500 ms.
    relay.kill9().expect("relay stops");
    let waited = pipe_and_wait(&mut alice, &["/msg bob while away"]);
    assert!(
        waited >= Duration::from_millis(400),
        "waited {waited:?} for the relay"
    );
    let unsent = alice.wait_event("unsent", WAIT).expect("reported");
    assert_eq!(unsent["count"], 1);
    assert!(alice.events_of("sent").len() == 1, "only hello was stored");

    // A script's `send` with no relay: the text is deferred (it is in the outbox), the
    // step ends, and leaving reports it unsent.
    let script = tmp.path().join("alice.script");
    std::fs::write(&script, "send bob scripted while away\nquit\n").expect("script");
    let mut scripted = AgentConfig::new("alice", relay.addr, &tmp.path().join("alice"))
        .env("E2EE_AGENT_LEAVE_WAIT_MS", "300")
        .script(&script)
        .start()
        .expect("starts");
    let status = scripted.wait_exit(WAIT).expect("the script ends");
    assert!(status.success(), "{}", scripted.report());
    let deferred = scripted.events_of("deferred");
    assert_eq!(deferred.len(), 1, "{}", scripted.report());
    assert_eq!(deferred[0]["code"], "not_connected");
    let unsent = scripted.events_of("unsent");
    assert_eq!(unsent.len(), 1, "{}", scripted.report());
    assert_eq!(unsent[0]["count"], 2, "both texts wait in the outbox");

    // Next start, relay back: the outbox goes out.
    let relay = relay_on(&listen, &relay_dir);
    let mut alice = agent("alice", &relay, tmp.path(), "10000");
    alice.wait_event("sent", WAIT).expect("sent from the outbox");
    bob.wait_message("alice", "while away", WAIT).expect("delivered");
    bob.wait_message("alice", "scripted while away", WAIT)
        .expect("delivered");
    drop(alice);
}
