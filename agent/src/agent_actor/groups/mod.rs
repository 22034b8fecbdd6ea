//! Group chats (MLS, docs/PROTOCOL.md 8, docs/AGENT.md 3.2) in the agent actor:
//! - `commands`: `/group`, `/g`, `/groups`, `wait-group`, and adding members by name;
//! - `outbox`: the group outbox on the wire (one upload per group at a time, made again
//!   on a new epoch after `GroupEpoch`) and the relay's answers to it;
//! - `delivery`: group deliveries read in order, once their members are named;
//! - `key_packages`: the KeyPackages kept at the relay, and fetching others'.
//!
//! This file holds what they share: the connection's [`GroupFlight`] and the limits.

mod commands;
mod delivery;
mod key_packages;
mod outbox;

use std::collections::{HashMap, HashSet, VecDeque};

use super::*;
use crate::command::GroupCommand;
use crate::event::GroupLine;
use crate::group::{GroupBook, GroupError, GroupEvent};
use crate::state::{GroupEdit, GroupIntent, GroupOutboxEntry, IntentMember};

pub use commands::{GroupOp, ListGroups, SendGroupText, WaitGroup};
use delivery::KeptGroupDelivery;

/// One-time KeyPackages the agent keeps at the relay; it publishes more when the
/// relay holds fewer than [`KEY_PACKAGES_LOW`].
const KEY_PACKAGES_KEPT: u32 = 20;
/// See [`KEY_PACKAGES_KEPT`].
const KEY_PACKAGES_LOW: u32 = 10;
/// Reverse lookups of unnamed members one group event asks for, at most.
const MEMBER_LOOKUPS: usize = 32;
/// How long an upload refused for a later epoch waits for the commits up to it.
const GROUP_CATCH_UP: Duration = Duration::from_secs(10);
/// How long to wait before asking again for a KeyPackage the relay did not have.
const KEY_PACKAGE_RETRY: Duration = Duration::from_millis(500);
/// How long a KeyPackage fetch may take, retries included.
const KEY_PACKAGE_TIMEOUT: Duration = Duration::from_secs(15);

/// The group uploads and requests on the current connection.
#[derive(Default)]
pub(super) struct GroupFlight {
    /// KeyPackage fetches in flight: request id → who waits.
    fetches: HashMap<u32, oneshot::Sender<Option<Vec<u8>>>>,
    /// Uploads written on this connection and not answered yet.
    sent: HashSet<[u8; 16]>,
    /// Uploads refused for an epoch the group had moved past: made again once our
    /// group reaches it.
    waiting: HashMap<[u8; 16], u64>,
    /// Members and senders whose names are being asked for: group deliveries wait
    /// behind them, in arrival order (`held`), so that they are shown named and in the
    /// group's order.
    naming: HashSet<IdentityKey>,
    /// Group deliveries waiting for `naming`, in arrival order (unacknowledged).
    held: VecDeque<KeptGroupDelivery>,
    /// Events of deliveries read (and acknowledged) whose members are being named:
    /// reported once they are.
    deferred: Vec<GroupEvent>,
}

/// An identity key from its 64 hex digits (as the group outbox keeps members).
fn identity_of_hex(hex_identity: &str) -> Result<IdentityKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_identity)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("a member identity is not 32 bytes of hex")?;
    IdentityKey::from_bytes(bytes).map_err(|e| e.to_string())
}
