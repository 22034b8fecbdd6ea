//! [`RelayCertificate`]: the relay's TLS identity, an operator's certificate chain and key
//! from PEM files, or a self-signed certificate the relay makes on first start and keeps
//! in its data directory; and the rustls server configuration over it (TLS 1.3 only).

use std::fs;
use std::io::{BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::error::NetError;
use crate::provider;
use crate::relay_pin::RelayPin;

/// File name of the generated certificate in the relay's data directory.
pub const GENERATED_CERT_FILE: &str = "tls-cert.pem";
/// File name of the generated certificate's private key (mode 0600).
pub const GENERATED_KEY_FILE: &str = "tls-key.pem";

/// A certificate chain (leaf first) and the leaf's private key.
pub struct RelayCertificate {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    pin: RelayPin,
}

impl std::fmt::Debug for RelayCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayCertificate")
            .field("chain", &self.chain.len())
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, NetError> {
    fs::read(path).map_err(|source| NetError::File {
        path: path.to_path_buf(),
        source,
    })
}

impl RelayCertificate {
    /// The chain in `cert` (PEM, leaf first) and the key in `key` (PEM: PKCS#8, PKCS#1
    /// or SEC1). Errors name the file.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, NetError> {
        let chain = rustls_pemfile::certs(&mut BufReader::new(&read(cert)?[..]))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| NetError::Certificate(format!("{}: {err}", cert.display())))?;
        if chain.is_empty() {
            return Err(NetError::Certificate(format!(
                "{}: no certificate in the file",
                cert.display()
            )));
        }
        let key_der = rustls_pemfile::private_key(&mut BufReader::new(&read(key)?[..]))
            .map_err(|err| NetError::Key(format!("{}: {err}", key.display())))?
            .ok_or_else(|| NetError::Key(format!("{}: no private key in the file", key.display())))?;
        Self::new(chain, key_der)
    }

    /// The self-signed certificate kept in `dir` ([`GENERATED_CERT_FILE`],
    /// [`GENERATED_KEY_FILE`]), made now if `dir` holds none (an ECDSA P-256 key, names
    /// `e2ee-relay` and `localhost`). The second value is true if it was made now.
    pub fn self_signed_in(dir: &Path) -> Result<(Self, bool), NetError> {
        let (cert, key) = (dir.join(GENERATED_CERT_FILE), dir.join(GENERATED_KEY_FILE));
        if cert.exists() || key.exists() {
            return Ok((Self::from_files(&cert, &key)?, false));
        }
        let generated =
            rcgen::generate_simple_self_signed(vec!["e2ee-relay".to_owned(), "localhost".to_owned()])
                .map_err(|err| NetError::Generate(err.to_string()))?;
        // The key first, private from the start; then the certificate. A crash between
        // the two leaves a key without a certificate: the next start says so.
        write_new(&key, generated.key_pair.serialize_pem().as_bytes(), 0o600)?;
        write_new(&cert, generated.cert.pem().as_bytes(), 0o644)?;
        Ok((Self::from_files(&cert, &key)?, true))
    }

    fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, NetError> {
        let pin = RelayPin::of_certificate(&chain[0])?;
        let this = Self { chain, key, pin };
        // Refuses a key that is not the certificate's.
        this.server_config()?;
        Ok(this)
    }

    /// The pin clients check ([`RelayPin`] of the leaf certificate).
    pub fn pin(&self) -> RelayPin {
        self.pin
    }

    /// A rustls server configuration: TLS 1.3 only, no client certificates (clients
    /// prove their identity inside the link, with the channel-bound login).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, NetError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|err| NetError::Key(format!("does not match the certificate: {err}")))?;
        config.alpn_protocols = vec![crate::ALPN.to_vec()];
        Ok(Arc::new(config))
    }
}

/// Creates `path` with `bytes` and `mode`; refuses to replace a file.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), NetError> {
    let fail = |source| NetError::File {
        path: PathBuf::from(path),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}
