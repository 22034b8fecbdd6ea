//! e2ee-chat's relay link transport: TLS 1.3 through rustls with the `ring` provider, a
//! relay identified by the pin of its key, and the RFC 9266 channel binding for a login
//! signature that is good on one connection only. IO-free: it builds rustls
//! configurations and reads values of established connections; the relay and the
//! clients run them over their own sockets (tokio-rustls, docs/PROTOCOL.md 1.0).
//!
//! - [`relay_pin`]: [`RelayPin`], SHA-256 of the relay certificate's key, `sha256:<hex>`.
//! - [`relay_certificate`]: [`RelayCertificate`], the relay's chain and key (files, or a
//!   self-signed certificate kept in its data directory) and its server configuration.
//! - [`relay_trust`]: [`RelayTrust`], how a client checks the relay (a pin, trust on
//!   first use, certificate authorities) and its client configuration.
//! - [`channel_binding`]: the `tls-exporter` value of a connection.

pub mod channel_binding;
pub mod error;
pub mod relay_certificate;
pub mod relay_pin;
pub mod relay_trust;

use std::sync::Arc;

pub use channel_binding::{channel_binding, CHANNEL_BINDING_LEN};
pub use error::NetError;
pub use relay_certificate::RelayCertificate;
pub use relay_pin::RelayPin;
pub use relay_trust::{client_config, PinSeen, RelayTrust};

/// The ALPN protocol id of the relay link.
pub const ALPN: &[u8] = b"e2ee-chat/1";

/// The crypto provider of every configuration here (rustls with `ring`).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[cfg(test)]
mod tests;
