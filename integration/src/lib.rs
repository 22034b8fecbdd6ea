//! e2ee-chat integration: helpers shared by the cross-process tests, the load generator
//! (`e2ee-load`) and the evidence runner.
//!
//! - [`agent_peers`]: one agent with many peers (`e2ee-agent-peers`).
//! - [`client`]: a minimal async relay client (authenticate, send, receive, ack).
//! - [`process`]: start the relay and agent binaries and read their output.
//! - [`load`]: the load generator (`e2ee-load`): open/closed-loop runs, churn, idle
//!   connections, NATS and Redis comparison, JSON and SVG output.
//! - [`proxy`]: a recording TCP proxy (what a passive eavesdropper on the wire sees).
//! - [`evidence`]: the security evidence scenarios behind `make evidence`
//!   (`e2ee-evidence`) and the `evidence` test.

pub mod agent_peers;
pub mod agent_process;
pub mod client;
pub mod evidence;
pub mod load;
pub mod process;
pub mod proxy;
