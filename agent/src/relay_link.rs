//! The RelayLink actor: one authenticated connection to the relay at a time. It
//! reconnects with exponential backoff, hands every incoming frame to the Agent and
//! writes the Agent's frames. It knows nothing of sessions or plaintext.
//!
//! Given several relay addresses (the relays of one cluster), it uses one at a time:
//! an attempt that fails, or a link that drops, moves it to the next address in the
//! list (round robin). The next address is tried at once; the backoff delay is waited
//! only after a whole round of addresses failed ([`next_attempt`]).

use std::time::Duration;

use actix::prelude::*;
use e2ee_net::RelayPin;
use e2ee_protocol::codec::FrameCodec;
use e2ee_protocol::frame::{
    auth_message, channel_bound_auth_message, ErrorCode, Frame, FEATURE_NAMED_REFUSALS,
};
use e2ee_protocol::identity::IdentityKeyPair;
use futures_util::{SinkExt, StreamExt};
use slog::{debug, info, Logger};
use tokio::sync::mpsc;
use tokio_util::codec::Framed;

use crate::relay_transport::{RelayTransport, TransportError};
use crate::sent_requests::{SentRequest, SentRequests};

/// What the link tells the Agent.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum LinkEvent {
    /// Authenticated; `queued` stored messages await us.
    Connected {
        /// Messages the relay holds for us.
        queued: u32,
        /// The address connected to.
        relay: String,
    },
    /// The connection ended; `retry_in` is set when a reconnect is scheduled.
    Disconnected {
        /// Why it ended.
        reason: String,
        /// Reconnect attempt number and delay, if reconnecting.
        retry: Option<(u32, Duration)>,
        /// Another connection authenticated as this identity (`Error(Replaced)`): the
        /// link stays offline.
        replaced: bool,
        /// The address whose connection ended (or could not be made).
        relay: String,
        /// The address of the next attempt, when reconnecting.
        next: Option<String>,
    },
    /// A frame from the relay.
    Frame(Frame),
    /// The relay refused a request (`Refused`, docs/PROTOCOL.md 1.11).
    Refused {
        /// The refused request, or `None` if the link does not know it (too old).
        request: Option<SentRequest>,
        /// Why; [`ErrorCode::is_retryable`] tells whether to send it again.
        code: ErrorCode,
        /// For a retryable code, the least wait before sending it again (ms).
        retry_after_ms: u32,
        /// The relay's words.
        reason: String,
    },
    /// The first connection's relay key, now pinned (trust on first use): to keep in
    /// the state, so that later connections require it. With the address that showed it.
    RelayPinned(RelayPin, String),
    /// The relay presented another key than the pinned one: the link stays offline.
    RelayKeyChanged(String),
}

/// Write a frame to the relay (dropped while disconnected; the Agent resends what
/// matters on reconnect).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Outbound(pub Frame);

/// Go online or offline (the script steps `disconnect` / `reconnect`).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct SetOnline(pub bool);

/// A connection task ended.
#[derive(Message)]
#[rtype(result = "()")]
struct Ended {
    generation: u64,
    reason: String,
    /// The relay closed it because another connection authenticated as this identity.
    replaced: bool,
    /// The relay presented another TLS key than the pinned one.
    key_changed: bool,
    /// The relay does not know `Features` (revision 7 or earlier).
    no_features: bool,
}

/// The key seen on the first TLS connection is pinned from now on.
#[derive(Message)]
#[rtype(result = "()")]
struct Pinned(RelayPin, String);

/// The relay's `Error(Replaced)`: another connection authenticated as this identity (a
/// copy of this state running elsewhere). The link does not reconnect by itself: two
/// copies would replace each other for ever.
#[derive(Debug)]
struct Replaced(String);

impl std::fmt::Display for Replaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the relay replaced this connection: {}", self.0)
    }
}

impl std::error::Error for Replaced {}

/// The relay closed the connection at our `Features` frame: it predates revision 8, and
/// is not asked again (refusals then come as `Error`, `RateLimited`, `QuotaExceeded`).
#[derive(Debug)]
struct NoFeatures;

impl std::fmt::Display for NoFeatures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "the relay does not know the Features frame (revision 7 or earlier): reconnecting without it",
        )
    }
}

impl std::error::Error for NoFeatures {}

/// A connection task authenticated.
#[derive(Message)]
#[rtype(result = "()")]
struct Up {
    generation: u64,
    queued: u32,
}

/// Reconnect timing.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
}

/// Liveness of a connection (`heartbeat` settings): ping after `interval` of silence,
/// give the connection up when nothing arrives within `timeout` after that, or when a
/// write does not complete within `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Quiet time before a `Ping`.
    pub interval: Duration,
    /// How long a `Ping` or a write may go unanswered.
    pub timeout: Duration,
}

impl Backoff {
    /// Delay before attempt `n` (1-based): doubling from `initial`, capped at `max`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// After `failures` attempts in a row failed (or the link dropped), the last one at
/// address `current` of `count`: the address of the next attempt and the delay before
/// it. The next address is the one after `current` (round robin); it is tried at once
/// unless a whole round of `count` addresses has just failed, and then after the
/// backoff delay of that round (the first round waits `initial`, the next twice that,
/// up to `max`). With one address: that address, after `backoff.delay(failures)`.
pub fn next_attempt(backoff: &Backoff, current: usize, count: usize, failures: u32) -> (usize, Duration) {
    let count = count.max(1);
    let next = (current + 1) % count;
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    let delay = if failures.is_multiple_of(count) {
        backoff.delay(failures / count)
    } else {
        Duration::ZERO
    };
    (next, delay)
}

/// The connection to the relay.
pub struct RelayLink {
    /// The addresses, tried in turn (at least one).
    relays: Vec<String>,
    /// The address of the current (or next) connection.
    current: usize,
    identity: IdentityKeyPair,
    agent: Recipient<LinkEvent>,
    backoff: Backoff,
    liveness: Liveness,
    log: Logger,
    tx: Option<mpsc::UnboundedSender<Frame>>,
    task: Option<tokio::task::JoinHandle<()>>,
    generation: u64,
    online: bool,
    attempt: u32,
    transport: RelayTransport,
    /// Whether to ask for named refusals (false once the relay showed it predates them).
    features: bool,
}

impl RelayLink {
    /// A link to the relays at `relays` (at least one address; the first is tried
    /// first) authenticating as `identity`.
    pub fn new(
        relays: Vec<String>,
        identity: IdentityKeyPair,
        agent: Recipient<LinkEvent>,
        (backoff, liveness): (Backoff, Liveness),
        transport: RelayTransport,
        log: Logger,
    ) -> Self {
        let relays = if relays.is_empty() {
            vec!["127.0.0.1:7300".to_string()]
        } else {
            relays
        };
        Self {
            relays,
            current: 0,
            identity,
            agent,
            backoff,
            liveness,
            log,
            tx: None,
            task: None,
            generation: 0,
            online: true,
            attempt: 0,
            transport,
            features: true,
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        self.drop_connection();
        self.generation += 1;
        let generation = self.generation;
        let (tx, rx) = mpsc::unbounded_channel();
        self.tx = Some(tx);
        let me = ctx.address();
        let relay = self.relay().to_string();
        let identity = self.identity.clone();
        let agent = self.agent.clone();
        let liveness = self.liveness;
        let transport = self.transport.clone();
        let features = self.features;
        self.task = Some(actix::spawn(async move {
            let link = Link {
                relay: &relay,
                generation,
                me: &me,
                agent: &agent,
                liveness,
                features,
            };
            let (reason, replaced, key_changed, no_features) =
                match connection(&relay, &transport, &identity, link, rx).await {
                    Ok(()) => ("closed".to_string(), false, false, false),
                    Err(err) => {
                        let key_changed =
                            matches!(err.downcast_ref(), Some(TransportError::KeyChanged { .. }));
                        (
                            err.to_string(),
                            err.is::<Replaced>(),
                            key_changed,
                            err.is::<NoFeatures>(),
                        )
                    }
                };
            me.do_send(Ended {
                generation,
                reason,
                replaced,
                key_changed,
                no_features,
            });
        }));
    }

    /// The address of the current (or next) connection.
    fn relay(&self) -> &str {
        &self.relays[self.current]
    }

    fn drop_connection(&mut self) {
        self.tx = None;
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What a connection task reports to, and how it judges the connection alive.
struct Link<'a> {
    /// The address connected to.
    relay: &'a str,
    generation: u64,
    me: &'a Addr<RelayLink>,
    agent: &'a Recipient<LinkEvent>,
    liveness: Liveness,
    /// Ask for named refusals (`Features`).
    features: bool,
}

/// One connection's life: connect, authenticate, then pump frames both ways, pinging
/// the relay after a quiet `interval` and giving up a connection that stays silent
/// (a half-open TCP connection passes no bytes and reports no error).
async fn connection(
    relay: &str,
    transport: &RelayTransport,
    identity: &IdentityKeyPair,
    link: Link<'_>,
    mut rx: mpsc::UnboundedReceiver<Frame>,
) -> anyhow::Result<()> {
    let connected = tokio::time::timeout(Duration::from_secs(5), transport.connect(relay)).await??;
    if let Some(pin) = connected.first_pin {
        link.me.do_send(Pinned(pin, link.relay.to_string()));
    }
    let binding = connected.channel_binding;
    let mut framed = Framed::new(connected.stream, FrameCodec::default());
    let challenge = tokio::time::timeout(Duration::from_secs(10), framed.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("relay closed before the challenge"))??;
    let Frame::Challenge { relay_id, nonce } = challenge else {
        anyhow::bail!("relay refused: {challenge:?}");
    };
    let me = *identity.public().as_bytes();
    let signature = identity.sign(&match &binding {
        Some(binding) => channel_bound_auth_message(&relay_id, &nonce, &me, binding),
        None => auth_message(&relay_id, &nonce, &me),
    });
    framed
        .send(Frame::Auth {
            identity: me,
            signature,
        })
        .await?;
    let answer = tokio::time::timeout(Duration::from_secs(10), framed.next())
        .await?
        .ok_or_else(|| anyhow::anyhow!("relay closed during authentication"))??;
    let Frame::AuthOk { queued } = answer else {
        anyhow::bail!("authentication refused: {answer:?}");
    };
    // Awaited: the link forwards `Connected` to the agent before this task forwards any
    // frame, so a Deliver never reaches the agent before it knows it is connected.
    let generation = link.generation;
    link.me
        .send(Up { generation, queued })
        .await
        .map_err(|e| anyhow::anyhow!("relay link stopped: {e}"))?;
    let Liveness { interval, timeout } = link.liveness;
    let dead = |what: &str| anyhow::anyhow!("the relay link is dead: {what}");
    let mut last_heard = tokio::time::Instant::now();
    let mut pinged = false;
    let mut nonce = 0u64;
    let mut sent = SentRequests::new();
    // `Features`, then a Ping: its Pong proves the relay read and understood `Features`
    // (a relay that does not know the frame closes the connection at it, with
    // `Error(Malformed)`, before it reads the Ping).
    let mut probe = None;
    if link.features {
        nonce = nonce.wrapping_add(1);
        let features = Frame::Features {
            flags: FEATURE_NAMED_REFUSALS,
        };
        sent.sent(&features);
        framed.feed(features).await?;
        sent.sent(&Frame::Ping { nonce });
        framed.send(Frame::Ping { nonce }).await?;
        probe = Some(nonce);
    }
    loop {
        let quiet_until = last_heard + if pinged { interval + timeout } else { interval };
        tokio::select! {
            incoming = framed.next() => {
                last_heard = tokio::time::Instant::now();
                pinged = false;
                match incoming {
                    Some(Ok(Frame::Ping { nonce })) => {
                        sent.sent(&Frame::Pong { nonce });
                        tokio::time::timeout(timeout, framed.send(Frame::Pong { nonce }))
                            .await
                            .map_err(|_| dead("a write did not complete"))??
                    }
                    Some(Ok(Frame::Pong { nonce })) => {
                        if probe == Some(nonce) {
                            probe = None;
                        }
                    }
                    Some(Ok(Frame::Error { code: ErrorCode::Replaced, reason })) => {
                        return Err(Replaced(reason).into());
                    }
                    Some(Ok(Frame::Error { code: ErrorCode::Malformed, .. })) if probe.is_some() => {
                        return Err(NoFeatures.into());
                    }
                    Some(Ok(Frame::Refused { request_seq, code, retry_after_ms, reason, .. })) => {
                        let request = sent.answered(request_seq);
                        link.agent.do_send(LinkEvent::Refused { request, code, retry_after_ms, reason });
                    }
                    Some(Ok(Frame::Accepted { request_seq })) => {
                        sent.answered(request_seq);
                    }
                    Some(Ok(frame)) => link.agent.do_send(LinkEvent::Frame(frame)),
                    Some(Err(err)) => return Err(err.into()),
                    None => return Ok(()),
                }
            },
            outgoing = rx.recv() => match outgoing {
                Some(frame) => {
                    let write = async {
                        sent.sent(&frame);
                        framed.feed(frame).await?;
                        while let Ok(more) = rx.try_recv() {
                            sent.sent(&more);
                            framed.feed(more).await?;
                        }
                        SinkExt::<Frame>::flush(&mut framed).await
                    };
                    tokio::time::timeout(timeout, write)
                        .await
                        .map_err(|_| dead("a write did not complete"))??;
                }
                None => return Ok(()),
            },
            () = tokio::time::sleep_until(quiet_until) => {
                if pinged {
                    let silent = (interval + timeout).as_millis();
                    return Err(dead(&format!("nothing from the relay for {silent} ms, not even an answer to a ping")));
                }
                nonce = nonce.wrapping_add(1);
                sent.sent(&Frame::Ping { nonce });
                tokio::time::timeout(timeout, framed.send(Frame::Ping { nonce }))
                    .await
                    .map_err(|_| dead("a write did not complete"))??;
                pinged = true;
            },
        }
    }
}

impl Actor for RelayLink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.connect(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.drop_connection();
    }
}

impl Handler<Up> for RelayLink {
    type Result = ();

    fn handle(&mut self, msg: Up, _: &mut Context<Self>) {
        if msg.generation != self.generation {
            return;
        }
        self.attempt = 0;
        let relay = self.relay().to_string();
        info!(self.log, "connected to relay"; "relay" => &relay, "queue_len" => msg.queued);
        self.agent.do_send(LinkEvent::Connected {
            queued: msg.queued,
            relay,
        });
    }
}

impl Handler<Ended> for RelayLink {
    type Result = ();

    fn handle(&mut self, msg: Ended, ctx: &mut Context<Self>) {
        if msg.generation != self.generation {
            return;
        }
        self.tx = None;
        self.task = None;
        if msg.no_features {
            self.features = false;
            info!(self.log, "the relay predates named refusals: not asking it again");
        }
        if msg.replaced || msg.key_changed {
            // Until told to go online again (`reconnect` step).
            self.online = false;
        }
        if msg.key_changed {
            self.agent.do_send(LinkEvent::RelayKeyChanged(msg.reason.clone()));
        }
        let ended = self.relay().to_string();
        self.attempt = self.attempt.saturating_add(1);
        let (next, delay) = if msg.no_features {
            // The same relay again, without `Features`.
            (self.current, self.backoff.delay(1))
        } else {
            next_attempt(&self.backoff, self.current, self.relays.len(), self.attempt)
        };
        // A relay that showed another key, or replaced this connection, leaves the link
        // offline; going online again (`reconnect`) tries the next address.
        self.current = next;
        let retry = if self.online {
            let generation = self.generation;
            ctx.run_later(delay, move |act, ctx| {
                if act.online && act.generation == generation && act.tx.is_none() {
                    act.connect(ctx);
                }
            });
            Some((self.attempt, delay))
        } else {
            None
        };
        debug!(self.log, "relay connection ended"; "relay" => &ended, "reason" => &msg.reason);
        let next = retry.map(|_| self.relay().to_string());
        self.agent.do_send(LinkEvent::Disconnected {
            reason: msg.reason,
            retry,
            replaced: msg.replaced,
            relay: ended,
            next,
        });
    }
}

impl Handler<Pinned> for RelayLink {
    type Result = ();

    fn handle(&mut self, msg: Pinned, _: &mut Context<Self>) {
        if let RelayTransport::Tls { pin } = &mut self.transport {
            if pin.is_none() {
                *pin = Some(msg.0);
                info!(self.log, "pinned the relay's TLS key (first connection)"; "pin" => %msg.0, "relay" => &msg.1);
                self.agent.do_send(LinkEvent::RelayPinned(msg.0, msg.1));
            }
        }
    }
}

impl Handler<Outbound> for RelayLink {
    type Result = ();

    fn handle(&mut self, msg: Outbound, _: &mut Context<Self>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(msg.0);
        }
    }
}

impl Handler<SetOnline> for RelayLink {
    type Result = ();

    fn handle(&mut self, msg: SetOnline, ctx: &mut Context<Self>) {
        self.online = msg.0;
        if msg.0 {
            if self.tx.is_none() {
                self.attempt = 0;
                self.connect(ctx);
            }
        } else if self.tx.is_some() {
            self.drop_connection();
            self.generation += 1;
            self.agent.do_send(LinkEvent::Disconnected {
                reason: "disconnected on request".into(),
                retry: None,
                replaced: false,
                relay: self.relay().to_string(),
                next: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        assert_eq!(b.delay(1), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(200));
        assert_eq!(b.delay(4), Duration::from_millis(800));
        assert_eq!(b.delay(5), Duration::from_millis(1000));
        assert_eq!(b.delay(40), Duration::from_millis(1000));
    }

    #[test]
    fn one_address_backs_off_as_before() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        for failures in 1..=8 {
            assert_eq!(next_attempt(&b, 0, 1, failures), (0, b.delay(failures)));
        }
    }

    #[test]
    fn several_addresses_go_round_and_back_off_after_each_round() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        let zero = Duration::ZERO;
        // Three addresses, every attempt failing from the first one on.
        let mut current = 0;
        let mut seen = Vec::new();
        for failures in 1..=7 {
            let (next, delay) = next_attempt(&b, current, 3, failures);
            seen.push((next, delay));
            current = next;
        }
        assert_eq!(
            seen,
            [
                (1, zero),
                (2, zero),
                (0, Duration::from_millis(100)),
                (1, zero),
                (2, zero),
                (0, Duration::from_millis(200)),
                (1, zero),
            ]
        );
        // A link that was up and drops (failures back to 1): the next address at once.
        assert_eq!(next_attempt(&b, 2, 3, 1), (0, zero));
    }
}
