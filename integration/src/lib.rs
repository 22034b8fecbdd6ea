//! e2ee-chat integration: helpers shared by the cross-process tests, the load generator
//! (`e2ee-load`) and the evidence runner.
//!
//! - [`client`]: a minimal async relay client (authenticate, send, receive, ack).
//! - [`process`]: start the relay and agent binaries and read their output.

pub mod client;
pub mod process;
