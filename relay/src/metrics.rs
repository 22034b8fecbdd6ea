//! The relay's metrics: counters and gauges kept in a `prometheus-client` registry and
//! served in the OpenMetrics text format on `GET /metrics` of an optional local HTTP
//! port ([`serve`]; any other path is 404, any other method 405). The same values feed
//! the periodic summary log line and the tests.
//!
//! Every metric is named `e2ee_relay_…`; a counter's samples end in `_total` (its
//! `# TYPE` line names the family without it, as OpenMetrics has it). The list, with
//! what each means, is in docs/RELAY.md.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use e2ee_protocol::frame::ErrorCode;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge as PromGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The prefix of every metric name.
pub const PREFIX: &str = "e2ee_relay";

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(PromCounter<u64, AtomicU64>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.inc_by(n);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A value that goes up and down, never below zero.
#[derive(Debug, Clone, Default)]
pub struct Gauge(PromGauge<i64, AtomicI64>);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Subtracts one (never below zero).
    pub fn dec(&self) {
        self.sub(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let _ = self
            .0
            .inner()
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(n))
            });
    }
    /// Subtracts `n` (never below zero).
    pub fn sub(&self, n: u64) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let _ = self
            .0
            .inner()
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n).max(0))
            });
    }
    /// Sets the value.
    pub fn set(&self, v: u64) {
        self.0.set(i64::try_from(v).unwrap_or(i64::MAX));
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        u64::try_from(self.0.get()).unwrap_or(0)
    }
}

/// The label set of `rejects_total`: the error code's name.
type ReasonLabel = [(&'static str, &'static str); 1];

/// Every metric of the relay, and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    /// Open TCP connections.
    pub connections_open: Gauge,
    /// Connections accepted since start.
    pub connections_total: Counter,
    /// Authenticated identities currently registered.
    pub authenticated: Gauge,
    /// Messages committed to the store.
    pub messages_stored: Counter,
    /// Retransmissions recognised as duplicates.
    pub messages_duplicate: Counter,
    /// Messages written to a recipient connection.
    pub messages_delivered: Counter,
    /// Messages acknowledged by their recipient.
    pub messages_acked: Counter,
    /// Messages dropped by the TTL.
    pub messages_expired: Counter,
    /// TLS handshakes that failed or did not finish within the authentication timeout.
    pub tls_handshake_failures: Counter,
    /// Messages stored and waiting: neither acknowledged nor expired. Read from the
    /// store when the relay starts (so it counts what a previous run left), then kept
    /// current by every commit.
    pub stored_messages: Gauge,
    /// Bytes the database files take on disk (the database and its write-ahead log),
    /// sampled at each scrape; 0 with the memory store.
    pub database_bytes: Gauge,
    /// Sends refused by the rate limit.
    pub rate_limited: Counter,
    /// Sends refused because the recipient's queue is full.
    pub quota_exceeded: Counter,
    /// Sends refused because the sender's stored messages or bytes reached its quota.
    pub sender_quota_exceeded: Counter,
    /// Sends refused because the stored messages reached the storage budget.
    pub storage_budget_exceeded: Counter,
    /// Acknowledgements ignored: not for a message delivered on that connection and
    /// not yet acknowledged there (nothing is written for them).
    pub acks_ignored: Counter,
    /// Times a connection stopped reading until its identity's ack bucket had a token.
    pub ack_rate_waits: Counter,
    /// Times a connection stopped reading until the store's write queue had room.
    pub store_queue_waits: Counter,
    /// Bundle fetches answered without a one-time prekey because the target's handout
    /// bucket was empty.
    pub opk_handouts_limited: Counter,
    /// KeyPackage fetches answered with the last-resort KeyPackage because the target's
    /// handout bucket was empty.
    pub kp_handouts_limited: Counter,
    /// Group uploads stored (each queued for every other member).
    pub group_uploads: Counter,
    /// Group uploads answered `GroupEpoch` (another commit took the epoch).
    pub group_epoch_refusals: Counter,
    /// Frame bytes received.
    pub bytes_in: Counter,
    /// Frame bytes sent.
    pub bytes_out: Counter,
    /// Writes waiting for the next group commit.
    pub store_queue_depth: Gauge,
    /// Group commits done.
    pub store_batches: Counter,
    /// Writes committed in those batches.
    pub store_batch_writes: Counter,
    rejects: Family<ReasonLabel, PromCounter<u64, AtomicU64>>,
    /// The files whose sizes make up `database_bytes`.
    database_files: OnceLock<Vec<PathBuf>>,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Self {
            connections_open: Gauge::default(),
            connections_total: Counter::default(),
            authenticated: Gauge::default(),
            messages_stored: Counter::default(),
            messages_duplicate: Counter::default(),
            messages_delivered: Counter::default(),
            messages_acked: Counter::default(),
            messages_expired: Counter::default(),
            tls_handshake_failures: Counter::default(),
            stored_messages: Gauge::default(),
            database_bytes: Gauge::default(),
            rate_limited: Counter::default(),
            quota_exceeded: Counter::default(),
            sender_quota_exceeded: Counter::default(),
            storage_budget_exceeded: Counter::default(),
            acks_ignored: Counter::default(),
            ack_rate_waits: Counter::default(),
            store_queue_waits: Counter::default(),
            opk_handouts_limited: Counter::default(),
            kp_handouts_limited: Counter::default(),
            group_uploads: Counter::default(),
            group_epoch_refusals: Counter::default(),
            bytes_in: Counter::default(),
            bytes_out: Counter::default(),
            store_queue_depth: Gauge::default(),
            store_batches: Counter::default(),
            store_batch_writes: Counter::default(),
            rejects: Family::default(),
            database_files: OnceLock::new(),
            registry: Registry::with_prefix(PREFIX),
        };
        m.register();
        m
    }
}

impl Metrics {
    /// A fresh set.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers every metric under its exposition name (counters without `_total`,
    /// which the encoder adds to their samples).
    fn register(&mut self) {
        let r = &mut self.registry;
        let gauges: [(&str, &str, &Gauge); 4] = [
            (
                "connections_open",
                "Open TCP connections.",
                &self.connections_open,
            ),
            (
                "authenticated_identities",
                "Authenticated identities connected.",
                &self.authenticated,
            ),
            (
                "stored_messages",
                "Messages stored and waiting for their recipient: neither acknowledged nor \
                 expired (read from the store at start, so correct after a restart).",
                &self.stored_messages,
            ),
            (
                "store_queue_depth",
                "Writes waiting for the next group commit.",
                &self.store_queue_depth,
            ),
        ];
        for (name, help, gauge) in gauges {
            r.register(name, help, gauge.0.clone());
        }
        r.register_with_unit(
            "database",
            "Size of the database files on disk (the database and its write-ahead log), \
             sampled at each scrape; 0 with the memory store.",
            Unit::Bytes,
            self.database_bytes.0.clone(),
        );
        let counters: [(&str, &str, &Counter); 22] = [
            ("connections", "Connections accepted.", &self.connections_total),
            (
                "messages_stored",
                "Messages committed to the store.",
                &self.messages_stored,
            ),
            (
                "messages_duplicate",
                "Retransmissions recognised as duplicates.",
                &self.messages_duplicate,
            ),
            (
                "messages_delivered",
                "Messages pushed to recipients.",
                &self.messages_delivered,
            ),
            (
                "messages_acked",
                "Messages acknowledged by recipients.",
                &self.messages_acked,
            ),
            (
                "messages_expired",
                "Messages dropped by the TTL.",
                &self.messages_expired,
            ),
            (
                "tls_handshake_failures",
                "TLS handshakes that failed or did not finish in time.",
                &self.tls_handshake_failures,
            ),
            (
                "rate_limited",
                "Sends refused by the rate limit.",
                &self.rate_limited,
            ),
            (
                "quota_exceeded",
                "Sends refused for a full queue.",
                &self.quota_exceeded,
            ),
            (
                "sender_quota_exceeded",
                "Sends refused for the sender's storage quota (messages or bytes).",
                &self.sender_quota_exceeded,
            ),
            (
                "storage_budget_exceeded",
                "Sends refused for the relay's storage budget.",
                &self.storage_budget_exceeded,
            ),
            (
                "acks_ignored",
                "Acknowledgements ignored: not for a message delivered and unacknowledged on \
                 that connection.",
                &self.acks_ignored,
            ),
            (
                "ack_rate_waits",
                "Times a connection stopped reading until its acknowledgement bucket refilled.",
                &self.ack_rate_waits,
            ),
            (
                "store_queue_waits",
                "Times a connection stopped reading until the store's write queue had room.",
                &self.store_queue_waits,
            ),
            (
                "opk_handouts_limited",
                "Bundle fetches answered without a one-time prekey by the per-target handout \
                 limit.",
                &self.opk_handouts_limited,
            ),
            (
                "kp_handouts_limited",
                "KeyPackage fetches answered with the last-resort KeyPackage by the per-target \
                 handout limit.",
                &self.kp_handouts_limited,
            ),
            (
                "group_uploads",
                "Group uploads stored, each queued for every other member.",
                &self.group_uploads,
            ),
            (
                "group_epoch_refusals",
                "Group uploads answered GroupEpoch: another commit took the epoch.",
                &self.group_epoch_refusals,
            ),
            ("bytes_in", "Frame bytes received.", &self.bytes_in),
            ("bytes_out", "Frame bytes sent.", &self.bytes_out),
            ("store_batches", "Group commits.", &self.store_batches),
            (
                "store_batch_writes",
                "Writes committed in group commits.",
                &self.store_batch_writes,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.0.clone());
        }
        r.register(
            "rejects",
            "Connections closed or requests refused, by reason (the error code's name).",
            self.rejects.clone(),
        );
    }

    /// Counts a connection closed or a request refused with `code`.
    pub fn reject(&self, code: ErrorCode) {
        self.rejects.get_or_create(&[("reason", code.name())]).inc();
    }

    /// Rejections counted with `code`.
    pub fn rejects(&self, code: ErrorCode) -> u64 {
        self.rejects
            .get(&[("reason", code.name())])
            .map_or(0, |counter| counter.get())
    }

    /// Sizes the files in `files` (those that exist) for `database_bytes` at each
    /// scrape; only the first call counts.
    pub fn watch_database_files(&self, files: Vec<PathBuf>) {
        let _ = self.database_files.set(files);
    }

    /// Samples the database files' sizes into `database_bytes`.
    pub fn sample_database_size(&self) {
        let Some(files) = self.database_files.get() else {
            return;
        };
        let bytes = files
            .iter()
            .filter_map(|path| std::fs::metadata(path).ok())
            .map(|meta| meta.len())
            .fold(0u64, u64::saturating_add);
        self.database_bytes.set(bytes);
    }

    /// The OpenMetrics text exposition, with the database size sampled now.
    pub fn render(&self) -> String {
        self.sample_database_size();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Longest request head read from a scraper.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// How long a scraper has to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET /metrics`.
    Metrics,
    /// Another path: 404.
    NotFound,
    /// Another method: 405.
    MethodNotAllowed,
    /// No request line: 400.
    BadRequest,
}

/// Routes a request by its request line: only `GET /metrics` (with or without a query
/// string) is served.
fn route(head: &[u8]) -> Route {
    let line_end = head.iter().position(|&b| b == b'\r' || b == b'\n');
    let Some(line) = line_end.and_then(|end| std::str::from_utf8(&head[..end]).ok()) else {
        return Route::BadRequest;
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Route::BadRequest;
    };
    if parts.next().is_some() || !version.starts_with("HTTP/") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        Route::NotFound
    } else if method != "GET" {
        Route::MethodNotAllowed
    } else {
        Route::Metrics
    }
}

/// Reads a request head (up to the blank line, bounded in size and time).
async fn read_head(stream: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    let read = async {
        let mut buf = [0u8; 1024];
        while head.len() < MAX_REQUEST_HEAD && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, read).await;
    head
}

fn response(status: &str, content_type: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Serves `GET /metrics` with the OpenMetrics text until the task is dropped (404 for
/// any other path, 405 for any other method). Only meant for a local address.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        actix::spawn(async move {
            let head = read_head(&mut stream).await;
            let text = "text/plain; charset=utf-8";
            let response = match route(&head) {
                Route::Metrics => response("200 OK", CONTENT_TYPE, "", &metrics.render()),
                Route::NotFound => response(
                    "404 Not Found",
                    text,
                    "",
                    "not found: the metrics are at /metrics\n",
                ),
                Route::MethodNotAllowed => {
                    response("405 Method Not Allowed", text, "allow: GET\r\n", "only GET\n")
                }
                Route::BadRequest => response("400 Bad Request", text, "", "bad request\n"),
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str) -> Option<u64> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn renders_every_metric_under_its_name() {
        let m = Metrics::default();
        m.messages_stored.add(5);
        m.connections_open.inc();
        m.stored_messages.set(7);
        m.reject(ErrorCode::FrameTooLarge);
        m.reject(ErrorCode::FrameTooLarge);
        let text = m.render();
        assert!(
            text.contains("# TYPE e2ee_relay_messages_stored counter\n"),
            "{text}"
        );
        assert_eq!(sample(&text, "e2ee_relay_messages_stored_total"), Some(5));
        assert_eq!(sample(&text, "e2ee_relay_connections_open"), Some(1));
        assert_eq!(sample(&text, "e2ee_relay_connections_total"), Some(0));
        assert_eq!(sample(&text, "e2ee_relay_stored_messages"), Some(7));
        assert_eq!(sample(&text, "e2ee_relay_database_bytes"), Some(0));
        assert!(
            text.contains("# UNIT e2ee_relay_database_bytes bytes\n"),
            "{text}"
        );
        assert_eq!(
            sample(&text, "e2ee_relay_rejects_total{reason=\"frame_too_large\"}"),
            Some(2)
        );
        assert_eq!(m.rejects(ErrorCode::FrameTooLarge), 2);
        assert_eq!(m.rejects(ErrorCode::AuthTimeout), 0);
        assert!(text.ends_with("# EOF\n"), "{text}");
        for name in [
            "connections_total",
            "authenticated_identities",
            "messages_duplicate_total",
            "messages_delivered_total",
            "messages_acked_total",
            "messages_expired_total",
            "tls_handshake_failures_total",
            "rate_limited_total",
            "quota_exceeded_total",
            "sender_quota_exceeded_total",
            "storage_budget_exceeded_total",
            "acks_ignored_total",
            "ack_rate_waits_total",
            "store_queue_waits_total",
            "opk_handouts_limited_total",
            "kp_handouts_limited_total",
            "group_uploads_total",
            "group_epoch_refusals_total",
            "bytes_in_total",
            "bytes_out_total",
            "store_queue_depth",
            "store_batches_total",
            "store_batch_writes_total",
        ] {
            assert_eq!(sample(&text, &format!("e2ee_relay_{name}")), Some(0), "{name}");
        }
    }

    #[test]
    fn a_gauge_never_goes_below_zero() {
        let g = Gauge::default();
        g.add(2);
        g.sub(5);
        assert_eq!(g.get(), 0);
        g.dec();
        assert_eq!(g.get(), 0);
        g.inc();
        assert_eq!(g.get(), 1);
    }

    #[test]
    fn samples_the_database_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db, wal) = (dir.path().join("relay.db"), dir.path().join("relay.db-wal"));
        std::fs::write(&db, vec![0; 4096]).expect("db");
        let m = Metrics::default();
        m.watch_database_files(vec![db, wal.clone()]);
        assert_eq!(sample(&m.render(), "e2ee_relay_database_bytes"), Some(4096));
        std::fs::write(&wal, vec![0; 100]).expect("wal");
        assert_eq!(sample(&m.render(), "e2ee_relay_database_bytes"), Some(4196));
    }

    #[test]
    fn serves_get_metrics_only() {
        assert_eq!(route(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route(b"GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route(b"POST /metrics HTTP/1.1\r\n\r\n"), Route::MethodNotAllowed);
        assert_eq!(route(b"garbage"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics\r\n\r\n"), Route::BadRequest);
    }
}
