//! Group chats over MLS (RFC 9420, through OpenMLS; docs/PROTOCOL.md 8):
//! - [`credential`]: MLS credentials bound to e2ee-chat identity keys;
//! - [`provider`]: the OpenMLS provider whose storage the agent persists;
//! - [`book`]: [`GroupBook`], the groups and what they upload and read.

pub mod book;
pub mod credential;
pub mod provider;

pub use book::{validate_group_name, GroupBook, GroupError, GroupEvent, GroupSummary};
/// A checked MLS KeyPackage ([`GroupBook::read_key_package`]).
pub use openmls::prelude::KeyPackage;
