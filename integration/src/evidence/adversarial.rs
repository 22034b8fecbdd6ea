//! The adversarial relay: for each misbehaviour (`e2ee-relay-adversary --adversary MODE`) a fresh
//! relay, Alice and Bob; Alice sends numbered texts and the scenario checks what Bob's
//! agent reports for each of them against what the relay logged it did.
//!
//! The relay picks its targets as any relay could: Normal messages of at least 150 bytes
//! (texts of 35 to 98 bytes pad to the 128-byte bucket, 185 bytes on the wire; receipts
//! stay in the 64-byte bucket, 121 bytes), every second one. A warm-up message first
//! establishes the session, so the counted texts are Normal messages.

use std::path::Path;
use std::time::{Duration, Instant};

use super::agents::{
    adversary_actions, is_message, start_relay, wait_published, AdversaryConfig, Agent, AgentOptions, Seen,
    WAIT,
};
use super::report::Section;
use super::{guarded, median_max, short, Scale};
use crate::process::RelayProcess;

/// Smallest payload the adversary targets: texts, not receipts.
const MIN_LEN: usize = 150;
/// Time allowed for anything unexpected to show up at the end.
const SETTLE: Duration = Duration::from_millis(400);

/// Runs every mode; one section each.
pub fn run(scale: Scale, work: &Path) -> Vec<Section> {
    vec![
        guarded(
            Section::new(
                "adversary-tamper",
                "Adversarial relay: tamper",
                "A message whose ciphertext the relay altered is rejected as tampered (never \
                 shown), and the session keeps working for the messages after it.",
            ),
            |s| tamper(scale, work, s),
        ),
        guarded(
            Section::new(
                "adversary-drop",
                "Adversarial relay: drop",
                "A message the relay acknowledges but never forwards leaves a gap the receiver \
                 sees (the next message reports it as skipped) and later messages still decrypt.",
            ),
            |s| drop_mode(scale, work, s),
        ),
        guarded(
            Section::new(
                "adversary-duplicate",
                "Adversarial relay: duplicate",
                "A ciphertext the relay delivers a second time (under a new relay message id) \
                 is rejected as a duplicate; every message is shown exactly once.",
            ),
            |s| duplicate(scale, work, s),
        ),
        guarded(
            Section::new(
                "adversary-replay",
                "Adversarial relay: replay",
                "A recorded ciphertext the relay injects again later, after newer messages, is \
                 rejected as a duplicate (replay); every message is shown exactly once.",
            ),
            |s| replay(scale, work, s),
        ),
        guarded(
            Section::new(
                "adversary-redeliver",
                "Adversarial relay: redeliver under the same id",
                "A delivery the relay repeats under its original relay message id is recognised \
                 before decryption, reported as `redelivered`, acknowledged and not shown again.",
            ),
            |s| redeliver(scale, work, s),
        ),
        guarded(
            Section::new(
                "adversary-reorder",
                "Adversarial relay: reorder",
                "Messages the relay delivers out of order are all shown, each exactly once; the \
                 receiver reports the gap and the late arrival.",
            ),
            |s| reorder(scale, work, s),
        ),
        guarded(
            Section::new(
                "adversary-delay",
                "Adversarial relay: delay",
                "Messages the relay holds back are delivered late but intact, each exactly once, \
                 and the session is unaffected.",
            ),
            |s| delay(scale, work, s),
        ),
    ]
}

/// A relay in one adversary mode with Alice and Bob and an established session.
struct Pair {
    relay: RelayProcess,
    alice: Agent,
    bob: Agent,
    mode: &'static str,
}

impl Pair {
    fn start(work: &Path, config: AdversaryConfig, s: &mut Section) -> anyhow::Result<Self> {
        let dir = work.join(config.mode);
        let relay = start_relay(&dir.join("relay"), Some(&config))?;
        // Session recovery is off here: these scenarios show what the ratchet alone does
        // with each altered message (the recovery section shows the agents heal).
        let options = AgentOptions {
            no_recovery: true,
            ..AgentOptions::default()
        };
        let mut bob = Agent::start_with("bob", relay.addr, &dir.join("bob"), &options)?;
        bob.connected()?;
        wait_published(relay.addr, "bob")?;
        let mut alice = Agent::start_with("alice", relay.addr, &dir.join("alice"), &options)?;
        alice.connected()?;
        let warm = "warm-up: alice opens an end-to-end session with bob";
        alice.send_text("bob", warm)?;
        bob.wait_for("the warm-up message", WAIT, is_message(warm))?;
        alice.wait_for("the warm-up receipt", WAIT, |e| e["event"] == "delivered")?;
        s.did(format!(
            "Started `e2ee-relay-adversary --adversary {}` (every {} eligible message: Normal, at least \
             {} bytes{}), then Alice and Bob, who opened a session with one warm-up message.",
            config.mode,
            ordinal(config.every),
            config.min_len,
            match config.mode {
                "delay" => format!(", held {} ms", config.delay_ms),
                "reorder" | "replay" => format!(", released after the next one or {} ms", config.delay_ms),
                "redeliver" => format!(", repeated after {} ms", config.delay_ms),
                _ => String::new(),
            }
        ));
        Ok(Self {
            relay,
            alice,
            bob,
            mode: config.mode,
        })
    }

    fn text(&self, i: usize) -> String {
        format!(
            "{} test message #{i}: long enough for the 128-byte bucket",
            self.mode
        )
    }

    /// Sends text `i` and returns its relay msg_id (from Alice's `sent` event).
    fn send(&mut self, i: usize) -> anyhow::Result<String> {
        let mark = self.alice.mark();
        let text = self.text(i);
        self.alice.send_text("bob", &text)?;
        let sent = self
            .alice
            .wait_from(mark, "sent (stored at the relay)", WAIT, |e| e["event"] == "sent")?;
        Ok(sent.event["msg_id"].as_str().unwrap_or_default().to_string())
    }

    /// Waits for text `i` or a decrypt failure at Bob, after `mark`.
    fn outcome(&mut self, mark: usize, i: usize) -> anyhow::Result<Seen> {
        let text = self.text(i);
        self.bob
            .wait_from(mark, "the message or a decrypt failure", WAIT, |e| {
                is_message(&text)(e) || e["event"] == "decrypt_failure"
            })
    }

    /// How many times Bob showed text `i`.
    fn shown(&self, i: usize) -> usize {
        let text = self.text(i);
        self.bob.matching(0, is_message(&text)).len()
    }

    fn failures(&self) -> Vec<String> {
        self.bob
            .matching(0, |e| e["event"] == "decrypt_failure")
            .iter()
            .map(|s| s.event["class"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Alice's end-to-end receipts for these msg ids.
    fn receipts(&self, ids: &[String]) -> usize {
        ids.iter()
            .filter(|id| {
                !self
                    .alice
                    .matching(0, |e| e["event"] == "delivered" && e["msg_id"] == id.as_str())
                    .is_empty()
            })
            .count()
    }

    /// What the relay logged it did: (action, msg_id).
    fn actions(&mut self) -> Vec<(String, String)> {
        self.alice.settle(SETTLE);
        self.bob.settle(Duration::from_millis(50));
        adversary_actions(&self.relay.drain_log())
    }
}

fn ordinal(n: u64) -> String {
    match n {
        1 => "single".into(),
        2 => "second".into(),
        n => format!("{n}th"),
    }
}

fn config(mode: &'static str, delay_ms: u64) -> AdversaryConfig {
    AdversaryConfig {
        mode,
        every: 2,
        min_len: MIN_LEN,
        delay_ms,
    }
}

fn ids_of(actions: &[(String, String)], action: &str) -> Vec<String> {
    actions
        .iter()
        .filter(|(a, _)| a == action)
        .map(|(_, id)| id.clone())
        .collect()
}

fn class(seen: &Seen) -> String {
    if seen.event["event"] == "message" {
        "shown".into()
    } else {
        format!(
            "decrypt_failure {}",
            seen.event["class"].as_str().unwrap_or_default()
        )
    }
}

fn tamper(scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    let mut pair = Pair::start(work, config("tamper", 1000), s)?;
    let n = scale.pick(5, 7);
    let mut rows = Vec::new();
    for i in 1..=n {
        let mark = pair.bob.mark();
        let id = pair.send(i)?;
        let seen = pair.outcome(mark, i)?;
        rows.push((i, id, seen));
    }
    let actions = pair.actions();
    let tampered = ids_of(&actions, "tamper");
    s.did(format!(
        "Alice sent {n} numbered texts, one at a time, each after the previous one's outcome at Bob."
    ));
    for (i, id, seen) in &rows {
        let hit = tampered.contains(id);
        s.saw(format!(
            "#{i} (msg {}): relay {} → Bob: {}{}",
            short(id),
            if hit {
                "flipped one ciphertext bit"
            } else {
                "forwarded it unchanged"
            },
            class(seen),
            seen.event["detail"]
                .as_str()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        ));
    }
    let expected: Vec<String> = rows
        .iter()
        .filter(|(i, _, _)| i % 2 == 0)
        .map(|(_, id, _)| id.clone())
        .collect();
    s.check(
        "the relay tampered with every second text",
        format!("{} tampered", expected.len()),
        format!("{} tampered, as logged by the relay", tampered.len()),
        tampered == expected,
    );
    let rejected = rows
        .iter()
        .filter(|(_, id, seen)| tampered.contains(id) && seen.event["class"] == "tampered")
        .count();
    s.check(
        "tampered messages are rejected as tampered",
        format!("{} decrypt_failure tampered", tampered.len()),
        format!("{rejected} of {}", tampered.len()),
        rejected == tampered.len() && !tampered.is_empty(),
    );
    let leaked: usize = rows
        .iter()
        .filter(|(_, id, _)| tampered.contains(id))
        .map(|(i, _, _)| pair.shown(*i))
        .sum();
    s.check(
        "tampered messages are never shown",
        "0",
        leaked.to_string(),
        leaked == 0,
    );
    let genuine: Vec<_> = rows.iter().filter(|(_, id, _)| !tampered.contains(id)).collect();
    let intact = genuine.iter().filter(|(i, _, _)| pair.shown(*i) == 1).count();
    let after = rows
        .iter()
        .filter(|(i, _, _)| *i > 1 && tampered.contains(&rows[i - 2].1))
        .filter(|(i, _, _)| pair.shown(*i) == 1)
        .count();
    s.check(
        "the session keeps working: every genuine text decrypts, including each one right after a tampered one",
        format!("{} of {} shown once ({} right after a tampered one)", genuine.len(), genuine.len(), tampered.len()),
        format!("{intact} of {} shown once ({after} right after a tampered one)", genuine.len()),
        intact == genuine.len() && after == tampered.len(),
    );
    let genuine_ids: Vec<String> = genuine.iter().map(|(_, id, _)| id.clone()).collect();
    s.saw(format!(
        "Alice received end-to-end receipts for {} of {} genuine texts and {} of {} tampered ones.",
        pair.receipts(&genuine_ids),
        genuine_ids.len(),
        pair.receipts(&tampered),
        tampered.len()
    ));
    s.summary = format!(
        "{rejected}/{} tampered texts rejected as `tampered`, {intact}/{} genuine ones shown",
        tampered.len(),
        genuine.len()
    );
    Ok(())
}

fn drop_mode(scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    let mut pair = Pair::start(work, config("drop", 1000), s)?;
    let n = scale.pick(5, 7);
    let mut ids = Vec::new();
    let mut shown: Vec<Option<Seen>> = Vec::new();
    for i in 1..=n {
        let mark = pair.bob.mark();
        ids.push(pair.send(i)?);
        shown.push(if i % 2 == 0 {
            None
        } else {
            Some(pair.outcome(mark, i)?)
        });
    }
    let actions = pair.actions();
    let dropped = ids_of(&actions, "drop");
    s.did(format!(
        "Alice sent {n} numbered texts; for the ones the relay forwards the scenario waited \
         for Bob's agent, for the others only for the relay's acknowledgement (`sent`)."
    ));
    for (k, id) in ids.iter().enumerate() {
        let i = k + 1;
        let what = match &shown[k] {
            Some(seen) => format!(
                "Bob: {} (newly_skipped {}, late {})",
                class(seen),
                seen.event["newly_skipped"],
                seen.event["late"]
            ),
            None => format!("Bob: nothing (shown {} times)", pair.shown(i)),
        };
        let relay = if dropped.contains(id) {
            "acknowledged, dropped"
        } else {
            "forwarded"
        };
        s.saw(format!("#{i} (msg {}): relay {relay} → {what}", short(id)));
    }
    let expected: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(k, _)| (k + 1) % 2 == 0)
        .map(|(_, id)| id.clone())
        .collect();
    s.check(
        "the relay acknowledged and dropped every second text",
        format!("{} dropped (Alice saw `sent` for all {n})", expected.len()),
        format!("{} dropped, as logged by the relay", dropped.len()),
        dropped == expected,
    );
    let gaps = (1..n)
        .filter(|k| dropped.contains(&ids[k - 1]))
        .filter(|k| shown[*k].as_ref().is_some_and(|s| s.event["newly_skipped"] == 1))
        .count();
    s.check(
        "the gap is visible: the text after each dropped one reports newly_skipped = 1",
        format!("{} of {}", dropped.len(), dropped.len()),
        format!("{gaps} of {}", dropped.len()),
        gaps == dropped.len() && !dropped.is_empty(),
    );
    let later = shown
        .iter()
        .flatten()
        .filter(|s| s.event["event"] == "message")
        .count();
    let forwarded = n - dropped.len();
    s.check(
        "every forwarded text still decrypts",
        format!("{forwarded} shown"),
        format!("{later} shown, {} decrypt failures", pair.failures().len()),
        later == forwarded && pair.failures().is_empty(),
    );
    let ghost: usize = (1..=n)
        .filter(|i| dropped.contains(&ids[i - 1]))
        .map(|i| pair.shown(i))
        .sum();
    s.check("dropped texts never appear", "0", ghost.to_string(), ghost == 0);
    s.saw(format!(
        "The sender can tell too: Alice got receipts for {} of {} forwarded texts and for {} of \
         {} dropped ones, although the relay acknowledged all of them.",
        pair.receipts(
            &ids.iter()
                .filter(|id| !dropped.contains(id))
                .cloned()
                .collect::<Vec<_>>()
        ),
        forwarded,
        pair.receipts(&dropped),
        dropped.len()
    ));
    s.summary = format!(
        "{gaps}/{} drops visible as newly_skipped = 1 on the next text; {later}/{forwarded} forwarded texts shown",
        dropped.len()
    );
    Ok(())
}

fn duplicate(scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    let mut pair = Pair::start(work, config("duplicate", 1000), s)?;
    let n = scale.pick(4, 6);
    let mut ids = Vec::new();
    for i in 1..=n {
        let mark = pair.bob.mark();
        ids.push(pair.send(i)?);
        pair.bob
            .wait_from(mark, "the message", WAIT, is_message(&pair.text(i)))?;
        if i % 2 == 0 {
            pair.bob.wait_from(mark, "a decrypt failure", WAIT, |e| {
                e["event"] == "decrypt_failure"
            })?;
        }
    }
    let actions = pair.actions();
    let copies = ids_of(&actions, "duplicate");
    s.did(format!(
        "Alice sent {n} numbered texts; the relay stored every second one twice, the copy \
         under a fresh relay msg_id (so the agent cannot drop it as a relay redelivery and \
         must judge the ciphertext itself)."
    ));
    let failures = pair.failures();
    for (k, id) in ids.iter().enumerate() {
        s.saw(format!(
            "#{} (msg {}): shown {} time(s)",
            k + 1,
            short(id),
            pair.shown(k + 1)
        ));
    }
    s.saw(format!(
        "Relay copies injected under new ids: {}; Bob's decrypt failures: {:?}.",
        copies.iter().map(|c| short(c)).collect::<Vec<_>>().join(", "),
        failures
    ));
    s.check(
        "the relay injected a copy of every second text under a new id",
        format!("{} copies, none with an original id", n / 2),
        format!("{} copies", copies.len()),
        copies.len() == n / 2 && copies.iter().all(|c| !ids.contains(c)),
    );
    let duplicates = failures.iter().filter(|c| *c == "duplicate").count();
    s.check(
        "every copy is rejected as a duplicate",
        format!("{} decrypt_failure duplicate, no other failure", copies.len()),
        format!("{duplicates} duplicate, {} other", failures.len() - duplicates),
        duplicates == copies.len() && failures.len() == duplicates,
    );
    let once = (1..=n).filter(|i| pair.shown(*i) == 1).count();
    s.check(
        "every text is shown exactly once",
        format!("{n} of {n}"),
        format!("{once} of {n}"),
        once == n,
    );
    s.summary = format!(
        "{duplicates}/{} injected copies rejected as `duplicate`; {once}/{n} texts shown once",
        copies.len()
    );
    Ok(())
}

fn replay(scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    let mut pair = Pair::start(work, config("replay", 10_000), s)?;
    let n = scale.pick(3, 5);
    let mut ids = Vec::new();
    let mut order = Vec::new();
    for i in 1..=n {
        let mark = pair.bob.mark();
        ids.push(pair.send(i)?);
        let shown = pair
            .bob
            .wait_from(mark, "the message", WAIT, is_message(&pair.text(i)))?;
        order.push(format!("#{i}"));
        if i >= 3 && i % 2 == 1 {
            let failure = pair.bob.wait_from(mark, "a decrypt failure", WAIT, |e| {
                e["event"] == "decrypt_failure"
            })?;
            let after = failure.at >= shown.at;
            order.push(format!(
                "replay of #{} {} ({})",
                i - 1,
                failure.event["class"].as_str().unwrap_or_default(),
                if after {
                    "after #".to_string() + &i.to_string()
                } else {
                    "early".into()
                }
            ));
        }
    }
    let actions = pair.actions();
    let recorded = ids_of(&actions, "replay_recorded");
    let released = ids_of(&actions, "release");
    s.did(format!(
        "Alice sent {n} numbered texts; the relay forwarded each, kept a copy of every second \
         one and injected it again under a fresh relay msg_id right after the next text (by \
         then Bob's ratchet had moved on)."
    ));
    s.saw(format!(
        "What Bob's agent reported, in order: {}.",
        order.join(", ")
    ));
    let expected: Vec<String> = ids
        .iter()
        .enumerate()
        .filter(|(k, _)| (k + 1) % 2 == 0)
        .map(|(_, id)| id.clone())
        .collect();
    let replays = expected.len().min(n.saturating_sub(1) / 2);
    s.check(
        "the relay recorded every second text and replayed it after the next one",
        format!("{replays} replayed"),
        format!("{} recorded, {} replayed", recorded.len(), released.len()),
        recorded == expected && released.len() == replays,
    );
    let failures = pair.failures();
    let duplicates = failures.iter().filter(|c| *c == "duplicate").count();
    s.check(
        "every replay is rejected as a duplicate",
        format!("{replays} decrypt_failure duplicate, no other failure"),
        format!("{duplicates} duplicate, {} other", failures.len() - duplicates),
        duplicates == replays && failures.len() == duplicates && replays > 0,
    );
    let once = (1..=n).filter(|i| pair.shown(*i) == 1).count();
    s.check(
        "every text is shown exactly once",
        format!("{n} of {n}"),
        format!("{once} of {n}"),
        once == n,
    );
    s.summary =
        format!("{duplicates}/{replays} replays rejected as `duplicate`; {once}/{n} texts shown once");
    Ok(())
}

fn redeliver(scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    let mut pair = Pair::start(work, config("redeliver", 300), s)?;
    let n = scale.pick(2, 4);
    let mut ids = Vec::new();
    for i in 1..=n {
        let mark = pair.bob.mark();
        let id = pair.send(i)?;
        pair.bob
            .wait_from(mark, "the message", WAIT, is_message(&pair.text(i)))?;
        if i % 2 == 0 {
            pair.bob.wait_from(mark, "the redelivery", WAIT, |e| {
                e["event"] == "redelivered" && e["msg_id"] == id.as_str()
            })?;
        }
        ids.push(id);
    }
    let actions = pair.actions();
    let repeated = ids_of(&actions, "redeliver");
    let reported: Vec<String> = pair
        .bob
        .matching(0, |e| e["event"] == "redelivered")
        .iter()
        .map(|seen| seen.event["msg_id"].as_str().unwrap_or_default().to_string())
        .collect();
    s.did(format!(
        "Alice sent {n} numbered texts; 300 ms after forwarding every second one the relay \
         pushed the same Deliver again, under the same relay msg_id, straight to Bob."
    ));
    s.saw(format!(
        "Relay repeats: {}; Bob's `redelivered` reports: {}; Bob's decrypt failures: {:?}.",
        repeated.iter().map(|c| short(c)).collect::<Vec<_>>().join(", "),
        reported.iter().map(|c| short(c)).collect::<Vec<_>>().join(", "),
        pair.failures()
    ));
    let expected: Vec<String> = ids.iter().skip(1).step_by(2).cloned().collect();
    s.check(
        "the relay repeated every second delivery under its original id",
        format!("{} repeats", expected.len()),
        format!("{} repeats", repeated.len()),
        repeated == expected,
    );
    s.check(
        "every repeat is reported as `redelivered`, with its id",
        format!("{:?}", expected.iter().map(|c| short(c)).collect::<Vec<_>>()),
        format!("{:?}", reported.iter().map(|c| short(c)).collect::<Vec<_>>()),
        reported == expected && !expected.is_empty(),
    );
    let failures = pair.failures();
    let once = (1..=n).filter(|i| pair.shown(*i) == 1).count();
    s.check(
        "nothing is shown twice and nothing fails to decrypt",
        format!("{n} of {n} shown once, no decrypt failure"),
        format!("{once} of {n} shown once, {} decrypt failures", failures.len()),
        once == n && failures.is_empty(),
    );
    s.summary = format!(
        "{}/{} repeats under the original id reported as `redelivered`; {once}/{n} texts shown once",
        reported.len(),
        repeated.len()
    );
    Ok(())
}

fn reorder(scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    let mut pair = Pair::start(work, config("reorder", 10_000), s)?;
    let pairs = scale.pick(1, 2);
    let n = 1 + 2 * pairs;
    let mark = pair.bob.mark();
    pair.send(1)?;
    pair.bob
        .wait_from(mark, "the message", WAIT, is_message(&pair.text(1)))?;
    let mut swapped = 0;
    let mut flags_ok = 0;
    for k in 0..pairs {
        let (first, second) = (2 + 2 * k, 3 + 2 * k);
        let mark = pair.bob.mark();
        let (a, b) = (pair.text(first), pair.text(second));
        pair.alice.send_text("bob", &a)?;
        pair.alice.send_text("bob", &b)?;
        let held = pair
            .bob
            .wait_from(mark, "the held message", WAIT, is_message(&a))?;
        let overtaking = pair
            .bob
            .wait_from(mark, "the next message", WAIT, is_message(&b))?;
        let arrival: Vec<&str> = pair
            .bob
            .matching(mark, |e| e["event"] == "message")
            .iter()
            .filter_map(|s| s.event["text"].as_str())
            .collect();
        let reordered = arrival.first() == Some(&b.as_str());
        swapped += usize::from(reordered);
        let flags = overtaking.event["newly_skipped"] == 1
            && overtaking.event["late"] == false
            && held.event["late"] == true;
        flags_ok += usize::from(flags);
        s.saw(format!(
            "#{first} and #{second} sent back to back; Bob got #{} first (newly_skipped {}, late {}), \
             then #{} (newly_skipped {}, late {}).",
            if reordered { second } else { first },
            if reordered {
                &overtaking.event["newly_skipped"]
            } else {
                &held.event["newly_skipped"]
            },
            if reordered {
                &overtaking.event["late"]
            } else {
                &held.event["late"]
            },
            if reordered { first } else { second },
            if reordered {
                &held.event["newly_skipped"]
            } else {
                &overtaking.event["newly_skipped"]
            },
            if reordered {
                &held.event["late"]
            } else {
                &overtaking.event["late"]
            },
        ));
    }
    let actions = pair.actions();
    s.did(format!(
        "Alice sent text #1, then {pairs} pair(s) of texts back to back; the relay held the \
         first of each pair (acknowledging it) and released it right after the second."
    ));
    let held = ids_of(&actions, "hold").len();
    let released = ids_of(&actions, "release").len();
    s.check(
        "the relay held and released one text per pair",
        format!("{pairs} held, {pairs} released"),
        format!("{held} held, {released} released"),
        held == pairs && released == pairs,
    );
    s.check(
        "the texts arrived out of order",
        format!("{pairs} of {pairs} pairs swapped"),
        format!("{swapped} of {pairs}"),
        swapped == pairs,
    );
    let once = (1..=n).filter(|i| pair.shown(*i) == 1).count();
    let failures = pair.failures();
    s.check(
        "all delivered once",
        format!("{n} of {n} shown exactly once, no decrypt failure"),
        format!("{once} of {n}, {} decrypt failures", failures.len()),
        once == n && failures.is_empty(),
    );
    s.check(
        "the receiver reports the reordering",
        "overtaking text: newly_skipped 1; held text: late true",
        format!("{flags_ok} of {pairs} pairs"),
        flags_ok == pairs,
    );
    s.summary = format!(
        "{swapped}/{pairs} pairs reordered, {once}/{n} texts shown once, gaps and late arrivals reported"
    );
    Ok(())
}

fn delay(scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    let delay_ms = scale.pick(700, 1500);
    let mut pair = Pair::start(work, config("delay", delay_ms), s)?;
    let n = scale.pick(4, 6);
    let mut latencies = Vec::new();
    for i in 1..=n {
        let mark = pair.bob.mark();
        let started = Instant::now();
        pair.alice.send_text("bob", &pair.text(i))?;
        let seen = pair
            .bob
            .wait_from(mark, "the message", WAIT, is_message(&pair.text(i)))?;
        latencies.push(seen.at.saturating_duration_since(started));
    }
    let actions = pair.actions();
    let delayed = ids_of(&actions, "delay").len();
    s.did(format!(
        "Alice sent {n} numbered texts one at a time; the relay held every second one for \
         {delay_ms} ms before storing and forwarding it."
    ));
    let (slow, fast): (Vec<_>, Vec<_>) = latencies.iter().enumerate().partition(|(k, _)| (k + 1) % 2 == 0);
    let slow: Vec<Duration> = slow.into_iter().map(|(_, d)| *d).collect();
    let fast: Vec<Duration> = fast.into_iter().map(|(_, d)| *d).collect();
    let (slow_median, slow_max) = median_max(&slow);
    let (fast_median, fast_max) = median_max(&fast);
    s.saw(format!(
        "Send-to-shown time: delayed texts median {slow_median} ms (max {slow_max}), the others \
         median {fast_median} ms (max {fast_max})."
    ));
    s.check(
        "the relay delayed every second text",
        format!("{}", n / 2),
        format!("{delayed}"),
        delayed == n / 2,
    );
    let late_enough = slow.iter().filter(|d| d.as_millis() as u64 >= delay_ms).count();
    s.check(
        "delayed texts arrive late",
        format!("all {} take at least {delay_ms} ms", slow.len()),
        format!("{late_enough} of {}", slow.len()),
        late_enough == slow.len() && !slow.is_empty(),
    );
    let once = (1..=n).filter(|i| pair.shown(*i) == 1).count();
    let failures = pair.failures();
    let in_order = {
        let texts: Vec<String> = pair
            .bob
            .matching(0, |e| e["event"] == "message")
            .iter()
            .filter_map(|s| s.event["text"].as_str().map(str::to_string))
            .filter(|t| t.starts_with("delay test"))
            .collect();
        texts == (1..=n).map(|i| pair.text(i)).collect::<Vec<_>>()
    };
    s.check(
        "delayed texts decrypt intact, each once, and the session is unaffected",
        format!("{n} of {n} shown once, in order, no decrypt failure"),
        format!(
            "{once} of {n}, in order: {in_order}, {} decrypt failures",
            failures.len()
        ),
        once == n && in_order && failures.is_empty(),
    );
    s.summary = format!("{delayed} texts held {delay_ms} ms; all {once}/{n} shown once, in order (median {slow_median} vs {fast_median} ms)");
    Ok(())
}
