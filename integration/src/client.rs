//! A small async relay client over tokio: enough to authenticate, publish and fetch
//! prekeys, send and receive frames. Used by tests and the load generator.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use e2ee_agent::relay_transport::{LinkStream, RelayTransport};
use e2ee_protocol::codec::FrameCodec;
use e2ee_protocol::frame::{auth_message, channel_bound_auth_message, ErrorCode, Frame};
use e2ee_protocol::identity::IdentityKeyPair;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// A connection to the relay, framed: TLS (or plain TCP to a relay that serves it).
pub type LinkFramed = Framed<Box<dyn LinkStream>, FrameCodec>;

/// A TLS connection to the relay at `addr` (its key taken on first use), framed, not
/// authenticated; with the channel binding its login must sign. For tests that send
/// what they like before logging in.
pub async fn open_link(addr: SocketAddr) -> anyhow::Result<(LinkFramed, Option<[u8; 32]>)> {
    let connected = RelayTransport::Tls { pin: None }
        .connect(&addr.to_string())
        .await?;
    Ok((
        Framed::new(connected.stream, FrameCodec::default()),
        connected.channel_binding,
    ))
}

/// An authenticated connection to a relay.
pub struct RelayClient {
    /// The identity this client authenticated as.
    pub identity: IdentityKeyPair,
    /// How many stored messages the relay said were waiting at login.
    pub queued: u32,
    framed: LinkFramed,
    /// Frames sent through [`RelayClient::send`] and [`RelayClient::feed`], the `Auth`
    /// included: the `request_seq` of the next one (docs/PROTOCOL.md 1.11).
    sent: u32,
}

/// Reads the relay's challenge, signs it (bound to `channel_binding` over TLS) and waits
/// for `AuthOk`.
pub async fn authenticate(
    framed: &mut LinkFramed,
    identity: &IdentityKeyPair,
    channel_binding: Option<&[u8; 32]>,
) -> anyhow::Result<u32> {
    let first = tokio::time::timeout(Duration::from_secs(10), framed.next())
        .await
        .context("no challenge from the relay")?
        .ok_or_else(|| anyhow!("relay closed before the challenge"))??;
    let Frame::Challenge { relay_id, nonce } = first else {
        bail!("expected a challenge, got {first:?}");
    };
    let me = *identity.public().as_bytes();
    let signature = identity.sign(&login_message(&relay_id, &nonce, &me, channel_binding));
    framed
        .send(Frame::Auth {
            identity: me,
            signature,
        })
        .await?;
    match tokio::time::timeout(Duration::from_secs(10), framed.next())
        .await
        .context("no answer to authentication")?
    {
        Some(Ok(Frame::AuthOk { queued })) => Ok(queued),
        other => bail!("authentication refused: {other:?}"),
    }
}

/// The bytes a login signs: channel-bound over TLS, the plain form otherwise.
pub fn login_message(
    relay_id: &[u8; 32],
    nonce: &[u8; 32],
    me: &[u8; 32],
    binding: Option<&[u8; 32]>,
) -> Vec<u8> {
    match binding {
        Some(binding) => channel_bound_auth_message(relay_id, nonce, me, binding),
        None => auth_message(relay_id, nonce, me),
    }
}

impl RelayClient {
    /// Connects over TLS (the relay's key taken on first use) and authenticates.
    pub async fn connect(addr: SocketAddr, identity: IdentityKeyPair) -> anyhow::Result<Self> {
        Self::over(
            TcpStream::connect(addr).await?,
            addr,
            identity,
            &RelayTransport::Tls { pin: None },
        )
        .await
    }

    /// Connects over plain TCP (to a relay started with `insecure_plaintext`).
    pub async fn connect_plaintext(addr: SocketAddr, identity: IdentityKeyPair) -> anyhow::Result<Self> {
        Self::over(
            TcpStream::connect(addr).await?,
            addr,
            identity,
            &RelayTransport::Plain,
        )
        .await
    }

    /// Authenticates over a connected stream, set up as `transport` says.
    async fn over(
        stream: TcpStream,
        addr: SocketAddr,
        identity: IdentityKeyPair,
        transport: &RelayTransport,
    ) -> anyhow::Result<Self> {
        let connected = transport.establish(stream, &addr.to_string()).await?;
        let mut framed = Framed::new(connected.stream, FrameCodec::default());
        let queued = authenticate(&mut framed, &identity, connected.channel_binding.as_ref()).await?;
        Ok(Self {
            identity,
            queued,
            framed,
            sent: 1,
        })
    }

    /// Connects with a socket receive buffer of about `bytes` (the kernel may round it),
    /// so that what the client has not read backs up at the relay instead of in the
    /// kernel; then authenticates.
    pub async fn connect_with_receive_buffer(
        addr: SocketAddr,
        identity: IdentityKeyPair,
        bytes: u32,
    ) -> anyhow::Result<Self> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_recv_buffer_size(bytes)?;
        Self::over(
            socket.connect(addr).await?,
            addr,
            identity,
            &RelayTransport::Tls { pin: None },
        )
        .await
    }

    /// The `request_seq` the next frame sent through this client will have (frames
    /// written through [`RelayClient::framed`] are not counted).
    pub fn next_seq(&self) -> u32 {
        self.sent
    }

    /// This client's identity bytes.
    pub fn me(&self) -> [u8; 32] {
        *self.identity.public().as_bytes()
    }

    /// Writes one frame.
    pub async fn send(&mut self, frame: Frame) -> anyhow::Result<()> {
        self.framed.send(frame).await?;
        self.sent = self.sent.wrapping_add(1);
        Ok(())
    }

    /// Queues a frame without flushing (for pipelining).
    pub async fn feed(&mut self, frame: Frame) -> anyhow::Result<()> {
        self.framed.feed(frame).await?;
        self.sent = self.sent.wrapping_add(1);
        Ok(())
    }

    /// Flushes queued frames.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        SinkExt::<Frame>::flush(&mut self.framed).await?;
        Ok(())
    }

    /// The next frame other than a ping (pings are answered), within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> anyhow::Result<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.framed.next())
                .await
                .context("timed out waiting for a frame")?;
            match next {
                Some(Ok(Frame::Ping { nonce })) => self.send(Frame::Pong { nonce }).await?,
                Some(Ok(frame)) => return Ok(frame),
                Some(Err(err)) => return Err(err.into()),
                None => bail!("connection closed by the relay"),
            }
        }
    }

    /// Like [`RelayClient::recv`] but `None` when the relay closed the connection.
    pub async fn recv_or_closed(&mut self, wait: Duration) -> anyhow::Result<Option<Frame>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.framed.next())
                .await
                .context("timed out waiting for a frame")?;
            match next {
                Some(Ok(Frame::Ping { nonce })) => self.send(Frame::Pong { nonce }).await?,
                Some(Ok(frame)) => return Ok(Some(frame)),
                Some(Err(_)) | None => return Ok(None),
            }
        }
    }

    /// Sends a message and waits for its `SentAck` (other frames are returned in `other`).
    pub async fn send_message(
        &mut self,
        recipient: [u8; 32],
        msg_id: [u8; 16],
        payload: Vec<u8>,
        other: &mut Vec<Frame>,
    ) -> anyhow::Result<()> {
        self.send(Frame::Send {
            recipient,
            msg_id,
            payload,
        })
        .await?;
        loop {
            match self.recv(Duration::from_secs(10)).await? {
                Frame::SentAck { msg_id: acked } if acked == msg_id => return Ok(()),
                frame @ (Frame::RateLimited { .. } | Frame::QuotaExceeded { .. } | Frame::Error { .. }) => {
                    bail!("send refused: {frame:?}")
                }
                frame => other.push(frame),
            }
        }
    }

    /// Receives `Deliver` frames until `count` arrived, acknowledging each; returns
    /// (sender, msg_id, payload) in arrival order.
    pub async fn receive_messages(
        &mut self,
        count: usize,
        wait: Duration,
    ) -> anyhow::Result<Vec<([u8; 32], [u8; 16], Vec<u8>)>> {
        let mut out = Vec::with_capacity(count);
        while out.len() < count {
            match self.recv(wait).await? {
                Frame::Deliver {
                    sender,
                    msg_id,
                    payload,
                    ..
                } => {
                    self.send(Frame::DeliveryAck { sender, msg_id }).await?;
                    out.push((sender, msg_id, payload));
                }
                Frame::SentAck { .. } | Frame::PreKeysLow { .. } => {}
                other => bail!("unexpected frame while receiving: {other:?}"),
            }
        }
        Ok(out)
    }

    /// The answer to a request that carries a `request_id`: the `Bundle`, `NameClaim` or
    /// `Away` with that id, or a `RateLimited` or `Error` refusal. `PreKeysLow` notices and
    /// deliveries met on the way are skipped (deliveries are not acknowledged).
    async fn answer(&mut self, request_id: u32) -> anyhow::Result<Frame> {
        loop {
            match self.recv(Duration::from_secs(10)).await? {
                frame @ (Frame::Bundle { request_id: id, .. }
                | Frame::NameClaim { request_id: id, .. }
                | Frame::Away { request_id: id, .. })
                    if id == request_id =>
                {
                    return Ok(frame)
                }
                frame @ (Frame::RateLimited { msg_id: None, .. } | Frame::Error { .. }) => return Ok(frame),
                Frame::PreKeysLow { .. } | Frame::PreKeysStored { .. } | Frame::Deliver { .. } => {}
                other => bail!("unexpected frame while waiting for request {request_id}: {other:?}"),
            }
        }
    }

    /// Fetches `identity`'s bundle: the `Bundle` answer, or the refusal.
    pub async fn fetch_bundle(&mut self, request_id: u32, identity: [u8; 32]) -> anyhow::Result<Frame> {
        self.send(Frame::FetchBundle { request_id, identity }).await?;
        self.answer(request_id).await
    }

    /// Looks up a name: the `NameClaim` answer, or the refusal.
    pub async fn lookup_name(&mut self, request_id: u32, name: &str) -> anyhow::Result<Frame> {
        let name = name.to_owned();
        self.send(Frame::LookupName { request_id, name }).await?;
        self.answer(request_id).await
    }

    /// The reverse lookup of `identity`: the `NameClaim` answer, or the refusal.
    pub async fn lookup_identity(&mut self, request_id: u32, identity: [u8; 32]) -> anyhow::Result<Frame> {
        self.send(Frame::LookupIdentity { request_id, identity }).await?;
        self.answer(request_id).await
    }

    /// How long `identity` has been away from the relay (docs/PROTOCOL.md 1.8): the
    /// `Away` answer (`away_days`: 0 = seen within the relay's notice period, whole days
    /// past it, [`e2ee_protocol::frame::AWAY_NEVER`] = never), or the refusal.
    pub async fn query_away(&mut self, request_id: u32, identity: [u8; 32]) -> anyhow::Result<Frame> {
        self.send(Frame::QueryAway { request_id, identity }).await?;
        self.answer(request_id).await
    }

    /// Sends a signed release: the `NameClaim` answer (absent once the name is free), or
    /// the refusal.
    pub async fn release_name(&mut self, request_id: u32, release: Vec<u8>) -> anyhow::Result<Frame> {
        self.send(Frame::ReleaseName { request_id, release }).await?;
        self.answer(request_id).await
    }

    /// Publishes a signed claim of `name` and confirms it with a lookup (PublishName has
    /// no reply of its own; the relay answers a connection's name requests in order):
    /// `Ok(the claim now stored for the name)` if accepted, `Err((code, reason))` if
    /// refused.
    pub async fn publish_name(
        &mut self,
        name: &str,
        claim: Vec<u8>,
    ) -> anyhow::Result<Result<Option<Vec<u8>>, (ErrorCode, String)>> {
        const CONFIRM: u32 = u32::MAX;
        self.feed(Frame::PublishName { claim }).await?;
        let name = name.to_owned();
        self.feed(Frame::LookupName {
            request_id: CONFIRM,
            name,
        })
        .await?;
        self.flush().await?;
        let mut refused = None;
        loop {
            match self.answer(CONFIRM).await? {
                Frame::Error { code, reason } if refused.is_none() => refused = Some((code, reason)),
                Frame::NameClaim { claim, .. } => return Ok(refused.map_or(Ok(claim), Err)),
                other => bail!("unexpected answer to a name publication: {other:?}"),
            }
        }
    }

    /// The framed stream, for splitting into independent send and receive halves.
    pub fn into_framed(self) -> LinkFramed {
        self.framed
    }

    /// The raw framed stream (for tests that misbehave on purpose).
    pub fn framed(&mut self) -> &mut LinkFramed {
        &mut self.framed
    }
}

/// A message id from a counter (tests want readable ids).
pub fn msg_id(n: u64) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[8..].copy_from_slice(&n.to_be_bytes());
    id
}
