//! One agent with many peers (`e2ee-agent-peers`): what a message costs the agent when
//! it holds a live session with each of N peers, against the same number of messages
//! with one peer, measured side by side in one run.
//!
//! The agent under test (`hub`) is a real `e2ee-agent --json` process with a durable
//! state; the N peers are in-process clients of the relay that speak the end-to-end
//! protocol through `e2ee_protocol` (X3DH as responder, the Double Ratchet), each on its
//! own connection. The relay is a real `e2ee-relay` (SQLite, fsync) with the limits of
//! a load run ([`RELAY_LOAD_ENV`]). Phases, each timed from the first line written (or
//! the first peer told to send) to the last message shown:
//!
//! 1. warm-up: the hub writes two texts to every peer (a name lookup, a bundle fetch and
//!    X3DH for the first; the second is the first sent on an existing session on this
//!    connection, which asks the registry again: docs/AGENT.md 6) and every peer
//!    answers once: live sessions both ways, the connection's checks done;
//! 2. send: the hub writes `per_peer` texts to every peer, the lines interleaved
//!    (peer 0, 1, …, N−1, 0, 1, …), until every peer decrypted all of them;
//! 3. receive: every peer sends `per_peer` texts at once, until the hub showed all.
//!
//! Every process is started on 127.0.0.1 and stopped by its id; every wait is bounded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use e2ee_protocol::frame::Frame;
use e2ee_protocol::identity::{IdentityKey, IdentityKeyPair};
use e2ee_protocol::name_claim::NameClaim;
use e2ee_protocol::payload::{ContentType, Payload};
use e2ee_protocol::prekey::PreKeyStore;
use e2ee_protocol::session::{self, Session};
use futures_util::{SinkExt, StreamExt};
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::agent_process::AgentConfig;
use crate::client::RelayClient;
use crate::load::sysinfo::ProcSample;
use crate::load::target::RELAY_LOAD_ENV;
use crate::process::RelayProcess;

/// Longest wait for any one phase.
const PHASE_WAIT: Duration = Duration::from_secs(600);

/// What one run measures.
#[derive(Debug, Clone, Copy)]
pub struct PeersConfig {
    /// Peers with a live session with the hub.
    pub peers: usize,
    /// Texts per peer in each direction.
    pub per_peer: usize,
}

/// The figures of one run.
#[derive(Debug, Clone, Serialize)]
pub struct PeersReport {
    /// Peers.
    pub peers: usize,
    /// Texts in each direction (`peers × per_peer`).
    pub messages: usize,
    /// Warm-up (sessions with every peer, both ways), seconds.
    pub warmup_seconds: f64,
    /// Hub → peers: seconds from the first line to the last text decrypted.
    pub send_seconds: f64,
    /// Hub → peers, texts per second.
    pub send_per_s: f64,
    /// Hub → peers: latency from the text's timestamp to its decryption, ms (p50, p99).
    pub send_latency_ms: (f64, f64),
    /// Hub → peers: the hub's CPU time (user + system) per text, µs (10 ms ticks).
    pub send_hub_cpu_us: f64,
    /// Peers → hub: seconds from the first text sent to the last one the hub showed.
    pub receive_seconds: f64,
    /// Peers → hub, texts per second.
    pub receive_per_s: f64,
    /// Peers → hub: the hub's CPU time per text, µs.
    pub receive_hub_cpu_us: f64,
    /// The hub's state (`state.db` and its WAL) after the run, bytes.
    pub state_bytes: u64,
    /// `state_bytes / peers`.
    pub state_bytes_per_peer: u64,
}

/// What a peer tells the coordinator.
enum PeerEvent {
    /// Published its prekeys and its name.
    Ready,
    /// Decrypted a text from the hub: ms from its timestamp to now.
    Text(f64),
}

/// Runs one configuration in `dir` (relay and hub state inside it).
pub fn run(config: PeersConfig, dir: &Path) -> anyhow::Result<PeersReport> {
    let relay = RelayProcess::start_with_env("127.0.0.1:0", &dir.join("relay"), &[], RELAY_LOAD_ENV)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut commands = Vec::with_capacity(config.peers);
    for index in 0..config.peers {
        let (tx, rx) = mpsc::unbounded_channel();
        commands.push(tx);
        runtime.spawn(peer(index, relay.addr, events_tx.clone(), rx));
    }
    let wait = |events: &mut mpsc::UnboundedReceiver<anyhow::Result<PeerEvent>>, count: usize, what: &str| {
        runtime.block_on(collect(events, count, what))
    };
    wait(&mut events, config.peers, "peers ready")?;

    let state_dir = dir.join("hub");
    let mut hub = AgentConfig::new("hub", relay.addr, &state_dir)
        .env("E2EE_AGENT_LOG_LEVEL", "warn")
        .start()?;
    hub.wait_event("connection", Duration::from_secs(30))?;

    // 1. Warm-up: a session with every peer, used both ways.
    let start = Instant::now();
    for round in 0..2 {
        for index in 0..config.peers {
            hub.send_line(&format!("/msg {} w-{round}", peer_name(index)))?;
        }
        wait(&mut events, config.peers, "warm-up texts at the peers")?;
    }
    for tx in &commands {
        tx.send(1).map_err(|_| anyhow!("a peer stopped"))?;
    }
    hub.wait_count("warm-up answers", config.peers, PHASE_WAIT, |e| is_text(e, "r-"))?;
    let warmup_seconds = start.elapsed().as_secs_f64();

    // 2. Hub → peers.
    let messages = config.peers * config.per_peer;
    let hub_pid = hub.pid();
    let cpu = || ProcSample::of(hub_pid).map_or(0, |s| s.cpu_ticks);
    let cpu_us = |ticks: u64| ticks as f64 * 10_000.0 / messages as f64;
    let before = cpu();
    let start = Instant::now();
    for round in 0..config.per_peer {
        for index in 0..config.peers {
            hub.send_line(&format!("/msg {} s-{round}", peer_name(index)))?;
        }
    }
    let latencies = wait(&mut events, messages, "texts at the peers")?;
    let send_seconds = start.elapsed().as_secs_f64();
    let send_hub_cpu_us = cpu_us(cpu().saturating_sub(before));

    // 3. Peers → hub.
    let before = cpu();
    let start = Instant::now();
    for tx in &commands {
        tx.send(config.per_peer).map_err(|_| anyhow!("a peer stopped"))?;
    }
    hub.wait_count("texts at the hub", config.peers + messages, PHASE_WAIT, |e| {
        is_text(e, "r-")
    })?;
    let receive_seconds = start.elapsed().as_secs_f64();
    let receive_hub_cpu_us = cpu_us(cpu().saturating_sub(before));

    hub.close_stdin();
    hub.wait_exit(Duration::from_secs(30))?;
    let state_bytes = ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(state_dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    drop(commands);
    runtime.shutdown_timeout(Duration::from_secs(5));
    drop(relay);
    Ok(PeersReport {
        peers: config.peers,
        messages,
        warmup_seconds,
        send_seconds,
        send_per_s: messages as f64 / send_seconds,
        send_latency_ms: (percentile(&latencies, 0.5), percentile(&latencies, 0.99)),
        send_hub_cpu_us,
        receive_seconds,
        receive_per_s: messages as f64 / receive_seconds,
        receive_hub_cpu_us,
        state_bytes,
        state_bytes_per_peer: state_bytes / config.peers.max(1) as u64,
    })
}

/// The name of peer `index`.
pub fn peer_name(index: usize) -> String {
    format!("p{index:05}")
}

fn is_text(event: &serde_json::Value, prefix: &str) -> bool {
    event["event"] == "message" && event["text"].as_str().is_some_and(|t| t.starts_with(prefix))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n => sorted[((n as f64 * p) as usize).min(n - 1)],
    }
}

/// Waits for `count` events (the first `Ready`s, or texts); returns the texts'
/// latencies, sorted.
async fn collect(
    events: &mut mpsc::UnboundedReceiver<anyhow::Result<PeerEvent>>,
    count: usize,
    what: &str,
) -> anyhow::Result<Vec<f64>> {
    let deadline = tokio::time::Instant::now() + PHASE_WAIT;
    let mut latencies = Vec::with_capacity(count);
    for seen in 0..count {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Ok(PeerEvent::Ready))) => {}
            Ok(Some(Ok(PeerEvent::Text(ms)))) => latencies.push(ms),
            Ok(Some(Err(err))) => return Err(err.context(format!("a peer failed during {what}"))),
            Ok(None) => bail!("every peer stopped during {what}"),
            Err(_) => bail!("{what}: {seen} of {count} within {PHASE_WAIT:?}"),
        }
    }
    latencies.sort_by(f64::total_cmp);
    Ok(latencies)
}

/// One peer: publishes its prekeys and name, decrypts what the hub sends (reporting
/// each text) and sends as many texts as each command says.
async fn peer(
    index: usize,
    relay: SocketAddr,
    events: mpsc::UnboundedSender<anyhow::Result<PeerEvent>>,
    commands: mpsc::UnboundedReceiver<usize>,
) {
    let outcome = peer_loop(index, relay, &events, commands).await;
    if let Err(err) = outcome {
        let _ = events.send(Err(err.context(format!("peer {}", peer_name(index)))));
    }
}

async fn peer_loop(
    index: usize,
    relay: SocketAddr,
    events: &mpsc::UnboundedSender<anyhow::Result<PeerEvent>>,
    mut commands: mpsc::UnboundedReceiver<usize>,
) -> anyhow::Result<()> {
    let identity = IdentityKeyPair::generate(&mut OsRng);
    let mut prekeys = PreKeyStore::generate(&identity, 2, &mut OsRng);
    let name = peer_name(index);
    let mut client = RelayClient::connect(relay, identity.clone()).await?;
    let bundle = prekeys.bundle(identity.public()).encode();
    client.send(Frame::PublishPreKeys { bundle }).await?;
    let claim = NameClaim::sign(&identity, &name, now_ms())?.encode();
    if let Err((code, reason)) = client.publish_name(&name, claim).await? {
        bail!("name refused: {code:?} {reason}");
    }
    let _ = events.send(Ok(PeerEvent::Ready));

    let mut framed = client.into_framed();
    let mut sessions: HashMap<IdentityKey, Session> = HashMap::new();
    let mut hub: Option<IdentityKey> = None;
    let mut sent = 0usize;
    loop {
        tokio::select! {
            frame = framed.next() => {
                let frame = match frame {
                    Some(frame) => frame.context("reading from the relay")?,
                    None => return Ok(()),
                };
                let Frame::Deliver { sender, msg_id, payload, .. } = frame else { continue };
                framed.send(Frame::DeliveryAck { sender, msg_id }).await?;
                let from = IdentityKey::from_bytes(sender)?;
                let received = session::receive(sessions.get_mut(&from), &identity, &mut prekeys, &from, &payload, &mut OsRng)
                    .map_err(|e| anyhow!("cannot decrypt a message: {e}"))?;
                if let Some(new) = received.new_session {
                    sessions.insert(from, new);
                }
                hub = Some(from);
                let payload = Payload::decode(&received.decrypted.plaintext)
                    .map_err(|e| anyhow!("bad payload: {e:?}"))?;
                if payload.content_type == ContentType::Text {
                    let ms = now_ms().saturating_sub(payload.timestamp_ms) as f64;
                    let _ = events.send(Ok(PeerEvent::Text(ms)));
                }
            }
            command = commands.recv() => {
                let Some(count) = command else { return Ok(()) };
                let to = hub.ok_or_else(|| anyhow!("told to send before the hub wrote"))?;
                let session = sessions.get_mut(&to).ok_or_else(|| anyhow!("no session with the hub"))?;
                for _ in 0..count {
                    let mut id = [0u8; 16];
                    OsRng.fill_bytes(&mut id);
                    let text = format!("r-{sent}");
                    sent += 1;
                    let plaintext = Payload::text(id, now_ms(), &text).encode()?;
                    let wire = session.encrypt(&plaintext, &mut OsRng)?;
                    framed.feed(Frame::Send { recipient: *to.as_bytes(), msg_id: id, payload: wire }).await?;
                }
                SinkExt::<Frame>::flush(&mut framed).await?;
            }
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
