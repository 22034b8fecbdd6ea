//! Relay counters and gauges, rendered in the Prometheus text format and served on an
//! optional local HTTP port; also the periodic summary log line.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use e2ee_protocol::frame::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one (never below zero).
    pub fn dec(&self) {
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(1))
        });
    }
    /// Sets the value.
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Reject reasons counted, by error code (index = code, 0 = other).
const REJECT_SLOTS: usize = 32;

/// Every metric of the relay.
#[derive(Debug, Default)]
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
    rejects: [Counter; REJECT_SLOTS],
}

impl Metrics {
    /// A fresh set.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts a connection closed or a request refused with `code`.
    pub fn reject(&self, code: ErrorCode) {
        let slot = usize::from(code.to_u16());
        self.rejects[if slot < REJECT_SLOTS { slot } else { 0 }].inc();
    }

    /// Rejections counted with `code`.
    pub fn rejects(&self, code: ErrorCode) -> u64 {
        let slot = usize::from(code.to_u16());
        self.rejects[if slot < REJECT_SLOTS { slot } else { 0 }].get()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP e2ee_relay_{name} {help}");
            let _ = writeln!(out, "# TYPE e2ee_relay_{name} {kind}");
            let _ = writeln!(out, "e2ee_relay_{name} {value}");
        };
        metric(
            "connections_open",
            "gauge",
            "Open TCP connections.",
            self.connections_open.get(),
        );
        metric(
            "connections_total",
            "counter",
            "Connections accepted.",
            self.connections_total.get(),
        );
        metric(
            "authenticated_identities",
            "gauge",
            "Authenticated identities connected.",
            self.authenticated.get(),
        );
        metric(
            "messages_stored_total",
            "counter",
            "Messages committed to the store.",
            self.messages_stored.get(),
        );
        metric(
            "messages_duplicate_total",
            "counter",
            "Retransmissions recognised as duplicates.",
            self.messages_duplicate.get(),
        );
        metric(
            "messages_delivered_total",
            "counter",
            "Messages pushed to recipients.",
            self.messages_delivered.get(),
        );
        metric(
            "messages_acked_total",
            "counter",
            "Messages acknowledged by recipients.",
            self.messages_acked.get(),
        );
        metric(
            "messages_expired_total",
            "counter",
            "Messages dropped by the TTL.",
            self.messages_expired.get(),
        );
        metric(
            "rate_limited_total",
            "counter",
            "Sends refused by the rate limit.",
            self.rate_limited.get(),
        );
        metric(
            "quota_exceeded_total",
            "counter",
            "Sends refused for a full queue.",
            self.quota_exceeded.get(),
        );
        metric(
            "sender_quota_exceeded_total",
            "counter",
            "Sends refused for the sender's storage quota (messages or bytes).",
            self.sender_quota_exceeded.get(),
        );
        metric(
            "storage_budget_exceeded_total",
            "counter",
            "Sends refused for the relay's storage budget.",
            self.storage_budget_exceeded.get(),
        );
        metric(
            "acks_ignored_total",
            "counter",
            "Acknowledgements ignored: not for a message delivered and unacknowledged on that connection.",
            self.acks_ignored.get(),
        );
        metric(
            "ack_rate_waits_total",
            "counter",
            "Times a connection stopped reading until its acknowledgement bucket refilled.",
            self.ack_rate_waits.get(),
        );
        metric(
            "store_queue_waits_total",
            "counter",
            "Times a connection stopped reading until the store's write queue had room.",
            self.store_queue_waits.get(),
        );
        metric(
            "opk_handouts_limited_total",
            "counter",
            "Bundle fetches answered without a one-time prekey by the per-target handout limit.",
            self.opk_handouts_limited.get(),
        );
        metric(
            "bytes_in_total",
            "counter",
            "Frame bytes received.",
            self.bytes_in.get(),
        );
        metric(
            "bytes_out_total",
            "counter",
            "Frame bytes sent.",
            self.bytes_out.get(),
        );
        metric(
            "store_queue_depth",
            "gauge",
            "Writes waiting for the next group commit.",
            self.store_queue_depth.get(),
        );
        metric(
            "store_batches_total",
            "counter",
            "Group commits.",
            self.store_batches.get(),
        );
        metric(
            "store_batch_writes_total",
            "counter",
            "Writes committed in group commits.",
            self.store_batch_writes.get(),
        );
        let _ = writeln!(
            out,
            "# HELP e2ee_relay_rejects_total Connections closed or requests refused, by reason."
        );
        let _ = writeln!(out, "# TYPE e2ee_relay_rejects_total counter");
        for (slot, counter) in self.rejects.iter().enumerate() {
            let value = counter.get();
            if value > 0 {
                let reason = ErrorCode::from_u16(slot as u16).name();
                let _ = writeln!(out, "e2ee_relay_rejects_total{{reason=\"{reason}\"}} {value}");
            }
        }
        out
    }
}

/// Serves `GET /metrics` (any path, in fact) with the Prometheus text until the task is
/// dropped. Only meant for a local address.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        actix::spawn(async move {
            let mut buf = [0u8; 1024];
            // Read the request head (bounded); the content does not matter.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut buf)).await;
            let body = metrics.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                body.len(),
                body
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
