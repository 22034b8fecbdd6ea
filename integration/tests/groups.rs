//! Group chats over MLS through the relay (docs/PROTOCOL.md 8, docs/AGENT.md 2.3):
//! agents create groups, talk, add and remove members; the relay keeps one order per
//! group, so two commits for one epoch never fork the group, and members offline across
//! several epochs (and a relay killed -9) catch up in order.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use e2ee_integration::agent_process::{AgentConfig, AgentProcess};
use e2ee_integration::process::RelayProcess;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn relay(listen: &str, dir: &Path) -> RelayProcess {
    RelayProcess::start_for_test(listen, dir).expect("relay starts")
}

fn start(name: &str, relay: &RelayProcess, dir: &Path) -> AgentProcess {
    AgentConfig::new(name, relay.addr, &dir.join(name))
        .env("E2EE_AGENT_RECONNECT__INITIAL_MS", "50")
        .env("E2EE_AGENT_RECONNECT__MAX_MS", "300")
        .start()
        .expect("agent starts")
}

/// Waits until the relay has every identity's name claim and KeyPackages.
fn wait_ready(relay: &RelayProcess, agents: &mut [&mut AgentProcess]) {
    let ids: Vec<String> = agents
        .iter_mut()
        .map(|a| a.identity(WAIT).expect("started")[..16].to_owned())
        .collect();
    let mut named: HashSet<String> = HashSet::new();
    let mut published: HashSet<String> = HashSet::new();
    let deadline = std::time::Instant::now() + WAIT;
    while ids
        .iter()
        .any(|id| !named.contains(id) || !published.contains(id))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "not ready: {named:?} {published:?}"
        );
        for line in relay.drain_log() {
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let id = value["identity"].as_str().unwrap_or_default().to_owned();
            match value["msg"].as_str() {
                Some("name claimed") => {
                    named.insert(id);
                }
                Some("key packages published") => {
                    published.insert(id);
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn group_message(agent: &mut AgentProcess, group: &str, from: &str, text: &str) -> Value {
    agent
        .wait_for(&format!("{from}'s {text:?} in {group}"), WAIT, |e| {
            e["event"] == "group_message" && e["group"] == group && e["from"] == from && e["text"] == text
        })
        .unwrap_or_else(|e| panic!("{e:#}: {}", agent.report()))
}

fn joined(agent: &mut AgentProcess, group: &str) -> Value {
    agent
        .wait_for(&format!("joined {group}"), WAIT, |e| {
            e["event"] == "group_joined" && e["group"] == group
        })
        .unwrap_or_else(|e| panic!("{e:#}: {}", agent.report()))
}

/// The members `agent` lists for `group` (`/groups`), sorted, and the group's epoch.
fn members(agent: &mut AgentProcess, group: &str) -> (u64, Vec<String>) {
    agent.send_line("/groups").expect("stdin");
    let listed = agent.wait_event("groups", WAIT).expect("groups");
    let line = (listed["groups"].as_array().expect("groups").iter())
        .find(|g| g["group"] == group)
        .unwrap_or_else(|| panic!("{} lists no {group}: {listed}", agent.name()))
        .clone();
    let mut names: Vec<String> = (line["members"].as_array().expect("members").iter())
        .map(|m| m.as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    (line["epoch"].as_u64().expect("epoch"), names)
}

/// Waits until `agent` lists `group` with exactly `expected` (sorted) as members.
fn wait_members(agent: &mut AgentProcess, group: &str, expected: &[&str]) -> u64 {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (epoch, names) = members(agent, group);
        if names == expected {
            return epoch;
        }
        if std::time::Instant::now() >= deadline {
            let name = agent.name().to_owned();
            panic!(
                "{name} lists {names:?} in {group}, not {expected:?}: {}",
                agent.report()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn no_event(agent: &mut AgentProcess, matches: impl Fn(&Value) -> bool) -> bool {
    !agent.events().iter().any(matches)
}

#[test]
fn a_three_member_group_talks_adds_a_fourth_and_removes_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay("127.0.0.1:0", &tmp.path().join("relay"));
    let [mut alice, mut bob, mut carol, mut dave] =
        ["alice", "bob", "carol", "dave"].map(|n| start(n, &relay, tmp.path()));
    wait_ready(&relay, &mut [&mut alice, &mut bob, &mut carol, &mut dave]);

    alice.send_line("/group create team bob carol").expect("stdin");
    for a in [&mut alice, &mut bob, &mut carol] {
        joined(a, "team");
    }
    bob.send_line("/g team hello from bob").expect("stdin");
    group_message(&mut alice, "team", "bob", "hello from bob");
    group_message(&mut carol, "team", "bob", "hello from bob");
    bob.wait_for("group_sent", WAIT, |e| e["event"] == "group_sent")
        .expect("stored for every member");

    // carol adds dave: dave joins, and gets nothing said before.
    carol.send_line("/group add team dave").expect("stdin");
    joined(&mut dave, "team");
    for a in [&mut alice, &mut bob, &mut carol, &mut dave] {
        wait_members(a, "team", &["alice", "bob", "carol", "dave"]);
    }
    dave.send_line("/g team hi, dave here").expect("stdin");
    for a in [&mut alice, &mut bob, &mut carol] {
        group_message(a, "team", "dave", "hi, dave here");
    }

    // alice removes bob: bob learns it, the others go on without him.
    alice.send_line("/group remove team bob").expect("stdin");
    bob.wait_for("removed", WAIT, |e| {
        e["event"] == "group_removed" && e["group"] == "team"
    })
    .expect("bob is told");
    for a in [&mut alice, &mut carol, &mut dave] {
        wait_members(a, "team", &["alice", "carol", "dave"]);
    }
    dave.send_line("/g team after bob left").expect("stdin");
    group_message(&mut alice, "team", "dave", "after bob left");
    group_message(&mut carol, "team", "dave", "after bob left");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        no_event(&mut bob, |e| e["event"] == "group_message"
            && e["text"] == "after bob left"),
        "the removed member reads nothing after its removal"
    );
    assert!(
        no_event(&mut dave, |e| e["event"] == "group_message"
            && e["text"] == "hello from bob"),
        "the added member reads nothing from before it joined"
    );
    bob.send_line("/groups").expect("stdin");
    let listed = bob.wait_event("groups", WAIT).expect("groups");
    assert_eq!(listed["groups"].as_array().map(Vec::len), Some(0), "{listed}");
    for a in [&mut alice, &mut bob, &mut carol, &mut dave] {
        assert!(
            no_event(a, |e| e["event"] == "group_failed" || e["event"] == "error"),
            "{}",
            a.report()
        );
    }
}

#[test]
fn two_members_committing_at_once_do_not_fork_the_group() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay = relay("127.0.0.1:0", &tmp.path().join("relay"));
    let [mut alice, mut bob, mut carol, mut dave] =
        ["alice", "bob", "carol", "dave"].map(|n| start(n, &relay, tmp.path()));
    wait_ready(&relay, &mut [&mut alice, &mut bob, &mut carol, &mut dave]);
    alice.send_line("/group create pair bob").expect("stdin");
    joined(&mut bob, "pair");
    wait_members(&mut alice, "pair", &["alice", "bob"]);

    // Both commit for the same epoch; the relay takes one, the other is made again.
    alice.send_line("/group add pair carol").expect("stdin");
    bob.send_line("/group add pair dave").expect("stdin");
    joined(&mut carol, "pair");
    joined(&mut dave, "pair");
    let all = ["alice", "bob", "carol", "dave"];
    let epochs: Vec<u64> = [&mut alice, &mut bob, &mut carol, &mut dave]
        .into_iter()
        .map(|a| wait_members(a, "pair", &all))
        .collect();
    assert!(
        epochs.iter().all(|e| *e == epochs[0]),
        "one epoch everywhere: {epochs:?}"
    );
    carol.send_line("/g pair one group").expect("stdin");
    for a in [&mut alice, &mut bob, &mut dave] {
        group_message(a, "pair", "carol", "one group");
    }
}

#[test]
fn a_member_offline_across_epochs_and_a_relay_killed_9_catch_up_in_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let relay_dir = tmp.path().join("relay");
    let mut first = relay("127.0.0.1:0", &relay_dir);
    let addr = first.addr;
    let [mut alice, mut bob, mut carol, mut dave] =
        ["alice", "bob", "carol", "dave"].map(|n| start(n, &first, tmp.path()));
    wait_ready(&first, &mut [&mut alice, &mut bob, &mut carol, &mut dave]);
    alice.send_line("/group create crew bob carol").expect("stdin");
    joined(&mut carol, "crew");
    joined(&mut bob, "crew");
    wait_members(&mut alice, "crew", &["alice", "bob", "carol"]);

    // carol goes away; the group moves on three epochs with messages between.
    carol.kill9().expect("carol stops");
    alice.send_line("/g crew one").expect("stdin");
    alice.send_line("/group add crew dave").expect("stdin");
    joined(&mut dave, "crew");
    wait_members(&mut alice, "crew", &["alice", "bob", "carol", "dave"]);
    dave.send_line("/g crew two").expect("stdin");
    group_message(&mut alice, "crew", "dave", "two");
    alice.send_line("/group remove crew bob").expect("stdin");
    wait_members(&mut alice, "crew", &["alice", "carol", "dave"]);
    alice.send_line("/g crew three").expect("stdin");
    group_message(&mut dave, "crew", "alice", "three");
    // The relay dies with carol's copies stored and undelivered; it comes back.
    first.kill9().expect("kill the relay");
    let second = relay(&addr.to_string(), &relay_dir);
    let mut carol = start("carol", &second, tmp.path());
    for text in ["one", "two", "three"] {
        let from = if text == "two" { "dave" } else { "alice" };
        group_message(&mut carol, "crew", from, text);
    }
    let order: Vec<String> = (carol.events().iter())
        .filter(|e| e["event"] == "group_message" || e["event"] == "group_members")
        .map(|e| match e["event"].as_str() {
            Some("group_message") => e["text"].as_str().unwrap_or_default().to_owned(),
            _ => format!("epoch {}", e["epoch"]),
        })
        .collect();
    assert_eq!(
        order,
        vec!["one", "epoch 2", "two", "epoch 3", "three"],
        "{}",
        carol.report()
    );
    wait_members(&mut carol, "crew", &["alice", "carol", "dave"]);
    carol.send_line("/g crew back").expect("stdin");
    group_message(&mut alice, "crew", "carol", "back");
    group_message(&mut dave, "crew", "carol", "back");
}
