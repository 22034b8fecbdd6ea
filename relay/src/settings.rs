//! The relay's settings: built-in defaults → TOML file → `E2EE_` environment → flags.

use std::path::PathBuf;

use e2ee_config::{LogFormat, LogLevel};
use serde::{Deserialize, Serialize};

use crate::adversary::AdversarySettings;

/// Which message store the relay uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreEngine {
    /// Embedded SQLite in WAL mode with group commit (durable).
    #[default]
    Sqlite,
    /// In memory only: fast, nothing survives a restart. Connections apply their writes
    /// directly (no group commit: there is nothing to make durable).
    Memory,
}

/// Every setting of the relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySettings {
    /// Address to listen on.
    pub listen: String,
    /// Directory for the database and the relay id.
    pub data_dir: PathBuf,
    /// Event-loop threads that serve connections (0 = one per CPU; 1 = everything on
    /// the main thread).
    pub workers: usize,
    /// Log output format.
    pub log_format: LogFormat,
    /// Lowest level that is logged.
    pub log_level: LogLevel,
    /// Optional local address for Prometheus metrics over HTTP (e.g. "127.0.0.1:9300").
    pub metrics_listen: Option<String>,
    /// Seconds between summary log lines (0 = none).
    pub summary_interval_secs: u64,
    /// Connection and abuse limits.
    pub limits: Limits,
    /// Message store.
    pub store: StoreSettings,
    /// Deliberate misbehaviour for the security evidence (`mode = "off"` by default).
    pub adversary: AdversarySettings,
}

/// Connection and abuse limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest frame body accepted from a client, in bytes.
    pub max_frame_len: usize,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// A client must authenticate within this many milliseconds.
    pub auth_timeout_ms: u64,
    /// The relay pings a client silent for this long (ms).
    pub heartbeat_interval_ms: u64,
    /// A client silent for this long (ms) is disconnected.
    pub idle_timeout_ms: u64,
    /// Bound on bytes waiting to be written to one client; past it the client is
    /// disconnected as a slow consumer and its messages stay in the store.
    pub max_pending_output_bytes: usize,
    /// Most delivered-but-unacknowledged messages per connection; past it pushing pauses.
    pub max_unacked: usize,
    /// Token bucket size for sends per identity.
    pub rate_capacity: u32,
    /// Tokens added per second.
    pub rate_refill_per_sec: u32,
    /// Token bucket size for other requests per identity (lookups, bundle fetches,
    /// publications).
    pub request_rate_capacity: u32,
    /// Tokens added per second to that bucket.
    pub request_rate_refill_per_sec: u32,
    /// Most queued (undelivered) messages per recipient.
    pub queue_quota: u64,
    /// The retry delay a sender is given with `QuotaExceeded` (ms).
    pub quota_retry_after_ms: u32,
    /// Messages older than this are dropped (seconds).
    pub message_ttl_secs: u64,
    /// How long the id of a delivered and acknowledged message is remembered, so that a
    /// retransmission is not stored again (seconds, counted from when the message was
    /// stored; at most the TTL). Bounds the memory or disk that acknowledged ids take.
    pub dedup_window_secs: u64,
    /// Owners are told when their one-time prekeys fall below this.
    pub prekey_low_threshold: u32,
    /// Most one-time prekeys held per identity.
    pub max_prekeys: u32,
    /// A stuck write to a client is abandoned after this many milliseconds.
    pub write_timeout_ms: u64,
}

/// Message store settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sqlite` (durable) or `memory`.
    pub engine: StoreEngine,
    /// Most writes committed in one transaction (one fsync; SQLite only).
    pub max_batch: usize,
    /// SQLite `synchronous=FULL` (fsync at every commit) when true, `NORMAL` otherwise.
    pub fsync: bool,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:7300".into(),
            data_dir: PathBuf::from("./e2ee-relay-data"),
            workers: 0,
            log_format: LogFormat::Term,
            log_level: LogLevel::Info,
            metrics_listen: None,
            summary_interval_secs: 60,
            limits: Limits::default(),
            store: StoreSettings::default(),
            adversary: AdversarySettings::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_len: 128 * 1024,
            max_connections: 50_000,
            auth_timeout_ms: 5_000,
            heartbeat_interval_ms: 15_000,
            idle_timeout_ms: 60_000,
            max_pending_output_bytes: 1024 * 1024,
            max_unacked: 4096,
            rate_capacity: 2_000,
            rate_refill_per_sec: 1_000,
            request_rate_capacity: 200,
            request_rate_refill_per_sec: 20,
            queue_quota: 100_000,
            quota_retry_after_ms: 30_000,
            message_ttl_secs: 7 * 24 * 3600,
            dedup_window_secs: 24 * 3600,
            prekey_low_threshold: 10,
            max_prekeys: 1000,
            write_timeout_ms: 10_000,
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            engine: StoreEngine::Sqlite,
            max_batch: 2048,
            fsync: true,
        }
    }
}
