//! One load run: connect the pairs, send for the duration (open loop at a fixed total
//! rate, or closed loop with a window of messages in flight per pair), churn clients if
//! asked, wait for every outstanding message, audit the ledger and report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use e2ee_protocol::frame::Frame;
use e2ee_protocol::identity::IdentityKeyPair;
use futures_util::{FutureExt, SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use rand_core::{OsRng, RngCore};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;

use super::e2e::{ReceiverCrypto, SenderCrypto};
use super::link::{Address, Event, Link};
use super::probe::{self, Probe};
use super::report::{Availability, CompanionStats, LoadReport, ServerStats, TimelinePoint};
use super::stats::{Counters, Ledger, Percentiles, Recorder};
use super::sysinfo::{MachineSample, ProcSample};
use super::target::{source_ip, Kind};

mod receiver;
mod sender;

pub use super::churn::{parse_duration, ChurnSpec};
use receiver::Receiver;
use sender::Sender;

/// Most messages written per wake-up of a sender before it flushes.
const SEND_BATCH: usize = 512;
/// Most events handled per wake-up of a receiver before it flushes its acks.
const RECEIVE_BATCH: usize = 512;
/// Connections set up at once.
const SETUP_CONCURRENCY: usize = 64;

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Sender/recipient pairs (connections = 2 × pairs).
    pub pairs: usize,
    /// Total offered rate in messages per second (open loop); `None` = closed loop.
    pub rate: Option<f64>,
    /// Closed loop: messages in flight per pair.
    pub window: usize,
    /// How long to send.
    pub duration: Duration,
    /// Leading time not counted in latency and rate figures.
    pub warmup: Duration,
    /// Payload (probe) size in bytes.
    pub size: usize,
    /// Clients dropping and reconnecting.
    pub churn: Option<ChurnSpec>,
    /// Real crypto.
    pub e2e: bool,
    /// Longest wait for outstanding messages after sending stops.
    pub drain: Duration,
    /// Show a progress bar.
    pub progress: bool,
    /// Source addresses 127.0.0.1..=N to spread connections over.
    pub spread: usize,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            pairs: 50,
            rate: Some(10_000.0),
            window: 64,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            size: 256,
            churn: None,
            e2e: false,
            drain: Duration::from_secs(20),
            progress: true,
            spread: 1,
        }
    }
}

/// What the run is pointed at.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Protocol.
    pub kind: Kind,
    /// Address.
    pub addr: SocketAddr,
    /// Label for the report.
    pub label: String,
    /// Server process, for CPU and memory.
    pub pid: Option<u32>,
    /// The target's other processes (further relays, the Redis servers under relays),
    /// each with a label, for their CPU.
    pub companions: Vec<(String, u32)>,
    /// Every relay of a cluster target, `addr` first (empty: `addr` only). Pair p's
    /// sender connects to relay p and its recipient to relay p + 1 (round robin), so
    /// that every message crosses from one relay to another; a client that reconnects
    /// moves to another relay.
    pub relays: Vec<SocketAddr>,
}

impl Endpoint {
    /// The `k`-th relay of the target, round robin (`addr` for a single server).
    pub fn at(&self, k: usize) -> SocketAddr {
        if self.relays.is_empty() {
            self.addr
        } else {
            self.relays[k % self.relays.len()]
        }
    }
}

struct PairShared {
    ledger: Mutex<Ledger>,
    window: Semaphore,
    churn_sender: Notify,
    churn_receiver: Notify,
}

struct Shared {
    cfg: LoadConfig,
    endpoint: Endpoint,
    epoch: Instant,
    counters: Counters,
    recorder: Mutex<Recorder>,
    pairs: Vec<PairShared>,
    /// Reconnections so far, to spread reconnecting clients over a cluster's relays.
    moves: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn error(&self, kind: &'static str) {
        if let Ok(mut r) = self.recorder.lock() {
            r.error(kind);
        }
    }

    fn ns_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn send_end(&self) -> Instant {
        self.epoch + self.cfg.duration
    }

    fn churning(&self) -> bool {
        self.cfg.churn.is_some() && Instant::now() < self.send_end()
    }

    /// Reconnects after a drop, retrying until it works or the run stops.
    async fn reconnect(
        &self,
        index: usize,
        identity: &IdentityKeyPair,
        subscribe: Option<&str>,
        dropped_at: Instant,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Link> {
        let ep = &self.endpoint;
        for _ in 0..10_000 {
            if *stop.borrow() {
                return None;
            }
            // On a cluster, each reconnection goes to another relay than the last.
            let moved = self.moves.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let addr = ep.at(index % 2 + moved);
            let source = source_ip(&addr, index, self.cfg.spread);
            match Link::open(ep.kind, addr, source, identity, subscribe).await {
                Ok((link, _)) => {
                    Counters::add(&self.counters.reconnects_ok, 1);
                    let us = u64::try_from(dropped_at.elapsed().as_micros()).unwrap_or(u64::MAX);
                    if let Ok(mut r) = self.recorder.lock() {
                        let _ = r.recover.record(us.max(1));
                    }
                    return Some(link);
                }
                Err(_) => {
                    Counters::add(&self.counters.reconnects_failed, 1);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
        None
    }
}

/// Open-loop pacing of one sender: message k is due at `phase + k × interval`.
#[derive(Clone, Copy)]
struct Pace {
    phase_ns: f64,
    interval_ns: f64,
    total: u64,
}

impl Pace {
    fn new(cfg: &LoadConfig, pair: usize) -> Option<Self> {
        let rate = cfg.rate?;
        let interval_ns = 1e9 * cfg.pairs as f64 / rate;
        let phase_ns = interval_ns * pair as f64 / cfg.pairs as f64;
        let span = cfg.duration.as_nanos() as f64 - phase_ns;
        let total = if span > 0.0 {
            (span / interval_ns).ceil() as u64
        } else {
            0
        };
        Some(Self {
            phase_ns,
            interval_ns,
            total,
        })
    }

    fn due_ns(&self, k: u64) -> u64 {
        (self.phase_ns + self.interval_ns * k as f64) as u64
    }
}

/// A connected pair before the run starts.
struct Ready {
    pair: usize,
    sender_identity: IdentityKeyPair,
    receiver_identity: IdentityKeyPair,
    to: Address,
    subscribe: Option<String>,
    sender_link: Link,
    receiver_link: Link,
    sender_crypto: Option<SenderCrypto>,
    receiver_crypto: Option<ReceiverCrypto>,
}

async fn expect_frame(
    link: &mut Link,
    what: &str,
    mut pick: impl FnMut(Frame) -> Option<Frame>,
) -> anyhow::Result<Frame> {
    let framed = link.relay()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, framed.next())
            .await
            .with_context(|| format!("waiting for {what}"))?
            .ok_or_else(|| anyhow!("relay closed while waiting for {what}"))??;
        if let Frame::Ping { nonce } = frame {
            framed.send(Frame::Pong { nonce }).await?;
            continue;
        }
        if let Some(found) = pick(frame) {
            return Ok(found);
        }
    }
}

async fn set_up_pair(endpoint: Endpoint, cfg: LoadConfig, pair: usize, run_id: u64) -> anyhow::Result<Ready> {
    let sender_identity = IdentityKeyPair::generate(&mut OsRng);
    // The recipient's crypto state holds its own copy of the identity.
    let mut receiver_seed = [0u8; 32];
    OsRng.fill_bytes(&mut receiver_seed);
    let receiver_identity = IdentityKeyPair::from_seed(&receiver_seed);
    let (to, subscribe) = match endpoint.kind {
        Kind::Relay => (Address::Identity(*receiver_identity.public().as_bytes()), None),
        Kind::Nats | Kind::NatsJetStream | Kind::Redis | Kind::RedisStreams => {
            let channel = format!("e2ee-load.{run_id:x}.{pair}");
            (Address::Channel(channel.clone()), Some(channel))
        }
    };
    let (mut receiver_link, _) = Link::open(
        endpoint.kind,
        endpoint.at(pair + 1),
        source_ip(&endpoint.at(pair + 1), 2 * pair + 1, cfg.spread),
        &receiver_identity,
        subscribe.as_deref(),
    )
    .await
    .context("connecting a recipient")?;
    let (mut sender_link, _) = Link::open(
        endpoint.kind,
        endpoint.at(pair),
        source_ip(&endpoint.at(pair), 2 * pair, cfg.spread),
        &sender_identity,
        None,
    )
    .await
    .context("connecting a sender")?;
    let (mut sender_crypto, mut receiver_crypto) = (None, None);
    if cfg.e2e {
        let rx = ReceiverCrypto::new(
            IdentityKeyPair::from_seed(&receiver_seed),
            *sender_identity.public().as_bytes(),
        )?;
        let bundle = if endpoint.kind == Kind::Relay {
            receiver_link
                .relay()?
                .send(Frame::PublishPreKeys { bundle: rx.bundle() })
                .await?;
            expect_frame(&mut receiver_link, "PreKeysStored", |f| {
                matches!(f, Frame::PreKeysStored { .. }).then_some(f)
            })
            .await?;
            let owner = *receiver_identity.public().as_bytes();
            sender_link
                .relay()?
                .send(Frame::FetchBundle {
                    request_id: pair as u32,
                    identity: owner,
                })
                .await?;
            match expect_frame(&mut sender_link, "Bundle", |f| {
                matches!(f, Frame::Bundle { .. }).then_some(f)
            })
            .await?
            {
                Frame::Bundle {
                    bundle: Some(bytes), ..
                } => bytes,
                _ => bail!("the relay has no bundle for the recipient"),
            }
        } else {
            rx.bundle()
        };
        sender_crypto = Some(SenderCrypto::initiate(&sender_identity, &bundle)?);
        receiver_crypto = Some(rx);
    }
    Ok(Ready {
        pair,
        sender_identity,
        receiver_identity,
        to,
        subscribe,
        sender_link,
        receiver_link,
        sender_crypto,
        receiver_crypto,
    })
}

/// Runs the workload against `endpoint` and reports.
pub async fn run(cfg: &LoadConfig, endpoint: &Endpoint) -> anyhow::Result<LoadReport> {
    if cfg.pairs == 0 {
        bail!("--pairs must be at least 1");
    }
    if cfg.size < probe::PROBE_LEN {
        bail!("--size must be at least {} bytes", probe::PROBE_LEN);
    }
    if cfg.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        bail!("--rate must be positive");
    }
    let run_id = OsRng.next_u64();

    // Set up every pair, a bounded number at a time.
    let setup_started = Instant::now();
    let mut setups = JoinSet::new();
    let mut ready: Vec<Ready> = Vec::with_capacity(cfg.pairs);
    for pair in 0..cfg.pairs {
        if setups.len() >= SETUP_CONCURRENCY {
            if let Some(done) = setups.join_next().await {
                ready.push(done??);
            }
        }
        setups.spawn(set_up_pair(endpoint.clone(), cfg.clone(), pair, run_id));
    }
    while let Some(done) = setups.join_next().await {
        ready.push(done??);
    }
    ready.sort_by_key(|r| r.pair);
    let setup_time = setup_started.elapsed();

    let epoch = Instant::now() + Duration::from_millis(100);
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        endpoint: endpoint.clone(),
        epoch,
        counters: Counters::default(),
        recorder: Mutex::new(Recorder::default()),
        pairs: (0..cfg.pairs)
            .map(|_| PairShared {
                ledger: Mutex::new(Ledger::default()),
                window: Semaphore::new(cfg.window.max(1)),
                churn_sender: Notify::new(),
                churn_receiver: Notify::new(),
            })
            .collect(),
        moves: std::sync::atomic::AtomicUsize::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for r in ready {
        let receiver = Receiver {
            shared: shared.clone(),
            pair: r.pair,
            identity: r.receiver_identity,
            subscribe: r.subscribe,
            crypto: r.receiver_crypto,
            latencies: Vec::new(),
            measured: Vec::new(),
        };
        tasks.spawn(receiver.run(Some(r.receiver_link), stop_rx.clone()));
        let sender = Sender {
            shared: shared.clone(),
            pair: r.pair,
            identity: r.sender_identity,
            to: r.to,
            crypto: r.sender_crypto,
            unacked: BTreeMap::new(),
            next: 0,
            lags: Vec::new(),
        };
        tasks.spawn(sender.run(Some(r.sender_link), stop_rx.clone()));
    }
    if let Some(churn) = cfg.churn {
        tasks.spawn(churn_clients(shared.clone(), churn, stop_rx.clone()));
    }
    let timeline = Arc::new(Mutex::new(Vec::<TimelinePoint>::new()));
    let progress = progress_bar(cfg, &endpoint.label);
    tasks.spawn(tick(
        shared.clone(),
        timeline.clone(),
        progress.clone(),
        stop_rx.clone(),
    ));

    // Measure between the end of the warm-up and the end of sending.
    let pid = endpoint.pid;
    let warm = epoch + cfg.warmup.min(cfg.duration);
    tokio::time::sleep_until(warm.into()).await;
    let companions_at = || -> Vec<Option<ProcSample>> {
        endpoint
            .companions
            .iter()
            .map(|(_, pid)| ProcSample::of(*pid))
            .collect()
    };
    let at_warm = (
        Counters::get(&shared.counters.sent),
        Counters::get(&shared.counters.delivered),
        pid.and_then(ProcSample::of),
        ProcSample::of_self(),
        MachineSample::read(),
        companions_at(),
    );
    tokio::time::sleep_until(shared.send_end().into()).await;
    let at_end = (
        Counters::get(&shared.counters.sent),
        Counters::get(&shared.counters.delivered),
        pid.and_then(ProcSample::of),
        ProcSample::of_self(),
        MachineSample::read(),
        companions_at(),
    );
    let window_secs = shared
        .send_end()
        .saturating_duration_since(warm)
        .as_secs_f64()
        .max(1e-3);

    // Wait for what is still outstanding.
    let drain_started = Instant::now();
    let mut last = (0, 0);
    let mut last_change = Instant::now();
    loop {
        let c = &shared.counters;
        let (sent, acked, delivered, refused) = (
            Counters::get(&c.sent),
            Counters::get(&c.acked),
            Counters::get(&c.delivered),
            Counters::get(&c.refused),
        );
        let done = match endpoint.kind {
            Kind::Nats => delivered + refused >= sent,
            Kind::Relay | Kind::Redis | Kind::RedisStreams | Kind::NatsJetStream => {
                acked + refused >= sent && delivered >= acked
            }
        };
        if done || drain_started.elapsed() >= cfg.drain {
            break;
        }
        if (acked, delivered) != last {
            last = (acked, delivered);
            last_change = Instant::now();
        } else if last_change.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_time = drain_started.elapsed();
    let _ = stop_tx.send(true);
    let finish = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if finish.is_err() {
        tasks.abort_all();
    }
    progress.finish_and_clear();

    // Audit every message.
    let (mut audited_sent, mut lost_acked, mut undelivered) = (0, 0, 0);
    for ps in &shared.pairs {
        if let Ok(l) = ps.ledger.lock() {
            let (s, la, u) = l.audit();
            audited_sent += s;
            lost_acked += la;
            undelivered += u;
        }
    }
    let c = &shared.counters;
    let recorder = shared.recorder.lock().map_err(|_| anyhow!("recorder poisoned"))?;
    let timeline = timeline.lock().map(|t| t.clone()).unwrap_or_default();
    let acked = Counters::get(&c.acked);
    let delivered = Counters::get(&c.delivered);
    // NATS core has no acknowledgement; a Redis PUBLISH reply counts subscribers, which
    // promises nothing about delivery; the relay's SentAck, an XADD's reply (with the
    // AOF fsynced, the entry waits in the stream until read) and JetStream's publish
    // acknowledgement (in the stream, kept until the consumer acknowledges it) are
    // delivery promises.
    let ack_meaningful = endpoint.kind != Kind::Nats;
    let promise = matches!(
        endpoint.kind,
        Kind::Relay | Kind::RedisStreams | Kind::NatsJetStream
    );
    let availability = cfg.churn.map(|churn| Availability {
        churn,
        drops: Counters::get(&c.drops),
        reconnects_ok: Counters::get(&c.reconnects_ok),
        reconnects_failed: Counters::get(&c.reconnects_failed),
        recover_us: Percentiles::of(&recorder.recover),
        delivered_share_of_sent: ratio(delivered, audited_sent),
        delivered_share_of_acked: ack_meaningful.then(|| ratio(acked - lost_acked.min(acked), acked)),
    });
    let server = match (&at_warm.2, &at_end.2) {
        (Some(a), Some(b)) => Some(ServerStats {
            pid: pid.unwrap_or(0),
            cpu_percent: ProcSample::cpu_percent(a, b),
            rss_kib_end: b.rss_kib,
            rss_kib_max: timeline
                .iter()
                .map(|t| t.server_rss_kib)
                .max()
                .unwrap_or(0)
                .max(b.rss_kib),
        }),
        _ => None,
    };
    let loadgen_cpu_percent = match (&at_warm.3, &at_end.3) {
        (Some(a), Some(b)) => Some(ProcSample::cpu_percent(a, b)),
        _ => None,
    };
    // Everything else on the machine over the same window (other processes compete for
    // the same cores and make a run slower; the report says how much).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let machine_busy_percent = match (&at_warm.4, &at_end.4) {
        (Some(a), Some(b)) => Some(MachineSample::busy_percent(a, b, cores)),
        _ => None,
    };
    let companions: Vec<CompanionStats> = (endpoint.companions.iter())
        .zip(at_warm.5.iter().zip(&at_end.5))
        .filter_map(|((label, pid), pair)| match pair {
            (Some(a), Some(b)) => Some(CompanionStats {
                label: label.clone(),
                pid: *pid,
                cpu_percent: ProcSample::cpu_percent(a, b),
            }),
            _ => None,
        })
        .collect();
    let other_cpu_percent = machine_busy_percent.map(|busy| {
        let ours = loadgen_cpu_percent.unwrap_or(0.0)
            + server.as_ref().map_or(0.0, |s| s.cpu_percent)
            + companions.iter().map(|c| c.cpu_percent).sum::<f64>();
        (busy - ours).max(0.0)
    });
    let mut histogram = Vec::new();
    if !recorder.total.is_empty() {
        // 0.1 "nines" apart: p0, p20.6, …, p90, …, p99, …, p99.999, then the maximum.
        for step in 0..=50 {
            let q = 1.0 - 10f64.powf(-f64::from(step) / 10.0);
            histogram.push((q * 100.0, recorder.total.value_at_quantile(q)));
        }
        histogram.push((100.0, recorder.total.max()));
    }
    Ok(LoadReport {
        target: endpoint.label.clone(),
        kind: endpoint.kind,
        mode: if cfg.rate.is_some() {
            "open".into()
        } else {
            "closed (--max)".into()
        },
        pairs: cfg.pairs,
        connections: cfg.pairs * 2,
        size: cfg.size,
        e2e: cfg.e2e,
        window: cfg.rate.is_none().then_some(cfg.window),
        duration_s: cfg.duration.as_secs_f64(),
        warmup_s: cfg.warmup.as_secs_f64(),
        setup_s: setup_time.as_secs_f64(),
        drain_s: drain_time.as_secs_f64(),
        offered_rate: cfg.rate,
        sent_rate: (at_end.0 - at_warm.0) as f64 / window_secs,
        delivered_rate: (at_end.1 - at_warm.1) as f64 / window_secs,
        sent: Counters::get(&c.sent),
        acked: ack_meaningful.then_some(acked),
        delivered,
        duplicates: Counters::get(&c.duplicates),
        retransmitted: Counters::get(&c.retransmitted),
        refused: Counters::get(&c.refused),
        undelivered,
        acked_not_delivered: ack_meaningful.then_some(lost_acked),
        all_acked_delivered: promise.then_some(lost_acked == 0),
        send_lag_us: Percentiles::of(&recorder.send_lag),
        latency_us: Percentiles::of(&recorder.total),
        errors: recorder
            .errors
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        availability,
        server,
        loadgen_cpu_percent,
        machine_busy_percent,
        other_cpu_percent,
        companions,
        timeline,
        histogram,
    })
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

fn progress_bar(cfg: &LoadConfig, label: &str) -> ProgressBar {
    if !cfg.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(cfg.duration.as_secs().max(1));
    if let Ok(style) = ProgressStyle::with_template("{prefix:>22} [{bar:30}] {pos:>3}/{len}s {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    bar
}

/// Once a second: a timeline point, the server's memory and the progress bar.
async fn tick(
    shared: Arc<Shared>,
    timeline: Arc<Mutex<Vec<TimelinePoint>>>,
    bar: ProgressBar,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = shared.epoch + Duration::from_secs(1);
    let (mut sent0, mut delivered0) = (0, 0);
    let pid = shared.endpoint.pid;
    for second in 1..=86_400u64 {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.changed() => return,
        }
        next += Duration::from_secs(1);
        let window = match shared.recorder.lock() {
            Ok(mut r) => {
                let p = Percentiles::of(&r.window);
                r.window.reset();
                p
            }
            Err(_) => return,
        };
        let sent = Counters::get(&shared.counters.sent);
        let delivered = Counters::get(&shared.counters.delivered);
        let point = TimelinePoint {
            t_s: second as f64,
            sent: sent - sent0,
            delivered: delivered - delivered0,
            p50_us: window.p50,
            p99_us: window.p99,
            max_us: window.max,
            server_rss_kib: pid.and_then(crate::process::rss_kib).unwrap_or(0),
        };
        (sent0, delivered0) = (sent, delivered);
        bar.set_position(second.min(bar.length().unwrap_or(0)));
        bar.set_message(format!(
            "sent {}/s delivered {}/s p99 {:.2} ms",
            point.sent,
            point.delivered,
            point.p99_us as f64 / 1000.0
        ));
        if let Ok(mut t) = timeline.lock() {
            t.push(point);
        }
    }
}

/// Every interval, drops a random share of all clients (they reconnect at once).
async fn churn_clients(shared: Arc<Shared>, churn: ChurnSpec, mut stop: watch::Receiver<bool>) {
    let clients = shared.pairs.len() * 2;
    let per_round = ((clients as f64 * churn.share).round() as usize).min(clients);
    let mut next = shared.epoch + churn.every;
    while next < shared.send_end() {
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = stop.changed() => return,
        }
        next += churn.every;
        // A partial Fisher-Yates shuffle picks `per_round` distinct clients.
        let mut order: Vec<usize> = (0..clients).collect();
        for i in 0..per_round {
            let j = i + (OsRng.next_u64() as usize) % (clients - i);
            order.swap(i, j);
            let client = order[i];
            let ps = &shared.pairs[client / 2];
            if client & 1 == 0 {
                ps.churn_sender.notify_one();
            } else {
                ps.churn_receiver.notify_one();
            }
        }
    }
}
