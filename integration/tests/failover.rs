//! An agent given several relay addresses (`--relay a,b`: the relays of one cluster,
//! serving one TLS key) uses one at a time and moves to the next when the one it tries
//! cannot be reached or its link drops (docs/AGENT.md, `relay`):
//!
//! - the first address is dead (a loopback port bound, then closed): the agent goes on
//!   to the second at once, talks through it, and `/status` names it;
//! - the relay in use (A) is killed: the agent goes on to the other relay of its list
//!   (B) at once and talks to a peer of B; then B is killed too, the agent writes with
//!   no relay at all (the text waits in its outbox), and when B comes back the agent
//!   finds it going round its list and resends its outbox there;
//! - a relay of the list presents another TLS key than the one pinned: it is refused
//!   and reported, and the agent stays offline instead of going round the list.
//!
//! The second scenario runs on two SQLite relays (one data directory each), which do
//! not share a store, so the peer lives on B only, and the agent's first contact with it
//! happens after the failover (the agent publishes its prekeys and its name on every
//! connection, so the peer can answer it there). B serves A's certificate and key, as
//! the relays of one cluster do. A last scenario runs a real cluster, relays on one
//! Redis (`redis-server` must be installed, as for `tests/cluster.rs`): the agent's
//! relay dies, what it writes with no relay and what its peer writes meanwhile both
//! arrive once it reaches another relay of the cluster.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Duration;

use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::process::RelayProcess;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(20);

/// A loopback address nothing listens on: a port bound, then closed.
fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

fn agent(name: &str, relays: &str, dir: &Path) -> AgentProcess {
    // Any address stands in for the relay here: `relays` replaces it.
    let placeholder: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    AgentConfig::new(name, placeholder, &dir.join(name))
        .relays(relays)
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "200")
        .start()
        .expect("agent starts")
}

fn connected_to(agent: &mut AgentProcess, relay: &str) -> Value {
    agent
        .wait_for(&format!("connected to {relay}"), WAIT, |e| {
            e["event"] == "connection" && e["state"] == "connected" && e["relay"] == relay
        })
        .unwrap_or_else(|e| panic!("{e}"))
}

fn status(agent: &mut AgentProcess) -> Value {
    agent.send_line("/status").expect("stdin");
    agent.wait_event("status", WAIT).unwrap_or_else(|e| panic!("{e}"))
}

/// Relay B of the cluster: A's certificate and key (A made them on its first start).
fn relay_b(listen: &str, dir: &Path, a_dir: &Path) -> RelayProcess {
    let cert = a_dir.join("tls-cert.pem");
    let key = a_dir.join("tls-key.pem");
    let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
    RelayProcess::start_with_env(
        listen,
        dir,
        &["--tls-cert", &cert, "--tls-key", &key],
        &[("E2EE_RELAY_STORE__FSYNC", "false")],
    )
    .expect("relay B starts")
}

#[test]
fn a_dead_first_address_is_passed_over_for_the_next() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = RelayProcess::start_for_test("127.0.0.1:0", &tmp.path().join("relay")).expect("relay");
    let live = relay.addr.to_string();
    let dead = dead_address().to_string();
    let mut bob = agent("bob", &live, tmp.path());
    connected_to(&mut bob, &live);
    relay.wait_log("name claimed", WAIT).expect("bob's name");

    let mut alice = agent("alice", &format!("{dead},{live}"), tmp.path());
    let failed = alice
        .wait_for("the dead address given up", WAIT, |e| {
            e["event"] == "connection" && e["state"] == "reconnecting" && e["relay"] == dead.as_str()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(failed["next_relay"], live.as_str(), "{failed}");
    assert_eq!(failed["retry_in_ms"], 0, "the next address at once: {failed}");
    connected_to(&mut alice, &live);

    alice
        .send_line("/msg bob through the second relay")
        .expect("stdin");
    bob.wait_message("alice", "through the second relay", WAIT)
        .expect("delivered");
    let status = status(&mut alice);
    assert_eq!(status["connected"], true, "{status}");
    assert_eq!(status["relay"], live.as_str(), "{status}");
    assert_eq!(
        status["relays"],
        serde_json::json!([dead.as_str(), live.as_str()]),
        "{status}"
    );
    // One address: no list in the status, as before.
    let bob_status = self::status(&mut bob);
    assert!(bob_status.get("relays").is_none(), "{bob_status}");
}

#[test]
fn a_killed_relay_is_replaced_by_the_next_of_the_list() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a_dir = tmp.path().join("relay-a");
    let b_dir = tmp.path().join("relay-b");
    let mut relay_a = RelayProcess::start_for_test("127.0.0.1:0", &a_dir).expect("relay A");
    let a = relay_a.addr.to_string();
    let mut b_relay = relay_b("127.0.0.1:0", &b_dir, &a_dir);
    let b = b_relay.addr.to_string();

    // bob lives on B only.
    let mut bob = agent("bob", &b, tmp.path());
    connected_to(&mut bob, &b);
    b_relay.wait_log("name claimed", WAIT).expect("bob's name on B");

    // alice is given both and starts on A; the key she pins there is pinned for B too.
    let mut alice = agent("alice", &format!("{a},{b}"), tmp.path());
    connected_to(&mut alice, &a);
    let pinned = alice
        .wait_for("the key pinned", WAIT, |e| {
            e["event"] == "info"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("pinned the relay's TLS key"))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let said = pinned["message"].as_str().unwrap_or_default();
    assert!(said.contains(&a) && said.contains(&b), "{said}");

    // A dies: alice goes on to B at once, and her first contact with bob is there.
    relay_a.kill9().expect("A stops");
    let lost = alice
        .wait_for("A lost", WAIT, |e| {
            e["event"] == "connection" && e["state"] == "reconnecting" && e["relay"] == a.as_str()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lost["next_relay"], b.as_str(), "{lost}");
    assert_eq!(lost["retry_in_ms"], 0, "the next address at once: {lost}");
    connected_to(&mut alice, &b);
    let up = status(&mut alice);
    assert_eq!(
        (up["connected"].as_bool(), up["relay"].as_str()),
        (Some(true), Some(b.as_str())),
        "{up}"
    );
    assert!(
        up["trust"].as_str().is_some_and(|t| t.contains("pinned")),
        "B is trusted by the pin taken on A: {up}"
    );
    alice
        .send_line("/msg bob hello after the failover")
        .expect("stdin");
    bob.wait_message("alice", "hello after the failover", WAIT)
        .expect("delivered through B");
    // bob answers: alice's name and prekeys were published on B when she connected.
    bob.send_line("/msg alice got it on B").expect("stdin");
    alice
        .wait_message("bob", "got it on B", WAIT)
        .expect("answer through B");

    // B dies too: alice has no relay at all, and what she writes waits in her outbox.
    b_relay.kill9().expect("B stops");
    alice
        .wait_for("B lost", WAIT, |e| {
            e["event"] == "connection" && e["state"] == "reconnecting" && e["relay"] == b.as_str()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    alice
        .send_line("/msg bob written while no relay answered")
        .expect("stdin");
    let deferred = alice
        .wait_for("the text deferred", WAIT, |e| {
            e["event"] == "deferred" && e["code"] == "not_connected"
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let msg_id = deferred["msg_id"].clone();
    let down = status(&mut alice);
    assert_eq!(
        (down["connected"].as_bool(), down["outbox"].as_u64()),
        (Some(false), Some(1)),
        "{down}"
    );

    // B comes back (A stays dead): alice finds it going round her list, resends her
    // outbox there, and bob gets the text.
    let b_relay = relay_b(&b, &b_dir, &a_dir);
    connected_to(&mut alice, &b);
    bob.wait_message("alice", "written while no relay answered", WAIT)
        .expect("resent through B");
    alice
        .wait_for("stored at B", WAIT, |e| {
            e["event"] == "sent" && e["msg_id"] == msg_id
        })
        .unwrap_or_else(|e| panic!("{e}"));
    drop(b_relay);
}

#[test]
fn a_relay_of_the_list_with_another_key_is_reported_and_not_gone_round() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut relay_a =
        RelayProcess::start_for_test("127.0.0.1:0", &tmp.path().join("relay-a")).expect("relay A");
    let a = relay_a.addr.to_string();
    // B makes its own certificate: not a relay of A's cluster.
    let stranger = RelayProcess::start_for_test("127.0.0.1:0", &tmp.path().join("relay-b")).expect("relay B");
    let b = stranger.addr.to_string();

    let mut alice = agent("alice", &format!("{a},{b}"), tmp.path());
    connected_to(&mut alice, &a);
    relay_a.kill9().expect("A stops");
    let error = alice
        .wait_for("B's key refused", WAIT, |e| {
            e["event"] == "error"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("TLS key changed"))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("not reconnecting")),
        "{error}"
    );
    let stopped = alice
        .wait_for("the link offline", WAIT, |e| {
            e["event"] == "connection" && e["state"] == "disconnected" && e["relay"] == b.as_str()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(stopped.get("next_relay").is_none(), "{stopped}");
    // It stays offline: no more attempts at A or B.
    let attempts = alice.events_of("connection").len();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        alice.events_of("connection").len(),
        attempts,
        "{}",
        alice.report()
    );
    let status = status(&mut alice);
    assert_eq!(status["connected"], false, "{status}");
    drop(stranger);
}

/// A relay of a cluster on the Redis at `redis_url`, named `node`, serving the
/// certificate and key in `tls_dir` (made there by the first relay) when given.
fn cluster_relay(
    listen: &str,
    dir: &Path,
    redis_url: &str,
    node: &str,
    tls_dir: Option<&Path>,
) -> RelayProcess {
    std::fs::create_dir_all(dir).expect("relay dir");
    let config = dir.join("relay.toml");
    let mut text =
        format!("[store]\nengine = \"redis\"\nredis_urls = [{redis_url:?}]\nnode_name = {node:?}\n");
    if let Some(tls) = tls_dir {
        text.push_str(&format!(
            "[tls]\ncert_file = {:?}\nkey_file = {:?}\n",
            tls.join("tls-cert.pem"),
            tls.join("tls-key.pem")
        ));
    }
    std::fs::write(&config, text).expect("relay config");
    let config = config.to_string_lossy();
    RelayProcess::start_with_env(listen, &dir.join("data"), &["--config", &config], &[])
        .unwrap_or_else(|e| panic!("relay {node} starts: {e}"))
}

#[test]
fn on_a_redis_cluster_what_was_written_during_the_failover_arrives() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let redis =
        e2ee_relay::store::redis::RedisServer::start(&tmp.path().join("redis")).expect("redis-server starts");
    let url = redis.url();
    // A and C run now; B's address is kept free until B starts.
    let a_dir = tmp.path().join("relay-a");
    let mut relay_a = cluster_relay("127.0.0.1:0", &a_dir, &url, "relay-a", None);
    let a = relay_a.addr.to_string();
    let tls = a_dir.join("data");
    let relay_c = cluster_relay(
        "127.0.0.1:0",
        &tmp.path().join("relay-c"),
        &url,
        "relay-c",
        Some(&tls),
    );
    let c = relay_c.addr.to_string();
    let b = dead_address().to_string();

    // bob stays on C; alice is given A and B, and starts on A.
    let mut bob = agent("bob", &c, tmp.path());
    connected_to(&mut bob, &c);
    relay_c.wait_log("name claimed", WAIT).expect("bob's name");
    let mut alice = agent("alice", &format!("{a},{b}"), tmp.path());
    connected_to(&mut alice, &a);
    alice.send_line("/msg bob hello from A").expect("stdin");
    bob.wait_message("alice", "hello from A", WAIT).expect("A to C");
    bob.send_line("/msg alice hello from C").expect("stdin");
    alice.wait_message("bob", "hello from C", WAIT).expect("C to A");

    // A dies and B is not up yet: alice has no relay. She writes (the text waits in her
    // outbox), and bob writes to her (the cluster keeps it).
    relay_a.kill9().expect("A stops");
    alice
        .wait_for("A lost", WAIT, |e| {
            e["event"] == "connection" && e["state"] == "reconnecting" && e["relay"] == a.as_str()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    alice.send_line("/msg bob written with no relay").expect("stdin");
    let deferred = alice
        .wait_for("the text deferred", WAIT, |e| {
            e["event"] == "deferred" && e["code"] == "not_connected"
        })
        .unwrap_or_else(|e| panic!("{e}"));
    bob.send_line("/msg alice written while you were away")
        .expect("stdin");
    bob.wait_count("texts to alice stored", 2, WAIT, |e| {
        e["event"] == "sent" && e["to"] == "alice"
    })
    .unwrap_or_else(|e| panic!("{e}"));

    // B starts: alice reaches it going round her list; both texts arrive, once.
    let relay_b = cluster_relay(&b, &tmp.path().join("relay-b"), &url, "relay-b", Some(&tls));
    connected_to(&mut alice, &b);
    bob.wait_message("alice", "written with no relay", WAIT)
        .expect("resent through B");
    alice
        .wait_for("stored through B", WAIT, |e| {
            e["event"] == "sent" && e["msg_id"] == deferred["msg_id"]
        })
        .unwrap_or_else(|e| panic!("{e}"));
    alice
        .wait_message("bob", "written while you were away", WAIT)
        .expect("the queue read through B");
    let status = status(&mut alice);
    assert_eq!(
        (status["connected"].as_bool(), status["relay"].as_str()),
        (Some(true), Some(b.as_str())),
        "{status}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        bob.events_of("message").len(),
        2,
        "nothing twice: {}",
        bob.report()
    );
    assert_eq!(
        alice.events_of("message").len(),
        2,
        "nothing twice: {}",
        alice.report()
    );
    drop((relay_b, relay_c, redis));
}
