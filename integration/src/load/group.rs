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

/// How the group was set up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupSetup {
    /// Commits that made the group (1 unless the Welcome had to be split).
    pub commits: u64,
    /// Members added per commit.
    pub batch: usize,
    /// The largest Welcome uploaded (bytes of the `MLSMessage`).
    pub welcome_bytes: usize,
    /// The largest commit uploaded.
    pub commit_bytes: usize,
    /// Under `--mls`, the size of a Welcome adding every other member at once when it
    /// did not fit `MAX_MLS_MESSAGE_LEN` (then members were added in batches).
    pub welcome_all_at_once_bytes: Option<usize>,
    /// The largest Welcome allowed (`MAX_MLS_MESSAGE_LEN` unless a test lowers it).
    pub max_welcome: usize,
    /// Welcome and commit copies delivered to members (all acknowledged).
    pub setup_copies: u64,
    /// Time to connect, create the group and have every member in it.
    pub setup_s: f64,
}

/// The result of a group run (JSON with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// Target label.
    pub target: String,
    /// "headers" (MLS-shaped, no crypto) or "mls".
    pub mode: String,
    /// Group members.
    pub members: usize,
    /// Application payload bytes per upload.
    pub size: usize,
    /// Offered uploads per second.
    pub offered_rate: f64,
    /// Upload time.
    pub duration_s: f64,
    /// Leading time excluded from rates and latency.
    pub warmup_s: f64,
    /// Setup of the group.
    pub setup: GroupSetup,
    /// Uploads written (`GroupSend`).
    pub uploads_sent: u64,
    /// Uploads answered `SentAck`.
    pub uploads_acked: u64,
    /// Uploads answered `GroupEpoch` (none expected: nobody commits during the run).
    pub uploads_epoch_refused: u64,
    /// `SentAck`s per second inside the measured window (after warm-up, until uploading
    /// stopped).
    pub upload_rate: f64,
    /// Copies expected: (N − 1) per acknowledged upload.
    pub copies_expected: u64,
    /// Distinct copies delivered.
    pub copies_delivered: u64,
    /// Copies received per second inside the measured window.
    pub copy_rate: f64,
    /// Copies of acknowledged uploads that never reached their member.
    pub missing: u64,
    /// Copies delivered more than once (same msg_id again).
    pub duplicates: u64,
    /// Copies whose msg_id is not `fan_out_id(upload msg_id, recipient)`, or whose
    /// content or sender does not match.
    pub mismatched: u64,
    /// Copies of uploads that were never acknowledged.
    pub delivered_unacked: u64,
    /// `Deliver` frames received by members in the run (copies and duplicates).
    pub delivers_received: u64,
    /// `DeliveryAck`s the members sent for them.
    pub deliveries_acked: u64,
    /// Bytes of the `MLSMessage`s of acknowledged uploads.
    pub bytes_uploaded: u64,
    /// Bytes of the `Deliver` payloads of the distinct copies.
    pub bytes_delivered: u64,
    /// bytes_delivered / bytes_uploaded (≈ N − 1).
    pub fan_out_factor: f64,
    /// From the upload's intended time to the member's receipt (after decryption under
    /// `--mls`), µs, uploads after warm-up only.
    pub latency_us: Percentiles,
    /// Time from the end of uploading until every copy was in (or the drain gave up).
    pub drain_s: f64,
    /// Relay CPU over the measured window, percent of one core (when its pid is known).
    pub relay_cpu_percent: Option<f64>,
    /// Load generator CPU over the measured window, percent of one core.
    pub generator_cpu_percent: Option<f64>,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Every copy of every acknowledged upload was delivered exactly once, to the right
    /// member under the right id, and acknowledged.
    pub all_delivered_once: bool,
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

impl GroupReport {
    /// A short human table.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "group fan-out  target {}  mode {}  members {}  size {} B  duration {:.0}s (warm-up {:.0}s)",
            self.target, self.mode, self.members, self.size, self.duration_s, self.warmup_s
        );
        let st = &self.setup;
        let split = st.welcome_all_at_once_bytes.map_or(String::new(), |b| {
            format!("  (one Welcome for all: {b} B > {} B: split)", st.max_welcome)
        });
        let _ = writeln!(
            s,
            "setup          {} commit(s) of {} members  largest Welcome {} B  commit {} B  {:.2}s{split}",
            st.commits, st.batch, st.welcome_bytes, st.commit_bytes, st.setup_s
        );
        let _ = writeln!(
            s,
            "rate           offered {:.0}/s  uploads acked {:.0}/s  copies delivered {:.0}/s",
            self.offered_rate, self.upload_rate, self.copy_rate
        );
        let _ = writeln!(
            s,
            "latency        p50 {} ms  p99 {} ms  p99.9 {} ms  max {} ms  (n={}, upload → member's receipt{})",
            ms(l.p50),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            l.count,
            if self.mode == "mls" { " and decryption" } else { "" }
        );
        let _ = writeln!(
            s,
            "uploads        sent {}  acked {}  GroupEpoch {}",
            self.uploads_sent, self.uploads_acked, self.uploads_epoch_refused
        );
        let _ = writeln!(
            s,
            "copies         expected {}  delivered {}  missing {}  duplicates {}  mismatched {}  of unacked uploads {}",
            self.copies_expected,
            self.copies_delivered,
            self.missing,
            self.duplicates,
            self.mismatched,
            self.delivered_unacked
        );
        let _ = writeln!(
            s,
            "acks           Deliver received {}  DeliveryAck sent {}",
            self.delivers_received, self.deliveries_acked
        );
        let _ = writeln!(
            s,
            "bytes          uploaded {}  delivered {}  (× {:.1})",
            self.bytes_uploaded, self.bytes_delivered, self.fan_out_factor
        );
        let cpu = |c: Option<f64>| c.map_or("n/a".to_owned(), |c| format!("{c:.0}%"));
        let _ = writeln!(
            s,
            "cpu            relay {}  generator {}  drain {:.2}s",
            cpu(self.relay_cpu_percent),
            cpu(self.generator_cpu_percent),
            self.drain_s
        );
        if !self.errors.is_empty() {
            let _ = writeln!(s, "errors         {:?}", self.errors);
        }
        s.push_str(if self.all_delivered_once {
            "check          every copy of every acknowledged upload delivered once and acknowledged\n"
        } else {
            "check          FAILED: copies missing, duplicated, mismatched or unacknowledged\n"
        });
        s
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

/// A `PrivateMessage` header (RFC 9420 §6.3) up to its content type.
fn private_header(group_id: &[u8], epoch: u64, content_type: u8) -> Vec<u8> {
    let mut m = vec![0, 1, 0, 2, group_id.len() as u8];
    m.extend_from_slice(group_id);
    m.extend_from_slice(&epoch.to_be_bytes());
    m.push(content_type);
    m
}

/// The probe as text (`--mls`): hex of pair, seq and intended time, padded with '.'.
fn probe_text(probe: &Probe, size: usize) -> String {
    let mut text = format!("{:08x}{:016x}{:016x}", probe.pair, probe.seq, probe.intended_ns);
    while text.len() < size {
        text.push('.');
    }
    text
}

fn parse_probe_text(text: &str) -> Option<Probe> {
    let hex = text.get(..TEXT_PROBE_LEN)?;
    Some(Probe {
        pair: u32::from_str_radix(&hex[..8], 16).ok()?,
        seq: u64::from_str_radix(&hex[8..24], 16).ok()?,
        intended_ns: u64::from_str_radix(&hex[24..40], 16).ok()?,
    })
}

/// The next frame that matters during setup: pings are answered, notices skipped.
async fn next_frame(framed: &mut LinkFramed, deadline: Instant) -> anyhow::Result<Frame> {
    for _ in 0..10_000 {
        let frame = tokio::time::timeout_at(deadline.into(), framed.next())
            .await
            .context("timed out while setting the group up")?
            .ok_or_else(|| anyhow!("the relay closed the connection"))??;
        match frame {
            Frame::Ping { nonce } => framed.send(Frame::Pong { nonce }).await?,
            Frame::Pong { .. } | Frame::KeyPackageCount { .. } | Frame::PreKeysLow { .. } => {}
            other => return Ok(other),
        }
    }
    bail!("no answer among 10 000 frames")
}

/// Waits for the `SentAck` of `msg_id`.
async fn await_ack(framed: &mut LinkFramed, msg_id: [u8; 16]) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETUP_WAIT;
    match next_frame(framed, deadline).await? {
        Frame::SentAck { msg_id: id } if id == msg_id => Ok(()),
        other => bail!("the group commit was not stored: {other:?}"),
    }
}

/// Waits for the next `Deliver` and acknowledges it: (sender, msg_id, payload).
async fn await_deliver(framed: &mut LinkFramed) -> anyhow::Result<([u8; 32], [u8; 16], Vec<u8>)> {
    let deadline = Instant::now() + SETUP_WAIT;
    match next_frame(framed, deadline).await? {
        Frame::Deliver {
            sender,
            msg_id,
            payload,
            ..
        } => {
            framed.send(Frame::DeliveryAck { sender, msg_id }).await?;
            Ok((sender, msg_id, payload))
        }
        other => bail!("expected a group delivery, got {other:?}"),
    }
}

/// Connects every member (TLS unless `--insecure-plaintext`).
async fn connect(cfg: &GroupConfig, endpoint: &Endpoint) -> anyhow::Result<Vec<Member>> {
    let addr = endpoint.addr;
    let mls = cfg.mls;
    futures_util::stream::iter(0..cfg.members)
        .map(|index| async move {
            let identity = IdentityKeyPair::generate(&mut OsRng);
            let (link, _) = Link::open(Kind::Relay, addr, None, &identity, None)
                .await
                .with_context(|| format!("member {index} connecting"))?;
            let Link::Relay(framed) = link else {
                bail!("not a relay connection");
            };
            let book = if mls {
                Some(
                    GroupBook::open(&identity, HashMap::new(), None, &BTreeMap::new())
                        .map_err(|e| anyhow!("member {index}: {e}"))?,
                )
            } else {
                None
            };
            Ok(Member {
                index,
                identity,
                framed,
                book,
            })
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
}

/// Headers mode: one hand-made commit at epoch 0 from member 0 adds everyone; each
/// other member gets (and acknowledges) its copy of the Welcome.
async fn setup_headers(
    members: &mut [Member],
    ids: &[[u8; 32]],
    group_id: &[u8],
) -> anyhow::Result<GroupSetup> {
    let mut commit = private_header(group_id, 0, 3);
    commit.extend_from_slice(&[0u8; 64]);
    let mut welcome = vec![0, 1, 0, 3];
    welcome.extend_from_slice(&[0u8; 256]);
    let msg_id = probe::msg_id(SETUP_PAIR, 0);
    let frame = Frame::GroupCommit {
        msg_id,
        commit: commit.clone(),
        welcome: Some(welcome.clone()),
        members: ids.to_vec(),
        added: ids[1..].to_vec(),
    };
    let first = &mut members[0].framed;
    first.send(frame).await?;
    await_ack(first, msg_id).await?;
    let expected = mls_payload(&welcome);
    let mut copies = 0;
    for member in &mut members[1..] {
        let (sender, id, payload) = await_deliver(&mut member.framed).await?;
        if sender != ids[0] || id != fan_out_id(&msg_id, &ids[member.index]) || payload != expected {
            bail!(
                "member {} got another Welcome copy than the one uploaded",
                member.index
            );
        }
        copies += 1;
    }
    Ok(GroupSetup {
        commits: 1,
        batch: ids.len() - 1,
        welcome_bytes: welcome.len(),
        commit_bytes: commit.len(),
        welcome_all_at_once_bytes: None,
        max_welcome: MAX_MLS_MESSAGE_LEN,
        setup_copies: copies,
        setup_s: 0.0,
    })
}

/// `--mls`: member 0 creates the group with the others' KeyPackages, in as few commits
/// as the Welcome size allows; every member reads its Welcome (and the later commits).
/// Returns the setup and the group id.
async fn setup_mls(
    members: &mut [Member],
    ids: &[[u8; 32]],
    max_welcome: usize,
) -> anyhow::Result<(GroupSetup, Vec<u8>)> {
    let mut packages: Vec<Vec<u8>> = Vec::with_capacity(members.len());
    for member in &mut members[1..] {
        let book = member.book.as_mut().ok_or_else(|| anyhow!("no group book"))?;
        let mut made = book
            .key_packages(1, false)
            .map_err(|e| anyhow!("KeyPackage: {e}"))?;
        packages.push(made.pop().ok_or_else(|| anyhow!("no KeyPackage made"))?);
    }
    let mut setup = GroupSetup {
        max_welcome,
        ..GroupSetup::default()
    };
    let mut group_id: Option<Vec<u8>> = None;
    let mut batch = packages.len();
    let mut next = 1; // the first member not yet added
    let mut commit_no = 0u64;
    while next < members.len() {
        // Bounded: every pass either adds at least one member or halves the batch.
        let take = batch.min(members.len() - next);
        let (first, rest) = members.split_at_mut(1);
        let adder = first[0].book.as_mut().ok_or_else(|| anyhow!("no group book"))?;
        let mut chosen = Vec::with_capacity(take);
        for (k, bytes) in packages[next - 1..next - 1 + take].iter().enumerate() {
            let who = &rest[next - 1 + k];
            let key = who.identity.public();
            let package = adder
                .read_key_package(&format!("member {}", who.index), key, bytes)
                .map_err(|e| anyhow!("{e}"))?;
            chosen.push((*key, package));
        }
        let msg_id = probe::msg_id(SETUP_PAIR, commit_no);
        let frame = match &group_id {
            None => {
                let (id, frame) = adder
                    .create("load", msg_id, chosen)
                    .map_err(|e| anyhow!("creating the group: {e}"))?;
                group_id = Some(id);
                frame
            }
            Some(id) => adder
                .add(id, msg_id, chosen)
                .map_err(|e| anyhow!("adding: {e}"))?,
        };
        let gid = group_id.clone().ok_or_else(|| anyhow!("no group"))?;
        let Frame::GroupCommit { commit, welcome, .. } = &frame else {
            bail!("not a commit");
        };
        let welcome_len = welcome.as_ref().map_or(0, Vec::len);
        if welcome_len > max_welcome || commit.len() > max_welcome {
            if take == packages.len() {
                setup.welcome_all_at_once_bytes = Some(welcome_len);
            }
            if take <= 1 {
                bail!("a Welcome adding one member is {welcome_len} B, over {max_welcome} B");
            }
            if commit_no == 0 {
                adder.forget(&gid);
                group_id = None;
            } else {
                adder.discard_pending(&gid).map_err(|e| anyhow!("{e}"))?;
            }
            batch = take.div_ceil(2);
            continue;
        }
        setup.welcome_bytes = setup.welcome_bytes.max(welcome_len);
        setup.commit_bytes = setup.commit_bytes.max(commit.len());
        setup.batch = setup.batch.max(take);
        let expected_welcome = welcome.as_ref().map(|w| mls_payload(w));
        first[0].framed.send(frame).await?;
        await_ack(&mut first[0].framed, msg_id).await?;
        adder.commit_stored(&gid).map_err(|e| anyhow!("{e}"))?;
        // Members already in the group read the commit; the added ones their Welcome.
        for member in rest[..next - 1 + take].iter_mut() {
            let (sender, id, payload) = await_deliver(&mut member.framed).await?;
            setup.setup_copies += 1;
            if sender != ids[0] || id != fan_out_id(&msg_id, &ids[member.index]) {
                bail!("member {} got a copy under another id", member.index);
            }
            let added_now = member.index >= next;
            if added_now && Some(&payload) != expected_welcome.as_ref() {
                bail!(
                    "member {} got another Welcome than the one uploaded",
                    member.index
                );
            }
            let body = payload
                .strip_prefix(&[MSG_TYPE_MLS])
                .ok_or_else(|| anyhow!("not an MLS delivery"))?;
            let book = member.book.as_mut().ok_or_else(|| anyhow!("no group book"))?;
            book.receive(body)
                .map_err(|e| anyhow!("member {} reading the setup: {e}", member.index))?;
        }
        next += take;
        commit_no += 1;
    }
    setup.commits = commit_no;
    let gid = group_id.ok_or_else(|| anyhow!("no group made"))?;
    // Every member at the same epoch, with all N members.
    for member in members.iter() {
        let book = member.book.as_ref().ok_or_else(|| anyhow!("no group book"))?;
        let summary = book
            .summaries()
            .into_iter()
            .find(|s| s.group_id == gid)
            .ok_or_else(|| anyhow!("member {} is not in the group", member.index))?;
        if summary.epoch != commit_no || summary.members.len() != members.len() {
            bail!(
                "member {} is at epoch {} with {} members",
                member.index,
                summary.epoch,
                summary.members.len()
            );
        }
    }
    Ok((setup, gid))
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

type CpuPair = (Option<ProcSample>, Option<ProcSample>);

fn build_report(
    cfg: &GroupConfig,
    endpoint: &Endpoint,
    setup: GroupSetup,
    finished: &[(Member, Tally)],
    drain_s: f64,
    (cpu_start, cpu_end): (CpuPair, CpuPair),
) -> GroupReport {
    let n = finished.len();
    let mut latency = histogram();
    let mut errors = BTreeMap::new();
    let (mut sent, mut acked, mut refused, mut acked_in_window) = (0u64, 0u64, 0u64, 0u64);
    let (mut bytes_up, mut bytes_down) = (0u64, 0u64);
    let (mut copies, mut copies_in_window, mut duplicates, mut mismatched) = (0u64, 0u64, 0u64, 0u64);
    let (mut delivers, mut acks) = (0u64, 0u64);
    let mut acked_uploads: HashMap<u64, usize> = HashMap::new();
    for (member, tally) in finished {
        sent += tally.sent.len() as u64;
        acked += tally.acked.len() as u64;
        refused += tally.epoch_refused;
        acked_in_window += tally.acked_in_window;
        for seq in &tally.acked {
            bytes_up += tally.sent.get(seq).copied().unwrap_or(0) as u64;
            acked_uploads.insert(*seq, member.index);
        }
        copies += tally.copies.len() as u64;
        copies_in_window += tally.copies_in_window;
        duplicates += tally.duplicates;
        mismatched += tally.mismatched;
        delivers += tally.delivers;
        acks += tally.acks;
        bytes_down += tally.bytes_delivered;
        let _ = latency.add(&tally.latency);
        for (kind, count) in &tally.errors {
            *errors.entry(kind.clone()).or_default() += count;
        }
    }
    // Every acknowledged upload, every member but its sender.
    let mut missing = 0u64;
    for (seq, sender) in &acked_uploads {
        for (member, tally) in finished {
            if member.index != *sender && !tally.copies.contains(seq) {
                missing += 1;
            }
        }
    }
    let delivered_unacked = finished
        .iter()
        .map(|(_, t)| t.copies.iter().filter(|s| !acked_uploads.contains_key(s)).count() as u64)
        .sum();
    let window = cfg.duration.saturating_sub(cfg.warmup).as_secs_f64().max(1e-9);
    let cpu = |a: &Option<ProcSample>, b: &Option<ProcSample>| match (a, b) {
        (Some(a), Some(b)) => Some(ProcSample::cpu_percent(a, b)),
        _ => None,
    };
    let copies_expected = acked * (n as u64 - 1);
    GroupReport {
        target: endpoint.label.clone(),
        mode: if cfg.mls { "mls" } else { "headers" }.into(),
        members: n,
        size: cfg.size,
        offered_rate: cfg.rate,
        duration_s: cfg.duration.as_secs_f64(),
        warmup_s: cfg.warmup.as_secs_f64(),
        setup,
        uploads_sent: sent,
        uploads_acked: acked,
        uploads_epoch_refused: refused,
        upload_rate: acked_in_window as f64 / window,
        copies_expected,
        copies_delivered: copies,
        copy_rate: copies_in_window as f64 / window,
        missing,
        duplicates,
        mismatched,
        delivered_unacked,
        delivers_received: delivers,
        deliveries_acked: acks,
        bytes_uploaded: bytes_up,
        bytes_delivered: bytes_down,
        fan_out_factor: if bytes_up == 0 {
            0.0
        } else {
            bytes_down as f64 / bytes_up as f64
        },
        latency_us: Percentiles::of(&latency),
        drain_s,
        relay_cpu_percent: cpu(&cpu_start.0, &cpu_end.0),
        generator_cpu_percent: cpu(&cpu_start.1, &cpu_end.1),
        all_delivered_once: sent > 0
            && acked == sent
            && missing == 0
            && duplicates == 0
            && mismatched == 0
            && copies == copies_expected
            && acks == delivers
            && errors.is_empty(),
        errors,
    }
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
