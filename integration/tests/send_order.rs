//! Messages go to the relay in order, whatever it refuses: a sender that writes faster
//! than the relay's send bucket allows has messages refused (`RateLimited`) and sent
//! again, and the receiver still gets every one, once, with no decrypt failure, out of
//! order by at most the send window (a receiver takes a chain out of order only within
//! MAX_SKIP positions; before the send window, a flood lost messages as `too_old`).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::Duration;

use e2ee_agent::send_window::SEND_WINDOW;
use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::process::RelayProcess;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A counter of the relay (`name` ends its metric name), from its metrics endpoint.
fn counter(port: u16, name: &str) -> u64 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics port");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    text.lines()
        .find(|l| l.split_whitespace().next().is_some_and(|n| n.ends_with(name)))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn start(name: &str, relay: &RelayProcess, dir: &std::path::Path) -> AgentProcess {
    AgentConfig::new(name, relay.addr, &dir.join(name))
        .start()
        .expect("agent starts")
}

fn texts_from(agent: &mut AgentProcess, from: &str) -> Vec<String> {
    agent
        .events()
        .iter()
        .filter(|e| e["event"] == "message" && e["from"] == from)
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn failures(agent: &mut AgentProcess) -> Vec<Value> {
    let bad = ["decrypt_failure", "send_failed", "unparsed_output"];
    agent
        .events()
        .iter()
        .filter(|e| e["event"].as_str().is_some_and(|k| bad.contains(&k)))
        .cloned()
        .collect()
}

/// What the relay refuses a flood by.
#[derive(Clone, Copy)]
enum Limit {
    /// A send bucket of 20 refilled by 400 a second (`RateLimited`).
    SendBucket,
    /// At most 300 unacknowledged messages stored for the sender, retry after 200 ms
    /// (`QuotaExceeded`).
    SenderQuota,
}

impl Limit {
    fn env(self) -> [(&'static str, &'static str); 2] {
        match self {
            Limit::SendBucket => [
                ("E2EE_RELAY_LIMITS__RATE_CAPACITY", "20"),
                ("E2EE_RELAY_LIMITS__RATE_REFILL_PER_SEC", "400"),
            ],
            Limit::SenderQuota => [
                ("E2EE_RELAY_LIMITS__SENDER_QUOTA_MESSAGES", "300"),
                ("E2EE_RELAY_LIMITS__QUOTA_RETRY_AFTER_MS", "200"),
            ],
        }
    }

    /// The `code` of the `deferred` events it causes.
    fn code(self) -> &'static str {
        match self {
            Limit::SendBucket => "rate_limited",
            Limit::SenderQuota => "quota_exceeded",
        }
    }

    /// The relay's counter of refusals by this limit.
    fn counter(self) -> &'static str {
        match self {
            Limit::SendBucket => "rate_limited_total",
            Limit::SenderQuota => "sender_quota_exceeded_total",
        }
    }
}

/// Alice writes `count` lines at once to a relay that refuses by `limit`, with bob
/// online, or (`offline`) with bob away, so that he receives them as one stored backlog.
fn flood_arrives_complete(count: usize, offline: bool, limit: Limit) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let [a, b] = limit.env();
    let env = [("E2EE_RELAY_STORE__FSYNC", "false"), a, b];
    let relay = RelayProcess::start_with_env(
        "127.0.0.1:0",
        &tmp.path().join("relay"),
        &["--metrics-listen", &metrics],
        &env,
    )
    .expect("relay starts");
    let mut bob = start("bob", &relay, tmp.path());
    bob.wait_event("connection", WAIT).expect("bob connects");
    let mut alice = start("alice", &relay, tmp.path());
    alice.wait_event("connection", WAIT).expect("alice connects");
    // One message first, so that the flood does not wait for the session.
    alice.send_line("/msg bob hello").expect("stdin");
    bob.wait_message("alice", "hello", WAIT).expect("first message");
    if offline {
        bob.close_stdin();
        bob.wait_exit(WAIT).expect("bob stops");
    }

    let expected: Vec<String> = (0..count).map(|i| format!("m-{i:04}")).collect();
    for text in &expected {
        alice.send_line(&format!("/msg bob {text}")).expect("stdin");
    }
    alice
        .wait_count("sent", count + 1, WAIT * 2, |e| e["event"] == "sent")
        .expect("every message stored by the relay");
    let refusals = counter(port, limit.counter());
    assert!(refusals > 0, "the flood was not refused: the test shows nothing");
    if offline {
        bob = start("bob", &relay, tmp.path());
    }
    let last = expected.last().expect("messages").clone();
    bob.wait_message("alice", &last, WAIT * 2)
        .expect("the last message");

    let got: Vec<String> = texts_from(&mut bob, "alice")
        .into_iter()
        .filter(|t| t.starts_with("m-"))
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    let missing: Vec<&String> = expected.iter().filter(|t| !got.contains(t)).collect();
    let twice = got.len() - sorted.len();
    assert!(
        got.len() == count && sorted == expected,
        "bob shows {} texts, {twice} of them twice, and misses {missing:?}\nalice's resets: {:?}\nbob's resets: {:?}\n{}",
        got.len(),
        alice.events_of("session_reset"),
        bob.events_of("session_reset"),
        bob.report()
    );
    // Out of order by at most the send window: what a refused message is overtaken by.
    let displaced = (got.iter().enumerate())
        .map(|(shown, text)| {
            expected
                .binary_search(text)
                .map_or(usize::MAX, |sent| sent.abs_diff(shown))
        })
        .max()
        .unwrap_or(0);
    assert!(
        displaced <= SEND_WINDOW,
        "a message was shown {displaced} places from where it was sent"
    );
    assert!(failures(&mut bob).is_empty(), "bob: {:#?}", failures(&mut bob));
    assert!(
        failures(&mut alice).is_empty(),
        "alice: {:#?}",
        failures(&mut alice)
    );
    // The refusals are reported as what they are: `deferred` (with the relay's code),
    // once per message, each followed by `sent`; nothing is reported failed.
    let deferred = alice.events_of("deferred");
    assert!(!deferred.is_empty(), "no message reported deferred");
    assert!(
        deferred
            .iter()
            .all(|e| e["code"] == limit.code() && e["to"] == "bob"),
        "{:?}",
        deferred.first()
    );
    let ids: HashSet<String> = deferred
        .iter()
        .map(|e| e["msg_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.len(), deferred.len(), "one deferred event per message");
    let sent: HashSet<String> = (alice.events_of("sent").iter())
        .map(|e| e["msg_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(ids.is_subset(&sent), "every deferred message is sent later");
    assert!(
        alice.events_of("error").is_empty(),
        "{:?}",
        alice.events_of("error")
    );
}

#[test]
fn a_flood_past_the_send_bucket_arrives_complete_within_the_window() {
    flood_arrives_complete(1500, false, Limit::SendBucket);
}

#[test]
fn a_flood_to_an_offline_peer_arrives_complete_within_the_window() {
    flood_arrives_complete(1500, true, Limit::SendBucket);
}

#[test]
fn a_flood_past_the_sender_quota_arrives_complete_within_the_window() {
    flood_arrives_complete(1500, false, Limit::SenderQuota);
}
