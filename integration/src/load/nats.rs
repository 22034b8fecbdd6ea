//! The few lines of the NATS client protocol that a pub/sub benchmark needs, and the
//! JetStream requests (JSON over request/reply subjects) of a durable one: `CONNECT`,
//! `SUB`, `PUB` (with a reply subject), `PING`/`PONG` out; `INFO`, `MSG` (with its
//! subject and reply subject), `PING`/`PONG`, `+OK`, `-ERR` in. Written over a tokio-util codec instead of pulling in a NATS client crate
//! (async-nats brings its own TLS stack, JetStream and dozens of crates): the wire
//! format is plain text and the subset below is all a publish/subscribe run uses.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder, Framed};

/// Longest control line accepted from the server (an `INFO` line is the longest).
const MAX_LINE: usize = 64 * 1024;
/// Largest message payload accepted.
const MAX_PAYLOAD: usize = 1024 * 1024;

/// What the client writes.
#[derive(Debug, Clone)]
pub enum NatsOut {
    /// `CONNECT {...}`: no verbose `+OK`s, no headers.
    Connect,
    /// `SUB <subject> <sid>`.
    Sub {
        /// The subject.
        subject: String,
        /// Subscription id.
        sid: u32,
    },
    /// `PUB <subject> [reply] <len>` and the payload.
    Pub {
        /// The subject.
        subject: String,
        /// Where the answer goes (a JetStream acknowledgement, a request's reply).
        reply: Option<String>,
        /// The payload.
        payload: Bytes,
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatsIn {
    /// `INFO {...}` (ignored beyond its arrival).
    Info,
    /// `MSG <subject> <sid> [reply] <len>` and the payload.
    Msg {
        /// The subject it was published to.
        subject: String,
        /// The reply subject (a JetStream message's acknowledgement subject).
        reply: Option<String>,
        /// The payload.
        payload: Bytes,
    },
    /// `PING`: answer with `PONG`.
    Ping,
    /// `PONG`.
    Pong,
    /// `+OK`.
    Ok,
    /// `-ERR '<text>'`.
    Err(String),
}

/// Completes the handshake on a connection to nats-server (`INFO`, `CONNECT`) and
/// subscribes to each `(subject, sid)`; returns once the server answered a `PING` after
/// them (so they are in effect).
///
/// # Errors
/// When the server refuses, closes, or sends something outside the subset.
pub async fn handshake(
    stream: TcpStream,
    subscriptions: &[(&str, u32)],
) -> anyhow::Result<Framed<TcpStream, NatsCodec>> {
    let mut framed = Framed::new(stream, NatsCodec);
    match framed.next().await {
        Some(Ok(NatsIn::Info)) => {}
        other => anyhow::bail!("expected INFO from nats-server, got {other:?}"),
    }
    framed.feed(NatsOut::Connect).await?;
    for (subject, sid) in subscriptions {
        framed
            .feed(NatsOut::Sub {
                subject: (*subject).to_owned(),
                sid: *sid,
            })
            .await?;
    }
    framed.send(NatsOut::Ping).await?;
    loop {
        match framed.next().await {
            Some(Ok(NatsIn::Pong)) => return Ok(framed),
            Some(Ok(NatsIn::Ping)) => framed.send(NatsOut::Pong).await?,
            Some(Ok(NatsIn::Err(err))) => anyhow::bail!("nats-server refused: {err}"),
            Some(Ok(_)) => {}
            Some(Err(err)) => return Err(err.into()),
            None => anyhow::bail!("nats-server closed during the handshake"),
        }
    }
}

/// Why the server's bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The server sent something outside the subset.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// The NATS text protocol subset as a codec.
#[derive(Debug, Default, Clone, Copy)]
pub struct NatsCodec;

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

impl Decoder for NatsCodec {
    type Item = NatsIn;
    type Error = NatsError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<NatsIn>, NatsError> {
        let Some(eol) = find_crlf(buf) else {
            if buf.len() > MAX_LINE {
                return Err(NatsError::Protocol("control line too long".into()));
            }
            return Ok(None);
        };
        let line = &buf[..eol];
        if line.starts_with(b"MSG ") {
            let text =
                std::str::from_utf8(line).map_err(|_| NatsError::Protocol("MSG line not UTF-8".into()))?;
            let fields: Vec<&str> = text.split(' ').collect();
            let (subject, reply, len) = match fields[..] {
                [_, subject, _, len] => (subject, None, len),
                [_, subject, _, reply, len] => (subject, Some(reply.to_owned()), len),
                _ => return Err(NatsError::Protocol("MSG line with wrong fields".into())),
            };
            let subject = subject.to_owned();
            let len: usize = len
                .parse()
                .map_err(|_| NatsError::Protocol("MSG without a length".into()))?;
            if len > MAX_PAYLOAD {
                return Err(NatsError::Protocol("MSG payload too large".into()));
            }
            let need = eol + 2 + len + 2;
            if buf.len() < need {
                buf.reserve(need - buf.len());
                return Ok(None);
            }
            buf.advance(eol + 2);
            let payload = buf.split_to(len).freeze();
            buf.advance(2);
            return Ok(Some(NatsIn::Msg {
                subject,
                reply,
                payload,
            }));
        }
        let item = if line == b"PING" {
            NatsIn::Ping
        } else if line == b"PONG" {
            NatsIn::Pong
        } else if line == b"+OK" {
            NatsIn::Ok
        } else if line.starts_with(b"INFO ") {
            NatsIn::Info
        } else if line.starts_with(b"-ERR") {
            NatsIn::Err(String::from_utf8_lossy(&line[4..]).trim().to_owned())
        } else {
            return Err(NatsError::Protocol(format!(
                "unexpected line {:?}",
                String::from_utf8_lossy(&line[..line.len().min(40)])
            )));
        };
        buf.advance(eol + 2);
        Ok(Some(item))
    }
}

impl Encoder<NatsOut> for NatsCodec {
    type Error = NatsError;

    fn encode(&mut self, item: NatsOut, dst: &mut BytesMut) -> Result<(), NatsError> {
        match item {
            NatsOut::Connect => dst.put_slice(
                b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":false,\"name\":\"e2ee-load\",\"lang\":\"rust\",\"version\":\"0.1.0\",\"protocol\":1}\r\n",
            ),
            NatsOut::Sub { subject, sid } => {
                dst.put_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
            }
            NatsOut::Pub {
                subject,
                reply,
                payload,
            } => {
                dst.reserve(subject.len() + payload.len() + 64);
                dst.put_slice(b"PUB ");
                dst.put_slice(subject.as_bytes());
                if let Some(reply) = reply {
                    dst.put_slice(b" ");
                    dst.put_slice(reply.as_bytes());
                }
                dst.put_slice(format!(" {}\r\n", payload.len()).as_bytes());
                dst.put_slice(&payload);
                dst.put_slice(b"\r\n");
            }
            NatsOut::Ping => dst.put_slice(b"PING\r\n"),
            NatsOut::Pong => dst.put_slice(b"PONG\r\n"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_msg_split_across_reads() {
        let mut codec = NatsCodec;
        let mut buf = BytesMut::from(&b"INFO {\"x\":1}\r\nMSG a.b 1 5\r\nhel"[..]);
        assert_eq!(codec.decode(&mut buf).expect("info"), Some(NatsIn::Info));
        assert_eq!(codec.decode(&mut buf).expect("partial"), None);
        buf.put_slice(b"lo\r\nPING\r\n");
        assert_eq!(
            codec.decode(&mut buf).expect("msg"),
            Some(NatsIn::Msg {
                subject: "a.b".into(),
                reply: None,
                payload: Bytes::from_static(b"hello")
            })
        );
        assert_eq!(codec.decode(&mut buf).expect("ping"), Some(NatsIn::Ping));
        assert!(buf.is_empty());
        buf.put_slice(b"MSG d.1 1 $JS.ACK.s.c.1.2.3.4.5 2\r\nhi\r\n");
        assert_eq!(
            codec.decode(&mut buf).expect("msg with reply"),
            Some(NatsIn::Msg {
                subject: "d.1".into(),
                reply: Some("$JS.ACK.s.c.1.2.3.4.5".into()),
                payload: Bytes::from_static(b"hi")
            })
        );
    }

    #[test]
    fn encodes_pub() {
        let mut out = BytesMut::new();
        NatsCodec
            .encode(
                NatsOut::Pub {
                    subject: "s".into(),
                    reply: None,
                    payload: Bytes::from_static(b"xy"),
                },
                &mut out,
            )
            .expect("encode");
        assert_eq!(&out[..], b"PUB s 2\r\nxy\r\n");
        out.clear();
        NatsCodec
            .encode(
                NatsOut::Pub {
                    subject: "s".into(),
                    reply: Some("_INBOX.a.7".into()),
                    payload: Bytes::new(),
                },
                &mut out,
            )
            .expect("encode");
        assert_eq!(&out[..], b"PUB s _INBOX.a.7 0\r\n\r\n");
    }
}
