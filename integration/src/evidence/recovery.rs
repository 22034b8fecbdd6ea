//! Recovery after a restore from backup: bob's state directory is put back from an old
//! copy. Through a recording proxy the scenario shows that the restored bob, writing
//! at a chain position he already used, does not repeat a key and nonce (crypto v2's
//! salt), and that both agents heal the conversation on their own with reset requests
//! (docs/PROTOCOL.md 2.8) while both write at the same moment.

use std::collections::BTreeMap;
use std::path::Path;

use e2ee_protocol::frame::Frame;
use e2ee_protocol::message::{Message, NormalMessage};
use e2ee_protocol::payload::PAYLOAD_HEADER_LEN;

use super::agents::{is_message, start_plaintext_relay, wait_published_plaintext, Agent, WAIT};
use super::report::Section;
use super::{guarded, Scale};
use crate::process::copy_private_dir;
use crate::proxy::{Direction, RecordingProxy};

/// Two texts of one length: under crypto v1 at one chain position, the XOR of their
/// ciphertexts is the XOR of the texts.
const BEFORE: &str = "attack at dawn";
const AFTER: &str = "retreat at six";

/// Runs the scenario.
pub fn run(scale: Scale, work: &Path) -> Section {
    let section = Section::new(
        "recovery",
        "Recovery after a restore from backup",
        "An agent whose state is put back from an old copy never encrypts two plaintexts \
         under one key and nonce, and both agents heal the conversation without the users: \
         each asks the other for a new session, and what the old sessions could not carry \
         arrives.",
    );
    guarded(section, |s| body(scale, work, s))
}

fn deliver(from: &mut Agent, to: &mut Agent, text: &str) -> anyhow::Result<()> {
    from.send_text(&to.name, text)?;
    to.wait_for("the message", WAIT, is_message(text))?;
    Ok(())
}

/// Normal messages sent to the relay that share a chain position (ratchet key, pn, n)
/// with another, different one.
fn reused_positions(proxy: &RecordingProxy) -> Vec<Vec<NormalMessage>> {
    let mut by_position: BTreeMap<([u8; 32], u32, u32), Vec<NormalMessage>> = BTreeMap::new();
    let (frames, _) = proxy.recording().frames();
    for captured in frames {
        if captured.direction != Direction::ToRelay {
            continue;
        }
        let Frame::Send { payload, .. } = captured.frame else {
            continue;
        };
        let inner = match Message::decode(&payload) {
            Ok(Message::Normal(m)) => m,
            Ok(Message::PreKey(m)) => m.inner,
            Err(_) => continue,
        };
        let h = inner.header;
        let group = by_position
            .entry((*h.ratchet_key.as_bytes(), h.previous_chain_len, h.n))
            .or_default();
        if !group.contains(&inner) {
            group.push(inner);
        }
    }
    by_position.into_values().filter(|g| g.len() > 1).collect()
}

/// XOR of the body bytes of two ciphertexts (the body starts after the payload header).
fn body_xor(a: &NormalMessage, b: &NormalMessage, len: usize) -> Vec<u8> {
    let range = PAYLOAD_HEADER_LEN..PAYLOAD_HEADER_LEN + len;
    match (a.ciphertext.get(range.clone()), b.ciphertext.get(range)) {
        (Some(x), Some(y)) => x.iter().zip(y).map(|(x, y)| x ^ y).collect(),
        _ => Vec::new(),
    }
}

fn body(scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    let relay = start_plaintext_relay(&work.join("relay"))?;
    let proxy = RecordingProxy::start(relay.addr)?;
    let rounds = scale.pick(3, 6);
    let bob_dir = work.join("bob");
    let mut bob = Agent::start_plaintext("bob", proxy.addr, &bob_dir)?;
    bob.connected()?;
    wait_published_plaintext(relay.addr, "bob")?;
    let mut alice = Agent::start_plaintext("alice", proxy.addr, &work.join("alice"))?;
    alice.connected()?;
    deliver(&mut alice, &mut bob, "a1: hello bob")?;
    deliver(&mut bob, &mut alice, "b1: hello alice")?;
    // Each stop waits for alice's receipts, so the relay holds nothing for bob and his
    // next start writes first (at the position the restored copy will write at too).
    bob.wait_for("alice's receipt", WAIT, |e| e["event"] == "delivered")?;
    bob.quit()?;
    copy_private_dir(&bob_dir, &work.join("bob-backup"))?;
    let mut bob = Agent::start_plaintext("bob", proxy.addr, &bob_dir)?;
    bob.connected()?;
    deliver(&mut bob, &mut alice, BEFORE)?;
    for round in 2..2 + rounds {
        deliver(&mut alice, &mut bob, &format!("a{round}"))?;
        deliver(&mut bob, &mut alice, &format!("b{round}"))?;
    }
    bob.wait_count(0, "receipts from alice", rounds + 1, WAIT, |e| {
        e["event"] == "delivered"
    })?;
    bob.quit()?;
    std::fs::remove_dir_all(&bob_dir)?;
    copy_private_dir(&work.join("bob-backup"), &bob_dir)?;
    s.did(format!(
        "Alice and Bob (real agents, through a recording proxy) exchanged a first text each; \
         Bob stopped and his state directory was copied; Bob then wrote {BEFORE:?} and both \
         exchanged {rounds} more round trips; Bob stopped and his state directory was put \
         back from the copy."
    ));

    let mut bob = Agent::start_plaintext("bob", proxy.addr, &bob_dir)?;
    bob.connected()?;
    let (alice_mark, bob_mark) = (alice.mark(), bob.mark());
    bob.send_text("alice", AFTER)?;
    bob.wait_from(bob_mark, "the relay storing the text", WAIT, |e| {
        e["event"] == "sent"
    })?;
    alice.send_text("bob", "a-after: written while bob's copy was restored")?;
    s.did(format!(
        "The restored Bob wrote {AFTER:?} (at the chain position of {BEFORE:?}) and, before \
         it reached her, Alice wrote a text."
    ));
    alice.wait_from(alice_mark, "the restored bob's text", WAIT, is_message(AFTER))?;
    bob.wait_from(
        bob_mark,
        "alice's text",
        WAIT,
        is_message("a-after: written while bob's copy was restored"),
    )?;
    deliver(&mut alice, &mut bob, "a-final: the new session works")?;
    deliver(&mut bob, &mut alice, "b-final: both ways")?;

    // The wire: two ciphertexts at one chain position.
    let reused = reused_positions(&proxy);
    let pairs: usize = reused.iter().map(|g| g.len() * (g.len() - 1) / 2).sum();
    let same_salt = reused
        .iter()
        .filter(|g| g.iter().skip(1).any(|m| m.header.salt == g[0].header.salt))
        .count();
    let text_xor: Vec<u8> = BEFORE.bytes().zip(AFTER.bytes()).map(|(x, y)| x ^ y).collect();
    let keystream_reused = reused
        .iter()
        .filter(|g| g.len() == 2 && body_xor(&g[0], &g[1], text_xor.len()) == text_xor)
        .count();
    s.saw(format!(
        "{} chain positions carry two different ciphertexts from Bob ({pairs} pairs): the \
         restored copy wrote again where the old one had written.",
        reused.len()
    ));
    s.check(
        "the restored sender wrote again at a used chain position (the case v1 fails)",
        "at least 1 position",
        format!("{} positions", reused.len()),
        !reused.is_empty(),
    );
    s.check(
        "no two ciphertexts share a key and nonce: their salts differ",
        "0 positions with one salt twice",
        format!("{same_salt} of {}", reused.len()),
        same_salt == 0 && reused.iter().all(|g| g.iter().all(|m| m.header.salt.is_some())),
    );
    s.check(
        "the XOR of the two ciphertexts is not the XOR of the two texts",
        "0 positions",
        format!("{keystream_reused} positions"),
        keystream_reused == 0,
    );

    // The agents: who asked, who granted, what arrived.
    let asked = |agent: &Agent, from: usize| {
        agent
            .matching(from, |e| {
                e["event"] == "session_reset" && e["side"] == "requested"
            })
            .iter()
            .map(|seen| seen.event["reason"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    let granted = |agent: &Agent, from: usize| {
        agent
            .matching(from, |e| {
                e["event"] == "session_reset" && e["side"] == "restarted"
            })
            .iter()
            .map(|seen| seen.event["resent"].as_u64().unwrap_or(0))
            .collect::<Vec<_>>()
    };
    let (alice_asked, bob_asked) = (asked(&alice, alice_mark), asked(&bob, bob_mark));
    let (alice_granted, bob_granted) = (granted(&alice, alice_mark), granted(&bob, bob_mark));
    s.saw(format!(
        "Alice asked for a new session for {alice_asked:?} and started {} (resending {:?} \
         messages); Bob asked for {bob_asked:?} and started {} (resending {:?}).",
        alice_granted.len(),
        alice_granted,
        bob_granted.len(),
        bob_granted
    ));
    // Which message each side fails on first depends on timing (bob's restored copy
    // also receives what the relay still held for the old one), so any reason counts.
    s.check(
        "each side noticed the broken session, asked the other for a new one, and granted the other's request",
        "alice and bob each asked (reused_position or unauthenticated) and each started one new session",
        format!(
            "alice asked {alice_asked:?}, bob asked {bob_asked:?}; new sessions: alice {}, bob {}",
            alice_granted.len(),
            bob_granted.len()
        ),
        !alice_asked.is_empty() && !bob_asked.is_empty() && alice_granted.len() == 1 && bob_granted.len() == 1,
    );
    let shown_once = |agent: &Agent, text: &str| agent.matching(0, is_message(text)).len() == 1;
    let lost_by_bob: Vec<String> = (2..2 + rounds).map(|r| format!("a{r}")).collect();
    let regained = lost_by_bob
        .iter()
        .filter(|t| bob.matching(bob_mark, is_message(t)).len() == 1)
        .count();
    s.check(
        "what the old sessions could not carry arrived, once",
        format!("{AFTER:?} at alice, alice's text at bob, and the {rounds} texts bob's copy had lost"),
        format!(
            "{AFTER:?} shown {} time(s); {regained} of {rounds} lost texts shown again at bob",
            alice.matching(0, is_message(AFTER)).len()
        ),
        shown_once(&alice, AFTER) && regained == rounds,
    );
    s.check(
        "the conversation continues both ways without the users doing anything",
        "both final texts shown once",
        format!(
            "{} and {}",
            alice.matching(0, is_message("b-final: both ways")).len(),
            bob.matching(0, is_message("a-final: the new session works"))
                .len()
        ),
        shown_once(&alice, "b-final: both ways") && shown_once(&bob, "a-final: the new session works"),
    );
    s.summary = format!(
        "{} reused chain positions, 0 reused keys; both sides healed ({} and {} new sessions), \
         {regained}/{rounds} lost texts regained",
        reused.len(),
        alice_granted.len(),
        bob_granted.len()
    );
    Ok(())
}
