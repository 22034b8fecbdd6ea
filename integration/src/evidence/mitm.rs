//! MITM detection: a relay that answers name lookups and bundle fetches with its own
//! identity (`e2ee-relay-adversary --adversary substitute_bundle`). For a first contact the two
//! users' safety numbers then differ (comparing them exposes the relay); for a peer
//! already pinned, the agent reports the identity change and applies its policy.

use std::path::Path;
use std::time::Duration;

use anyhow::anyhow;
use e2ee_agent::state::inspect::StateView;
use e2ee_protocol::safety_number::SafetyNumber;
use serde_json::Value;

use super::agents::{is_message, start_relay, wait_published, AdversaryConfig, Agent, AgentOptions, WAIT};
use super::report::Section;
use super::state_files::copy_dir;
use super::{guarded, short, Scale};

/// Runs the scenario.
pub fn run(scale: Scale, work: &Path) -> Section {
    let section = Section::new(
        "mitm",
        "MITM detection (substituted prekey bundle)",
        "A relay that substitutes its own prekey bundle and name claim for a peer's makes the \
         two users' safety numbers differ, and for a peer already pinned it triggers the \
         identity-change policy (always reported; `block` keeps the pin).",
    );
    guarded(section, |s| body(scale, work, s))
}

fn true_number(a: &Agent, b: &Agent) -> anyhow::Result<String> {
    let key = |agent: &Agent| -> anyhow::Result<[u8; 32]> {
        hex::decode(&agent.identity)?
            .try_into()
            .map_err(|_| anyhow!("identity of {} is not 32 bytes", agent.name))
    };
    Ok(
        SafetyNumber::compute(&key(a)?, a.name.as_bytes(), &key(b)?, b.name.as_bytes())
            .digits()
            .to_string(),
    )
}

/// The identity (hex) `dir`'s agent pins for `peer`, read from its state database.
fn pinned(dir: &Path, peer: &str) -> anyhow::Result<String> {
    let view = StateView::read(dir)?;
    Ok(view
        .book
        .pins
        .get(peer)
        .map(|pin| hex::encode(pin.identity.as_bytes()))
        .unwrap_or_default())
}

fn event_str(event: &Value, key: &str) -> String {
    event[key].as_str().unwrap_or_default().to_string()
}

fn body(_scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    // 1. Honest relay: Alice (policy block) and Bob meet, pin each other, compare.
    let data = work.join("relay");
    let mut honest = start_relay(&data, None)?;
    let mut bob = Agent::start("bob", honest.addr, &work.join("bob"))?;
    bob.connected()?;
    wait_published(honest.addr, "bob")?;
    let alice_dir = work.join("alice");
    let block = AgentOptions {
        policy: Some("block".into()),
        script: None,
        ..AgentOptions::default()
    };
    let mut alice = Agent::start_with("alice", honest.addr, &alice_dir, &block)?;
    alice.connected()?;
    let hello = "hello bob, this is alice, before any attack";
    alice.send_text("bob", hello)?;
    bob.wait_for("alice's message", WAIT, is_message(hello))?;
    alice.wait_for("the receipt", WAIT, |e| e["event"] == "delivered")?;
    let number_alice = alice.safety_number("bob")?;
    let number_bob = bob.safety_number("alice")?;
    let number_true = true_number(&alice, &bob)?;
    let bob_identity = bob.identity.clone();
    alice.quit()?;
    bob.quit()?;
    honest.terminate(WAIT)?;
    s.did(
        "Honest relay: Alice (identity policy `block`) and Bob exchanged a message, so each \
         pinned the other's identity, and both ran `/verify`.",
    );
    s.check(
        "baseline through an honest relay: both sides show the same safety number",
        "Alice's = Bob's = the number computed from their real identity keys",
        format!(
            "alice {}…, bob {}…, real {}…",
            &number_alice.get(..10).unwrap_or_default(),
            &number_bob.get(..10).unwrap_or_default(),
            &number_true.get(..10).unwrap_or_default()
        ),
        number_alice == number_bob && number_bob == number_true && !number_true.is_empty(),
    );
    let warn_dir = work.join("alice-warn");
    copy_dir(&alice_dir, &warn_dir)?;

    // 2. The same relay (same data) restarted as a man in the middle.
    let mitm = start_relay(
        &data,
        Some(&AdversaryConfig {
            mode: "substitute_bundle",
            every: 1,
            min_len: 0,
            delay_ms: 1000,
        }),
    )?;
    s.did(
        "Restarted the relay on the same data as `e2ee-relay-adversary --adversary substitute_bundle`: \
         it answers every name lookup with a claim signed by its own identity and every \
         bundle fetch with its own prekey bundle.",
    );

    // 2a. A pinned peer, policy block.
    let script = work.join("alice-block.script");
    std::fs::write(&script, "verify bob\nwait-peer bob timeout=1500\n")?;
    let mut alice = Agent::start_with(
        "alice",
        mitm.addr,
        &alice_dir,
        &AgentOptions {
            policy: Some("block".into()),
            script: Some(script),
            ..AgentOptions::default()
        },
    )?;
    let changed = alice.wait_for("identity_changed", WAIT, |e| e["event"] == "identity_changed")?;
    alice.quit()?;
    let still_pinned = pinned(&alice_dir, "bob")?;
    let impostor = event_str(&changed, "current");
    s.did("Alice (policy `block`, already pinned to Bob) looked Bob up again (`wait-peer bob`).");
    s.saw(format!(
        "Alice: identity_changed peer {} previous {} current {} policy {} action {}; bob is \
         still pinned to {}.",
        event_str(&changed, "peer"),
        short(&event_str(&changed, "previous")),
        short(&impostor),
        event_str(&changed, "policy"),
        event_str(&changed, "action"),
        short(&still_pinned)
    ));
    s.check(
        "pinned peer, policy block: the change is reported and held, the pin kept",
        "identity_changed (bob, previous = Bob's real key, policy block, action held); pin unchanged",
        format!(
            "previous is Bob's key: {}; action {}; pin unchanged: {}",
            event_str(&changed, "previous") == bob_identity,
            event_str(&changed, "action"),
            still_pinned == bob_identity
        ),
        changed["peer"] == "bob"
            && event_str(&changed, "previous") == bob_identity
            && impostor != bob_identity
            && changed["policy"] == "block"
            && changed["action"] == "held"
            && still_pinned == bob_identity,
    );

    // 2b. The same pinned state, policy warn.
    let script = work.join("alice-warn.script");
    std::fs::write(&script, "wait-peer bob timeout=3000\nverify bob\n")?;
    let mut warned = Agent::start_with(
        "alice",
        mitm.addr,
        &warn_dir,
        &AgentOptions {
            policy: Some("warn".into()),
            script: Some(script),
            ..AgentOptions::default()
        },
    )?;
    let change = warned.wait_for("identity_changed", WAIT, |e| e["event"] == "identity_changed")?;
    let number = warned.wait_for("the safety number", WAIT, |e| e["event"] == "safety_number")?;
    warned.quit()?;
    let number_after = event_str(&number, "digits");
    s.did("A copy of Alice's state with policy `warn` did the same, then ran `verify bob`.");
    s.check(
        "pinned peer, policy warn: the change is reported, and the safety number no longer matches Bob's",
        "identity_changed action warned; new safety number ≠ the one compared before",
        format!(
            "action {}; safety number now {}…, before {}…",
            event_str(&change, "action"),
            number_after.get(..10).unwrap_or_default(),
            number_alice.get(..10).unwrap_or_default()
        ),
        change["action"] == "warned" && !number_after.is_empty() && number_after != number_alice,
    );

    // 3. First contact through the substituting relay: carol and dave.
    let mut dave = Agent::start("dave", mitm.addr, &work.join("dave"))?;
    dave.connected()?;
    let mut carol = Agent::start("carol", mitm.addr, &work.join("carol"))?;
    carol.connected()?;
    let to_dave = "hello dave, this is carol (first contact)";
    carol.send_text("dave", to_dave)?;
    carol.wait_for("sent", WAIT, |e| e["event"] == "sent")?;
    let carol_pin = carol.wait_for("pin", WAIT, |e| e["event"] == "peer_pinned")?;
    dave.send_text("carol", "hello carol, this is dave (first contact)")?;
    dave.wait_for("sent", WAIT, |e| e["event"] == "sent")?;
    let number_carol = carol.safety_number("dave")?;
    let number_dave = dave.safety_number("carol")?;
    let number_real = true_number(&carol, &dave)?;
    dave.settle(Duration::from_millis(500));
    let dave_got = dave.matching(0, |e| e["event"] == "message").len();
    let carol_got = carol.matching(0, |e| e["event"] == "message").len();
    carol.quit()?;
    dave.quit()?;
    let log = mitm.drain_log();
    let relay_identity = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["msg"] == "adversary mode active")
        .map(|v| event_str(&v, "impostor"))
        .unwrap_or_default();
    let substitutions = super::agents::adversary_actions(&log).len();
    s.did(
        "First contact through the substituting relay: new agents Carol and Dave each sent \
         the other a message by name, then both ran `/verify`.",
    );
    let carol_pinned = event_str(&carol_pin, "identity");
    s.saw(format!(
        "The relay logged its own identity {relay_identity} and {substitutions} substitutions. \
         Carol pinned dave to {} (Dave's real key is {}).",
        short(&carol_pinned),
        short(&dave.identity)
    ));
    s.saw(format!(
        "Safety numbers: Carol sees {number_carol}, Dave sees {number_dave}, the real pair's is \
         {number_real}."
    ));
    s.check(
        "first contact: the relay's key is pinned in place of Dave's",
        "Carol's pin for dave = the relay's identity ≠ Dave's key",
        format!(
            "pin {}…, relay {}…, dave {}…",
            short(&carol_pinned),
            relay_identity,
            short(&dave.identity)
        ),
        carol_pinned != dave.identity
            && !relay_identity.is_empty()
            && carol_pinned.starts_with(&relay_identity),
    );
    s.check(
        "first contact: comparing safety numbers exposes the relay",
        "Carol's number ≠ Dave's number (and neither is the real pair's)",
        format!(
            "carol = dave: {}; carol = real: {}; dave = real: {}",
            number_carol == number_dave,
            number_carol == number_real,
            number_dave == number_real
        ),
        number_carol != number_dave && number_carol != number_real && number_dave != number_real,
    );
    s.check(
        "the intercepted messages never reach the real peer",
        "Dave shows nothing from Carol, Carol nothing from Dave",
        format!("dave shows {dave_got}, carol shows {carol_got}"),
        dave_got == 0 && carol_got == 0,
    );
    s.summary = format!(
        "substituted keys: safety numbers differ ({}… vs {}…); pinned peer → identity_changed ({}, {})",
        number_carol.get(..5).unwrap_or_default(),
        number_dave.get(..5).unwrap_or_default(),
        event_str(&changed, "action"),
        event_str(&change, "action")
    );
    s.put("impostor", relay_identity);
    s.put("substitutions", substitutions);
    Ok(())
}
