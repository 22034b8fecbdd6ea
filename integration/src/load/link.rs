//! One client connection of a load run, whatever the target speaks: connect (and
//! authenticate or subscribe), queue a message, queue an acknowledgement, flush, and
//! read the next event. Pings are answered inside, so callers only see what matters to
//! the measurement.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use e2ee_protocol::codec::FrameCodec;
use e2ee_protocol::frame::Frame;
use e2ee_protocol::identity::IdentityKeyPair;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::jetstream::JetStreamLink;
use super::nats::{self, NatsCodec, NatsIn, NatsOut};
use super::probe;
use super::redis_streams::StreamLink;
use super::resp::{Command, Resp, RespCodec};
use super::target::{self, Kind};
use crate::client::{authenticate, LinkFramed};
use e2ee_agent::relay_transport::RelayTransport;

/// How long connecting and the handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a message goes.
#[derive(Debug, Clone)]
pub enum Address {
    /// A relay identity.
    Identity([u8; 32]),
    /// A NATS subject or Redis channel.
    Channel(String),
}

/// Something read from a connection.
#[derive(Debug)]
pub enum Event {
    /// The target took responsibility for this message (relay `SentAck`, Redis
    /// `PUBLISH` reply with at least one subscriber).
    Acked(u64),
    /// A message was refused; `kind` names why.
    Refused {
        /// The refused message, when known.
        seq: Option<u64>,
        /// Error kind for the report.
        kind: &'static str,
    },
    /// A message arrived for this client.
    Delivered {
        /// Its payload (ciphertext under `--e2e`).
        payload: Bytes,
        /// Relay only: (sender, msg_id) to acknowledge.
        ack: Option<([u8; 32], [u8; 16])>,
    },
    /// The server reported a problem that does not close the connection.
    Notice(&'static str),
    /// The connection ended.
    Closed(&'static str),
}

/// An open connection.
pub enum Link {
    /// To the relay.
    Relay(LinkFramed),
    /// To nats-server.
    Nats(Framed<TcpStream, NatsCodec>),
    /// To redis-server; `published` holds the sequence numbers of `PUBLISH`es whose
    /// replies are outstanding (replies come in order).
    Redis {
        /// The connection.
        framed: Framed<TcpStream, RespCodec>,
        /// Outstanding publishes.
        published: VecDeque<u64>,
    },
    /// To redis-server's streams: see [`StreamLink`].
    RedisStreams(Box<StreamLink>),
    /// To nats-server's JetStream: see [`JetStreamLink`].
    JetStream(Box<JetStreamLink>),
}

impl Link {
    /// Opens a connection of `kind`: authenticates to the relay as `identity`, or
    /// completes the NATS handshake; subscribes to `subscribe` if given (NATS, Redis).
    pub async fn open(
        kind: Kind,
        addr: SocketAddr,
        source: Option<IpAddr>,
        identity: &IdentityKeyPair,
        subscribe: Option<&str>,
    ) -> anyhow::Result<(Self, u32)> {
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            Self::open_inner(kind, addr, source, identity, subscribe),
        )
        .await
        .context("connect timed out")?
    }

    async fn open_inner(
        kind: Kind,
        addr: SocketAddr,
        source: Option<IpAddr>,
        identity: &IdentityKeyPair,
        subscribe: Option<&str>,
    ) -> anyhow::Result<(Self, u32)> {
        let stream = target::connect(addr, source).await?;
        match kind {
            Kind::Relay => {
                let transport = if target::relay_plaintext() {
                    RelayTransport::Plain
                } else {
                    RelayTransport::Tls { pin: None }
                };
                let connected = transport.establish(stream, &addr.to_string()).await?;
                let mut framed = Framed::new(connected.stream, FrameCodec::default());
                let queued = authenticate(&mut framed, identity, connected.channel_binding.as_ref()).await?;
                Ok((Self::Relay(framed), queued))
            }
            Kind::Nats => {
                let subscriptions: Vec<(&str, u32)> = subscribe.map(|s| (s, 1)).into_iter().collect();
                Ok((Self::Nats(nats::handshake(stream, &subscriptions).await?), 0))
            }
            Kind::NatsJetStream => Ok((
                Self::JetStream(Box::new(JetStreamLink::open(stream, subscribe).await?)),
                0,
            )),
            Kind::Redis => {
                let mut framed = Framed::new(stream, RespCodec);
                if let Some(channel) = subscribe {
                    framed.send(Command::subscribe(channel)).await?;
                    match framed.next().await {
                        Some(Ok(Resp::Array(Some(items)))) if matches!(items.first(), Some(Resp::Bulk(Some(k))) if &k[..] == b"subscribe") =>
                            {}
                        other => bail!("redis SUBSCRIBE failed: {other:?}"),
                    }
                }
                Ok((
                    Self::Redis {
                        framed,
                        published: VecDeque::new(),
                    },
                    0,
                ))
            }
            Kind::RedisStreams => Ok((
                Self::RedisStreams(Box::new(StreamLink::open(stream, subscribe).await?)),
                0,
            )),
        }
    }

    /// Queues message `seq` for `to` (not flushed).
    pub async fn feed_message(
        &mut self,
        to: &Address,
        seq: u64,
        pair: u32,
        payload: Bytes,
    ) -> anyhow::Result<()> {
        match (self, to) {
            (Self::Relay(framed), Address::Identity(recipient)) => {
                framed
                    .feed(Frame::Send {
                        recipient: *recipient,
                        msg_id: probe::msg_id(pair, seq),
                        payload: payload.to_vec(),
                    })
                    .await?;
            }
            (Self::Nats(framed), Address::Channel(subject)) => {
                framed
                    .feed(NatsOut::Pub {
                        subject: subject.clone(),
                        reply: None,
                        payload,
                    })
                    .await?;
            }
            (Self::Redis { framed, published }, Address::Channel(channel)) => {
                framed.feed(Command::publish(channel, payload)).await?;
                published.push_back(seq);
            }
            (Self::JetStream(link), Address::Channel(subject)) => {
                link.feed_message(subject, seq, payload).await?
            }
            (Self::RedisStreams(link), Address::Channel(stream)) => {
                link.feed_message(stream, seq, payload).await?
            }
            _ => bail!("address does not fit the target"),
        }
        Ok(())
    }

    /// Queues a relay `DeliveryAck`.
    pub async fn feed_ack(&mut self, sender: [u8; 32], msg_id: [u8; 16]) -> anyhow::Result<()> {
        if let Self::Relay(framed) = self {
            framed.feed(Frame::DeliveryAck { sender, msg_id }).await?;
        }
        Ok(())
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Self::Relay(framed) => SinkExt::<Frame>::flush(framed).await?,
            Self::Nats(framed) => SinkExt::<NatsOut>::flush(framed).await?,
            Self::Redis { framed, .. } => SinkExt::<Command>::flush(framed).await?,
            Self::JetStream(link) => link.flush().await?,
            Self::RedisStreams(link) => link.flush().await?,
        }
        Ok(())
    }

    /// The relay connection, for setup requests (prekeys).
    pub fn relay(&mut self) -> anyhow::Result<&mut LinkFramed> {
        match self {
            Self::Relay(framed) => Ok(framed),
            _ => Err(anyhow!("not a relay connection")),
        }
    }

    /// The next event. Cancel-safe: nothing is lost if the future is dropped.
    pub async fn next_event(&mut self) -> Event {
        loop {
            match self {
                Self::Relay(framed) => match framed.next().await {
                    Some(Ok(frame)) => match frame {
                        Frame::SentAck { msg_id } => return Event::Acked(probe::seq_of(&msg_id)),
                        Frame::Deliver {
                            sender,
                            msg_id,
                            payload,
                            ..
                        } => {
                            return Event::Delivered {
                                payload: Bytes::from(payload),
                                ack: Some((sender, msg_id)),
                            }
                        }
                        Frame::RateLimited { msg_id, .. } => {
                            return Event::Refused {
                                seq: msg_id.as_ref().map(probe::seq_of),
                                kind: "rate_limited",
                            }
                        }
                        Frame::QuotaExceeded { msg_id, .. } => {
                            return Event::Refused {
                                seq: Some(probe::seq_of(&msg_id)),
                                kind: "quota_exceeded",
                            }
                        }
                        Frame::Ping { nonce } => {
                            if framed.send(Frame::Pong { nonce }).await.is_err() {
                                return Event::Closed("write_failed");
                            }
                        }
                        Frame::Error { code, .. } => return Event::Closed(code.name()),
                        Frame::PreKeysLow { .. } | Frame::Pong { .. } => {}
                        _ => return Event::Notice("unexpected_frame"),
                    },
                    Some(Err(_)) => return Event::Closed("read_failed"),
                    None => return Event::Closed("closed_by_server"),
                },
                Self::Nats(framed) => match framed.next().await {
                    Some(Ok(NatsIn::Msg { payload, .. })) => return Event::Delivered { payload, ack: None },
                    Some(Ok(NatsIn::Ping)) => {
                        if framed.send(NatsOut::Pong).await.is_err() {
                            return Event::Closed("write_failed");
                        }
                    }
                    Some(Ok(NatsIn::Err(_))) => return Event::Notice("server_error"),
                    Some(Ok(_)) => {}
                    Some(Err(_)) => return Event::Closed("read_failed"),
                    None => return Event::Closed("closed_by_server"),
                },
                Self::Redis { framed, published } => match framed.next().await {
                    Some(Ok(Resp::Integer(receivers))) => {
                        let Some(seq) = published.pop_front() else {
                            return Event::Notice("unexpected_reply");
                        };
                        return if receivers > 0 {
                            Event::Acked(seq)
                        } else {
                            Event::Refused {
                                seq: Some(seq),
                                kind: "no_subscriber",
                            }
                        };
                    }
                    Some(Ok(Resp::Error(_))) => {
                        let seq = published.pop_front();
                        return Event::Refused {
                            seq,
                            kind: "server_error",
                        };
                    }
                    Some(Ok(reply)) => {
                        if let Some(payload) = reply.into_message() {
                            return Event::Delivered { payload, ack: None };
                        }
                    }
                    Some(Err(_)) => return Event::Closed("read_failed"),
                    None => return Event::Closed("closed_by_server"),
                },
                Self::JetStream(link) => return link.next_event().await,
                Self::RedisStreams(link) => return link.next_event().await,
            }
        }
    }
}
