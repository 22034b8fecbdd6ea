//! [`RelayTrust`]: how a client decides that it talks to its relay, and the rustls client
//! configuration that applies it: a pinned key ([`RelayPin`]), trust on first use (the
//! pin seen is recorded for the caller to keep), or certificate authorities (an
//! operator's certificate under the system roots or a configured CA).

use std::io::BufReader;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::NetError;
use crate::provider;
use crate::relay_pin::RelayPin;

/// What a client trusts the relay by.
#[derive(Debug, Clone)]
pub enum RelayTrust {
    /// The relay's key must have this pin.
    Pinned(RelayPin),
    /// Any key: the pin seen is recorded ([`PinSeen`]) and the caller pins it.
    FirstUse,
    /// A certificate chain to one of these roots, valid for the name connected to.
    Roots(Arc<RootCertStore>),
}

impl RelayTrust {
    /// The certificate authorities in the PEM file `path` (one or more `CERTIFICATE`
    /// blocks): a relay whose chain leads to one of them, for the name connected to, is
    /// trusted. Errors name the file.
    pub fn roots_from_pem(path: &Path) -> Result<Self, NetError> {
        let bytes = std::fs::read(path).map_err(|source| NetError::File {
            path: path.to_path_buf(),
            source,
        })?;
        let certs = rustls_pemfile::certs(&mut BufReader::new(&bytes[..]))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| NetError::Certificate(format!("{}: {err}", path.display())))?;
        if certs.is_empty() {
            return Err(NetError::Certificate(format!(
                "{}: no certificate in the file",
                path.display()
            )));
        }
        let mut roots = RootCertStore::empty();
        for cert in certs {
            roots
                .add(cert)
                .map_err(|err| NetError::Certificate(format!("{}: {err}", path.display())))?;
        }
        Ok(Self::Roots(Arc::new(roots)))
    }

    /// The operating system's certificate authorities (rustls-native-certs: on Linux the
    /// files `SSL_CERT_FILE`, `SSL_CERT_DIR` or the distribution's bundle name). An error
    /// if none can be loaded.
    pub fn system_roots() -> Result<Self, NetError> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found
                .errors
                .first()
                .map_or_else(|| "none found".to_string(), ToString::to_string);
            return Err(NetError::Certificate(format!(
                "no system certificate authority could be loaded: {why}"
            )));
        }
        Ok(Self::Roots(Arc::new(roots)))
    }
}

/// The pin of the key the relay presented on the last handshake (for the caller to
/// compare with, or store as, its pin).
#[derive(Debug, Default, Clone)]
pub struct PinSeen(Arc<Mutex<Option<RelayPin>>>);

impl PinSeen {
    /// The pin of the last certificate presented, if a handshake got that far.
    pub fn get(&self) -> Option<RelayPin> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, pin: RelayPin) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(pin);
    }
}

/// A client configuration (TLS 1.3 only) that applies `trust`, and where it records
/// the pin the relay presents.
pub fn client_config(trust: RelayTrust) -> Result<(Arc<ClientConfig>, PinSeen), NetError> {
    let provider = provider();
    let seen = PinSeen::default();
    let roots = match &trust {
        RelayTrust::Roots(roots) => Some(
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|err| NetError::Certificate(format!("certificate authorities: {err}")))?,
        ),
        _ => None,
    };
    let verifier = Arc::new(RelayVerifier {
        trust,
        roots,
        seen: seen.clone(),
        provider: provider.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![crate::ALPN.to_vec()];
    Ok((Arc::new(config), seen))
}

/// Checks the relay's certificate by pin (or records it), or by the roots.
#[derive(Debug)]
struct RelayVerifier {
    trust: RelayTrust,
    roots: Option<Arc<WebPkiServerVerifier>>,
    seen: PinSeen,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for RelayVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pin = RelayPin::of_certificate(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        self.seen.set(pin);
        match &self.trust {
            RelayTrust::Pinned(expected) if *expected == pin => Ok(ServerCertVerified::assertion()),
            RelayTrust::Pinned(_) => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            RelayTrust::FirstUse => Ok(ServerCertVerified::assertion()),
            RelayTrust::Roots(_) => match &self.roots {
                Some(roots) => {
                    roots.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                }
                None => Err(rustls::Error::General("no certificate authorities".into())),
            },
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
