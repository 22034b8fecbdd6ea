//! `e2ee-load group`: the relay as a group's delivery service (docs/PROTOCOL.md 8.3).
//! One group of N members, each a client of the relay; uploads at a fixed total rate
//! (open loop), senders taking turns; every upload is fanned out by the relay to the
//! N − 1 other members. Measured: uploads and copies per second, the latency from the
//! upload's intended time to each member's receipt of its copy, bytes up and down, and
//! an audit of every copy of every acknowledged upload (delivered exactly once, under
//! its fan-out id, and acknowledged by its member).
//!
//! Two modes:
//! - headers (default): MLS-shaped messages without MLS crypto. The relay reads only
//!   the plaintext header of an `MLSMessage`, so the group is created by one hand-made
//!   `GroupCommit` at epoch 0 (every member added at once, a dummy Welcome) and the
//!   texts are `PrivateMessage` headers at epoch 1 followed by the probe and padding.
//! - MLS (`--mls`): every member has a real [`GroupBook`]; member 0 creates the group
//!   with the others' KeyPackages, each member joins by its Welcome, texts are encrypted
//!   with [`GroupBook::send`] and measured once the member decrypted them. When the
//!   Welcome for every member at once does not fit [`MAX_MLS_MESSAGE_LEN`], members are
//!   added in several commits (halving the batch until it fits) and the report says so.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use e2ee_agent::group::{GroupBook, GroupEvent};
use e2ee_protocol::frame::Frame;
use e2ee_protocol::group::{
    fan_out_id, mls_payload, read_header, ContentType, MAX_GROUP_MEMBERS, MAX_MLS_MESSAGE_LEN, MSG_TYPE_MLS,
};
use e2ee_protocol::identity::IdentityKeyPair;
use futures_util::{FutureExt, SinkExt, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::link::Link;
use super::probe::{self, Probe, PROBE_LEN};
use super::run::Endpoint;
use super::stats::{histogram, Percentiles};
use super::sysinfo::ProcSample;
use super::target::Kind;
use crate::client::LinkFramed;

mod report;
mod setup;

use report::*;
pub use report::{GroupReport, GroupSetup};
use setup::*;

/// Frames handled per wake-up of a member before it flushes its acknowledgements.
const RECEIVE_BATCH: usize = 256;
/// Connections set up at once.
const SETUP_CONCURRENCY: usize = 32;
/// Longest wait for one answer or delivery while the group is set up.
const SETUP_WAIT: Duration = Duration::from_secs(60);
/// The pair field of the setup commits' message ids (texts use the member index).
const SETUP_PAIR: u32 = u32::MAX;
/// Bytes of the probe as text in `--mls` mode (hex of pair, seq, intended time).
const TEXT_PROBE_LEN: usize = 40;

/// The shape of a group run.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Members of the one group (2..=1000).
    pub members: usize,
    /// Total uploads per second (open loop), senders taking turns.
    pub rate: f64,
    /// How long to upload.
    pub duration: Duration,
    /// Leading time not counted in rates and latency.
    pub warmup: Duration,
    /// Application payload bytes per upload (the probe and padding; the text under
    /// `--mls`).
    pub size: usize,
    /// Real MLS through `GroupBook`.
    pub mls: bool,
    /// Longest wait for outstanding acks and copies after uploading stops.
    pub drain: Duration,
    /// `--mls`: the largest Welcome (and commit) uploaded; [`MAX_MLS_MESSAGE_LEN`], or
    /// less to exercise adding members in several commits.
    pub max_welcome: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            members: 100,
            rate: 200.0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            size: 256,
            mls: false,
            drain: Duration::from_secs(30),
            max_welcome: MAX_MLS_MESSAGE_LEN,
        }
    }
}

/// Counters the coordinator watches while members work.
#[derive(Default)]
struct Shared {
    sent: AtomicU64,
    acked: AtomicU64,
    epoch_refused: AtomicU64,
    copies: AtomicU64,
    closed: AtomicU64,
}

/// One upload to make.
#[derive(Debug, Clone, Copy)]
struct Upload {
    seq: u64,
    intended_ns: u64,
}

/// One member: its connection and, under `--mls`, its group state.
struct Member {
    index: usize,
    identity: IdentityKeyPair,
    framed: LinkFramed,
    book: Option<GroupBook>,
}

/// What a member counted in the run.
struct Tally {
    /// Uploads sent: seq → (MLSMessage bytes).
    sent: HashMap<u64, usize>,
    acked: Vec<u64>,
    acked_in_window: u64,
    epoch_refused: u64,
    /// Copy msg_ids seen (a repeat is a duplicate).
    seen: HashSet<[u8; 16]>,
    /// Upload seqs of the distinct copies received.
    copies: HashSet<u64>,
    copies_in_window: u64,
    duplicates: u64,
    mismatched: u64,
    delivers: u64,
    acks: u64,
    bytes_delivered: u64,
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            sent: HashMap::new(),
            acked: Vec::new(),
            acked_in_window: 0,
            epoch_refused: 0,
            seen: HashSet::new(),
            copies: HashSet::new(),
            copies_in_window: 0,
            duplicates: 0,
            mismatched: 0,
            delivers: 0,
            acks: 0,
            bytes_delivered: 0,
            latency: histogram(),
            errors: BTreeMap::new(),
        }
    }

    fn error(&mut self, kind: impl Into<String>) {
        *self.errors.entry(kind.into()).or_default() += 1;
    }
}

/// The run's clock and window, shared by the members.
#[derive(Clone)]
struct Clock {
    epoch: Instant,
    warmup: Duration,
    duration: Duration,
}

impl Clock {
    fn in_window(&self, at: Instant) -> bool {
        let t = at.saturating_duration_since(self.epoch);
        t >= self.warmup && t < self.duration
    }
}
/// Everything a member task needs besides its own state.
#[derive(Clone)]
struct Context {
    ids: Arc<Vec<[u8; 32]>>,
    group_id: Arc<Vec<u8>>,
    size: usize,
    clock: Clock,
    shared: Arc<Shared>,
}

impl Member {
    /// Writes one upload (not flushed).
    async fn upload(&mut self, up: Upload, ctx: &Context, tally: &mut Tally) -> anyhow::Result<()> {
        let probe = Probe {
            pair: self.index as u32,
            seq: up.seq,
            intended_ns: up.intended_ns,
        };
        let msg_id = probe::msg_id(probe.pair, probe.seq);
        let frame = match &mut self.book {
            Some(book) => book
                .send(&ctx.group_id, msg_id, &probe_text(&probe, ctx.size))
                .map_err(|e| anyhow!("encrypting: {e}"))?,
            None => {
                let mut message = private_header(&ctx.group_id, 1, 1);
                message.extend_from_slice(&probe.encode(ctx.size));
                Frame::GroupSend { msg_id, message }
            }
        };
        let Frame::GroupSend { message, .. } = &frame else {
            bail!("not a GroupSend");
        };
        tally.sent.insert(up.seq, message.len());
        ctx.shared.sent.fetch_add(1, Ordering::Relaxed);
        self.framed.feed(frame).await?;
        Ok(())
    }

    /// Handles one frame from the relay.
    async fn on_frame(&mut self, frame: Frame, ctx: &Context, tally: &mut Tally) -> anyhow::Result<()> {
        match frame {
            Frame::SentAck { msg_id } => {
                let seq = probe::seq_of(&msg_id);
                if probe::pair_of(&msg_id) == self.index as u32 && tally.sent.contains_key(&seq) {
                    tally.acked.push(seq);
                    if ctx.clock.in_window(Instant::now()) {
                        tally.acked_in_window += 1;
                    }
                    ctx.shared.acked.fetch_add(1, Ordering::Relaxed);
                } else {
                    tally.error("unexpected_sent_ack");
                }
            }
            Frame::GroupEpoch { .. } => {
                tally.epoch_refused += 1;
                ctx.shared.epoch_refused.fetch_add(1, Ordering::Relaxed);
            }
            Frame::Deliver {
                sender,
                msg_id,
                payload,
                ..
            } => {
                tally.delivers += 1;
                self.framed.feed(Frame::DeliveryAck { sender, msg_id }).await?;
                tally.acks += 1;
                if !tally.seen.insert(msg_id) {
                    tally.duplicates += 1;
                    return Ok(());
                }
                self.on_copy(sender, msg_id, &payload, ctx, tally);
            }
            Frame::Ping { nonce } => self.framed.feed(Frame::Pong { nonce }).await?,
            Frame::Pong { .. } | Frame::KeyPackageCount { .. } | Frame::PreKeysLow { .. } => {}
            Frame::Error { code, .. } => tally.error(format!("error_{}", code.name())),
            Frame::Refused { code, .. } => tally.error(format!("refused_{}", code.name())),
            other => tally.error(format!("unexpected_{}", other.kind())),
        }
        Ok(())
    }

    /// A first copy: read it (decrypt under `--mls`), check its id, measure it.
    fn on_copy(
        &mut self,
        sender: [u8; 32],
        msg_id: [u8; 16],
        payload: &[u8],
        ctx: &Context,
        tally: &mut Tally,
    ) {
        let Some(body) = payload.strip_prefix(&[MSG_TYPE_MLS]) else {
            tally.mismatched += 1;
            return tally.error("not_mls_payload");
        };
        let probe = match &mut self.book {
            Some(book) => match book.receive(body) {
                Ok(events) => match events.as_slice() {
                    [GroupEvent::Message { text, from, .. }] if from.as_bytes() == &sender => {
                        parse_probe_text(text)
                    }
                    _ => None,
                },
                Err(e) => {
                    tally.error(format!("mls_receive: {e}"));
                    None
                }
            },
            None => match read_header(body) {
                Ok(h) if h.epoch == 1 && h.content_type == ContentType::Application => {
                    let at = 4 + 1 + h.group_id.len() + 8 + 1;
                    body.get(at..).and_then(Probe::decode)
                }
                _ => None,
            },
        };
        let now = Instant::now();
        let Some(probe) = probe else {
            tally.mismatched += 1;
            return tally.error("unreadable_copy");
        };
        let upload_id = probe::msg_id(probe.pair, probe.seq);
        let me = &ctx.ids[self.index];
        let from_ok = ctx.ids.get(probe.pair as usize) == Some(&sender);
        if !from_ok || fan_out_id(&upload_id, me) != msg_id {
            tally.mismatched += 1;
            return tally.error("copy_id_mismatch");
        }
        tally.copies.insert(probe.seq);
        tally.bytes_delivered += payload.len() as u64;
        ctx.shared.copies.fetch_add(1, Ordering::Relaxed);
        if ctx.clock.in_window(now) {
            tally.copies_in_window += 1;
        }
        if Duration::from_nanos(probe.intended_ns) >= ctx.clock.warmup {
            let elapsed = now.saturating_duration_since(ctx.clock.epoch).as_nanos() as u64;
            let us = elapsed.saturating_sub(probe.intended_ns) / 1000;
            let _ = tally.latency.record(us.max(1));
        }
    }
}

/// A member's task: uploads what it is told, reads and acknowledges its copies, until
/// stopped.
async fn member_task(
    mut member: Member,
    mut uploads: mpsc::UnboundedReceiver<Upload>,
    mut stop: watch::Receiver<bool>,
    ctx: Context,
) -> (Member, Tally) {
    let mut tally = Tally::new();
    let mut uploads_open = true;
    loop {
        let result: anyhow::Result<()> = tokio::select! {
            biased;
            _ = stop.changed() => break,
            up = uploads.recv(), if uploads_open => match up {
                Some(up) => async {
                    member.upload(up, &ctx, &mut tally).await?;
                    for _ in 0..RECEIVE_BATCH {
                        let Ok(up) = uploads.try_recv() else { break };
                        member.upload(up, &ctx, &mut tally).await?;
                    }
                    SinkExt::<Frame>::flush(&mut member.framed).await?;
                    Ok(())
                }.await,
                None => {
                    uploads_open = false;
                    Ok(())
                }
            },
            frame = member.framed.next() => match frame {
                Some(Ok(frame)) => async {
                    member.on_frame(frame, &ctx, &mut tally).await?;
                    for _ in 0..RECEIVE_BATCH {
                        match member.framed.next().now_or_never() {
                            Some(Some(Ok(frame))) => member.on_frame(frame, &ctx, &mut tally).await?,
                            Some(Some(Err(e))) => return Err(e.into()),
                            _ => break,
                        }
                    }
                    SinkExt::<Frame>::flush(&mut member.framed).await?;
                    Ok(())
                }.await,
                Some(Err(e)) => Err(e.into()),
                None => Err(anyhow!("closed by the relay")),
            },
        };
        if let Err(e) = result {
            tally.error(format!("connection: {e}"));
            ctx.shared.closed.fetch_add(1, Ordering::Relaxed);
            break;
        }
    }
    (member, tally)
}

/// One group run against `endpoint` (a relay).
pub async fn group(cfg: &GroupConfig, endpoint: &Endpoint) -> anyhow::Result<GroupReport> {
    if endpoint.kind != Kind::Relay {
        bail!("the group benchmark needs a relay target");
    }
    if !(2..=MAX_GROUP_MEMBERS).contains(&cfg.members) {
        bail!("--members must be 2..={MAX_GROUP_MEMBERS}");
    }
    if !(cfg.rate > 0.0 && cfg.rate.is_finite()) {
        bail!("--rate must be positive");
    }
    let min_size = if cfg.mls { TEXT_PROBE_LEN } else { PROBE_LEN };
    if cfg.size < min_size || cfg.size > MAX_MLS_MESSAGE_LEN - 1024 {
        bail!("--size must be {min_size}..={} bytes", MAX_MLS_MESSAGE_LEN - 1024);
    }
    let started = Instant::now();
    let mut members = connect(cfg, endpoint).await?;
    let ids: Vec<[u8; 32]> = members.iter().map(|m| *m.identity.public().as_bytes()).collect();
    let (mut setup, group_id) = if cfg.mls {
        setup_mls(&mut members, &ids, cfg.max_welcome.min(MAX_MLS_MESSAGE_LEN)).await?
    } else {
        let mut group_id = vec![0u8; 16];
        OsRng.fill_bytes(&mut group_id);
        (setup_headers(&mut members, &ids, &group_id).await?, group_id)
    };
    setup.setup_s = started.elapsed().as_secs_f64();

    let clock = Clock {
        epoch: Instant::now(),
        warmup: cfg.warmup,
        duration: cfg.duration,
    };
    let shared = Arc::new(Shared::default());
    let ctx = Context {
        ids: Arc::new(ids),
        group_id: Arc::new(group_id),
        size: cfg.size,
        clock: clock.clone(),
        shared: shared.clone(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut senders = Vec::with_capacity(members.len());
    let mut tasks = Vec::with_capacity(members.len());
    for member in members {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        tasks.push(tokio::spawn(member_task(
            member,
            rx,
            stop_rx.clone(),
            ctx.clone(),
        )));
    }

    // Open loop: upload k is due at k / rate, from member k mod N.
    let total = (cfg.rate * cfg.duration.as_secs_f64()).round() as u64;
    let interval_ns = 1e9 / cfg.rate;
    let mut cpu_start = (None, None);
    let mut cpu_end = (None, None);
    for k in 0..total {
        let intended_ns = (k as f64 * interval_ns) as u64;
        let due = clock.epoch + Duration::from_nanos(intended_ns);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        if cpu_start.0.is_none() && Duration::from_nanos(intended_ns) >= cfg.warmup {
            cpu_start = (endpoint.pid.and_then(ProcSample::of), ProcSample::of_self());
        }
        let sender = (k % senders.len() as u64) as usize;
        let _ = senders[sender].send(Upload { seq: k, intended_ns });
    }
    let end = clock.epoch + cfg.duration;
    if end > Instant::now() {
        tokio::time::sleep_until(end.into()).await;
    }
    if cpu_start.0.is_some() || cpu_start.1.is_some() {
        cpu_end = (endpoint.pid.and_then(ProcSample::of), ProcSample::of_self());
    }
    drop(senders);
    let drain_from = Instant::now();
    let others = ctx.ids.len() as u64 - 1;
    let drain_until = drain_from + cfg.drain;
    while Instant::now() < drain_until {
        let sent = shared.sent.load(Ordering::Relaxed);
        let acked = shared.acked.load(Ordering::Relaxed);
        let refused = shared.epoch_refused.load(Ordering::Relaxed);
        let copies = shared.copies.load(Ordering::Relaxed);
        if shared.closed.load(Ordering::Relaxed) > 0 {
            break;
        }
        if sent == total && acked + refused == sent && copies >= acked * others {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain_s = drain_from.elapsed().as_secs_f64();
    // A last moment for duplicates that would follow the last copy.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop_tx.send(true);

    let mut finished = Vec::with_capacity(tasks.len());
    for task in tasks {
        finished.push(task.await.context("member task panicked")?);
    }
    Ok(build_report(
        cfg,
        endpoint,
        setup,
        &finished,
        drain_s,
        (cpu_start, cpu_end),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_headers_are_what_the_relay_reads() {
        let gid = [7u8; 16];
        let mut text = private_header(&gid, 1, 1);
        text.extend_from_slice(&[0; 20]);
        let h = read_header(&text).expect("header");
        assert_eq!(
            (h.epoch, h.content_type, h.group_id),
            (1, ContentType::Application, gid.to_vec())
        );
        let commit = private_header(&gid, 0, 3);
        assert_eq!(
            read_header(&commit).expect("commit").content_type,
            ContentType::Commit
        );
    }

    #[test]
    fn probe_text_round_trips() {
        let probe = Probe {
            pair: 99,
            seq: 1 << 33,
            intended_ns: 123_456_789_000,
        };
        let text = probe_text(&probe, 256);
        assert_eq!(text.len(), 256);
        assert_eq!(parse_probe_text(&text), Some(probe));
    }
}
