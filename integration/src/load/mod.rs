//! The load generator behind `e2ee-load`.
//!
//! - [`run`]: one run: pairs, open-loop rate or closed-loop `--max`, churn, `--e2e`.
//! - [`idle`]: many idle authenticated connections and the server memory they cost.
//! - [`bench`]: the same workload against relay (memory, durable), NATS and Redis.
//! - [`group`]: one group of N members, the relay fanning each upload out (MLS-shaped
//!   headers, or real MLS with `--mls`).
//! - [`link`]: one client connection, whatever the target speaks.
//! - [`nats`], [`resp`]: the small protocol subsets used for NATS and Redis.
//! - [`e2e`]: the real crypto (X3DH + Double Ratchet) for `--e2e`.
//! - [`probe`]: what a message carries to be measured; [`stats`]: counters, ledger,
//!   histograms; [`sysinfo`]: CPU and RSS from `/proc`.
//! - [`report`]: JSON result and tables; [`plot`]: SVG plots; [`target`]: targets,
//!   spawned servers, loopback-only addresses.

pub mod bench;
pub mod churn;
pub mod e2e;
pub mod group;
pub mod idle;
pub mod jetstream;
pub mod link;
pub mod nats;
pub mod plot;
pub mod probe;
pub mod redis_streams;
pub mod report;
pub mod resp;
pub mod run;
pub mod stats;
pub mod sysinfo;
pub mod target;

pub use run::{run, ChurnSpec, Endpoint, LoadConfig};
