//! The e2ee-chat agent: a headless chat client with per-peer Double Ratchet sessions.
//!
//! The IO-free core (no sockets, no clocks, no logging; the actors own those):
//! - [`settings`]: [`settings::AgentSettings`], the layered settings, and the
//!   [`settings::IdentityPolicy`].
//! - [`state`]: [`state::AgentState`], the persistent state in the state directory
//!   (identity, prekeys, sessions, pins, held messages, outbox): in-memory copies
//!   written through to the state database, one transaction per operation.
//! - [`store`]: [`store::StateDb`], the state database (one SQLite file, secrets sealed
//!   at rest) with typed accessors per table.
//! - [`incoming`]: [`incoming::Incoming`], a received message that decrypted.
//! - [`failure`]: [`failure::FailureClass`] and [`failure::DecryptFailure`], every
//!   reason a received message is not shown.
//! - [`event`]: [`event::Event`], what the agent reports, as JSON lines or readable text.
//! - [`command`]: parsing of interactive stdin commands ([`command::Command`]).
//! - [`script`]: parsing of script files ([`script::Step`]).
//! - [`qr`]: QR codes rendered with Unicode half blocks, for safety numbers.
//! - [`away`]: [`away::AwayChecks`], when to ask the relay how long a recipient has
//!   been away, and which answers to report.
//! - [`crash_point`]: named places where a debug build aborts on request
//!   (`E2EE_CRASH_AT`), for crash tests; nothing in a release build.
//! - [`write_retry`]: [`write_retry::WriteRetry`], deliveries kept while the state
//!   cannot be written, retried with backoff.
//!
//! The actors and drivers:
//! - [`agent_actor`]: the Agent actor, owner of the state, one session per peer.
//! - [`relay_link`]: the RelayLink actor, the relay connection with reconnect backoff.
//! - [`runner`]: starts the actors and drives them from a script or stdin.
//! - [`input`]: [`input::InputSource`], where interactive commands come from.
//! - [`stdin_lines`]: [`stdin_lines::StdinLines`], commands read from a pipe or file,
//!   one per line (a line that is not UTF-8 is reported and skipped).
//! - [`line_editor`]: [`line_editor::LineEditor`], the line editor on a terminal
//!   (prompt, history in memory, events printed above the line being typed).
//! - [`log_file`]: the log file in the state directory, for the line editor.
//! - [`palette`]: [`palette::Palette`], modest colours on a terminal.
//! - [`sink`]: prints events for people or as JSON lines.
//!
//! See `docs/AGENT.md` for the state layout, the script format and the event schema.

pub mod agent_actor;
pub mod away;
pub mod command;
pub mod command_tags;
pub mod crash_point;
pub mod event;
pub mod expiry_notices;
pub mod failure;
pub mod group;
pub mod held;
mod hex_serde;
pub mod incoming;
pub mod input;
pub mod json_command;
pub mod line_editor;
pub mod log_file;
pub mod own_name;
pub mod palette;
pub mod passphrase;
pub mod pins;
pub mod qr;
pub mod receipt_budget;
pub mod recovery;
pub mod relay_link;
pub mod relay_transport;
pub mod runner;
pub mod script;
pub mod send_window;
pub mod sent_requests;
pub mod settings;
pub mod sink;
pub mod state;
pub mod stdin_lines;
pub mod store;
pub mod write_retry;
