//! Several relays as one service on a shared Redis (docs/RELAY.md, "A relay cluster").
//! Each relay is a node with a name. Redis records which node holds each identity's
//! connection ([`presence`]); a message stored for an identity connected to another node
//! is announced to that node over Redis pub/sub (the store's commit script publishes it),
//! and a login on one node closes the identity's older connection on another
//! ([`listener`]). The [`crate::router::Router`] stays the authority for its own
//! node's connections: these only tell it what happened elsewhere.

pub mod listener;
pub mod presence;

use crate::store::redis::RedisEndpoint;

/// What a relay needs to join a cluster.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// The shared Redis.
    pub endpoint: RedisEndpoint,
    /// `{prefix}:`, the start of the deployment's keys and channels.
    pub key_prefix: String,
    /// This relay's node name (letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// A random token of this process (its heartbeat's value).
    pub instance: String,
}

impl ClusterNode {
    /// The pub/sub channel on which node `name` hears about its identities.
    pub fn channel_of(&self, name: &str) -> String {
        format!("{}relay:{name}", self.key_prefix)
    }
}

/// Whether `name` may name a relay node: 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
