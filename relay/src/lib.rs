//! e2ee-chat relay: an untrusted store-and-forward server for ciphertext.
//!
//! - [`server`]: binds, accepts, wires the actors together, shuts down cleanly.
//! - [`connection`]: the Connection actor, one per TCP connection.
//! - [`router`]: the Router actor, the map identity → connection.
//! - [`cluster`]: several relays as one service on a shared Redis (presence, notices).
//! - [`committer`]: group commit in front of the store (SQLite); the memory store is
//!   written by connections directly.
//! - [`store_actor`]: the store on a SyncArbiter thread; [`store`]: the engines and
//!   their quotas; [`store_backlog`]: the bound on writes waiting for group commit.
//! - [`input`]: a connection's read buffer, small until the connection is busy.
//! - [`output`]: a connection's bounded output and its writer task.
//! - [`recipient_check`]: recipients of Sends must be valid identity keys.
//! - [`rate_limit`]: token buckets, shared by every connection of an identity;
//!   [`opk_handouts`]: how many one-time prekeys of one identity fetches may take.
//! - [`lease`]: when a name whose holder stopped authenticating may be taken over.
//! - [`away`]: how long an identity has been away, as `QueryAway` tells it.
//! - [`metrics`]: counters and gauges (prometheus-client), served on `/metrics`.
//! - [`data_dir`]: the owner-only data directory and the files in it.
//! - [`settings`]: every setting, with defaults; [`flags`]: the command line.
//! - `adversary` (only with the `adversary` cargo feature): a relay that misbehaves on
//!   purpose, for the security evidence; only the `e2ee-relay-adversary` binary of
//!   e2ee-integration switches it on.

#[cfg(feature = "adversary")]
pub mod adversary;
pub mod away;
pub mod cluster;
pub mod committer;
pub mod connection;
pub mod data_dir;
pub mod flags;
pub mod input;
pub mod lease;
pub mod metrics;
pub mod opk_handouts;
pub mod output;
pub mod rate_limit;
pub mod recipient_check;
pub mod router;
pub mod server;
pub mod settings;
pub mod store;
pub mod store_actor;
pub mod store_backlog;
pub mod tls_link;

use std::sync::Arc;

use actix::Addr;
use slog::Logger;

pub use server::{run, spawn, tls_pin, RelayHandle};
pub use settings::RelaySettings;

/// What every connection shares.
pub struct RelayContext {
    /// Limits from the settings.
    pub limits: settings::Limits,
    /// This relay's id, bound into every authentication signature.
    pub relay_id: [u8; 32],
    /// TLS on accepted connections (`None`: plain TCP, `insecure_plaintext`).
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Metrics.
    pub metrics: Arc<metrics::Metrics>,
    /// The Router.
    pub router: Addr<router::Router>,
    /// The Router's map, read on the per-message path (only the Router writes it).
    pub routes: Arc<router::RouteTable>,
    /// Group commit.
    pub committer: Addr<committer::Committer>,
    /// The store (reads and prekeys).
    pub store: Addr<store_actor::StoreActor>,
    /// The store, for writes that skip group commit (the memory store only).
    pub direct: Option<Arc<store_actor::SharedStore>>,
    /// The bound on writes waiting for group commit.
    pub backlog: Arc<store_backlog::StoreBacklog>,
    /// Root logger.
    pub log: Logger,
    /// Per-target limit on one-time prekey handouts.
    pub opk_handouts: opk_handouts::OpkHandouts,
    /// The same bound for one-time KeyPackages (docs/PROTOCOL.md 8.2), its own buckets.
    pub kp_handouts: opk_handouts::OpkHandouts,
    /// The lease of a name whose holder stops authenticating.
    pub lease: lease::Lease,
    /// The notice period of `QueryAway`.
    pub away_notice: away::AwayNotice,
    /// The misbehaviour switched on for the security evidence; `None` (honest) by default.
    /// Whether the store keeps groups and KeyPackages (docs/PROTOCOL.md 8); if not, the
    /// group frames are refused with `GroupsUnsupported`.
    pub groups: bool,
    #[cfg(feature = "adversary")]
    pub adversary: Option<Arc<adversary::Adversary>>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
