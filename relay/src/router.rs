//! The Router actor: the one authority over which identity is connected where. It maps
//! identity → connection, replaces an older connection of the same identity, routes
//! deliveries to the one addressed recipient, and hands every connection of an identity
//! the same rate-limit buckets, which it keeps across reconnects. It also publishes its
//! map as a [`RouteTable`] that connections read on the per-message path, so a delivery
//! goes straight from the sender's connection to the recipient's without a hop through
//! the Router's mailbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;
use e2ee_protocol::frame::{DeliverRef, ErrorCode, Frame};

use slog::Logger;

use crate::cluster::presence::{Arrive, Heartbeat, Leave, Presence, HEARTBEAT_EVERY};
use crate::cluster::{listener, ClusterNode};
use crate::rate_limit::{self, RateLimits, SharedRateLimits};
use crate::settings::Limits;
use crate::store::{IdentityBytes, MsgId};
use tokio::sync::oneshot;

/// A stored message on its way to a connected recipient.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Store sequence number.
    pub seq: u64,
    /// Authenticated sender.
    pub sender: IdentityBytes,
    /// Sender's message id.
    pub msg_id: MsgId,
    /// Relay receive time (ms since the epoch).
    pub timestamp_ms: u64,
    /// Opaque ciphertext.
    pub payload: Bytes,
}

impl Delivery {
    /// The `Deliver` frame for it, borrowing the payload.
    pub fn frame(&self) -> DeliverRef<'_> {
        DeliverRef {
            sender: &self.sender,
            msg_id: &self.msg_id,
            timestamp_ms: self.timestamp_ms,
            payload: &self.payload,
        }
    }
}

/// What the Router (or anyone) tells a connection.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum ToConnection {
    /// Messages for this connection's identity, in storage order.
    Deliver(Vec<Delivery>),
    /// A frame to write (e.g. a low-prekey notice).
    Frame(Frame),
    /// Close with a reason.
    Close {
        /// Reason code sent to the client.
        code: ErrorCode,
        /// Readable reason.
        reason: String,
    },
    /// A message may be waiting in the store (stored through another relay node, or a
    /// notice may have been missed): read the queue.
    Waiting,
    /// A newer connection authenticated as this identity: close with `Replaced`, and
    /// signal `handover` once the writes read so far (acknowledgements above all) are
    /// handed to the store, so that the newer connection reads the queue after them.
    Replaced {
        /// Signalled when this connection's writes are queued for the store.
        handover: oneshot::Sender<()>,
    },
}

/// The answer to [`Register`].
pub struct Registered {
    /// The identity's rate-limit buckets, shared with its other connections.
    pub rates: SharedRateLimits,
    /// Set when this connection replaces another of the same identity: signalled once
    /// that one's writes are queued for the store (or dropped if it stopped without).
    pub handover: Option<oneshot::Receiver<()>>,
    /// A connection of this identity accepted later is registered already: this one
    /// (an `Auth` that took long to arrive) must not replace it, and closes instead.
    pub superseded: bool,
}

struct Client {
    conn_id: u64,
    addr: Recipient<ToConnection>,
    /// Its presence generation in the cluster, once granted.
    generation: Option<u64>,
}

/// A read-only view of the Router's map identity → connection. Only the Router writes
/// it (on register and unregister), so it never disagrees with the Router for longer
/// than a message in flight would; stored messages are pushed through it.
///
/// A push that misses (the recipient just connected or left) loses nothing: the message
/// is in the store, and the recipient's drain after registering picks it up.
#[derive(Default)]
pub struct RouteTable {
    map: RwLock<HashMap<IdentityBytes, Recipient<ToConnection>, ahash::RandomState>>,
}

impl RouteTable {
    /// Pushes each delivery to its recipient if connected (it stays in the store either
    /// way): one message per run of deliveries to the same recipient, in order, and the
    /// map locked once for all of them.
    pub fn route_all(&self, deliveries: impl IntoIterator<Item = (IdentityBytes, Delivery)>) {
        let mut deliveries = deliveries.into_iter().peekable();
        if deliveries.peek().is_none() {
            return;
        }
        let Ok(map) = self.map.read() else { return };
        let mut run: Option<(IdentityBytes, Vec<Delivery>)> = None;
        let send = |(recipient, run): (IdentityBytes, Vec<Delivery>)| {
            if let Some(addr) = map.get(&recipient) {
                addr.do_send(ToConnection::Deliver(run));
            }
        };
        for (recipient, delivery) in deliveries {
            match &mut run {
                Some((current, list)) if *current == recipient => list.push(delivery),
                _ => {
                    if let Some(done) = run.replace((recipient, vec![delivery])) {
                        send(done);
                    }
                }
            }
        }
        if let Some(done) = run {
            send(done);
        }
    }

    /// Whether `identity` has an authenticated connection now.
    pub fn is_connected(&self, identity: &IdentityBytes) -> bool {
        self.map.read().is_ok_and(|map| map.contains_key(identity))
    }

    fn set(&self, identity: IdentityBytes, addr: Recipient<ToConnection>) {
        if let Ok(mut map) = self.map.write() {
            map.insert(identity, addr);
        }
    }

    fn remove(&self, identity: &IdentityBytes) {
        if let Ok(mut map) = self.map.write() {
            map.remove(identity);
        }
    }
}

/// Guards the map identity → connection.
pub struct Router {
    clients: HashMap<IdentityBytes, Client>,
    /// Connections that have not authenticated yet (told too when the relay shuts down).
    unauthenticated: HashMap<u64, Recipient<ToConnection>>,
    table: Arc<RouteTable>,
    /// Each identity's buckets, shared by its connections; kept after they end until
    /// the buckets are full again.
    buckets: HashMap<IdentityBytes, SharedRateLimits>,
    /// Sweep full buckets out once `buckets` holds this many.
    sweep_at: usize,
    /// Bucket sizes.
    limits: Limits,
    /// This relay's node of a cluster, if it is one.
    cluster: Option<(ClusterNode, Logger)>,
    /// Records presence in the cluster (started with the Router).
    presence: Option<Addr<Presence>>,
    /// Generations replaced on another node before their grant arrived here.
    replaced_elsewhere: HashMap<IdentityBytes, u64>,
}

/// In a cluster, how often every connection reads its queue whatever the notices said.
const REREAD_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Buckets held before the first sweep.
const FIRST_SWEEP_AT: usize = 1024;

impl Router {
    /// An empty router giving out buckets of the sizes in `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            clients: HashMap::new(),
            unauthenticated: HashMap::new(),
            table: Arc::new(RouteTable::default()),
            buckets: HashMap::new(),
            sweep_at: FIRST_SWEEP_AT,
            limits,
            cluster: None,
            presence: None,
            replaced_elsewhere: HashMap::new(),
        }
    }

    /// Makes this Router a node of a relay cluster: it records its identities'
    /// presence in Redis and hears about the rest of the cluster (crate::cluster).
    pub fn with_cluster(mut self, node: ClusterNode, log: Logger) -> Self {
        self.cluster = Some((node, log));
        self
    }

    /// Has every connection read its queue (a notice may have been missed).
    fn read_all_queues(&self) {
        for client in self.clients.values() {
            client.addr.do_send(ToConnection::Waiting);
        }
    }

    /// Closes `identity`'s connection here: a newer one is on another node.
    fn close_replaced(client: &Client) {
        client.addr.do_send(ToConnection::Close {
            code: ErrorCode::Replaced,
            reason: "replaced by a newer connection on another relay".into(),
        });
    }

    /// The buckets of `identity`: those its other connections use, or that a recent
    /// connection left, else new ones. Whenever the map has doubled since the last
    /// sweep, it drops the buckets no connection holds that are full: those are no
    /// different from new ones, so no identity gains a token by it, and the map stays
    /// bounded by the identities connected or active within a refill time.
    fn buckets_of(&mut self, identity: IdentityBytes) -> SharedRateLimits {
        if let Some(shared) = self.buckets.get(&identity) {
            return shared.clone();
        }
        if self.buckets.len() >= self.sweep_at {
            let now = Instant::now();
            self.buckets
                .retain(|_, shared| Arc::strong_count(shared) > 1 || !rate_limit::lock(shared).is_full(now));
            self.sweep_at = (self.buckets.len() * 2).max(FIRST_SWEEP_AT);
        }
        let shared = Arc::new(Mutex::new(RateLimits::new(&self.limits)));
        self.buckets.insert(identity, shared.clone());
        shared
    }

    /// The map as connections read it.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.clone()
    }
}

impl Actor for Router {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1 << 16);
        if let Some((node, log)) = self.cluster.clone() {
            let router = ctx.address();
            let (presence_node, presence_log) = (node.clone(), log.clone());
            let (beat_node, beat_router, beat_log) = (node.clone(), router.clone(), log.clone());
            let presence = SyncArbiter::start(1, move || {
                Presence::new(presence_node.clone(), router.clone(), presence_log.clone())
            });
            // Heartbeats on a thread of their own: a burst of logins never delays them.
            let heartbeat = SyncArbiter::start(1, move || {
                Presence::new(beat_node.clone(), beat_router.clone(), beat_log.clone())
            });
            heartbeat.do_send(Heartbeat);
            ctx.run_interval(HEARTBEAT_EVERY, move |_, _| heartbeat.do_send(Heartbeat));
            // The last resort: a message whose every notice was lost reaches a connection
            // that reads nothing else within this time.
            ctx.run_interval(REREAD_EVERY, |act, _| act.read_all_queues());
            self.presence = Some(presence);
            if let Err(err) = listener::spawn(node, ctx.address(), log.clone()) {
                slog::error!(log, "cannot start the cluster listener"; "error" => %err);
            }
        }
    }
}

/// Register an authenticated connection; answers the identity's rate-limit buckets,
/// shared with its other connections, and the handover from a connection it replaces.
#[derive(Message)]
#[rtype(result = "Registered")]
pub struct Register {
    /// The authenticated identity.
    pub identity: IdentityBytes,
    /// The connection's id.
    pub conn_id: u64,
    /// Where to send its deliveries.
    pub addr: Recipient<ToConnection>,
}

impl Handler<Register> for Router {
    type Result = MessageResult<Register>;

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) -> Self::Result {
        self.unauthenticated.remove(&msg.conn_id);
        // Connection ids grow in the order connections are accepted: the newer
        // connection wins, whichever authenticates last (a delayed `Auth` of an
        // abandoned attempt must not take over the client's live connection).
        if (self.clients.get(&msg.identity)).is_some_and(|c| c.conn_id > msg.conn_id) {
            return MessageResult(Registered {
                rates: self.buckets_of(msg.identity),
                handover: None,
                superseded: true,
            });
        }
        self.table.set(msg.identity, msg.addr.clone());
        let new = Client {
            conn_id: msg.conn_id,
            addr: msg.addr,
            generation: None,
        };
        let handover = self.clients.insert(msg.identity, new).map(|old| {
            let (handover, done) = oneshot::channel();
            old.addr.do_send(ToConnection::Replaced { handover });
            done
        });
        if let Some(presence) = &self.presence {
            presence.do_send(Arrive {
                identity: msg.identity,
                conn_id: msg.conn_id,
            });
        }
        MessageResult(Registered {
            rates: self.buckets_of(msg.identity),
            handover,
            superseded: false,
        })
    }
}

/// A connection opened; it is unauthenticated until its [`Register`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Opened {
    /// The connection's id.
    pub conn_id: u64,
    /// Where to tell it that the relay shuts down.
    pub addr: Recipient<ToConnection>,
}

impl Handler<Opened> for Router {
    type Result = ();

    fn handle(&mut self, msg: Opened, _: &mut Context<Self>) {
        self.unauthenticated.insert(msg.conn_id, msg.addr);
    }
}

/// A connection ended before it authenticated.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ClosedUnauthenticated {
    /// The connection's id.
    pub conn_id: u64,
}

impl Handler<ClosedUnauthenticated> for Router {
    type Result = ();

    fn handle(&mut self, msg: ClosedUnauthenticated, _: &mut Context<Self>) {
        self.unauthenticated.remove(&msg.conn_id);
    }
}

/// A connection ended.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    /// Its identity.
    pub identity: IdentityBytes,
    /// Its id (a newer connection of the same identity stays registered).
    pub conn_id: u64,
}

impl Handler<Unregister> for Router {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Context<Self>) {
        if self
            .clients
            .get(&msg.identity)
            .is_some_and(|c| c.conn_id == msg.conn_id)
        {
            let gone = self.clients.remove(&msg.identity);
            self.table.remove(&msg.identity);
            if let (Some(presence), Some(generation)) = (&self.presence, gone.and_then(|c| c.generation)) {
                presence.do_send(Leave {
                    identity: msg.identity,
                    generation,
                });
            }
        }
    }
}

/// The cluster recorded an identity's presence on this node under `generation`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PresenceGranted {
    /// The identity.
    pub identity: IdentityBytes,
    /// The connection it was recorded for.
    pub conn_id: u64,
    /// The presence generation.
    pub generation: u64,
}

impl Handler<PresenceGranted> for Router {
    type Result = ();

    fn handle(&mut self, msg: PresenceGranted, _: &mut Context<Self>) {
        let replaced = self.replaced_elsewhere.remove(&msg.identity);
        let Some(client) = self.clients.get_mut(&msg.identity) else {
            return;
        };
        if client.conn_id != msg.conn_id {
            return;
        }
        client.generation = Some(msg.generation);
        if replaced.is_some_and(|g| g >= msg.generation) {
            return Self::close_replaced(client);
        }
        // A message stored through another node before the presence was recorded was
        // not announced here: read the queue once more.
        client.addr.do_send(ToConnection::Waiting);
    }
}

/// What another node of the cluster told this one (crate::cluster::listener).
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum ClusterNotice {
    /// A message for `recipient` was stored through another node: pushed to its
    /// connection here like one stored here (it stays in the store either way).
    Stored {
        /// The recipient.
        recipient: IdentityBytes,
        /// The stored message.
        delivery: Delivery,
    },
    /// `identity` authenticated on another node: its connection of `generation` here
    /// is replaced.
    ReplacedElsewhere {
        /// The identity.
        identity: IdentityBytes,
        /// The generation replaced.
        generation: u64,
    },
    /// Other nodes' notices to this one may have been missed (its subscription was lost
    /// and is back, or its heartbeat had run out): every connection reads its queue.
    NoticesMissed,
}

impl Handler<ClusterNotice> for Router {
    type Result = ();

    fn handle(&mut self, msg: ClusterNotice, _: &mut Context<Self>) {
        match msg {
            ClusterNotice::Stored { recipient, delivery } => {
                self.table.route_all([(recipient, delivery)]);
            }
            ClusterNotice::ReplacedElsewhere { identity, generation } => {
                let Some(client) = self.clients.get(&identity) else {
                    return;
                };
                match client.generation {
                    Some(g) if g == generation => Self::close_replaced(client),
                    Some(_) => {}
                    None => {
                        self.replaced_elsewhere.insert(identity, generation);
                    }
                }
            }
            ClusterNotice::NoticesMissed => self.read_all_queues(),
        }
    }
}

/// Send a frame to an identity if connected.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Notify {
    /// The identity.
    pub identity: IdentityBytes,
    /// The frame.
    pub frame: Frame,
}

impl Handler<Notify> for Router {
    type Result = ();

    fn handle(&mut self, msg: Notify, _: &mut Context<Self>) {
        if let Some(client) = self.clients.get(&msg.identity) {
            client.addr.do_send(ToConnection::Frame(msg.frame));
        }
    }
}

/// Close every connection, authenticated or not (shutdown); answers how many were told.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct CloseAll {
    /// Reason code.
    pub code: ErrorCode,
    /// Readable reason.
    pub reason: String,
}

impl Handler<CloseAll> for Router {
    type Result = usize;

    fn handle(&mut self, msg: CloseAll, _: &mut Context<Self>) -> usize {
        let addrs = self
            .clients
            .values()
            .map(|c| &c.addr)
            .chain(self.unauthenticated.values());
        for addr in addrs {
            addr.do_send(ToConnection::Close {
                code: msg.code,
                reason: msg.reason.clone(),
            });
        }
        self.clients.len() + self.unauthenticated.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(n: usize) -> IdentityBytes {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&(n as u64).to_be_bytes());
        id
    }

    #[test]
    fn every_connection_of_an_identity_shares_its_buckets() {
        let mut router = Router::new(Limits::default());
        let first = router.buckets_of(identity(1));
        let replacing = router.buckets_of(identity(1));
        assert!(Arc::ptr_eq(&first, &replacing));
        assert!(!Arc::ptr_eq(&first, &router.buckets_of(identity(2))));
    }

    #[test]
    fn buckets_outlive_connections_until_they_are_full_again() {
        let limits = Limits {
            request_rate_capacity: 1,
            request_rate_refill_per_sec: 1,
            ..Limits::default()
        };
        let mut router = Router::new(limits);
        // A drained bucket whose connection is gone.
        let drained = router.buckets_of(identity(0));
        assert!(rate_limit::lock(&drained)
            .requests
            .try_take(Instant::now())
            .is_ok());
        drop(drained);
        // Many identities come and go with untouched (full) buckets, one stays connected.
        let connected = router.buckets_of(identity(1));
        for n in 2..FIRST_SWEEP_AT {
            router.buckets_of(identity(n));
        }
        assert_eq!(router.buckets.len(), FIRST_SWEEP_AT);
        router.buckets_of(identity(FIRST_SWEEP_AT));
        assert_eq!(
            router.buckets.len(),
            3,
            "the drained, the connected and the new identity's buckets are kept"
        );
        let again = router.buckets_of(identity(0));
        assert!(
            rate_limit::lock(&again)
                .requests
                .try_take(Instant::now())
                .is_err(),
            "still empty: the sweep refilled nothing"
        );
        assert!(Arc::ptr_eq(&connected, &router.buckets_of(identity(1))));
    }
}
