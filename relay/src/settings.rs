//! The relay's settings: built-in defaults → TOML file → `E2EE_RELAY_` environment → flags.

use std::path::PathBuf;

use e2ee_config::{LogFormat, LogLevel};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::away::AwayNotice;
use crate::lease::Lease;

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
    /// Redis (one server or a Redis Cluster, `redis_urls`), shared by the relays of a
    /// cluster: durable with `appendonly yes` and `appendfsync always` (checked at start
    /// unless `redis_require_fsync = false`).
    Redis,
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
    /// The name registry.
    pub names: NameSettings,
    /// TLS on the listener (docs/PROTOCOL.md 1.1).
    pub tls: TlsSettings,
    /// Serve plain TCP, without TLS: the link is readable and alterable by anyone on
    /// the path, and the login is not bound to the connection. For local benchmarks
    /// only (flag `--insecure-plaintext`; clients must say it too).
    pub insecure_plaintext: bool,
}

/// The relay's TLS certificate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first (an operator's certificate). Without it (and
    /// `key_file`), the relay makes a self-signed certificate on first start and keeps
    /// it in its data directory; clients then pin its key.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the certificate in `cert_file`.
    pub key_file: Option<PathBuf>,
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
    /// Token bucket size for sends per identity (shared by all its connections, kept
    /// across reconnects until refilled).
    pub rate_capacity: u32,
    /// Tokens added per second.
    pub rate_refill_per_sec: u32,
    /// Token bucket size for other requests per identity (lookups, reverse lookups,
    /// bundle fetches, publications, releases), shared like the send bucket.
    pub request_rate_capacity: u32,
    /// Tokens added per second to that bucket.
    pub request_rate_refill_per_sec: u32,
    /// Token bucket size for `DeliveryAck`s per identity, shared like the send bucket.
    /// When it is empty the relay stops reading from the connection until a token is
    /// back (nothing is refused).
    pub ack_rate_capacity: u32,
    /// Tokens added per second to that bucket.
    pub ack_rate_refill_per_sec: u32,
    /// Most queued (undelivered) messages per recipient.
    pub queue_quota: u64,
    /// Most unacknowledged messages one sender may have stored, across all its
    /// recipients.
    pub sender_quota_messages: u64,
    /// Most bytes one sender's unacknowledged messages may take in the store, across all
    /// its recipients (each message counts its payload plus
    /// [`crate::store::STORED_MESSAGE_OVERHEAD`] bytes).
    pub sender_quota_bytes: u64,
    /// The retry delay a sender is given with `QuotaExceeded` (ms), whichever quota is
    /// full.
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
    /// One-time prekeys of one identity that fetches (by anyone) may take in a burst:
    /// a token bucket per target identity, shared by every fetcher. Past it, a fetch is
    /// answered with the signed prekey only and the target's one-time prekeys are kept.
    pub opk_handout_capacity: u32,
    /// Tokens added per hour to each target's handout bucket.
    pub opk_handout_refill_per_hour: u32,
    /// A stuck write to a client is abandoned after this many milliseconds.
    pub write_timeout_ms: u64,
    /// The most bytes a client's socket keeps unsent in the kernel
    /// (`TCP_NOTSENT_LOWAT`, Linux); 0 leaves the kernel's default (it then buffers
    /// megabytes per slow client, and a steady slow reader can look stuck).
    pub notsent_lowat_bytes: u32,
}

/// Message store settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sqlite` (durable), `redis` (durable, shared by a relay cluster) or `memory`.
    pub engine: StoreEngine,
    /// Most writes committed in one transaction (one fsync; SQLite only).
    pub max_batch: usize,
    /// SQLite `synchronous=FULL` (fsync at every commit) when true, `NORMAL` otherwise.
    pub fsync: bool,
    /// Most writes waiting for group commit (SQLite only); when as many wait, every
    /// connection that would add one stops reading until the store catches up.
    pub max_queued_writes: usize,
    /// Most message bytes waiting for group commit (SQLite only), bounded like
    /// `max_queued_writes`.
    pub max_queued_bytes: usize,
    /// The storage budget: most bytes all unacknowledged messages may take together
    /// (each counts its payload plus [`crate::store::STORED_MESSAGE_OVERHEAD`] bytes).
    /// Past it every Send is refused with `QuotaExceeded` until messages are
    /// acknowledged or expire.
    pub max_stored_bytes: u64,
    /// Redis addresses (`redis://host:port`): the server, or seed nodes of a Redis
    /// Cluster (engine `redis` only).
    pub redis_urls: Vec<String>,
    /// The addresses are nodes of a Redis Cluster (commands routed by slot).
    pub redis_cluster: bool,
    /// The hash tag of the deployment's keys: every key starts with `{<prefix>}:`.
    pub redis_prefix: String,
    /// Refuse to start unless each address has `appendonly yes` and `appendfsync
    /// always`, so that an acknowledged message survives `kill -9` of Redis.
    pub redis_require_fsync: bool,
    /// After each commit, wait until this many replicas have it (`WAIT`; one server,
    /// not a cluster). 0: do not wait.
    pub redis_wait_replicas: u32,
    /// This relay's name among the relays on the same Redis (letters, digits, `.`, `_`,
    /// `-`); empty: a random name at each start.
    pub node_name: String,
}

/// The name registry (docs/PROTOCOL.md 1.8).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NameSettings {
    /// A name whose holder has not authenticated for this many days (counted from its
    /// last login, or from when its claim was stored if that is later) may be claimed by
    /// another identity.
    pub lease_days: u32,
    /// The lease in seconds instead of days, when above 0 (for tests and trials that
    /// need a lease of seconds; 0 = use `lease_days`).
    pub lease_secs: u64,
    /// `QueryAway` reports an identity as away once it has not been connected for more
    /// than this many days (docs/PROTOCOL.md 1.8); within them it answers only
    /// "present". Default 7: the default message lifetime, so a sender hears of an
    /// absence before its messages can expire unread.
    pub away_notice_days: u32,
    /// The notice period in seconds instead of days, when above 0 (for tests; 0 = use
    /// `away_notice_days`).
    pub away_notice_secs: u64,
}

impl NameSettings {
    /// The lease these settings give.
    pub fn lease(&self) -> Lease {
        if self.lease_secs > 0 {
            Lease::from_secs(self.lease_secs)
        } else {
            Lease::from_secs(u64::from(self.lease_days).saturating_mul(24 * 3600))
        }
    }

    /// The `QueryAway` notice period these settings give.
    pub fn away_notice(&self) -> AwayNotice {
        if self.away_notice_secs > 0 {
            AwayNotice::from_secs(self.away_notice_secs)
        } else {
            AwayNotice::from_secs(u64::from(self.away_notice_days).saturating_mul(24 * 3600))
        }
    }
}

/// Merged settings that serde accepts but the relay cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InvalidSettings {
    /// `store.node_name` is not a valid node name.
    #[error("store.node_name = {0:?}: use 1 to 64 letters, digits, '.', '_' or '-'")]
    NodeName(String),
    /// `store.redis_prefix` cannot be a hash tag.
    #[error("store.redis_prefix = {0:?}: use 1 to 64 characters without '{{', '}}' or spaces")]
    RedisPrefix(String),
    /// Engine `redis` with no address.
    #[error("store.engine = \"redis\" needs at least one address in store.redis_urls")]
    RedisUrls,
    /// One of `tls.cert_file` and `tls.key_file` without the other.
    #[error("tls: give both cert_file and key_file, or neither (a self-signed certificate is made)")]
    TlsFiles,
    /// `insecure_plaintext` with a certificate.
    #[error("insecure_plaintext serves no TLS: leave tls.cert_file and tls.key_file unset")]
    PlaintextWithCertificate,
    /// `names.lease_days` is zero.
    #[error("names.lease_days must be above 0")]
    LeaseDays,
    /// `names.away_notice_days` is zero (a notice period of 0 would tell whether an
    /// identity is connected right now).
    #[error("names.away_notice_days must be above 0")]
    AwayNoticeDays,
    /// `limits.opk_handout_capacity` or `limits.opk_handout_refill_per_hour` is zero.
    #[error(
        "limits.opk_handout_capacity and limits.opk_handout_refill_per_hour must be above 0 \
         (got {capacity} and {refill_per_hour})"
    )]
    OpkHandout {
        /// `limits.opk_handout_capacity`.
        capacity: u32,
        /// `limits.opk_handout_refill_per_hour`.
        refill_per_hour: u32,
    },
    /// `limits.ack_rate_capacity` or `limits.ack_rate_refill_per_sec` is zero.
    #[error(
        "limits.ack_rate_capacity and limits.ack_rate_refill_per_sec must be above 0 \
         (got {capacity} and {refill_per_sec})"
    )]
    AckRate {
        /// `limits.ack_rate_capacity`.
        capacity: u32,
        /// `limits.ack_rate_refill_per_sec`.
        refill_per_sec: u32,
    },
    /// A storage quota that could never hold one message of the largest size.
    #[error("{key} must be at least {min} (one message of the largest size), got {value}")]
    StorageQuota {
        /// The setting.
        key: &'static str,
        /// Its value.
        value: u64,
        /// The smallest value accepted.
        min: u64,
    },
    /// `store.max_queued_writes` or `store.max_queued_bytes` is zero.
    #[error("store.max_queued_writes and store.max_queued_bytes must be above 0 (got {writes} and {bytes})")]
    WriteQueue {
        /// `store.max_queued_writes`.
        writes: usize,
        /// `store.max_queued_bytes`.
        bytes: usize,
    },
}

impl RelaySettings {
    /// Checks what serde cannot: values that must not be zero.
    pub fn validate(&self) -> Result<(), InvalidSettings> {
        let tls = &self.tls;
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err(InvalidSettings::TlsFiles);
        }
        if self.insecure_plaintext && tls.cert_file.is_some() {
            return Err(InvalidSettings::PlaintextWithCertificate);
        }
        if self.names.lease_days == 0 {
            return Err(InvalidSettings::LeaseDays);
        }
        if self.names.away_notice_days == 0 {
            return Err(InvalidSettings::AwayNoticeDays);
        }
        let l = &self.limits;
        if l.opk_handout_capacity == 0 || l.opk_handout_refill_per_hour == 0 {
            return Err(InvalidSettings::OpkHandout {
                capacity: l.opk_handout_capacity,
                refill_per_hour: l.opk_handout_refill_per_hour,
            });
        }
        if l.ack_rate_capacity == 0 || l.ack_rate_refill_per_sec == 0 {
            return Err(InvalidSettings::AckRate {
                capacity: l.ack_rate_capacity,
                refill_per_sec: l.ack_rate_refill_per_sec,
            });
        }
        let largest = crate::store::stored_size(e2ee_protocol::frame::MAX_PAYLOAD_LEN);
        let quotas = [
            ("limits.sender_quota_messages", l.sender_quota_messages, 1),
            ("limits.sender_quota_bytes", l.sender_quota_bytes, largest),
            ("store.max_stored_bytes", self.store.max_stored_bytes, largest),
        ];
        for (key, value, min) in quotas {
            if value < min {
                return Err(InvalidSettings::StorageQuota { key, value, min });
            }
        }
        let store = &self.store;
        if store.max_queued_writes == 0 || store.max_queued_bytes == 0 {
            return Err(InvalidSettings::WriteQueue {
                writes: store.max_queued_writes,
                bytes: store.max_queued_bytes,
            });
        }
        if !store.node_name.is_empty() && !crate::cluster::valid_node_name(&store.node_name) {
            return Err(InvalidSettings::NodeName(store.node_name.clone()));
        }
        let prefix = &store.redis_prefix;
        if prefix.is_empty() || prefix.len() > 64 || prefix.contains(['{', '}', ' ']) {
            return Err(InvalidSettings::RedisPrefix(prefix.clone()));
        }
        if store.engine == StoreEngine::Redis && store.redis_urls.is_empty() {
            return Err(InvalidSettings::RedisUrls);
        }
        Ok(())
    }

    /// The Redis the `redis` engine uses, as the settings give it.
    pub fn redis_endpoint(&self) -> crate::store::redis::RedisEndpoint {
        crate::store::redis::RedisEndpoint {
            urls: self.store.redis_urls.clone(),
            cluster: self.store.redis_cluster,
            require_fsync: self.store.redis_require_fsync,
            wait_replicas: self.store.redis_wait_replicas,
        }
    }

    /// The storage bounds a commit checks before it stores a message.
    pub fn quotas(&self) -> crate::store::Quotas {
        crate::store::Quotas {
            queue: self.limits.queue_quota,
            sender_messages: self.limits.sender_quota_messages,
            sender_bytes: self.limits.sender_quota_bytes,
            stored_bytes: self.store.max_stored_bytes,
        }
    }
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
            names: NameSettings::default(),
            tls: TlsSettings::default(),
            insecure_plaintext: false,
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
            ack_rate_capacity: 8192,
            ack_rate_refill_per_sec: 4096,
            queue_quota: 100_000,
            sender_quota_messages: 10_000,
            sender_quota_bytes: 64 * 1024 * 1024,
            quota_retry_after_ms: 30_000,
            message_ttl_secs: 7 * 24 * 3600,
            dedup_window_secs: 24 * 3600,
            prekey_low_threshold: 10,
            max_prekeys: 1000,
            opk_handout_capacity: 50,
            opk_handout_refill_per_hour: 120,
            write_timeout_ms: 10_000,
            notsent_lowat_bytes: 128 * 1024,
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            engine: StoreEngine::Sqlite,
            max_batch: 2048,
            fsync: true,
            max_queued_writes: 16_384,
            max_queued_bytes: 32 * 1024 * 1024,
            max_stored_bytes: 4 * 1024 * 1024 * 1024,
            redis_urls: vec!["redis://127.0.0.1:6379".into()],
            redis_cluster: false,
            redis_prefix: "e2ee".into(),
            redis_require_fsync: true,
            redis_wait_replicas: 0,
            node_name: String::new(),
        }
    }
}

impl Default for NameSettings {
    fn default() -> Self {
        Self {
            lease_days: 90,
            lease_secs: 0,
            away_notice_days: 7,
            away_notice_secs: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<RelaySettings, e2ee_config::SettingsError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, toml).expect("write config");
        let env: [(String, String); 0] = [];
        e2ee_config::load_with_env(Some(path.as_path()), e2ee_config::RELAY_ENV_PREFIX, env, &[])
    }

    #[test]
    fn defaults_are_valid_and_the_documented_ones() {
        let s = RelaySettings::default();
        assert_eq!(s.validate(), Ok(()));
        assert_eq!((s.names.lease_days, s.names.lease_secs), (90, 0));
        assert_eq!(s.names.lease(), Lease::from_secs(90 * 24 * 3600));
        assert_eq!((s.names.away_notice_days, s.names.away_notice_secs), (7, 0));
        assert_eq!(s.names.away_notice(), AwayNotice::from_secs(7 * 24 * 3600));
        assert_eq!(
            (
                s.limits.opk_handout_capacity,
                s.limits.opk_handout_refill_per_hour
            ),
            (50, 120)
        );
    }

    #[test]
    fn lease_secs_replaces_lease_days_when_set() {
        let s = load("[names]\nlease_days = 2\nlease_secs = 3\n").expect("loads");
        assert_eq!(s.names.lease(), Lease::from_secs(3));
        let s = load("[names]\nlease_days = 2\n").expect("loads");
        assert_eq!(s.names.lease(), Lease::from_secs(2 * 24 * 3600));
    }

    #[test]
    fn away_notice_secs_replaces_away_notice_days_when_set() {
        let s = load("[names]\naway_notice_days = 2\naway_notice_secs = 3\n").expect("loads");
        assert_eq!(s.names.away_notice(), AwayNotice::from_secs(3));
        let s = load("[names]\naway_notice_days = 2\n").expect("loads");
        assert_eq!(s.names.away_notice(), AwayNotice::from_secs(2 * 24 * 3600));
    }

    #[test]
    fn rejects_a_zero_away_notice_period() {
        let s = load("[names]\naway_notice_days = 0\naway_notice_secs = 5\n").expect("loads");
        assert_eq!(s.validate(), Err(InvalidSettings::AwayNoticeDays));
    }

    #[test]
    fn rejects_a_zero_lease_and_zero_handout_limits() {
        let s = load("[names]\nlease_days = 0\nlease_secs = 5\n").expect("loads");
        assert_eq!(s.validate(), Err(InvalidSettings::LeaseDays));
        for toml in [
            "[limits]\nopk_handout_capacity = 0\n",
            "[limits]\nopk_handout_refill_per_hour = 0\n",
        ] {
            let s = load(toml).expect("loads");
            assert!(
                matches!(s.validate(), Err(InvalidSettings::OpkHandout { .. })),
                "{toml}"
            );
        }
    }

    #[test]
    fn storage_and_ack_limits_have_their_documented_defaults() {
        let s = RelaySettings::default();
        assert_eq!(
            (s.limits.ack_rate_capacity, s.limits.ack_rate_refill_per_sec),
            (8192, 4096)
        );
        assert_eq!(
            s.quotas(),
            crate::store::Quotas {
                queue: 100_000,
                sender_messages: 10_000,
                sender_bytes: 64 << 20,
                stored_bytes: 4 << 30,
            }
        );
        assert_eq!(
            (s.store.max_queued_writes, s.store.max_queued_bytes),
            (16_384, 32 << 20)
        );
    }

    #[test]
    fn rejects_storage_quotas_too_small_for_one_message_and_a_zero_write_queue() {
        let largest = crate::store::stored_size(e2ee_protocol::frame::MAX_PAYLOAD_LEN);
        for (toml, key) in [
            (
                "[limits]\nsender_quota_messages = 0\n",
                "limits.sender_quota_messages",
            ),
            (
                "[limits]\nsender_quota_bytes = 65536\n",
                "limits.sender_quota_bytes",
            ),
            ("[store]\nmax_stored_bytes = 1000\n", "store.max_stored_bytes"),
        ] {
            let s = load(toml).expect("loads");
            assert!(
                matches!(s.validate(), Err(InvalidSettings::StorageQuota { key: k, .. }) if k == key),
                "{toml}"
            );
        }
        let s = load(&format!("[limits]\nsender_quota_bytes = {largest}\n")).expect("loads");
        assert_eq!(
            s.validate(),
            Ok(()),
            "room for exactly one message of the largest size"
        );
        for toml in [
            "[store]\nmax_queued_writes = 0\n",
            "[store]\nmax_queued_bytes = 0\n",
        ] {
            let s = load(toml).expect("loads");
            assert!(
                matches!(s.validate(), Err(InvalidSettings::WriteQueue { .. })),
                "{toml}"
            );
        }
        for toml in [
            "[limits]\nack_rate_capacity = 0\n",
            "[limits]\nack_rate_refill_per_sec = 0\n",
        ] {
            let s = load(toml).expect("loads");
            assert!(
                matches!(s.validate(), Err(InvalidSettings::AckRate { .. })),
                "{toml}"
            );
        }
    }

    #[test]
    fn rejects_unknown_name_settings() {
        assert!(load("[names]\nlease_hours = 1\n").is_err());
    }
}
