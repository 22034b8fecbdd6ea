//! `e2ee-load idle`: open many authenticated connections that stay idle (answering the
//! server's pings), hold them, and measure the server's resident memory per connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2ee_protocol::identity::IdentityKeyPair;
use indicatif::ProgressBar;
use rand_core::OsRng;
use serde::Serialize;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::link::{Event, Link};
use super::run::Endpoint;
use super::sysinfo::ProcSample;
use super::target::{source_ip, Kind};

/// Connections being opened at once.
const CONNECT_CONCURRENCY: usize = 256;

/// The shape of an idle run.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// Connections to open.
    pub connections: usize,
    /// How long to hold them once open.
    pub hold: Duration,
    /// Source addresses 127.0.0.1..=N.
    pub spread: usize,
    /// Show a progress bar.
    pub progress: bool,
}

/// What an idle run measured.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    /// Target label.
    pub target: String,
    /// Connections asked for.
    pub requested: usize,
    /// Connections authenticated and still open at the end of the hold.
    pub held: u64,
    /// Connections that failed to open.
    pub failed: u64,
    /// Connections closed by the server during the hold.
    pub closed_during_hold: u64,
    /// Seconds to open them all.
    pub setup_s: f64,
    /// Server RSS before connecting (KiB).
    pub rss_kib_before: u64,
    /// Server RSS with every connection held (KiB).
    pub rss_kib_held: u64,
    /// (held − before) / connections, in KB (1000 bytes).
    pub kb_per_connection: f64,
    /// The first connect error, if any.
    pub first_error: Option<String>,
}

impl IdleReport {
    /// A readable summary.
    pub fn summary(&self) -> String {
        format!(
            "idle     target {}  held {}/{} (failed {}, closed during hold {})  opened in {:.1}s\n\
             memory   server rss {} KiB before, {} KiB held: {:.2} KB per connection{}\n",
            self.target,
            self.held,
            self.requested,
            self.failed,
            self.closed_during_hold,
            self.setup_s,
            self.rss_kib_before,
            self.rss_kib_held,
            self.kb_per_connection,
            self.first_error
                .as_ref()
                .map_or(String::new(), |e| format!("\nerror    first failure: {e}"))
        )
    }
}

/// This process's open-file limit (soft), from `/proc/self/limits`.
pub fn file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Descriptors kept free for everything else (listeners, logs, /proc reads).
const SPARE_FILES: usize = 100;

/// Opens, holds and measures. Asks for no more connections than the file limit allows
/// (each connection is a descriptor here and one in a server on this machine).
pub async fn idle(cfg: &IdleConfig, endpoint: &Endpoint) -> IdleReport {
    let mut cfg = cfg.clone();
    if let Some(limit) = file_limit() {
        let most = limit.saturating_sub(SPARE_FILES).max(1);
        if cfg.connections > most {
            eprintln!(
                "note: {} connections asked for, {most} opened: the open-file limit is {limit}",
                cfg.connections
            );
            cfg.connections = most;
        }
    }
    let cfg = &cfg;
    let before = endpoint.pid.and_then(ProcSample::of).map_or(0, |s| s.rss_kib);
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let (stop_tx, stop_rx) = watch::channel(false);
    let bar = if cfg.progress {
        ProgressBar::new(cfg.connections as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_message("connections");
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for index in 0..cfg.connections {
        let (gate, opened, failed, closed, first_error) = (
            gate.clone(),
            opened.clone(),
            failed.clone(),
            closed.clone(),
            first_error.clone(),
        );
        let (endpoint, mut stop, bar) = (endpoint.clone(), stop_rx.clone(), bar.clone());
        let source = source_ip(&endpoint.addr, index, cfg.spread);
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await;
            let identity = IdentityKeyPair::generate(&mut OsRng);
            let subscribe = format!("idle.{index}");
            let opened_link = Link::open(
                idle_kind(endpoint.kind),
                endpoint.addr,
                source,
                &identity,
                Some(&subscribe),
            )
            .await;
            drop(permit);
            bar.inc(1);
            let mut link = match opened_link {
                Ok((link, _)) => {
                    opened.fetch_add(1, Ordering::Relaxed);
                    link
                }
                Err(err) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut first) = first_error.lock() {
                        first.get_or_insert_with(|| format!("{err:#}"));
                    }
                    return;
                }
            };
            drop(identity);
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    event = link.next_event() => {
                        if let Event::Closed(_) = event {
                            closed.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
        });
    }
    // Wait for every attempt (bounded: each connect has its own timeout).
    let deadline = Instant::now() + Duration::from_secs(600);
    while opened.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < cfg.connections as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let setup_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    tokio::time::sleep(cfg.hold).await;
    let held_rss = endpoint.pid.and_then(ProcSample::of).map_or(0, |s| s.rss_kib);
    let held = opened.load(Ordering::Relaxed) - closed.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let kb = if held > 0 {
        held_rss.saturating_sub(before) as f64 * 1.024 / held as f64
    } else {
        0.0
    };
    let first_error = first_error.lock().ok().and_then(|e| e.clone());
    IdleReport {
        target: endpoint.label.clone(),
        requested: cfg.connections,
        held,
        failed: failed.load(Ordering::Relaxed),
        closed_during_hold: closed.load(Ordering::Relaxed),
        setup_s,
        rss_kib_before: before,
        rss_kib_held: held_rss,
        kb_per_connection: kb,
        first_error,
    }
}

/// What an idle connection to a target speaks: the durable kinds' servers are held as
/// plain subscribers (an idle recipient of a stream holds a connection, not storage).
fn idle_kind(kind: Kind) -> Kind {
    match kind {
        Kind::NatsJetStream => Kind::Nats,
        Kind::RedisStreams => Kind::Redis,
        other => other,
    }
}
