//! Relay availability: while a pair of agents keeps talking (one of them is killed with
//! SIGKILL and restarted midway), raw clients join, exchange messages and vanish without
//! a goodbye, round after round, and a misbehaving client sends garbage of every kind.
//! The relay must keep serving everyone, close only the offending connections, and
//! never lose or duplicate a message.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use e2ee_protocol::frame::{ErrorCode, Frame};
use e2ee_protocol::identity::IdentityKeyPair;
use futures_util::{SinkExt, StreamExt};
use rand_core::{OsRng, RngCore};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::agents::{is_message, runtime, start_relay, wait_published, Agent, WAIT};
use super::report::Section;
use super::{guarded, median_max, Scale};
use crate::client::{login_message, msg_id, open_link, RelayClient};
use crate::process::rss_kib;

/// Runs the scenario.
pub fn run(scale: Scale, work: &Path) -> Section {
    let section = Section::new(
        "availability",
        "Relay availability under churn and garbage",
        "The relay keeps serving while clients join, crash and reconnect and while a \
         misbehaving client sends garbage: it closes only the offending connections, and \
         every message between well-behaved clients is delivered exactly once.",
    );
    guarded(section, |s| body(scale, work, s))
}

/// What the churning clients achieved.
#[derive(Debug, Default)]
struct Churn {
    rounds: usize,
    logins: usize,
    delivered: usize,
    /// Delivered again on a later connection (acknowledged on an earlier one).
    redelivered: usize,
    /// Delivered twice on the same connection.
    repeated: usize,
    half_frames: usize,
}

/// One client per identity per round: log in, send one message to the next identity,
/// receive the one from the previous identity, then vanish (sometimes mid-frame).
async fn churn(addr: SocketAddr, clients: usize, rounds: usize) -> anyhow::Result<Churn> {
    let ids: Vec<IdentityKeyPair> = (0..clients)
        .map(|_| IdentityKeyPair::generate(&mut OsRng))
        .collect();
    let publics: Vec<[u8; 32]> = ids.iter().map(|i| *i.public().as_bytes()).collect();
    let mut stats = Churn::default();
    let mut seen = HashSet::new();
    for round in 0..rounds {
        let tasks = ids.iter().enumerate().map(|(i, id)| {
            let to = publics[(i + 1) % clients];
            let from = publics[(i + clients - 1) % clients];
            let id = id.clone();
            async move {
                let mut client = RelayClient::connect(addr, id).await?;
                let mine = msg_id((round * 10_000 + i) as u64);
                let expected = msg_id((round * 10_000 + (i + clients - 1) % clients) as u64);
                client
                    .send(Frame::Send {
                        recipient: to,
                        msg_id: mine,
                        payload: format!("churn round {round} from {i}").into_bytes(),
                    })
                    .await?;
                let (mut acked, mut got, mut received) = (false, false, Vec::new());
                while !(acked && got) {
                    match client.recv(WAIT).await? {
                        Frame::SentAck { msg_id } if msg_id == mine => acked = true,
                        Frame::Deliver { sender, msg_id, .. } => {
                            client.send(Frame::DeliveryAck { sender, msg_id }).await?;
                            received.push((sender, msg_id));
                            got |= sender == from && msg_id == expected;
                        }
                        Frame::Error { code, reason } => bail!("relay error {code:?}: {reason}"),
                        _ => {}
                    }
                }
                let half = (round + i) % 3 == 0;
                if half {
                    // Crash in the middle of writing a frame.
                    let _ = client
                        .framed()
                        .get_mut()
                        .write_all(&[0, 0, 0, 60, 1, 0x20, 7])
                        .await;
                }
                anyhow::Ok((received, half))
            }
        });
        for outcome in futures_util::future::join_all(tasks).await {
            let (received, half) = outcome?;
            stats.logins += 1;
            stats.half_frames += usize::from(half);
            let mut this_connection = HashSet::new();
            for key in received {
                if !this_connection.insert(key) {
                    stats.repeated += 1;
                } else if seen.insert(key) {
                    stats.delivered += 1;
                } else {
                    stats.redelivered += 1;
                }
            }
        }
        stats.rounds += 1;
    }
    Ok(stats)
}

/// The kinds of garbage, with the error code the relay should close with.
const GARBAGE: [(&str, Option<ErrorCode>); 8] = [
    ("random bytes", Some(ErrorCode::FrameTooLarge)),
    ("length prefix over the limit", Some(ErrorCode::FrameTooLarge)),
    ("unknown version", Some(ErrorCode::Malformed)),
    ("unknown frame type", Some(ErrorCode::Malformed)),
    ("Auth with a bad signature", Some(ErrorCode::AuthFailed)),
    ("a frame before authenticating", Some(ErrorCode::NotAuthenticated)),
    ("authenticated, then trailing bytes", Some(ErrorCode::Malformed)),
    ("half a frame, then hang up", None),
];

/// Sends garbage of kind `kind`; returns the error code the relay closed with (None if it
/// closed silently or we hung up first).
async fn garbage(addr: SocketAddr, kind: usize) -> anyhow::Result<Option<ErrorCode>> {
    let (mut framed, binding) = open_link(addr).await?;
    let challenge = tokio::time::timeout(WAIT, framed.next())
        .await?
        .ok_or_else(|| anyhow!("closed before the challenge"))??;
    let Frame::Challenge { relay_id, nonce } = challenge else {
        bail!("expected a challenge, got {challenge:?}");
    };
    let mut bytes = Vec::new();
    match kind {
        0 => {
            bytes = vec![0u8; 64 + (OsRng.next_u32() % 4000) as usize];
            OsRng.fill_bytes(&mut bytes);
            bytes[0] |= 0x10; // any length prefix of 256 MiB or more: over every limit
        }
        1 => bytes.extend_from_slice(&0x8000_0000u32.to_be_bytes()),
        2 => bytes.extend_from_slice(&[0, 0, 0, 10, 7, 0x40, 0, 0, 0, 0, 0, 0, 0, 1]),
        3 => bytes.extend_from_slice(&[0, 0, 0, 2, 1, 0x55]),
        4 => {
            let identity = IdentityKeyPair::generate(&mut OsRng);
            let me = *identity.public().as_bytes();
            let mut signature = identity.sign(&login_message(&relay_id, &nonce, &me, binding.as_ref()));
            signature[0] ^= 1;
            framed
                .send(Frame::Auth {
                    identity: me,
                    signature,
                })
                .await?;
        }
        5 => framed.send(Frame::Ping { nonce: 1 }).await?,
        6 => {
            let identity = IdentityKeyPair::generate(&mut OsRng);
            let me = *identity.public().as_bytes();
            let signature = identity.sign(&login_message(&relay_id, &nonce, &me, binding.as_ref()));
            framed
                .send(Frame::Auth {
                    identity: me,
                    signature,
                })
                .await?;
            bytes.extend_from_slice(&[0, 0, 0, 12, 1, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 0xde, 0xad]);
        }
        _ => {
            framed
                .get_mut()
                .write_all(&[0, 0, 0, 40, 1, 0x20, 1, 2, 3])
                .await?;
            framed.get_mut().flush().await?;
            return Ok(None);
        }
    }
    if !bytes.is_empty() {
        framed.get_mut().write_all(&bytes).await?;
        framed.get_mut().flush().await?;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, framed.next()).await {
            Err(_) => bail!("the relay kept the connection open"),
            Ok(Some(Ok(Frame::Error { code, .. }))) => {
                // Read to the end: the relay must close after it.
                while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, framed.next()).await {}
                return Ok(Some(code));
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return Ok(None),
        }
    }
}

async fn garbage_storm(addr: SocketAddr, count: usize) -> anyhow::Result<BTreeMap<usize, (usize, usize)>> {
    let mut by_kind: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for batch in (0..count).collect::<Vec<_>>().chunks(8) {
        let outcomes =
            futures_util::future::join_all(batch.iter().map(|i| garbage(addr, i % GARBAGE.len()))).await;
        for (i, outcome) in batch.iter().zip(outcomes) {
            let kind = i % GARBAGE.len();
            let entry = by_kind.entry(kind).or_insert((0, 0));
            entry.0 += 1;
            if outcome? == GARBAGE[kind].1 {
                entry.1 += 1;
            }
        }
    }
    Ok(by_kind)
}

fn body(scale: Scale, work: &Path, s: &mut Section) -> anyhow::Result<()> {
    let mut relay = start_relay(&work.join("relay"), None)?;
    let pid = relay.child.id();
    let addr = relay.addr;
    let mut bob = Agent::start("bob", addr, &work.join("bob"))?;
    bob.connected()?;
    wait_published(addr, "bob")?;
    let mut alice = Agent::start("alice", addr, &work.join("alice"))?;
    alice.connected()?;
    let warm = "warm-up before the storm";
    alice.send_text("bob", warm)?;
    bob.wait_for("the warm-up", WAIT, is_message(warm))?;
    let rss_before = rss_kib(pid);

    let (clients, rounds) = scale.pick((8, 4), (20, 15));
    let garbage_count = scale.pick(48, 240);
    let churner = std::thread::spawn(move || runtime()?.block_on(churn(addr, clients, rounds)));
    let garbler = std::thread::spawn(move || runtime()?.block_on(garbage_storm(addr, garbage_count)));

    // The probe: Alice writes to Bob throughout; Bob is killed and restarted midway.
    let probes = scale.pick(8, 24);
    let down = scale.pick(2, 5);
    let text = |i: usize| format!("probe #{i} through the storm");
    let mut latencies = Vec::new();
    let mut bobs = Vec::new();
    let mut i = 1;
    while i <= probes {
        if i == probes / 2 {
            bob.kill();
            let mark = alice.mark();
            for j in i..i + down {
                alice.send_text("bob", &text(j))?;
            }
            alice.wait_count(mark, "stored while bob is down", down, WAIT, |e| {
                e["event"] == "sent"
            })?;
            bobs.push(std::mem::replace(
                &mut bob,
                Agent::start("bob", addr, &work.join("bob"))?,
            ));
            for j in i..i + down {
                bob.wait_for("a message stored while bob was down", WAIT, is_message(&text(j)))?;
            }
            i += down;
            continue;
        }
        let started = Instant::now();
        let mark = bob.mark();
        alice.send_text("bob", &text(i))?;
        let seen = bob.wait_from(mark, "the probe", WAIT, is_message(&text(i)))?;
        latencies.push(seen.at.saturating_duration_since(started));
        i += 1;
    }
    let churn = churner.join().map_err(|_| anyhow!("churn thread panicked"))??;
    let storm = garbler.join().map_err(|_| anyhow!("garbage thread panicked"))??;
    bob.settle(Duration::from_millis(300));
    bobs.push(bob);
    let alive = relay.child.try_wait()?.is_none();
    let fresh = runtime()?.block_on(async {
        RelayClient::connect(addr, IdentityKeyPair::generate(&mut OsRng))
            .await
            .is_ok()
    });
    let rss_after = rss_kib(pid);
    let log = relay.drain_log();
    let mut closes: BTreeMap<String, usize> = BTreeMap::new();
    for v in log.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
        if v["msg"] == "closing connection" {
            *closes
                .entry(v["code"].as_str().unwrap_or("?").to_string())
                .or_insert(0) += 1;
        }
    }

    s.did(format!(
        "One relay; Alice sent Bob {probes} probe texts one at a time while, concurrently, {clients} \
         raw clients logged in, each sent one message and received one, then vanished without a \
         goodbye ({} of those logins hung up in the middle of a frame), for {rounds} rounds; and \
         {garbage_count} garbage connections ({} kinds, 8 at a time) hit the relay.",
        churn.half_frames,
        GARBAGE.len()
    ));
    s.did(format!(
        "Midway Bob's agent was killed with SIGKILL; Alice wrote {down} texts while he was down; \
         Bob restarted on the same state directory."
    ));
    let shown: Vec<String> = bobs
        .iter()
        .flat_map(|b| b.matching(0, |e| e["event"] == "message"))
        .filter_map(|s| s.event["text"].as_str().map(str::to_string))
        .collect();
    let once = (1..probes + 1)
        .filter(|i| shown.iter().filter(|t| **t == text(*i)).count() == 1)
        .count();
    let failures: usize = bobs
        .iter()
        .map(|b| b.matching(0, |e| e["event"] == "decrypt_failure").len())
        .sum();
    let (median, max) = median_max(&latencies);
    s.saw(format!(
        "Probe send-to-shown time while the storm ran: median {median} ms, max {max} ms ({} \
         probes timed; the {down} sent while Bob was down are not timed).",
        latencies.len()
    ));
    s.saw(format!(
        "Relay closed connections, by reason code: {closes:?}. Relay RSS {} KiB before, {} KiB after.",
        rss_before.map(|v| v.to_string()).unwrap_or_else(|| "?".into()),
        rss_after.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
    ));
    s.check(
        "the relay process stays up and serves a new client afterwards",
        "alive, a fresh client authenticates",
        format!("alive: {alive}; fresh client: {fresh}"),
        alive && fresh,
    );
    s.check(
        "the probe conversation, across Bob's crash",
        format!("{probes} of {probes} texts shown exactly once, no decrypt failure"),
        format!("{once} of {probes}, {failures} decrypt failures"),
        once == probes && failures == 0,
    );
    let wanted = clients * rounds;
    s.check(
        "churning clients: every message delivered",
        format!("{wanted} logins, {wanted} distinct messages delivered"),
        format!(
            "{} logins, {} delivered; again after reconnecting although acknowledged: {}; \
             twice on one connection: {} (duplicates are recognised by id)",
            churn.logins, churn.delivered, churn.redelivered, churn.repeated
        ),
        churn.logins == wanted && churn.delivered == wanted,
    );
    let detail: Vec<String> = storm
        .iter()
        .map(|(kind, (sent, ok))| format!("{}: {ok}/{sent}", GARBAGE[*kind].0))
        .collect();
    let total: usize = storm.values().map(|(sent, _)| sent).sum();
    let right: usize = storm.values().map(|(_, ok)| ok).sum();
    s.check(
        "garbage: each offending connection is closed, with the right reason",
        format!("{garbage_count} of {garbage_count} closed with the expected error (or, for a hang-up, no answer)"),
        format!("{right} of {total} ({})", detail.join("; ")),
        right == total && total == garbage_count,
    );
    s.summary = format!(
        "relay up; {once}/{probes} probes (across a SIGKILL) and {}/{wanted} churn messages delivered once; {right}/{total} garbage connections closed",
        churn.delivered
    );
    s.put(
        "probe_latency_ms",
        serde_json::json!({"median": median, "max": max}),
    );
    s.put("closes", &closes);
    s.put(
        "rss_kib",
        serde_json::json!({"before": rss_before, "after": rss_after}),
    );
    Ok(())
}
