//! Messages held back while an identity change waits for the user's decision.
//!
//! A message from an identity that is a pending change of a name (`pins::PinBook`) is
//! not decrypted: its ciphertext is kept as delivered (the `held` rows of the state
//! database, sealed) and acknowledged to the relay. When the user accepts that identity (`/trust <peer> <digits>`), the held
//! messages are decrypted and shown in the order they arrived; when the user rejects it
//! (`/reject <peer>`), they are deleted unread. Nothing of a held message is decrypted
//! or shown before the decision, so a message from an impostor is never displayed under
//! the name it claims.

use serde::{Deserialize, Serialize};

use e2ee_protocol::identity::IdentityKey;

use crate::hex_serde;

/// How many messages are held per name; past it, further messages of the pending
/// identity are not acknowledged (the relay keeps them until the user decides).
pub const HELD_PER_NAME: usize = 1_000;

/// One delivered message kept undecrypted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldMessage {
    /// The name whose pending change sent it.
    pub name: String,
    /// The sender identity (the pending one).
    #[serde(with = "hex_serde::identity")]
    pub sender: IdentityKey,
    /// The relay message id.
    #[serde(with = "hex_serde::msg_id")]
    pub msg_id: [u8; 16],
    /// The encrypted message as delivered.
    #[serde(with = "hex_serde::bytes")]
    pub wire: Vec<u8>,
    /// When it was held, ms since the Unix epoch.
    pub held_ms: u64,
}

impl std::fmt::Debug for HeldMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldMessage")
            .field("name", &self.name)
            .field("sender", &self.sender)
            .field("msg_id", &hex::encode(self.msg_id))
            .field("wire_len", &self.wire.len())
            .field("held_ms", &self.held_ms)
            .finish()
    }
}
