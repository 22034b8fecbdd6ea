//! Agent state v2: one SQLite database per agent, secrets sealed at rest, one
//! transaction per change (docs: issue 12). `crate::state::AgentState` keeps its
//! in-memory copies and writes through to it.
//!
//! - [`state_db`]: [`StateDb`], the database (`state.db`, WAL, owner only), its
//!   transactions ([`Tx`]) and reads ([`Rows`]).
//! - [`state_key`]: [`StateKey`] from a passphrase or an owner-only key file, chosen by
//!   a [`KeySource`]; `key_check` tells a wrong one apart.
//! - [`kdf`]: Argon2id (RFC 9106) with [`KdfParams`] stored per database.
//! - [`seal`]: XChaCha20-Poly1305 sealing of values bound to their table and row.
//! - [`schema`]: the schema as versioned migrations (`PRAGMA user_version`).
//! - [`error`]: [`StoreError`], every failure, naming the file and the operation.
//! - [`write_fault`]: a debug-build hook that refuses writes while a file exists
//!   (`E2EE_TEST_READ_ONLY_WHILE`), for tests of failed writes.
//!
//! The tables, each with its typed accessors (reads on [`Rows`], writes on [`Tx`]):
//! - [`identity`]: the name, the identity seed (sealed), the name release.
//! - [`prekeys`]: signed and one-time prekeys (secrets sealed), handshake base keys.
//! - [`sessions`]: current and archived sessions (sealed), received message ids.
//! - [`pins`]: pins, pending and rejected identities.
//! - [`held`]: messages held for a pending identity change (sealed).
//! - [`outbox`]: sent messages the relay has not acknowledged.
//! - [`send_log`]: recently sent plaintexts per peer (sealed), for re-sending.
//! - [`history`]: the conversation per peer (sealed), bounded.
//! - [`unshown`]: received texts committed but not shown yet (sealed).
//!
//! Dependencies point one way: the table modules use `state_db`, which uses
//! `key_check`, `schema`, `seal` and `private_files`; `key_check` uses `state_key`
//! and `seal`; `state_key` uses `kdf`; all use `error`.

pub mod correspondents;
pub mod error;
pub mod groups;
pub mod held;
pub mod history;
pub mod identity;
pub mod kdf;
mod key_check;
pub mod outbox;
pub mod pins;
pub mod prekeys;
mod private_files;
pub mod schema;
pub mod seal;
pub mod send_log;
pub mod sessions;
pub mod shown_log;
pub mod state_db;
pub mod state_key;
pub mod unshown;
pub mod write_fault;

pub use error::StoreError;
pub use kdf::KdfParams;
pub use state_db::{Key32, MsgId, Rows, StateDb, Tx};
pub use state_key::{KeySource, StateKey};
