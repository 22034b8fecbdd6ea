//! Forward secrecy and post-compromise healing, shown by trying: Alice and Bob talk
//! through a recording proxy; at time t a thief copies Bob's whole state directory. With
//! that copy and the library code, the thief then tries to decrypt every recorded
//! ciphertext. Messages sent before t must fail (their keys no longer exist); messages
//! Alice sends after t succeed until the next DH ratchet round trip (Bob's reply under a
//! fresh ratchet key, answered by Alice); after it, they fail again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Context as _};
use e2ee_agent::failure::FailureClass;
use e2ee_agent::state::AgentState;
use e2ee_protocol::frame::Frame;
use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::kdf::{ChainKey, MessageKey};
use e2ee_protocol::message::Message;
use e2ee_protocol::payload::{ContentType, Payload};
use e2ee_protocol::session::{receive, Received, Session};
use e2ee_protocol::x3dh::associated_data;
use rand_core::OsRng;
use serde_json::Value;

use super::agents::{is_message, start_plaintext_relay, wait_published_plaintext, Agent, WAIT};
use super::report::Section;
use super::state_files::{copy_dir, Secrets, Stolen};
use super::{failure, Scale};
use crate::proxy::{Direction, Recording, RecordingProxy};

/// Runs the scenario: one run, two sections.
pub fn run(scale: Scale, work: &Path) -> Vec<Section> {
    let mut fs = Section::new(
        "forward-secrecy",
        "Forward secrecy",
        "With a complete copy of an agent's persisted state taken at time t, messages sent \
         before t cannot be decrypted: their keys no longer exist anywhere in that state.",
    );
    let mut heal = Section::new(
        "healing",
        "Post-compromise healing",
        "With state stolen at t, the thief can follow the conversation only until the next DH \
         ratchet round trip; after it, new messages are no longer decryptable with the stolen \
         state.",
    );
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| body(scale, work, &mut fs, &mut heal)));
    if let Some(error) = failure(outcome) {
        fs.error = Some(error.clone());
        heal.error = Some(error);
    }
    fs.finish(started.elapsed());
    heal.finish(started.elapsed());
    vec![fs, heal]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Sent before the theft.
    Before,
    /// Sent after the theft, before the DH ratchet round trip completed.
    Window,
    /// Sent after the round trip: an Alice message under a ratchet key she made after
    /// receiving Bob's first ratchet key generated after t (a Bob message under such a
    /// key counts here too).
    After,
}

/// A message recorded on the wire (a `Send` from Alice or Bob).
struct Captured {
    from_alice: bool,
    msg_id: [u8; 16],
    payload: Vec<u8>,
    phase: Phase,
}

impl Captured {
    fn ratchet(&self) -> Option<[u8; 32]> {
        match Message::decode(&self.payload) {
            Ok(Message::Normal(m)) => Some(*m.header.ratchet_key.as_bytes()),
            Ok(Message::PreKey(m)) => Some(*m.inner.header.ratchet_key.as_bytes()),
            Err(_) => None,
        }
    }

    fn ratchet_key(&self) -> String {
        self.ratchet()
            .map(|k| hex::encode(&k[..4]))
            .unwrap_or_else(|| "?".into())
    }

    fn is_prekey(&self) -> bool {
        matches!(Message::decode(&self.payload), Ok(Message::PreKey(_)))
    }
}

/// Alice's and Bob's `Send` frames in the order they passed the proxy; phase `Before` or
/// (for now) `Window`, by time.
fn captured(recording: &Recording, alice: [u8; 32], bob: [u8; 32], t: Instant) -> Vec<Captured> {
    let (frames, _) = recording.frames();
    let mut who: HashMap<u64, [u8; 32]> = HashMap::new();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for f in frames {
        if f.direction != Direction::ToRelay {
            continue;
        }
        match f.frame {
            Frame::Auth { identity, .. } => {
                who.insert(f.conn, identity);
            }
            Frame::Send {
                recipient,
                msg_id,
                payload,
            } => {
                let Some(sender) = who.get(&f.conn).copied() else {
                    continue;
                };
                // A resend after reconnecting carries the same id and bytes.
                if !seen.insert((sender, msg_id)) {
                    continue;
                }
                let from_alice = sender == alice && recipient == bob;
                let from_bob = sender == bob && recipient == alice;
                if !(from_alice || from_bob) {
                    continue;
                }
                let phase = if f.at < t { Phase::Before } else { Phase::Window };
                out.push(Captured {
                    from_alice,
                    msg_id,
                    payload,
                    phase,
                });
            }
            _ => {}
        }
    }
    out
}

/// Marks what comes after the DH ratchet round trip the thief cannot follow. The stolen
/// state holds Bob's current ratchet key pair (`stolen_key`), made before t and perhaps
/// not used yet, so the thief can follow Alice's answer to it too. The round trip starts
/// with Bob's first message after t under another ratchet key (made after t: the thief
/// does not have it) and ends when Alice answers it with a new ratchet key of her own.
/// Returns the position of Bob's first such message.
fn mark_round_trip(messages: &mut [Captured], stolen_key: [u8; 32]) -> Option<usize> {
    let fresh = messages
        .iter()
        .position(|m| !m.from_alice && m.phase != Phase::Before && m.ratchet() != Some(stolen_key))?;
    let alice_keys_before: HashSet<[u8; 32]> = messages[..fresh]
        .iter()
        .filter(|m| m.from_alice)
        .filter_map(Captured::ratchet)
        .collect();
    for m in messages.iter_mut().skip(fresh) {
        let new_key = m.ratchet().is_some_and(|k| !alice_keys_before.contains(&k));
        if !m.from_alice || new_key {
            m.phase = Phase::After;
        }
    }
    Some(fresh)
}

fn describe(payload: &Payload) -> String {
    match payload.content_type {
        ContentType::Text => format!("text {:?}", payload.as_text().unwrap_or_default()),
        ContentType::Receipt => "a receipt".into(),
        ContentType::Control => "a control message (name claim)".into(),
    }
}

/// One decryption attempt.
struct Attempt {
    opened: bool,
    /// The plaintext's text, for texts.
    text: Option<String>,
    /// What came out, or why not.
    detail: String,
}

/// The thief runs the stolen session over Alice's recorded messages, in order, as Bob's
/// agent would (a failure leaves the session unchanged; a success advances it).
fn follow(stolen: &Stolen, alice: &IdentityKey, messages: &[&Captured]) -> anyhow::Result<Vec<Attempt>> {
    let (mut session, _) = stolen
        .sessions
        .get(alice.as_bytes())
        .cloned()
        .ok_or_else(|| anyhow!("the stolen state has no session with alice"))?;
    let mut prekeys = stolen.prekeys.clone();
    let mut out = Vec::new();
    for m in messages {
        let mut candidate = session.clone();
        let result = receive(
            Some(&mut candidate),
            &stolen.identity,
            &mut prekeys,
            alice,
            &m.payload,
            &mut OsRng,
        );
        out.push(match result {
            Ok(Received {
                decrypted,
                new_session,
            }) => {
                session = new_session.unwrap_or(candidate);
                match Payload::decode(&decrypted.plaintext) {
                    Ok(payload) => Attempt {
                        opened: true,
                        text: payload
                            .as_text()
                            .filter(|_| payload.content_type == ContentType::Text)
                            .map(str::to_string),
                        detail: describe(&payload),
                    },
                    Err(e) => Attempt {
                        opened: true,
                        text: None,
                        detail: format!("bytes that are no payload ({e})"),
                    },
                }
            }
            Err(e) => Attempt {
                opened: false,
                text: None,
                detail: format!("{} ({e})", FailureClass::of(&e)),
            },
        });
    }
    Ok(out)
}

/// Every message key the stolen state holds or can derive going forward: each secret
/// taken as a message key, and each root and chain key stepped `steps` times.
fn message_keys(secrets: &Secrets, steps: usize) -> Vec<MessageKey> {
    let mut keys = Vec::new();
    for (bytes, kind) in &secrets.keys {
        let value = Value::Array(bytes.iter().map(|b| Value::from(*b)).collect());
        if let Ok(key) = serde_json::from_value::<MessageKey>(value.clone()) {
            keys.push(key);
        }
        if kind.contains("chain key") || kind == "root key" {
            if let Ok(mut chain) = serde_json::from_value::<ChainKey>(value) {
                for _ in 0..steps {
                    keys.push(chain.message_key());
                    chain = chain.next();
                }
            }
        }
    }
    keys
}

/// True if any of `keys` opens the message (either order of the associated data).
fn opens(keys: &[MessageKey], payload: &[u8], alice: &IdentityKey, bob: &IdentityKey) -> bool {
    let inner = match Message::decode(payload) {
        Ok(Message::Normal(m)) => m,
        Ok(Message::PreKey(m)) => m.inner,
        Err(_) => return false,
    };
    let header = inner.header.encode();
    [associated_data(alice, bob), associated_data(bob, alice)]
        .iter()
        .any(|ad| {
            let mut aad = ad.to_vec();
            aad.extend_from_slice(&header);
            keys.iter().any(|k| {
                k.open(inner.header.salt.as_ref(), &aad, &inner.ciphertext)
                    .is_ok()
            })
        })
}

fn deliver(from: &mut Agent, to: &mut Agent, text: &str) -> anyhow::Result<()> {
    from.send_text(&to.name, text)?;
    to.wait_for("the message", WAIT, is_message(text))?;
    Ok(())
}

fn identity(hex_text: &str) -> anyhow::Result<IdentityKey> {
    let bytes: [u8; 32] = hex::decode(hex_text)?
        .try_into()
        .map_err(|_| anyhow!("identity is not 32 bytes"))?;
    Ok(IdentityKey::from_bytes(bytes)?)
}

fn body(scale: Scale, work: &Path, fs: &mut Section, heal: &mut Section) -> anyhow::Result<()> {
    let relay = start_plaintext_relay(&work.join("relay"))?;
    let proxy = RecordingProxy::start(relay.addr)?;
    let bob_dir = work.join("bob");
    let mut bob = Agent::start_plaintext("bob", proxy.addr, &bob_dir)?;
    bob.connected()?;
    wait_published_plaintext(relay.addr, "bob")?;
    let mut alice = Agent::start_plaintext("alice", proxy.addr, &work.join("alice"))?;
    alice.connected()?;
    let alice_key = identity(&alice.identity)?;
    let bob_key = identity(&bob.identity)?;

    // Before t: a conversation both ways, until every receipt is in (quiescent).
    let rounds = scale.pick(3, 6);
    for i in 1..=rounds {
        deliver(
            &mut alice,
            &mut bob,
            &format!("before the theft: alice to bob #{i}"),
        )?;
        deliver(
            &mut bob,
            &mut alice,
            &format!("before the theft: bob to alice #{i}"),
        )?;
    }
    alice.wait_count(0, "receipts", rounds, WAIT, |e| e["event"] == "delivered")?;
    bob.wait_count(0, "receipts", rounds, WAIT, |e| e["event"] == "delivered")?;
    bob.quit()?;

    // t: the theft.
    let t = Instant::now();
    let stolen_dir = work.join("stolen-at-t");
    let copied = copy_dir(&bob_dir, &stolen_dir)?;

    // After t, before the round trip: Alice writes while Bob is offline.
    let window = scale.pick(3, 4);
    let window_texts: Vec<String> = (1..=window)
        .map(|j| format!("written after the theft while bob is offline: alice #{j}"))
        .collect();
    let mark = alice.mark();
    for text in &window_texts {
        alice.send_text("bob", text)?;
    }
    alice.wait_count(mark, "sent", window, WAIT, |e| e["event"] == "sent")?;
    let mut bob = Agent::start_plaintext("bob", proxy.addr, &bob_dir)?;
    for text in &window_texts {
        bob.wait_for("a stored message", WAIT, is_message(text))?;
    }
    alice.wait_count(mark, "receipts", window, WAIT, |e| e["event"] == "delivered")?;

    let after = scale.pick(3, 4);
    let mark_a = alice.mark();
    let mark_b = bob.mark();
    for j in 1..=after {
        deliver(
            &mut alice,
            &mut bob,
            &format!("after bob is back: alice to bob #{j}"),
        )?;
        deliver(
            &mut bob,
            &mut alice,
            &format!("after bob is back: bob to alice #{j}"),
        )?;
    }
    alice.wait_count(mark_a, "receipts", after, WAIT, |e| e["event"] == "delivered")?;
    bob.wait_count(mark_b, "receipts", after, WAIT, |e| e["event"] == "delivered")?;
    alice.quit()?;
    bob.quit()?;
    let recording = proxy.stop();
    drop(relay);

    let mut messages = captured(&recording, *alice_key.as_bytes(), *bob_key.as_bytes(), t);
    let stolen = Stolen::load(&stolen_dir).context("loading the stolen state")?;
    let (stolen_session, _) = stolen
        .sessions
        .get(alice_key.as_bytes())
        .cloned()
        .ok_or_else(|| anyhow!("the stolen state has no session with alice"))?;
    let stolen_key = *stolen_session.ratchet_key().as_bytes();
    let fresh = mark_round_trip(&mut messages, stolen_key);
    let of = |from_alice: bool, phase: Phase| -> Vec<&Captured> {
        messages
            .iter()
            .filter(|m| m.from_alice == from_alice && m.phase == phase)
            .collect()
    };
    let timeline = format!(
        "Alice and Bob talked through a recording proxy: {rounds} texts each way before t; Bob \
         went offline and at t his whole state directory was copied ({} files, {copied} bytes: \
         the state database with its key file state.key, i.e. a state without a passphrase); Alice then wrote {window} texts; Bob came \
         back and received them (each answered with a receipt); then {after} more texts each \
         way, each waiting for the previous one.",
        stolen.files
    );
    fs.did(timeline.clone());
    heal.did(timeline);
    let attack = "The thief loads the copy with the library (`IdentityKeyPair`, `PreKeyStore`, \
                  `Session` from the database, opened with the copied key file) and runs `session::receive`, the agent's own \
                  decryption path, over every message Alice sent, in recorded order (a failure \
                  leaves the session unchanged, a success advances it).";
    fs.did(attack);
    heal.did(attack);
    heal.did(format!(
        "The round trip is located from the recorded headers, not from timing: the stolen \
         state holds Bob's current ratchet key pair ({}, made before t), so the thief can also \
         follow Alice's answer to it. The round trip starts with Bob's first message after t \
         under a ratchet key made after t ({}) and ends with Alice's first message under a \
         ratchet key she made after receiving it.",
        hex::encode(&stolen_key[..4]),
        fresh
            .and_then(|i| messages.get(i))
            .map(Captured::ratchet_key)
            .unwrap_or_else(|| "none seen".into())
    ));
    let holds = format!(
        "The stolen state holds {} distinct secrets: {}.",
        stolen.secrets.keys.len(),
        stolen.secrets.describe()
    );
    fs.saw(holds.clone());

    // Sanity: the copy is a complete, usable agent state.
    let usable_dir = work.join("stolen-copy-opened");
    copy_dir(&stolen_dir, &usable_dir)?;
    let mut usable =
        AgentState::open(&usable_dir, "bob", 1, &mut OsRng).context("opening the stolen copy")?;
    fs.check(
        "the stolen copy is a complete agent state",
        "`AgentState::open` accepts (a copy of) it and it has a session with Alice",
        format!(
            "opened: yes; session with alice: {}",
            usable.has_session(&alice_key)
        ),
        usable.has_session(&alice_key),
    );

    // Follow Alice's messages in recorded order.
    let from_alice: Vec<&Captured> = messages.iter().filter(|m| m.from_alice).collect();
    let attempts = follow(&stolen, &alice_key, &from_alice)?;
    let phase_attempts = |phase: Phase| -> Vec<&Attempt> {
        from_alice
            .iter()
            .zip(&attempts)
            .filter(|(m, _)| m.phase == phase)
            .map(|(_, a)| a)
            .collect()
    };
    let before = phase_attempts(Phase::Before);
    let in_window = phase_attempts(Phase::Window);
    let after_trip = phase_attempts(Phase::After);
    let opened = |list: &[&Attempt]| list.iter().filter(|a| a.opened).count();
    let reasons = |list: &[&Attempt]| -> BTreeSet<String> {
        list.iter()
            .filter(|a| !a.opened)
            .map(|a| a.detail.split(" (").next().unwrap_or_default().to_string())
            .collect()
    };
    let ratchets =
        |phase: Phase| -> BTreeSet<String> { of(true, phase).iter().map(|m| m.ratchet_key()).collect() };
    fs.saw(format!(
        "Recorded: {} messages from Alice before t (ratchet keys {:?}), {} from Bob.",
        before.len(),
        ratchets(Phase::Before),
        of(false, Phase::Before).len()
    ));
    fs.check(
        "Alice's messages sent before t, through the agent's decryption path with the stolen session",
        format!("0 of {} decrypt", before.len()),
        format!(
            "{} of {} decrypt; failures: {:?}",
            opened(&before),
            before.len(),
            reasons(&before)
        ),
        opened(&before) == 0 && !before.is_empty(),
    );

    // Handshake messages: erase the replay memory and run X3DH again as Bob.
    let prekey_before: Vec<&Captured> = of(true, Phase::Before)
        .into_iter()
        .filter(|m| m.is_prekey())
        .collect();
    let mut x3dh_errors = BTreeSet::new();
    let mut x3dh_opened = 0;
    for m in &prekey_before {
        if let Ok(Message::PreKey(message)) = Message::decode(&m.payload) {
            let mut store = stolen.prekeys_without_replay_memory.clone();
            match Session::accept(&stolen.identity, &mut store, &message, &mut OsRng) {
                Ok(_) => x3dh_opened += 1,
                Err(e) => {
                    x3dh_errors.insert(e.to_string());
                }
            }
        }
    }
    fs.check(
        "Alice's handshake (PreKey) messages before t, by X3DH with Bob's stolen identity and signed prekey, the replay memory erased",
        format!("0 of {} decrypt (the one-time prekey private key is gone)", prekey_before.len()),
        format!("{x3dh_opened} of {} decrypt; errors: {:?}", prekey_before.len(), x3dh_errors),
        x3dh_opened == 0 && !prekey_before.is_empty(),
    );
    let with_opk = prekey_before
        .iter()
        .filter(
            |m| matches!(Message::decode(&m.payload), Ok(Message::PreKey(p)) if p.one_time_prekey.is_some()),
        )
        .count();
    fs.saw(format!(
        "{with_opk} of {} handshake messages used a one-time prekey. Limits of the property, by \
         design: a handshake made without one (a relay out of one-time prekeys) stays \
         decryptable with the signed prekey until its private key is gone (the agent keeps the current and the previous one), and a message still \
         missing at t stays decryptable with its stored skipped key ({} skipped keys in this \
         copy).",
        prekey_before.len(),
        stolen
            .secrets
            .counts()
            .get("skipped message key")
            .copied()
            .unwrap_or(0)
    ));

    // Exhaustive key search over the stolen state.
    let steps = scale.pick(32, 256);
    let keys = message_keys(&stolen.secrets, steps);
    let before_all: Vec<&Captured> = messages.iter().filter(|m| m.phase == Phase::Before).collect();
    let searched_open = before_all
        .iter()
        .filter(|m| opens(&keys, &m.payload, &alice_key, &bob_key))
        .count();
    // Control: a message encrypted with the stolen session is found by the same search.
    let (mut control_session, _) = stolen
        .sessions
        .get(alice_key.as_bytes())
        .cloned()
        .ok_or_else(|| anyhow!("no stolen session"))?;
    let control = control_session.encrypt(b"control: encrypted with the stolen sending chain", &mut OsRng)?;
    let control_found = opens(&keys, &control, &alice_key, &bob_key);
    fs.did(format!(
        "Key search: every secret in the stolen state tried as a message key, and every root \
         and chain key stepped {steps} times forward ({} candidate message keys), against every \
         message recorded before t, in both directions, with both orders of the associated \
         data. (Going backwards along a chain would mean inverting HMAC-SHA256.)",
        keys.len()
    ));
    fs.check(
        "any message recorded before t (both directions) opened by any key in or derivable from the stolen state",
        format!("0 of {}", before_all.len()),
        format!("{searched_open} of {} ({} candidate keys)", before_all.len(), keys.len()),
        searched_open == 0 && !before_all.is_empty(),
    );
    fs.check(
        "positive control: the same search opens a message encrypted with the stolen session",
        "found",
        if control_found { "found" } else { "not found" },
        control_found,
    );
    fs.summary = format!(
        "0 of {} messages sent before t decrypted with the stolen state ({} candidate keys tried)",
        before_all.len(),
        keys.len()
    );
    if searched_open > 0 || opened(&before) > 0 {
        fs.summary = format!(
            "{} messages from before t decrypted",
            searched_open.max(opened(&before))
        );
    }

    // Healing.
    heal.saw(holds);
    heal.saw(format!(
        "Alice's ratchet keys: before t {:?}; after t, before the round trip {:?}; after it {:?}.",
        ratchets(Phase::Before),
        ratchets(Phase::Window),
        ratchets(Phase::After)
    ));
    for (m, a) in from_alice
        .iter()
        .zip(&attempts)
        .filter(|(m, _)| m.phase != Phase::Before)
    {
        heal.saw(format!(
            "{} message {} (ratchet key {}): thief {}",
            if m.phase == Phase::Window {
                "after t, before the round trip:"
            } else {
                "after the round trip:"
            },
            super::short(&hex::encode(m.msg_id)),
            m.ratchet_key(),
            if a.opened {
                format!("decrypted {}", a.detail)
            } else {
                format!("failed: {}", a.detail)
            }
        ));
    }
    let matched = in_window
        .iter()
        .filter(|a| a.text.as_ref().is_some_and(|t| window_texts.contains(t)))
        .count();
    heal.check(
        "Alice's messages after t, before the round trip: the thief follows the conversation",
        format!(
            "all {} decrypt, including the {window} texts Alice wrote while Bob was offline",
            in_window.len()
        ),
        format!(
            "{} of {} decrypt; {matched} of the {window} texts match what Alice sent",
            opened(&in_window),
            in_window.len()
        ),
        opened(&in_window) == in_window.len() && matched == window,
    );
    heal.check(
        "Alice's messages after the round trip (texts and receipts): the thief is locked out",
        format!("0 of {} decrypt", after_trip.len()),
        format!(
            "{} of {} decrypt; failures: {:?}",
            opened(&after_trip),
            after_trip.len(),
            reasons(&after_trip)
        ),
        opened(&after_trip) == 0 && !after_trip.is_empty(),
    );
    let bob_opened = |phase: Phase| -> (usize, usize) {
        let list: Vec<&Captured> = of(false, phase);
        let opened = list
            .iter()
            .filter(|m| opens(&keys, &m.payload, &alice_key, &bob_key))
            .count();
        (opened, list.len())
    };
    let (bob_stolen_opened, bob_stolen) = bob_opened(Phase::Window);
    heal.saw(format!(
        "Bob's messages after t under the stolen ratchet key {}: {bob_stolen_opened} of {bob_stolen} \
         opened by key search with the stolen sending chain (expected: the chain is in the copy).",
        hex::encode(&stolen_key[..4])
    ));
    let (bob_fresh_opened, bob_fresh) = bob_opened(Phase::After);
    heal.check(
        "Bob's messages under ratchet keys made after t: key search with the stolen state",
        format!("0 of {bob_fresh}"),
        format!("{bob_fresh_opened} of {bob_fresh}"),
        bob_fresh_opened == 0 && bob_fresh > 0,
    );
    // Second opinion: the agent's own AgentState::decrypt on a copy of the stolen state.
    let mut agent_window = 0;
    let mut agent_after = 0;
    for m in from_alice.iter().filter(|m| m.phase != Phase::Before) {
        if usable
            .decrypt(&alice_key, m.msg_id, &m.payload, &mut OsRng)
            .is_ok()
        {
            match m.phase {
                Phase::Window => agent_window += 1,
                _ => agent_after += 1,
            }
        }
    }
    heal.check(
        "the same with `AgentState::decrypt` on an opened copy of the stolen directory",
        format!("{} before the round trip, 0 after", in_window.len()),
        format!("{agent_window} before the round trip, {agent_after} after"),
        agent_window == in_window.len() && agent_after == 0,
    );
    heal.summary = format!(
        "thief read {}/{} of Alice's messages until the round trip, then {}/{} (and {}/{} of Bob's under fresh keys)",
        opened(&in_window),
        in_window.len(),
        opened(&after_trip),
        after_trip.len(),
        bob_fresh_opened,
        bob_fresh
    );
    fs.put("messages_before_t", before_all.len());
    fs.put("candidate_keys", keys.len());
    fs.put("stolen_secrets", stolen.secrets.counts());
    heal.put("window_decrypted", opened(&in_window));
    heal.put("window_messages", in_window.len());
    heal.put("after_decrypted", opened(&after_trip));
    heal.put("after_messages", after_trip.len());
    Ok(())
}
