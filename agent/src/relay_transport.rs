//! [`RelayTransport`]: how the agent reaches its relay, TLS 1.3 with the relay's key
//! pinned (docs/PROTOCOL.md 1.1), or plain TCP when both sides say
//! `insecure_plaintext`; and the byte stream and channel binding a connection gives.
//!
//! The pin comes from `--relay-pin`, else from the state (the key seen on the first
//! connection, trust on first use); a relay that presents another key is refused with
//! both pins named ([`TransportError::KeyChanged`]), and the agent stops reconnecting.

use std::sync::Arc;

use e2ee_net::{channel_binding, client_config, PinSeen, RelayPin, RelayTrust, CHANNEL_BINDING_LEN};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;

/// A connected byte stream to the relay (TCP, or TLS over TCP).
pub trait LinkStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> LinkStream for T {}

/// Why a connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The relay presented another key than the pinned one.
    #[error(
        "the relay's TLS key changed: pinned {pinned}, the relay presented {presented}; if the relay's \
         operator changed it on purpose, start with --relay-pin {presented}"
    )]
    KeyChanged {
        /// The pin the agent holds.
        pinned: RelayPin,
        /// The pin of the key the relay presented.
        presented: RelayPin,
    },
    /// Connecting or the TLS handshake failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The TLS configuration could not be built.
    #[error("{0}")]
    Net(#[from] e2ee_net::NetError),
}

/// How the agent reaches its relay.
#[derive(Clone)]
pub enum RelayTransport {
    /// Plain TCP (`insecure_plaintext`).
    Plain,
    /// TLS, trusting the relay by `pin` (`None`: the first key seen, to be pinned).
    Tls {
        /// The pinned key, if any yet.
        pin: Option<RelayPin>,
    },
    /// TLS, trusting a relay whose certificate chain leads to one of these authorities
    /// and names the host connected to ([`RelayTrust::Roots`], setting `relay_ca`): an
    /// operator's certificate, renewed without telling the agents.
    Authorities(RelayTrust),
}

/// A connection's stream, its channel binding (TLS) and the key it pinned now (trust on
/// first use).
pub struct Connected {
    /// The byte stream.
    pub stream: Box<dyn LinkStream>,
    /// The RFC 9266 `tls-exporter` value the login signs (`None` over plain TCP).
    pub channel_binding: Option<[u8; CHANNEL_BINDING_LEN]>,
    /// The relay's key pin, when this connection was the first (nothing was pinned).
    pub first_pin: Option<RelayPin>,
}

impl RelayTransport {
    /// Connects to `relay` (`host:port`).
    pub async fn connect(&self, relay: &str) -> Result<Connected, TransportError> {
        let tcp = TcpStream::connect(relay).await?;
        self.establish(tcp, relay).await
    }

    /// Sets the transport up over `tcp`, a connection to `relay` (`host:port`: its host
    /// is the TLS server name).
    pub async fn establish(&self, tcp: TcpStream, relay: &str) -> Result<Connected, TransportError> {
        tcp.set_nodelay(true)?;
        let (trust, pin) = match self {
            RelayTransport::Plain => {
                return Ok(Connected {
                    stream: Box::new(tcp),
                    channel_binding: None,
                    first_pin: None,
                })
            }
            RelayTransport::Tls { pin } => (pin.map_or(RelayTrust::FirstUse, RelayTrust::Pinned), *pin),
            RelayTransport::Authorities(trust) => (trust.clone(), None),
        };
        let first_use = matches!(trust, RelayTrust::FirstUse);
        let (config, seen): (Arc<ClientConfig>, PinSeen) = client_config(trust)?;
        let host = relay.rsplit_once(':').map_or(relay, |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad relay host {host:?}"),
            )
        })?;
        let tls = match tokio_rustls::TlsConnector::from(config).connect(name, tcp).await {
            Ok(tls) => tls,
            Err(err) => {
                return Err(match (pin, seen.get()) {
                    (Some(pinned), Some(presented)) if pinned != presented => {
                        TransportError::KeyChanged { pinned, presented }
                    }
                    _ => err.into(),
                })
            }
        };
        let binding = channel_binding(tls.get_ref().1)?;
        Ok(Connected {
            stream: Box::new(tls),
            channel_binding: Some(binding),
            first_pin: if first_use { seen.get() } else { None },
        })
    }
}
