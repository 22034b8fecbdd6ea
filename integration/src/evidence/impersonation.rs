//! Impersonation: attempts to pass one identity off as another, and what the agents make
//! of them (`AGENT.md` section 6, `PROTOCOL.md` 1.8).
//!
//! - `takeover`: a second identity starts an agent as `bob` while the real Bob holds
//!   the name. Names come from the relay's registry only, so its messages are shown
//!   under its fingerprint, no pin moves, and what is sent to `bob` reaches the real Bob.
//! - `verified_mitm`: a relay substituting its own claim and bundle for a peer the user
//!   has verified (`/trust bob <digits>`), under policy `warn`: the change is held,
//!   nothing is encrypted to the relay's key, `/verify` shows both keys labelled, and
//!   `/reject` (or `/trust` with the pinned key's digits) keeps the pin.
//! - `lease`: Bob loses his state and a new identity claims `bob` after the lease ran
//!   out: the registry binds the name to it, and Alice (policy `block`) holds the change.
//! - `relabel`: a relay delivering fresh messages under a relay `msg_id` the recipient
//!   has already seen (`e2ee-relay-adversary --adversary relabel`): every message is still shown,
//!   exactly once.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use e2ee_agent::state::inspect::StateView;
use serde_json::Value;

use super::agents::{
    is_message, start_relay, start_relay_with, wait_bound, wait_published, AdversaryConfig, Agent,
    AgentOptions, Seen, WAIT,
};
use super::report::Section;
use super::state_files::copy_dir;
use super::{guarded, short, Scale};
use crate::process::RelayProcess;

/// Time allowed for anything unexpected (a message to the impostor, a second copy) to show up.
const SETTLE: Duration = Duration::from_millis(500);
/// The lease the relay of the lease scenario gives a name holder, in seconds.
const LEASE_SECS: &str = "1";
/// Texts Alice sends to bob through the substituting relay when a send is not refused.
const BEFORE_LOOKUP: &str = "bob, this goes out before any lookup";
const AFTER_REJECT: &str = "bob, this goes out after rejecting the relay's key";
/// Smallest payload the relabelling relay targets: texts, not receipts (see
/// [`super::adversarial`]).
const MIN_LEN: usize = 150;

/// Runs every impersonation scenario; one section each.
pub fn run(scale: Scale, work: &Path) -> Vec<Section> {
    vec![
        guarded(
            Section::new(
                "impersonation-takeover",
                "Impersonation: name takeover by a second identity",
                "An identity that calls itself `bob` while the real Bob holds the name is never \
                 shown as `bob` (its messages carry its fingerprint), moves no pin, and receives \
                 nothing sent to `bob`, which reaches the real Bob.",
            ),
            |s| takeover(scale, work, s),
        ),
        guarded(
            Section::new(
                "impersonation-verified-mitm",
                "Impersonation: a relay substituting a verified contact",
                "A relay that substitutes its own claim and bundle for a contact the user \
                 verified by safety number cannot get a message encrypted to its key, even under \
                 policy `warn`: the change is reported and held, sends are refused while it is held, \
                 `/verify` shows the pinned and the new key labelled, and `/reject` or `/trust` \
                 with the pinned key's digits keeps the pin.",
            ),
            |s| verified_mitm(scale, work, s),
        ),
        guarded(
            Section::new(
                "impersonation-lease",
                "Impersonation: a new identity claims a name after its lease ran out",
                "Once the holder's lease has run out, another identity can take the name in the \
                 relay's registry, but a peer who pinned the old key (policy `block`) is told and \
                 holds the change: the new key's messages are kept unread and nothing is sent \
                 to it until the user decides.",
            ),
            |s| lease(scale, work, s),
        ),
        guarded(
            Section::new(
                "impersonation-relabel",
                "Impersonation: fresh messages under an already-seen relay message id",
                "A relay that delivers a fresh message under a relay `msg_id` the recipient has \
                 already seen (`--adversary relabel`) cannot make it disappear as a \
                 \"redelivery\": every text is decrypted and shown, exactly once.",
            ),
            |s| relabel(scale, work, s),
        ),
    ]
}

fn event_str(event: &Value, key: &str) -> String {
    event[key].as_str().unwrap_or_default().to_string()
}

fn policy(name: &str) -> AgentOptions {
    AgentOptions {
        policy: Some(name.to_string()),
        script: None,
        ..AgentOptions::default()
    }
}

/// An interactive agent, connected.
fn online(name: &str, relay: &RelayProcess, dir: &Path, options: &AgentOptions) -> anyhow::Result<Agent> {
    let mut agent = Agent::start_with(name, relay.addr, dir, options)?;
    agent.connected()?;
    Ok(agent)
}

/// An interactive agent, connected, whose name the registry binds to it.
fn registered(name: &str, relay: &RelayProcess, dir: &Path, options: &AgentOptions) -> anyhow::Result<Agent> {
    let agent = online(name, relay, dir, options)?;
    wait_bound(relay.addr, name, Some(&agent.identity))?;
    Ok(agent)
}

/// `/peers` and the entry of `peer` (null if it is not pinned).
fn pin_of(agent: &mut Agent, peer: &str) -> anyhow::Result<Value> {
    let mark = agent.mark();
    agent.command("/peers")?;
    let peers = agent.wait_from(mark, "the peer list", WAIT, |e| e["event"] == "peers")?;
    Ok(peers.event["peers"]
        .as_array()
        .and_then(|list| list.iter().find(|p| p["name"] == peer))
        .cloned()
        .unwrap_or(Value::Null))
}

/// One line about a pin: identity, verified, pending change.
fn describe_pin(pin: &Value) -> String {
    if pin.is_null() {
        return "not pinned".into();
    }
    format!(
        "pinned to {} (verified {}, pending change {}, {} held)",
        short(&event_str(pin, "identity")),
        pin["verified"],
        pin["pending_change"],
        pin["held"]
    )
}

/// `from` sends `text` to `to` by name and waits until `to` shows it.
fn talk(from: &mut Agent, to: &mut Agent, text: &str) -> anyhow::Result<Seen> {
    let mark = to.mark();
    from.send_text(&to.name.clone(), text)?;
    to.wait_from(mark, "the message", WAIT, is_message(text))
}

fn takeover(scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    let policies = scale.pick(vec!["warn"], vec!["warn", "block", "accept"]);
    s.did(format!(
        "For each identity policy ({}): an honest relay, Bob, Alice and Carol with that policy; \
         Alice and Bob exchanged a message (each pinned the other), Carol never talked to Bob.",
        policies.join(", ")
    ));
    s.did(
        "An impostor started `e2ee-agent --name bob` with a fresh identity of its own, wrote to \
         Alice and to Carol, then Alice and Carol each sent a message to `bob`.",
    );
    let mut summaries = Vec::new();
    for policy_name in policies {
        summaries.push(takeover_under(
            policy_name,
            &work.join(format!("takeover-{policy_name}")),
            s,
        )?);
    }
    s.summary = summaries.join("; ");
    Ok(())
}

fn takeover_under(policy_name: &str, dir: &Path, s: &mut Section) -> anyhow::Result<String> {
    let relay = start_relay(&dir.join("relay"), None)?;
    let options = policy(policy_name);
    let mut bob = registered("bob", &relay, &dir.join("bob"), &AgentOptions::default())?;
    let mut alice = registered("alice", &relay, &dir.join("alice"), &options)?;
    let mut carol = registered("carol", &relay, &dir.join("carol"), &options)?;
    talk(&mut alice, &mut bob, "hello bob, this is alice")?;
    talk(&mut bob, &mut alice, "hi alice, this is bob")?;
    let bob_id = bob.identity.clone();

    let mut impostor = Agent::start("bob", relay.addr, &dir.join("impostor"))?;
    impostor.connected()?;
    let impostor_id = impostor.identity.clone();
    let refused = impostor
        .wait_for("its name claim refused", WAIT, |e| {
            e["event"] == "error" && e["message"].as_str().is_some_and(|m| m.contains("not_owner"))
        })
        .is_ok();
    let registry = wait_published(relay.addr, "bob")?;
    let to_alice = "alice, it is bob: this is my new key";
    let to_carol = "hi carol, bob here, nice to meet you";
    impostor.send_text("alice", to_alice)?;
    impostor.send_text("carol", to_carol)?;
    let shown_alice = alice.wait_for("the impostor's message", WAIT, is_message(to_alice))?;
    let shown_carol = carol.wait_for("the impostor's message", WAIT, is_message(to_carol))?;
    let fingerprint = format!("#{}", short(&impostor_id));
    let shown_as = |e: &Value| (event_str(e, "from"), event_str(e, "from_identity"));
    let (alice_from, alice_from_id) = shown_as(&shown_alice);
    let (carol_from, carol_from_id) = shown_as(&shown_carol);
    s.saw(format!(
        "[{policy_name}] The relay refused the impostor's claim of `bob` (error not_owner seen: \
         {refused}); the registry still binds bob to {} (the real Bob is {}). The impostor is {}.",
        short(&registry),
        short(&bob_id),
        short(&impostor_id)
    ));
    s.saw(format!(
        "[{policy_name}] Alice showed the impostor's text from \"{alice_from}\" ({}), Carol from \
         \"{carol_from}\" ({}).",
        short(&alice_from_id),
        short(&carol_from_id)
    ));
    s.check(
        format!("[{policy_name}] the relay keeps the name for the real Bob"),
        "the impostor's claim refused (not_owner); the registry binds bob to Bob's key",
        format!(
            "refused: {refused}; registry: {}",
            if registry == bob_id {
                "Bob's key"
            } else {
                "another key"
            }
        ),
        refused && registry == bob_id,
    );
    let changes = alice.matching(0, |e| e["event"] == "identity_changed").len()
        + carol.matching(0, |e| e["event"] == "identity_changed").len();
    let as_bob = alice
        .matching(0, |e| {
            e["event"] == "message" && e["from"] == "bob" && e["from_identity"] != bob_id.as_str()
        })
        .len()
        + carol
            .matching(0, |e| e["event"] == "message" && e["from"] == "bob")
            .len();
    s.check(
        format!("[{policy_name}] the impostor's messages are shown under its fingerprint, never as bob"),
        format!("Alice and Carol: from = {fingerprint}, from_identity = the impostor; no identity_changed"),
        format!(
            "alice: from {alice_from}; carol: from {carol_from}; messages shown as bob from another key: \
             {as_bob}; identity_changed events: {changes}"
        ),
        alice_from == fingerprint
            && carol_from == fingerprint
            && alice_from_id == impostor_id
            && carol_from_id == impostor_id
            && as_bob == 0
            && changes == 0,
    );

    // What Alice and Carol now send to `bob` goes to the real Bob.
    let for_bob = "a secret for the real bob";
    let first_contact = "carol to bob, first contact";
    let got_alice = talk(&mut alice, &mut bob, for_bob)?;
    let got_carol = talk(&mut carol, &mut bob, first_contact)?;
    impostor.settle(SETTLE);
    let impostor_got = impostor.matching(0, |e| e["event"] == "message").len();
    let alice_pin = pin_of(&mut alice, "bob")?;
    let carol_pin = pin_of(&mut carol, "bob")?;
    s.saw(format!(
        "[{policy_name}] Bob showed Alice's text from \"{}\" and Carol's from \"{}\"; the impostor \
         showed {impostor_got} messages. Alice's bob: {}; Carol's bob: {}.",
        event_str(&got_alice.event, "from"),
        event_str(&got_carol.event, "from"),
        describe_pin(&alice_pin),
        describe_pin(&carol_pin)
    ));
    s.check(
        format!("[{policy_name}] the pins stay on the real Bob"),
        "Alice's and Carol's pin for bob = Bob's key, no pending change",
        format!(
            "alice: {}; carol: {}",
            describe_pin(&alice_pin),
            describe_pin(&carol_pin)
        ),
        [&alice_pin, &carol_pin]
            .iter()
            .all(|pin| pin["identity"] == bob_id.as_str() && pin["pending_change"] == false),
    );
    s.check(
        format!("[{policy_name}] what is sent to bob reaches the real Bob, nothing reaches the impostor"),
        "Bob shows both texts (from alice, from carol); the impostor shows 0",
        format!(
            "bob shows them from {} and {}; impostor shows {impostor_got}",
            event_str(&got_alice.event, "from"),
            event_str(&got_carol.event, "from")
        ),
        got_alice.event["from"] == "alice" && got_carol.event["from"] == "carol" && impostor_got == 0,
    );
    impostor.quit()?;
    for agent in [&mut alice, &mut bob, &mut carol] {
        agent.quit()?;
    }
    Ok(format!(
        "{policy_name}: impostor shown as {fingerprint}, pins kept, it received {impostor_got}"
    ))
}

/// The relay's own identity (short) from its `adversary mode active` log line.
fn relay_identity(log: &[String]) -> String {
    log.iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["msg"] == "adversary mode active")
        .map(|v| event_str(&v, "impostor"))
        .unwrap_or_default()
}

fn count_action(actions: &[(String, String)], action: &str) -> usize {
    actions.iter().filter(|(a, _)| a == action).count()
}

fn verified_mitm(_scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    let dir = work.join("verified-mitm");
    let data = dir.join("relay");
    let alice_dir = dir.join("alice");
    let warn = policy("warn");

    // 1. Honest relay: Alice verifies Bob with the digits Bob reads out.
    let mut honest = start_relay(&data, None)?;
    let mut bob = registered("bob", &honest, &dir.join("bob"), &AgentOptions::default())?;
    let mut alice = online("alice", &honest, &alice_dir, &warn)?;
    talk(&mut alice, &mut bob, "hello bob, let us compare safety numbers")?;
    alice.wait_for("the receipt", WAIT, |e| e["event"] == "delivered")?;
    let alice_sees = alice.safety_number("bob")?;
    let bob_reads = bob.safety_number("alice")?;
    let mark = alice.mark();
    alice.command(&format!("/trust bob {bob_reads}"))?;
    let verified = alice.wait_from(mark, "peer_verified", WAIT, |e| e["event"] == "peer_verified")?;
    let bob_id = bob.identity.clone();
    let alice_id = alice.identity.clone();
    alice.quit()?;
    bob.quit()?;
    honest.terminate(WAIT)?;
    s.did(
        "Honest relay: Alice (policy `warn`) and Bob exchanged a message; both ran `/verify`, and \
         Alice typed the digits Bob read out: `/trust bob <digits>`.",
    );
    s.check(
        "baseline: Alice verified the real Bob by safety number",
        "Alice's number = Bob's; peer_verified for Bob's key",
        format!(
            "numbers equal: {}; verified {}",
            alice_sees == bob_reads,
            short(&event_str(&verified.event, "identity"))
        ),
        !bob_reads.is_empty() && alice_sees == bob_reads && verified.event["identity"] == bob_id.as_str(),
    );

    // 2. The same relay data, now a man in the middle.
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
        "Restarted the relay on the same data as `e2ee-relay-adversary --adversary substitute_bundle` (its \
         own claim for every name, its own bundle for every fetch).",
    );
    // 2a. With a session, the first send of a connection goes to the pinned key at once,
    // and the registry is asked in the background: the relay answers with its own claim.
    let mut alice = online("alice", &mitm, &alice_dir, &warn)?;
    let mark = alice.mark();
    alice.send_text("bob", BEFORE_LOOKUP)?;
    let early = alice
        .wait_from(mark, "the first send", WAIT, |e| {
            e["event"] == "sent" || e["event"] == "send_failed"
        })?
        .event;
    let changed = alice
        .wait_from(mark, "identity_changed", WAIT, |e| {
            e["event"] == "identity_changed"
        })?
        .event;
    alice.quit()?;
    let mut log = mitm.drain_log();
    let impostor = event_str(&changed, "current");
    let trust_dir = dir.join("alice-trust");
    copy_dir(&alice_dir, &trust_dir)?;
    s.did(
        "Alice, restarted on it, sent `/msg bob ...` (she has a session with Bob): the first \
         message of a connection goes to the pinned key and the agent asks the registry for \
         bob at the same time. Then she was restarted (a copy of her state was kept) and sent \
         `/msg bob ...` again.",
    );
    s.saw(format!(
        "That first send: {} (to the pinned key); the registry check that came with it: \
         identity_changed.",
        event_str(&early, "event")
    ));
    // 2c. Alice, restarted, tries to write to bob.
    let mut alice = online("alice", &mitm, &alice_dir, &warn)?;
    let attempt = "bob, are you still there? (after the substituted lookup)";
    let mark = alice.mark();
    alice.send_text("bob", attempt)?;
    let refusal = alice
        .wait_from(mark, "the send refused", WAIT, |e| {
            e["event"] == "send_failed" || e["event"] == "error" || e["event"] == "sent"
        })?
        .event;
    alice.settle(SETTLE);
    let sent = alice.matching(mark, |e| e["event"] == "sent").len();
    let view = StateView::read(&alice_dir)?;
    let impostor_key: Option<[u8; 32]> = hex::decode(&impostor).ok().and_then(|b| b.try_into().ok());
    let session_with_impostor = impostor_key.is_some_and(|k| view.sessions.contains_key(&k));
    let outbox_to_impostor = (view.outbox.iter()).any(|e| Some(*e.recipient.as_bytes()) == impostor_key);
    let pin = pin_of(&mut alice, "bob")?;
    log.extend(mitm.drain_log());
    let actions = super::agents::adversary_actions(&log);
    let relay_id = relay_identity(&log);
    s.saw(format!(
        "The lookup: identity_changed peer {} previous {} current {} policy {} pinned_verified {} \
         action {}. After the restart bob is {}; the send: {} \"{}\"; {sent} sent events.",
        event_str(&changed, "peer"),
        short(&event_str(&changed, "previous")),
        short(&impostor),
        event_str(&changed, "policy"),
        changed["pinned_verified"],
        event_str(&changed, "action"),
        describe_pin(&pin),
        event_str(&refusal, "event"),
        event_str(&refusal, "reason") + &event_str(&refusal, "message"),
    ));
    s.saw(format!(
        "The relay (identity {relay_id}) logged {} claim substitutions and {} bundle substitutions; \
         Alice's state has a session with its key: {session_with_impostor}, an outbox entry for it: \
         {outbox_to_impostor}.",
        count_action(&actions, "substitute_claim"),
        count_action(&actions, "substitute_bundle")
    ));
    s.check(
        "the substitution of a verified contact is reported and held, even under warn",
        "the relay logged a substituted claim; identity_changed: bob, previous = Bob's key, \
         current = the relay's, policy warn, pinned_verified true, action held",
        format!(
            "claim substitutions: {}; previous is Bob's: {}; current is the relay's: {}; policy {}; \
             pinned_verified {}; action {}",
            count_action(&actions, "substitute_claim"),
            event_str(&changed, "previous") == bob_id,
            !relay_id.is_empty() && impostor.starts_with(&relay_id),
            event_str(&changed, "policy"),
            changed["pinned_verified"],
            event_str(&changed, "action")
        ),
        count_action(&actions, "substitute_claim") > 0
            && changed["peer"] == "bob"
            && event_str(&changed, "previous") == bob_id
            && !relay_id.is_empty()
            && impostor.starts_with(&relay_id)
            && changed["policy"] == "warn"
            && changed["pinned_verified"] == true
            && changed["action"] == "held",
    );
    s.check(
        "the pin is unchanged (and the held change survives a restart)",
        "bob pinned to Bob's key, verified, with a pending change",
        describe_pin(&pin),
        pin["identity"] == bob_id.as_str() && pin["verified"] == true && pin["pending_change"] == true,
    );
    s.check(
        "the send is refused: nothing is encrypted to the relay's key",
        "send_failed to bob; no sent event; no bundle of the relay fetched, no session or outbox \
         entry for its key",
        format!(
            "{} to {}; sent events: {sent}; bundle substitutions: {}; session: {session_with_impostor}; \
             outbox entry: {outbox_to_impostor}",
            event_str(&refusal, "event"),
            event_str(&refusal, "to"),
            count_action(&actions, "substitute_bundle")
        ),
        refusal["event"] == "send_failed"
            && refusal["to"] == "bob"
            && sent == 0
            && count_action(&actions, "substitute_bundle") == 0
            && !session_with_impostor
            && !outbox_to_impostor,
    );

    // 3. /verify during the held change: both keys, labelled.
    let mark = alice.mark();
    alice.command("/verify bob")?;
    let numbers = alice.wait_count(mark, "two safety numbers", 2, WAIT, |e| {
        e["event"] == "safety_number" && e["peer"] == "bob"
    })?;
    let by_key = |key: &str| {
        numbers
            .iter()
            .find(|n| n.event["key"] == key)
            .map(|n| (event_str(&n.event, "identity"), event_str(&n.event, "digits")))
            .unwrap_or_default()
    };
    let (pinned_id, pinned_digits) = by_key("pinned");
    let (new_id, new_digits) = by_key("new");
    s.did("Alice ran `/verify bob` while the change was held.");
    s.check(
        "`/verify` during the held change shows both keys, labelled",
        "key pinned = Bob's key with the digits Bob read out; key new = the relay's key, other digits",
        format!(
            "pinned: {} (Bob's: {}, digits = Bob's: {}); new: {} (the relay's: {}, digits differ: {})",
            short(&pinned_id),
            pinned_id == bob_id,
            pinned_digits == bob_reads,
            short(&new_id),
            new_id == impostor,
            !new_digits.is_empty() && new_digits != bob_reads
        ),
        pinned_id == bob_id
            && pinned_digits == bob_reads
            && new_id == impostor
            && !new_digits.is_empty()
            && new_digits != bob_reads,
    );
    // 3a. /reject keeps the pin.
    let mark = alice.mark();
    alice.command("/reject bob")?;
    let rejected = alice.wait_from(mark, "identity_rejected", WAIT, |e| {
        e["event"] == "identity_rejected"
    })?;
    let pin_after = pin_of(&mut alice, "bob")?;
    let mark = alice.mark();
    alice.send_text("bob", AFTER_REJECT)?;
    let refused_again = alice
        .wait_from(mark, "the send's outcome", WAIT, |e| {
            e["event"] == "send_failed" || e["event"] == "sent"
        })?
        .event;
    alice.quit()?;
    s.did(
        "Alice ran `/reject bob`, then tried `/msg bob` again; the copy of her state instead ran \
         `/trust bob <digits>` with the digits Bob had read out.",
    );
    s.saw(format!(
        "/reject: identity_rejected identities {} discarded {}; then bob {}; the next send: {}{} \
         (with a session, a send goes to the pinned key without a lookup).",
        rejected.event["identities"],
        rejected.event["discarded"],
        describe_pin(&pin_after),
        event_str(&refused_again, "event"),
        match event_str(&refused_again, "reason") {
            reason if reason.is_empty() => String::new(),
            reason => format!(" \"{reason}\""),
        }
    ));
    s.check(
        "`/reject bob` keeps the verified pin and rejects the relay's key",
        "identity_rejected [the relay's key]; bob = Bob's key, verified, no pending change",
        format!(
            "rejected the relay's key: {}; {}",
            rejected.event["identities"] == serde_json::json!([impostor]),
            describe_pin(&pin_after),
        ),
        rejected.event["identities"] == serde_json::json!([impostor])
            && pin_after["identity"] == bob_id.as_str()
            && pin_after["verified"] == true
            && pin_after["pending_change"] == false,
    );

    // 3b. /trust with the pinned key's digits keeps it too.
    let mut alice = online("alice", &mitm, &trust_dir, &warn)?;
    let mark = alice.mark();
    alice.command(&format!("/trust bob {bob_reads}"))?;
    let trusted = alice.wait_from(mark, "peer_verified", WAIT, |e| e["event"] == "peer_verified")?;
    let rejected_by_trust = alice.matching(mark, |e| e["event"] == "identity_rejected").len();
    let pin_trust = pin_of(&mut alice, "bob")?;
    alice.quit()?;
    s.saw(format!(
        "The copy: /trust with Bob's digits → peer_verified {} ({rejected_by_trust} identity_rejected); \
         bob {}.",
        short(&event_str(&trusted.event, "identity")),
        describe_pin(&pin_trust)
    ));
    s.check(
        "`/trust bob <digits of the pinned key>` keeps the pin and rejects the change",
        "peer_verified for Bob's key, identity_rejected; bob = Bob's key, no pending change",
        format!(
            "peer_verified Bob's key: {}; identity_rejected: {rejected_by_trust}; {}",
            trusted.event["identity"] == bob_id.as_str(),
            describe_pin(&pin_trust)
        ),
        trusted.event["identity"] == bob_id.as_str()
            && rejected_by_trust == 1
            && pin_trust["identity"] == bob_id.as_str()
            && pin_trust["pending_change"] == false,
    );

    // 4. What Alice did send to bob went to the real Bob: he reads it through the same relay.
    let mut bob = online("bob", &mitm, &dir.join("bob"), &AgentOptions::default())?;
    let mut reached = Vec::new();
    for (text, outcome) in [(BEFORE_LOOKUP, &early), (AFTER_REJECT, &refused_again)] {
        if outcome["event"] == "sent" {
            let shown = bob.wait_for("alice's message", WAIT, is_message(text)).ok();
            reached.push((text, shown));
        }
    }
    bob.settle(SETTLE);
    let bob_shows = bob.matching(0, |e| e["event"] == "message").len();
    bob.quit()?;
    let from_alice = reached
        .iter()
        .filter(|(_, shown)| {
            shown
                .as_ref()
                .is_some_and(|e| e["from_identity"] == alice_id.as_str())
        })
        .count();
    s.did("Bob connected to the same substituting relay and read what was queued for him.");
    s.saw(format!(
        "Alice's texts that went out (`sent`): {}; Bob showed {from_alice} of them from Alice's \
         key ({bob_shows} messages in all).",
        reached.len()
    ));
    s.check(
        "whatever Alice sent to bob after the substitution was encrypted to the real Bob",
        "every text Alice saw `sent` is shown by the real Bob, from Alice's key; the refused one \
         never reaches him",
        format!(
            "{from_alice} of {} shown by Bob; {bob_shows} messages shown in all",
            reached.len()
        ),
        from_alice == reached.len() && bob_shows == reached.len(),
    );
    s.summary = format!(
        "verified bob substituted under warn → identity_changed {}, send refused ({sent} sent), \
         /verify pinned+new, /reject and /trust <pinned digits> keep the pin, {from_alice}/{} \
         other sends reached only the real Bob",
        event_str(&changed, "action"),
        reached.len()
    );
    s.put("impostor", impostor);
    Ok(())
}

fn lease(scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    let dir = work.join("lease");
    let relay = start_relay_with(
        &dir.join("relay"),
        None,
        &[("E2EE_RELAY_NAMES__LEASE_SECS", LEASE_SECS)],
    )?;
    let bob_dir = dir.join("bob");
    let mut bob = registered("bob", &relay, &bob_dir, &AgentOptions::default())?;
    let mut alice = registered("alice", &relay, &dir.join("alice"), &policy("block"))?;
    talk(&mut alice, &mut bob, "hello bob, before your lease runs out")?;
    talk(&mut bob, &mut alice, "hi alice, old bob here")?;
    let old_bob = bob.identity.clone();
    bob.quit()?;
    std::fs::remove_dir_all(&bob_dir).context("deleting bob's state")?;
    // Real time must pass for the lease to run out.
    std::thread::sleep(Duration::from_millis(1_500));
    let mut bob = online("bob", &relay, &bob_dir, &AgentOptions::default())?;
    let new_bob = bob.identity.clone();
    let registry = wait_bound(relay.addr, "bob", Some(&new_bob))
        .unwrap_or_else(|_| wait_published(relay.addr, "bob").unwrap_or_default());
    s.did(format!(
        "A relay with a {LEASE_SECS} s name lease (`E2EE_RELAY_NAMES__LEASE_SECS={LEASE_SECS}`); Alice \
         (policy `block`) and Bob exchanged a message. Bob quit, his state directory was \
         deleted, and after 1.5 s a new Bob (a new identity) started under the same name."
    ));
    s.check(
        "after the lease, the new identity gets the name",
        "a lookup of bob answers the new key",
        format!(
            "the registry binds bob to {} (old {}, new {})",
            short(&registry),
            short(&old_bob),
            short(&new_bob)
        ),
        registry == new_bob && new_bob != old_bob,
    );

    let hello = "hello alice, i am bob with a new key";
    let mark = alice.mark();
    bob.send_text("alice", hello)?;
    bob.wait_for("sent", WAIT, |e| e["event"] == "sent")?;
    let changed = alice.wait_from(mark, "identity_changed", WAIT, |e| {
        e["event"] == "identity_changed"
    })?;
    let held = alice.wait_from(mark, "message_held", WAIT, |e| e["event"] == "message_held")?;
    let send_mark = alice.mark();
    alice.send_text("bob", "are you really bob?")?;
    let refusal = alice
        .wait_from(send_mark, "the send refused", WAIT, |e| {
            e["event"] == "send_failed" || e["event"] == "sent"
        })?
        .event;
    alice.settle(SETTLE);
    let shown = alice.matching(mark, is_message(hello)).len();
    let pin = pin_of(&mut alice, "bob")?;
    let changed = changed.event;
    s.did("The new Bob wrote to Alice; Alice then tried `/msg bob ...`.");
    s.saw(format!(
        "Alice: identity_changed previous {} current {} policy {} action {}; message_held from {} \
         ({}); the text shown {shown} times; her send: {} \"{}\"; bob {}.",
        short(&event_str(&changed, "previous")),
        short(&event_str(&changed, "current")),
        event_str(&changed, "policy"),
        event_str(&changed, "action"),
        event_str(&held.event, "from"),
        short(&event_str(&held.event, "from_identity")),
        event_str(&refusal, "event"),
        event_str(&refusal, "reason"),
        describe_pin(&pin)
    ));
    s.check(
        "Alice (block) reports the change and holds it",
        "identity_changed bob: previous = old key, current = new key, action held; the new key's \
         message held, not shown; her send refused; pin unchanged",
        format!(
            "previous old: {}; current new: {}; action {}; held from the new key: {}; shown {shown}; \
             send {}; {}",
            event_str(&changed, "previous") == old_bob,
            event_str(&changed, "current") == new_bob,
            event_str(&changed, "action"),
            held.event["from_identity"] == new_bob.as_str(),
            event_str(&refusal, "event"),
            describe_pin(&pin)
        ),
        changed["peer"] == "bob"
            && event_str(&changed, "previous") == old_bob
            && event_str(&changed, "current") == new_bob
            && changed["policy"] == "block"
            && changed["action"] == "held"
            && held.event["from"] == "bob"
            && held.event["from_identity"] == new_bob.as_str()
            && shown == 0
            && refusal["event"] == "send_failed"
            && pin["identity"] == old_bob.as_str()
            && pin["pending_change"] == true,
    );

    let mut released = 0;
    if scale.pick(false, true) {
        // The full run also lets Alice accept the new key by its safety number.
        let new_digits = bob.safety_number("alice")?;
        let mark = alice.mark();
        alice.command(&format!("/trust bob {new_digits}"))?;
        let verified = alice.wait_from(mark, "peer_verified", WAIT, |e| e["event"] == "peer_verified")?;
        let shown = alice.wait_from(mark, "the held message", WAIT, is_message(hello))?;
        released = 1;
        s.did("Alice typed the new Bob's safety number: `/trust bob <digits>`.");
        s.check(
            "`/trust` with the new key's digits accepts it and releases the held message",
            "peer_verified for the new key; the held text shown from bob",
            format!(
                "verified {}; shown from {} ({})",
                short(&event_str(&verified.event, "identity")),
                event_str(&shown.event, "from"),
                short(&event_str(&shown.event, "from_identity"))
            ),
            verified.event["identity"] == new_bob.as_str()
                && shown.event["from"] == "bob"
                && shown.event["from_identity"] == new_bob.as_str(),
        );
    }
    alice.quit()?;
    bob.quit()?;
    s.summary = format!(
        "after a {LEASE_SECS} s lease the new key got `bob`; Alice (block): identity_changed {}, \
         message held, send refused{}",
        event_str(&changed, "action"),
        if released > 0 { ", released by /trust" } else { "" }
    );
    Ok(())
}

/// The relay's `relabel` log lines: (the message's own id, the id it was delivered under).
fn relabels(log: &[String]) -> Vec<(String, String)> {
    log.iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|v| v["msg"] == "adversary acted" && v["action"] == "relabel")
        .map(|v| (event_str(&v, "msg_id"), event_str(&v, "as")))
        .collect()
}

fn relabel(scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    let dir = work.join("relabel");
    let config = AdversaryConfig {
        mode: "relabel",
        every: 1,
        min_len: MIN_LEN,
        delay_ms: 1000,
    };
    let relay = start_relay(&dir.join("relay"), Some(&config))?;
    let mut bob = registered("bob", &relay, &dir.join("bob"), &AgentOptions::default())?;
    let mut alice = online("alice", &relay, &dir.join("alice"), &AgentOptions::default())?;
    let warm = "warm-up: alice opens an end-to-end session with bob";
    talk(&mut alice, &mut bob, warm)?;
    alice.wait_for("the warm-up receipt", WAIT, |e| e["event"] == "delivered")?;
    let n = scale.pick(4, 8);
    let text = |i: usize| format!("relabel test message #{i}: long enough for the 128-byte bucket");
    s.did(format!(
        "Started `e2ee-relay-adversary --adversary relabel` (every Normal message of at least {MIN_LEN} \
         bytes: texts, not receipts), then Bob and Alice, who opened a session with a warm-up \
         message. Alice sent {n} numbered texts, one at a time, each after the previous one's \
         outcome at Bob."
    ));
    let mut rows = Vec::new();
    for i in 1..=n {
        let mark = bob.mark();
        let sent_mark = alice.mark();
        let wanted = text(i);
        alice.send_text("bob", &wanted)?;
        let sent = alice.wait_from(sent_mark, "sent", WAIT, |e| e["event"] == "sent")?;
        let outcome = bob
            .wait_from(mark, "the message or a failure", Duration::from_secs(5), |e| {
                is_message(&wanted)(e) || e["event"] == "decrypt_failure" || e["event"] == "redelivered"
            })
            .ok();
        rows.push((i, event_str(&sent.event, "msg_id"), outcome));
    }
    bob.settle(SETTLE);
    let log = relay.drain_log();
    let relabelled = relabels(&log);
    // The relay id text #1 was stored and delivered under (Alice's `sent` id).
    let first_id = rows.first().map(|(_, id, _)| id.clone()).unwrap_or_default();
    for (i, id, seen) in &rows {
        let hit = relabelled.iter().find(|(own, _)| own == id);
        s.saw(format!(
            "#{i} (msg {}): relay {} → Bob: {}",
            short(id),
            match hit {
                Some((_, seen_id)) => format!("delivered it under msg {}", short(seen_id)),
                None => "forwarded it unchanged".into(),
            },
            match seen {
                Some(seen) if seen.event["event"] == "message" => {
                    format!("shown (msg_id {})", short(&event_str(&seen.event, "msg_id")))
                }
                Some(seen) => event_str(&seen.event, "event"),
                None => "nothing".into(),
            }
        ));
    }
    let expected: Vec<String> = rows.iter().skip(1).map(|(_, id, _)| id.clone()).collect();
    let own_ids: Vec<String> = relabelled.iter().map(|(own, _)| own.clone()).collect();
    s.check(
        "the relay relabelled every text after the first with the first one's relay id",
        format!(
            "{} relabelled, each under the msg_id Bob showed text #1 with",
            n - 1
        ),
        format!(
            "{} relabelled; under text #1's id: {}",
            relabelled.len(),
            relabelled.iter().filter(|(_, as_id)| *as_id == first_id).count()
        ),
        own_ids == expected && !first_id.is_empty() && relabelled.iter().all(|(_, as_id)| *as_id == first_id),
    );
    // The agent reports the end-to-end id from the authenticated payload, not the relay's
    // label: a relabelled text is shown with its own id.
    let under_seen = rows
        .iter()
        .skip(1)
        .filter(|(_, id, _)| {
            relabelled
                .iter()
                .any(|(own, as_id)| own == id && *as_id == first_id)
        })
        .filter(|(_, id, seen)| {
            seen.as_ref()
                .is_some_and(|seen| seen.event["event"] == "message" && seen.event["msg_id"] == id.as_str())
        })
        .count();
    let once = (1..=n)
        .filter(|&i| bob.matching(0, is_message(&text(i))).len() == 1)
        .count();
    let redelivered = bob.matching(0, |e| e["event"] == "redelivered").len();
    let failures = bob.matching(0, |e| e["event"] == "decrypt_failure").len();
    s.check(
        "every text is shown exactly once, including those under an already-seen relay id",
        format!(
            "{n} of {n} shown once (the {} relabelled ones with their own end-to-end id); no \
             redelivered, no decrypt_failure",
            n - 1
        ),
        format!(
            "{once} of {n} shown once ({under_seen} relabelled ones shown with their own id); \
             {redelivered} redelivered, {failures} decrypt failures"
        ),
        once == n && under_seen == n - 1 && redelivered == 0 && failures == 0,
    );
    alice.quit()?;
    bob.quit()?;
    s.summary = format!(
        "{} texts relabelled with a seen relay id; {once}/{n} shown exactly once, {redelivered} \
         dropped as redelivered",
        relabelled.len()
    );
    Ok(())
}
