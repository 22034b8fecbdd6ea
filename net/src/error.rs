//! [`NetError`]: why the relay link's transport could not be set up.

use std::path::PathBuf;

/// Why a TLS configuration, a certificate or a pin could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A certificate or key file could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate does not parse, or a file holds none.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A private key does not parse, does not match the certificate, or a file holds none.
    #[error("private key: {0}")]
    Key(String),
    /// Generating a self-signed certificate failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A pin is not `sha256:` followed by 64 hex digits.
    #[error("invalid relay pin {0:?}: expected sha256: followed by 64 hex digits")]
    BadPin(String),
}
