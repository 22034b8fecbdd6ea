//! Confidentiality on the wire: a scripted conversation through a recording proxy, then
//! every recorded byte (and the relay's own files) is searched for every plaintext and
//! every secret key the two agents held at any point of the conversation.

use std::collections::BTreeMap;
use std::path::Path;

use e2ee_protocol::frame::Frame;
use e2ee_protocol::message::Message;
use e2ee_protocol::payload::BUCKETS;

use super::agents::{is_message, start_plaintext_relay, wait_published_plaintext, Agent, WAIT};
use super::report::Section;
use super::search::{encodings, Haystack};
use super::state_files::{public_keys_of, secrets_of, Secrets};
use super::{guarded, Scale};
use crate::proxy::{Direction, RecordingProxy};

/// Runs the scenario.
pub fn run(scale: Scale, work: &Path) -> Section {
    let section = Section::new(
        "confidentiality",
        "Confidentiality on the wire",
        "Nothing that passes between the agents and the relay, and nothing the relay stores, \
         contains a plaintext or a secret key: the relay sees ciphertext, public keys and \
         metadata only.",
    );
    guarded(section, |s| body(scale, work, s))
}

/// The conversation's plaintexts: distinct, at least 16 bytes, one long, one not ASCII.
fn plaintexts(count: usize, long_lines: usize) -> Vec<String> {
    let mut texts: Vec<String> = (0..count)
        .map(|i| {
            format!(
                "confidential #{i:02}: the meeting moves to dock {} at {}:{:02}, bring the blue folder",
                3 + i,
                10 + i % 9,
                (i * 7) % 60
            )
        })
        .collect();
    texts.insert(
        1,
        "not ASCII: Grüße aus Zürich, naïve café, 東京で会いましょう ✓".into(),
    );
    texts.insert(
        2,
        (0..long_lines)
            .map(|j| format!("line {j} of a long confidential report on quarter {};", j % 4 + 1))
            .collect::<Vec<_>>()
            .join(" "),
    );
    texts
}

fn deliver(from: &mut Agent, to: &mut Agent, text: &str) -> anyhow::Result<()> {
    from.send_text(&to.name, text)?;
    to.wait_for("the message", WAIT, is_message(text))?;
    Ok(())
}

fn snapshot(secrets: &mut Secrets, agents: [&Agent; 2]) -> anyhow::Result<()> {
    for agent in agents {
        secrets.extend(&secrets_of(&agent.state_dir)?);
    }
    Ok(())
}

/// Every padded crypto v2 message length a relay can see (section 3.6 of PROTOCOL.md).
fn padded_lengths() -> Vec<usize> {
    BUCKETS.iter().flat_map(|b| [b + 73, b + 170, b + 202]).collect()
}

fn body(scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    let mut relay = start_plaintext_relay(&work.join("relay"))?;
    let proxy = RecordingProxy::start(relay.addr)?;
    s.did(
        "Started `e2ee-relay` and a recording TCP proxy in front of it; both agents connect \
         through the proxy, which keeps a copy of every byte in both directions.",
    );
    let mut bob = Agent::start_plaintext("bob", proxy.addr, &work.join("bob"))?;
    bob.connected()?;
    wait_published_plaintext(relay.addr, "bob")?;
    let mut alice = Agent::start_plaintext("alice", proxy.addr, &work.join("alice"))?;
    alice.connected()?;

    let texts = plaintexts(scale.pick(6, 16), scale.pick(20, 80));
    let offline = scale.pick(2, 4);
    let (online_texts, offline_texts) = texts.split_at(texts.len() - offline);
    let mut secrets = Secrets::default();
    for (i, text) in online_texts.iter().enumerate() {
        if i % 2 == 0 {
            deliver(&mut alice, &mut bob, text)?;
        } else {
            deliver(&mut bob, &mut alice, text)?;
        }
        snapshot(&mut secrets, [&alice, &bob])?;
    }
    // Store-and-forward too: Bob offline, Alice writes, Bob comes back.
    bob.quit()?;
    let mark = alice.mark();
    for text in offline_texts {
        alice.send_text("bob", text)?;
    }
    alice.wait_count(mark, "stored at the relay", offline_texts.len(), WAIT, |e| {
        e["event"] == "sent"
    })?;
    snapshot(&mut secrets, [&alice, &bob])?;
    let mut bob = Agent::start_plaintext("bob", proxy.addr, &work.join("bob"))?;
    for text in offline_texts {
        bob.wait_for("a stored message", WAIT, is_message(text))?;
    }
    alice.wait_count(mark, "receipts", offline_texts.len(), WAIT, |e| {
        e["event"] == "delivered"
    })?;
    alice.quit()?;
    bob.quit()?;
    snapshot(&mut secrets, [&alice, &bob])?;
    s.did(format!(
        "Alice and Bob exchanged {} text messages (one of {} bytes, one not ASCII) with \
         end-to-end receipts; {} more were written while Bob was offline and delivered from \
         the relay's store when he came back.",
        online_texts.len(),
        texts.iter().map(String::len).max().unwrap_or(0),
        offline
    ));
    s.did(
        "After every message both state directories were read (as files, from outside the \
         agents) and every secret key collected: identity seeds (and their X25519 form), \
         signed and one-time prekey private keys, ratchet private keys, root keys, sending and \
         receiving chain keys, skipped message keys, and the next message key of each chain.",
    );

    let recording = proxy.stop();
    let _ = relay.terminate(WAIT);
    let mut wire = Haystack::default();
    for stream in recording.streams() {
        wire.add(&stream.bytes);
    }
    let mut disk = Haystack::default();
    let mut disk_files = 0;
    for entry in walk_files(&work.join("relay"))? {
        disk.add(&std::fs::read(&entry)?);
        disk_files += 1;
    }
    s.did(format!(
        "Searched all {} recorded bytes ({} connections, {} byte streams) and the relay's {} \
         data files ({} bytes: SQLite database, WAL, relay id) for every plaintext and every \
         secret, raw and as lower- and uppercase hex; a value counts as found if any 16-byte \
         piece of it occurs, so partial leaks count too.",
        wire.bytes, recording.connections, wire.parts, disk_files, disk.bytes
    ));

    let mut plaintext_hits = Vec::new();
    for text in &texts {
        for (place, hay) in [("wire", &wire), ("relay files", &disk)] {
            if hay.contains(text.as_bytes()) {
                plaintext_hits.push(format!(
                    "{place}: {:?}",
                    text.chars().take(40).collect::<String>()
                ));
            }
        }
    }
    let mut secret_hits: BTreeMap<String, usize> = BTreeMap::new();
    let mut forms = 0;
    for (bytes, kind) in &secrets.keys {
        for form in encodings(bytes) {
            forms += 1;
            for (place, hay) in [("wire", &wire), ("relay files", &disk)] {
                if hay.contains(&form) {
                    *secret_hits.entry(format!("{kind} on the {place}")).or_insert(0) += 1;
                }
            }
        }
    }
    s.saw(format!(
        "{} distinct secrets collected from the two state directories: {}.",
        secrets.keys.len(),
        secrets.describe()
    ));
    s.check(
        "plaintexts on the wire or in the relay's files",
        "none of the plaintexts",
        if plaintext_hits.is_empty() {
            format!(
                "0 of {} plaintexts found in {} + {} bytes",
                texts.len(),
                wire.bytes,
                disk.bytes
            )
        } else {
            format!("found: {}", plaintext_hits.join("; "))
        },
        plaintext_hits.is_empty(),
    );
    s.check(
        "secret keys on the wire or in the relay's files",
        "none of the secrets, in any form",
        if secret_hits.is_empty() {
            format!("0 of {} secrets ({forms} forms) found", secrets.keys.len())
        } else {
            format!("found: {secret_hits:?}")
        },
        secret_hits.is_empty() && !secrets.keys.is_empty(),
    );

    // Positive controls: values that must be on the wire are found by the same search.
    let mut controls = Vec::new();
    for agent in [&alice, &bob] {
        for (what, key) in public_keys_of(&agent.state_dir)? {
            controls.push((format!("{}'s {what}", agent.name), wire.contains(&key)));
        }
    }
    let found = controls.iter().filter(|(_, hit)| *hit).count();
    s.check(
        "positive control: public keys that must cross the wire are found",
        "all found (identity keys in Auth, signed prekeys in bundles)",
        format!(
            "{found} of {}: {}",
            controls.len(),
            controls
                .iter()
                .map(|(what, hit)| format!("{what} {}", if *hit { "found" } else { "missing" }))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        found == controls.len(),
    );

    // What the relay does see: message sizes fall in the padding buckets.
    let (frames, unparsed) = recording.frames();
    let mut sizes: BTreeMap<usize, usize> = BTreeMap::new();
    let mut undecodable = 0;
    let mut messages = 0;
    for captured in &frames {
        if captured.direction != Direction::ToRelay {
            continue;
        }
        if let Frame::Send { payload, .. } = &captured.frame {
            messages += 1;
            *sizes.entry(payload.len()).or_insert(0) += 1;
            match Message::decode(payload) {
                Ok(message) if message.header().salt.is_some() => {}
                // A crypto v1 message (no salt) counts as wrong too: agents send v2.
                _ => undecodable += 1,
            }
        }
    }
    let allowed = padded_lengths();
    let odd: Vec<usize> = sizes.keys().copied().filter(|n| !allowed.contains(n)).collect();
    s.saw(format!(
        "{} frames parsed from the recording ({unparsed} byte streams with an incomplete tail); \
         {messages} Send frames, payload lengths seen by the relay (length: count): {:?}.",
        frames.len(),
        sizes
    ));
    s.check(
        "message lengths on the wire",
        "every message is a crypto v2 message whose length is a padded size (bucket + 73, 170 or 202)",
        format!(
            "{messages} messages, {undecodable} undecodable or not v2, {} with another length",
            odd.len()
        ),
        messages > 0 && undecodable == 0 && odd.is_empty(),
    );
    s.put("wire_bytes", wire.bytes);
    s.put("relay_file_bytes", disk.bytes);
    s.put("connections", recording.connections);
    s.put("plaintexts", texts.len());
    s.put("secrets", secrets.counts());
    s.put("message_lengths", &sizes);
    s.summary = format!(
        "0 of {} plaintexts and 0 of {} secrets in {} wire bytes + {} relay-file bytes",
        texts.len(),
        secrets.keys.len(),
        wire.bytes,
        disk.bytes
    );
    if !(plaintext_hits.is_empty() && secret_hits.is_empty()) {
        s.summary = "a plaintext or secret was found".into();
    }
    Ok(())
}

fn walk_files(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            out.extend(walk_files(&entry.path())?);
        } else {
            out.push(entry.path());
        }
    }
    Ok(out)
}
