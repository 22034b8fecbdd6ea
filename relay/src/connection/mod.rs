//! The Connection actor: one per TCP connection. It authenticates the client, then
//! serves its frames: prekeys, name claims, sends (store, ack, route) and deliveries
//! (drain the stored queue in order, then push live, bounded by the output budget and
//! the unacknowledged-message limit).
//!
//! Bounded under abuse (docs/PROTOCOL.md 1.2, 1.6, 1.9): until it authenticates, a
//! connection reads no frame longer than `Auth`; a Send's recipient must be a valid
//! identity key; a DeliveryAck counts only for a message delivered on this connection
//! and not yet acknowledged (any other is ignored without a store write) and takes a
//! token from the identity's ack bucket; and while the store's write queue is full, or
//! the ack bucket is empty, the connection stops reading.
//!
//! Split by concern: `delivery` (draining and pushing deliveries), `directory`
//! (prekeys and names) and `writes` (store writes and their outcomes).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use e2ee_protocol::codec::CodecError;
use e2ee_protocol::frame::{auth_message, channel_bound_auth_message, ErrorCode, Frame};
use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::keys::PublicKey;
use e2ee_protocol::name_claim::NameClaim;
use e2ee_protocol::name_release::NameRelease;
use e2ee_protocol::prekey::PreKeyBundle;
use rand_core::{OsRng, RngCore};
use slog::{debug, info, o, warn, Logger};

use crate::committer::{commit_direct, Flush, Outcomes, WriteBatch, WriteOutcome};
use crate::input::FrameLimit;
use crate::output::{Outgoing, Output, WriterExit};
use crate::rate_limit::{self, RateLimits, SharedRateLimits};
use crate::recipient_check::RecipientCheck;
use crate::router::{
    ClosedUnauthenticated, Delivery, Notify, Opened, Register, Registered, ToConnection, Unregister,
};
use crate::store::{
    ClaimOutcome, IdentityBytes, MsgId, NewMessage, Quota, ReleaseOutcome, StoredBundle, WriteOp, WriteResult,
};
use crate::store_actor::{
    ClaimOf, FetchBundle, GetClaim, LastSeen, LoadExpired, LoadPending, PrekeyCount, PublishPrekeys,
    PutClaim, QueueLen, RecordAuth, ReleaseClaim,
};
use crate::RelayContext;

mod delivery;
mod directory;
mod expiry_notices;
mod groups;
mod refusals;
mod writes;

use expiry_notices::ExpiryNotices;
use refusals::{RequestLog, RequestRef};
use writes::{MessageWrite, Writes, Written};

/// Messages loaded from the store per drain step.
const DRAIN_PAGE: usize = 256;
/// How long a connection that replaces another waits for that one's writes to be
/// handed to the store before it reads its queue (the handover normally takes a
/// mailbox round trip).
const HANDOVER_WAIT: Duration = Duration::from_secs(2);
/// How long a replaced connection still reads what its client sent (when the client
/// does not end it first).
const REPLACED_GRACE: Duration = Duration::from_millis(200);

enum State {
    /// Challenge sent, waiting for `Auth`.
    Challenged,
    /// Authenticated as this identity, whose rate-limit buckets all its connections
    /// share.
    Ready(IdentityBytes, SharedRateLimits),
}

/// Delivery bookkeeping of an authenticated connection.
#[derive(Default)]
struct Deliveries {
    /// Pushing live pushes (the stored queue is drained and nothing was missed).
    live: bool,
    /// A drain step is running.
    draining: bool,
    /// A live push was not written (draining, too many unacknowledged, or the output
    /// too full).
    missed: bool,
    /// Waiting for the output to drain before writing more stored messages.
    waiting_output: bool,
    /// Highest sequence number the drain has considered.
    drain_mark: u64,
    /// Written, not yet acknowledged.
    in_flight: HashMap<(IdentityBytes, MsgId), u64, ahash::RandomState>,
    /// Acknowledged, acknowledgement not yet committed.
    acking: HashSet<(IdentityBytes, MsgId), ahash::RandomState>,
    /// Acknowledgements committed while a drain step was reading the queue: that read
    /// may come from before their commit, so its rows may still hold those messages.
    acked_while_draining: HashSet<(IdentityBytes, MsgId), ahash::RandomState>,
}

/// One client connection.
pub struct Connection {
    id: u64,
    log: Logger,
    relay: Arc<RelayContext>,
    nonce: [u8; 32],
    state: State,
    output: Output,
    writer_done: Option<tokio::sync::oneshot::Receiver<WriterExit>>,
    last_seen: Instant,
    deliveries: Deliveries,
    closing: bool,
    /// The relay is shutting down: no more frames are read, and the connection closes
    /// with this reason once the stores in flight are answered.
    shutdown: Option<(ErrorCode, String)>,
    /// Replaced by a newer connection: signalled when this one's writes are handed to
    /// the store (in `stopped`).
    handover: Option<tokio::sync::oneshot::Sender<()>>,
    ping_counter: u64,
    writes: Writes,
    /// The largest frame its reader accepts: an `Auth` until it authenticates.
    frame_limit: FrameLimit,
    recipients: RecipientCheck,
    /// Whether an invalid recipient was logged already (the next ones are counted only).
    invalid_recipient_logged: bool,
    /// Expiry notices for the client (`Expired`).
    notices: ExpiryNotices,
    /// The TLS channel binding the login must sign (`None` over plain TCP).
    channel_binding: Option<[u8; 32]>,
    /// The frames read so far, and how refusals are sent.
    requests: RequestLog,
}

impl Connection {
    /// A connection that writes through `output`.
    pub fn new(
        id: u64,
        peer: SocketAddr,
        relay: Arc<RelayContext>,
        output: Output,
        writer_done: tokio::sync::oneshot::Receiver<WriterExit>,
        frame_limit: FrameLimit,
        channel_binding: Option<[u8; 32]>,
    ) -> Self {
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        Self {
            id,
            log: relay.log.new(o!("conn_id" => id, "peer" => peer.to_string())),
            relay,
            nonce,
            state: State::Challenged,
            output,
            writer_done: Some(writer_done),
            last_seen: Instant::now(),
            deliveries: Deliveries::default(),
            closing: false,
            shutdown: None,
            handover: None,
            ping_counter: 0,
            writes: Writes::default(),
            frame_limit,
            recipients: RecipientCheck::default(),
            invalid_recipient_logged: false,
            notices: ExpiryNotices::default(),
            channel_binding,
            requests: RequestLog::default(),
        }
    }

    fn identity(&self) -> Option<IdentityBytes> {
        match self.state {
            State::Ready(identity, _) => Some(identity),
            State::Challenged => None,
        }
    }

    /// Takes a token from the identity's bucket that `bucket` picks, at the time the
    /// current frame was read.
    fn take_token(
        &self,
        bucket: impl FnOnce(&mut RateLimits) -> &mut rate_limit::TokenBucket,
    ) -> Result<(), Duration> {
        match &self.state {
            State::Ready(_, rates) => bucket(&mut rate_limit::lock(rates)).try_take(self.last_seen),
            State::Challenged => Ok(()),
        }
    }

    /// Writes a frame; a peer whose unread output exceeds the budget is disconnected.
    pub(crate) fn send(&mut self, frame: Frame, ctx: &mut Context<Self>) -> bool {
        self.send_out(Outgoing::Frame(frame), ctx)
    }

    /// Writes a frame or a stored message (see [`Connection::send`]).
    fn send_out(&mut self, item: Outgoing, ctx: &mut Context<Self>) -> bool {
        if self.closing {
            return false;
        }
        match self.output.send(item) {
            Ok(()) => true,
            Err(over) => {
                let reason = format!("{} bytes of output unread", over.pending);
                self.close(ErrorCode::SlowConsumer, &reason, ctx);
                false
            }
        }
    }

    /// Hands `frame` to `identity`'s connection, if any, bypassing the store (only the
    /// adversary does this).
    #[cfg(feature = "adversary")]
    pub(crate) fn push_unstored(&self, identity: IdentityBytes, frame: Frame) {
        self.relay.router.do_send(Notify { identity, frame });
    }

    /// Sends an error frame, logs the reason and stops.
    fn close(&mut self, code: ErrorCode, reason: &str, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.relay.metrics.reject(code);
        match code {
            ErrorCode::ServerShutdown | ErrorCode::Replaced => {
                info!(self.log, "closing connection"; "reason" => reason, "code" => code.name())
            }
            _ => warn!(self.log, "closing connection"; "reason" => reason, "code" => code.name()),
        }
        self.output.send_final(Frame::error(code, reason));
        ctx.stop();
    }

    fn on_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        let Some(me) = self.identity() else {
            return self.authenticate(frame, ctx);
        };
        let writes = matches!(
            frame,
            Frame::Send { .. }
                | Frame::DeliveryAck { .. }
                | Frame::GroupSend { .. }
                | Frame::GroupCommit { .. }
        );
        if writes && self.relay.direct.is_none() && self.relay.backlog.is_full() {
            return self.wait_for_store(frame, ctx);
        }
        let request = matches!(
            frame,
            Frame::FetchBundle { .. }
                | Frame::LookupName { .. }
                | Frame::LookupIdentity { .. }
                | Frame::QueryAway { .. }
                | Frame::PublishPreKeys { .. }
                | Frame::PublishName { .. }
                | Frame::ReleaseName { .. }
                | Frame::PublishKeyPackages { .. }
                | Frame::FetchKeyPackage { .. }
        );
        if request {
            if let Err(wait) = self.take_token(|r| &mut r.requests) {
                let request = self.requests.current();
                return self.rate_limited(request, None, wait, ctx);
            }
        }
        match frame {
            Frame::Send {
                recipient,
                msg_id,
                payload,
            } => self.on_send(me, recipient, msg_id, payload, ctx),
            Frame::DeliveryAck { sender, msg_id } => self.on_delivery_ack(me, sender, msg_id, ctx),
            Frame::GroupSend { msg_id, message } => self.on_group_send(me, msg_id, message, ctx),
            commit @ Frame::GroupCommit { .. } => self.on_group_commit(me, commit, ctx),
            Frame::PublishKeyPackages {
                packages,
                last_resort,
            } => self.on_publish_key_packages(me, packages, last_resort, ctx),
            Frame::FetchKeyPackage { request_id, identity } => {
                self.on_fetch_key_package(request_id, identity, ctx)
            }
            Frame::ExpiredAck { through } => self.on_expired_ack(me, through, ctx),
            Frame::PublishPreKeys { bundle } => self.on_publish_prekeys(me, &bundle, ctx),
            Frame::FetchBundle { request_id, identity } => self.on_fetch_bundle(request_id, identity, ctx),
            Frame::PublishName { claim } => self.on_publish_name(me, claim, ctx),
            Frame::ReleaseName { request_id, release } => self.on_release_name(me, request_id, &release, ctx),
            Frame::LookupIdentity { request_id, identity } => {
                self.on_lookup_identity(request_id, identity, ctx)
            }
            Frame::QueryAway { request_id, identity } => self.on_query_away(request_id, identity, ctx),
            Frame::LookupName { request_id, name } => {
                if let Some(claim) = self.substitute_claim(&name) {
                    self.send(
                        Frame::NameClaim {
                            request_id,
                            claim: Some(claim),
                        },
                        ctx,
                    );
                    return;
                }
                let store = self.relay.store.clone();
                ctx.spawn(
                    store
                        .send(GetClaim(name))
                        .into_actor(self)
                        .map(move |res, act, ctx| match res {
                            Ok(Ok(claim)) => {
                                act.send(Frame::NameClaim { request_id, claim }, ctx);
                            }
                            _ => act.close(ErrorCode::Internal, "store failure", ctx),
                        }),
                );
            }
            Frame::QueryQuota => {
                let State::Ready(_, rates) = &self.state else {
                    return;
                };
                let frame = {
                    let sends = &mut rate_limit::lock(rates).sends;
                    Frame::Quota {
                        remaining: sends.remaining(Instant::now()),
                        capacity: sends.capacity(),
                        refill_per_sec: sends.refill_per_sec(),
                    }
                };
                self.send(frame, ctx);
            }
            Frame::Ping { nonce } => {
                self.send(Frame::Pong { nonce }, ctx);
            }
            Frame::Features { flags } => self.requests.features(flags),
            Frame::Pong { .. } => {}
            other => {
                let reason = format!("unexpected {} frame", other.kind());
                self.close(ErrorCode::Unexpected, &reason, ctx);
            }
        }
    }

    /// Stops reading until the store's write queue has room, then handles `frame`.
    fn wait_for_store(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        self.relay.metrics.store_queue_waits.inc();
        debug!(self.log, "store write queue full: reading paused");
        // What this connection queued goes to the Committer first: the queue it waits
        // for may be its own writes.
        self.send_writes(ctx);
        let backlog = self.relay.backlog.clone();
        let request = self.requests.current();
        ctx.wait(
            async move { backlog.wait_for_room().await }
                .into_actor(self)
                .map(move |(), act, ctx| act.resume(request, frame, ctx)),
        );
    }

    /// Handles a frame whose reading was paused, unless the connection is ending.
    fn resume(&mut self, request: RequestRef, frame: Frame, ctx: &mut Context<Self>) {
        if !self.closing && self.shutdown.is_none() {
            self.requests.resume(request);
            self.on_frame(frame, ctx);
        }
    }

    fn authenticate(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        let Frame::Auth { identity, signature } = frame else {
            let reason = format!("{} frame before authentication", frame.kind());
            return self.close(ErrorCode::NotAuthenticated, &reason, ctx);
        };
        let Ok(key) = IdentityKey::from_bytes(identity) else {
            return self.close(ErrorCode::AuthFailed, "invalid identity key", ctx);
        };
        let signed = match &self.channel_binding {
            Some(binding) => {
                channel_bound_auth_message(&self.relay.relay_id, &self.nonce, &identity, binding)
            }
            None => auth_message(&self.relay.relay_id, &self.nonce, &identity),
        };
        if key.verify(&signed, &signature).is_err() {
            return self.close(ErrorCode::AuthFailed, "bad signature", ctx);
        }
        self.log = self.log.new(o!("identity" => key.short()));
        let register = Register {
            identity,
            conn_id: self.id,
            addr: ctx.address().recipient(),
        };
        let router = self.relay.router.clone();
        let store = self.relay.store.clone();
        let committer = self.relay.committer.clone();
        // For the lease of the names it holds; the store handles it before the queue
        // length asked for below, so it is recorded once AuthOk is sent.
        let at_ms = crate::now_ms();
        store.do_send(RecordAuth { identity, at_ms });
        // For QueryAway, group-committed with other writes (a login costs no commit of
        // its own); the Flush below waits for it.
        self.record_seen(identity, at_ms, ctx);
        self.send_writes(ctx);
        // Nothing else is read until the client is registered and told so.
        ctx.wait(
            async move {
                let registered = router.send(register).await.ok();
                let (rates, handover, superseded) = match registered {
                    Some(Registered {
                        rates,
                        handover,
                        superseded,
                    }) => (Some(rates), handover, superseded),
                    None => (None, None, false),
                };
                if superseded {
                    return (rates, None, true);
                }
                // Acknowledgements from this identity's previous connection are applied
                // before its queue is read, so acknowledged messages are not sent again:
                // the connection replaced hands its writes to the store first (bounded:
                // one stuck elsewhere does not hold this one for long), then the Flush
                // commits everything queued before it.
                if let Some(done) = handover {
                    let _ = tokio::time::timeout(HANDOVER_WAIT, done).await;
                }
                let _ = committer.send(Flush).await;
                let queued = store.send(QueueLen(identity)).await.ok().and_then(Result::ok);
                (rates, queued, false)
            }
            .into_actor(self)
            .map(move |(rates, queued, superseded), act, ctx| {
                if superseded {
                    let reason = "a newer connection authenticated as this identity";
                    return act.close(ErrorCode::Replaced, reason, ctx);
                }
                // Without the Router (it stops only with the relay), buckets of its own.
                let rates = rates.unwrap_or_else(|| Arc::new(Mutex::new(RateLimits::new(&act.relay.limits))));
                act.state = State::Ready(identity, rates);
                // Frames after Auth are read from here on (the reader waits for this).
                act.frame_limit.set(act.relay.limits.max_frame_len);
                act.relay.metrics.authenticated.inc();
                let queued = queued.unwrap_or(0);
                info!(act.log, "client authenticated"; "queue_len" => queued);
                act.send(
                    Frame::AuthOk {
                        queued: u32::try_from(queued).unwrap_or(u32::MAX),
                    },
                    ctx,
                );
                act.start_drain(ctx);
                act.check_prekeys(identity, ctx);
            }),
        );
    }

    fn check_prekeys(&mut self, me: IdentityBytes, ctx: &mut Context<Self>) {
        let threshold = self.relay.limits.prekey_low_threshold;
        ctx.spawn(
            self.relay
                .store
                .send(PrekeyCount(me))
                .into_actor(self)
                .map(move |res, act, ctx| {
                    if let Ok(Ok(Some(remaining))) = res {
                        if remaining < threshold {
                            act.send(Frame::PreKeysLow { remaining }, ctx);
                        }
                    }
                }),
        );
    }

    fn on_send(
        &mut self,
        me: IdentityBytes,
        recipient: IdentityBytes,
        msg_id: MsgId,
        payload: Vec<u8>,
        ctx: &mut Context<Self>,
    ) {
        if let Err(wait) = self.take_token(|r| &mut r.sends) {
            let request = self.requests.current();
            return self.rate_limited(request, Some(msg_id), wait, ctx);
        }
        if !self.recipients.is_valid(&recipient) {
            return self.invalid_recipient(msg_id, ctx);
        }
        #[cfg(feature = "adversary")]
        if let Some(adversary) = self.relay.adversary.clone() {
            return adversary.on_send(self, me, recipient, msg_id, payload, ctx);
        }
        self.store_message(me, recipient, msg_id, payload, true, ctx);
    }

    /// The adversary's own claim in place of the one stored for `name` (never without
    /// the `adversary` feature).
    fn substitute_claim(&self, name: &str) -> Option<Vec<u8>> {
        #[cfg(feature = "adversary")]
        if let Some(adversary) = &self.relay.adversary {
            return adversary.substitute_claim(name);
        }
        let _ = name;
        None
    }

    /// The adversary's own bundle in place of `owner`'s (never without the `adversary`
    /// feature).
    fn substitute_bundle(&self, owner: &IdentityBytes) -> Option<Vec<u8>> {
        #[cfg(feature = "adversary")]
        if let Some(adversary) = &self.relay.adversary {
            return adversary.substitute_bundle(owner);
        }
        let _ = owner;
        None
    }

    /// Refuses a Send whose recipient is not a valid identity key; the connection stays
    /// open. Logged once per connection (a client that does it once does it often).
    fn invalid_recipient(&mut self, msg_id: MsgId, ctx: &mut Context<Self>) {
        let reason = "the recipient is not a valid identity key";
        self.relay.metrics.reject(ErrorCode::InvalidRecipient);
        let id = slog::FnValue(move |_: &slog::Record| hex::encode(msg_id));
        if self.invalid_recipient_logged {
            debug!(self.log, "request refused"; "reason" => reason, "msg_id" => id);
        } else {
            self.invalid_recipient_logged = true;
            warn!(self.log, "request refused"; "reason" => reason, "msg_id" => id,
                  "code" => ErrorCode::InvalidRecipient.name());
        }
        let request = self.requests.current();
        self.send_refusal(request, ErrorCode::InvalidRecipient, reason, ctx);
    }

    /// Stores a message from `me`, then routes it to its recipient. `ack` tells this
    /// connection's client that it is stored; it is false only for a message the
    /// adversary (`crate::adversary`) injects.
    pub(crate) fn store_message(
        &mut self,
        me: IdentityBytes,
        recipient: IdentityBytes,
        msg_id: MsgId,
        payload: Vec<u8>,
        ack: bool,
        ctx: &mut Context<Self>,
    ) {
        let len = payload.len();
        let op = WriteOp::Append(NewMessage {
            recipient,
            sender: me,
            msg_id,
            timestamp_ms: crate::now_ms(),
            payload: payload.into(),
        });
        self.write(
            op,
            Written::Message(MessageWrite {
                recipient,
                msg_id,
                len,
                ack,
                request: self.requests.current(),
            }),
            ctx,
        );
    }

    /// Queues the write of `identity` seen at `at_ms` (docs/PROTOCOL.md 1.8).
    fn record_seen(&mut self, identity: IdentityBytes, at_ms: u64, ctx: &mut Context<Self>) {
        let op = WriteOp::Seen {
            identity,
            at_ms,
            precision_ms: self.relay.away_notice.precision_ms(),
        };
        self.write(op, Written::Seen, ctx);
    }

    fn on_delivery_ack(
        &mut self,
        me: IdentityBytes,
        sender: IdentityBytes,
        msg_id: MsgId,
        ctx: &mut Context<Self>,
    ) {
        // Taken when the ack is handled, not when it was read: after a pause the time
        // of the read would give no new token.
        let token = match &self.state {
            State::Ready(_, rates) => rate_limit::lock(rates).acks.try_take(Instant::now()),
            State::Challenged => Ok(()),
        };
        if let Err(wait) = token {
            self.relay.metrics.ack_rate_waits.inc();
            self.send_writes(ctx);
            let request = self.requests.current();
            ctx.wait(
                actix::clock::sleep(wait)
                    .into_actor(self)
                    .map(move |(), act, ctx| act.resume(request, Frame::DeliveryAck { sender, msg_id }, ctx)),
            );
            return;
        }
        let key = (sender, msg_id);
        if self.deliveries.in_flight.remove(&key).is_none() {
            // Not delivered on this connection, or acknowledged already: nothing to do,
            // and nothing is written (an ack costs the store a write only for a message
            // it is known to hold for this client).
            self.relay.metrics.acks_ignored.inc();
            let id = slog::FnValue(move |_: &slog::Record| hex::encode(msg_id));
            debug!(self.log, "acknowledgement ignored"; "msg_id" => id);
            return;
        }
        self.deliveries.acking.insert(key);
        let op = WriteOp::Ack {
            recipient: me,
            sender,
            msg_id,
        };
        self.write(op, Written::Ack(key), ctx);
        let max = self.relay.limits.max_unacked;
        let d = &self.deliveries;
        if !d.live && !d.draining && d.in_flight.len() < max / 2 {
            self.start_drain(ctx);
        }
    }
}

impl Actor for Connection {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(1 << 16);
        self.relay.metrics.connections_total.inc();
        debug!(self.log, "connection opened");
        // So that it hears of a shutdown before it authenticates.
        self.relay.router.do_send(Opened {
            conn_id: self.id,
            addr: ctx.address().recipient(),
        });
        self.send(
            Frame::Challenge {
                relay_id: self.relay.relay_id,
                nonce: self.nonce,
            },
            ctx,
        );
        if let Some(done) = self.writer_done.take() {
            ctx.spawn(done.into_actor(self).map(|exit, act, ctx| {
                if exit == Ok(WriterExit::TimedOut) {
                    // Nothing more can be written to it, not even the Error frame.
                    act.relay.metrics.reject(ErrorCode::SlowConsumer);
                    warn!(act.log, "closing connection"; "reason" => "write timed out",
                          "code" => ErrorCode::SlowConsumer.name());
                } else if exit == Ok(WriterExit::Failed) && !act.closing {
                    info!(act.log, "connection lost"; "reason" => "a write failed");
                }
                act.closing = true;
                ctx.stop();
            }));
        }
        let limits = &self.relay.limits;
        ctx.run_later(Duration::from_millis(limits.auth_timeout_ms), |act, ctx| {
            if act.identity().is_none() {
                act.close(ErrorCode::AuthTimeout, "no authentication in time", ctx);
            }
        });
        let heartbeat = Duration::from_millis(limits.heartbeat_interval_ms.max(10));
        let idle = Duration::from_millis(limits.idle_timeout_ms.max(10));
        ctx.run_interval(heartbeat.min(idle) / 2, move |act, ctx| {
            act.check_notices(ctx);
            let silent = act.last_seen.elapsed();
            if silent >= idle {
                act.close(ErrorCode::IdleTimeout, "no frames within the idle timeout", ctx);
            } else if silent >= heartbeat {
                act.ping_counter += 1;
                let nonce = act.ping_counter;
                act.send(Frame::Ping { nonce }, ctx);
            }
        });
    }

    fn stopped(&mut self, ctx: &mut Context<Self>) {
        // Acknowledgements read before the connection ended are committed all the same
        // (nothing more is written to the client), and so is the end of the connection
        // as the time its identity was last seen (QueryAway counts its absence from
        // here).
        self.closing = true;
        if let State::Ready(identity, _) = self.state {
            self.record_seen(identity, crate::now_ms(), ctx);
        }
        self.send_writes(ctx);
        // Those writes are in the store's queue: the connection that replaced this one
        // may read the queue now.
        if let Some(handover) = self.handover.take() {
            let _ = handover.send(());
        }
        self.relay.metrics.connections_open.dec();
        match self.state {
            State::Challenged => self
                .relay
                .router
                .do_send(ClosedUnauthenticated { conn_id: self.id }),
            State::Ready(identity, _) => {
                self.relay.metrics.authenticated.dec();
                self.relay.router.do_send(Unregister {
                    identity,
                    conn_id: self.id,
                });
            }
        }
        debug!(self.log, "connection closed");
    }
}

impl StreamHandler<Result<Frame, CodecError>> for Connection {
    fn handle(&mut self, item: Result<Frame, CodecError>, ctx: &mut Context<Self>) {
        if self.closing || self.shutdown.is_some() {
            // Not read: unacknowledged Sends are sent again to the next relay.
            return;
        }
        match item {
            Ok(frame) => {
                self.last_seen = Instant::now();
                self.relay
                    .metrics
                    .bytes_in
                    .add((frame.encoded_len() + e2ee_protocol::frame::LENGTH_PREFIX_LEN) as u64);
                self.requests.read(&frame);
                self.on_frame(frame, ctx);
            }
            Err(CodecError::FrameTooLarge { len, max }) => {
                let reason = format!("frame of {len} bytes over the limit of {max}");
                self.close(ErrorCode::FrameTooLarge, &reason, ctx);
            }
            Err(CodecError::Malformed(err)) => {
                let reason = format!("malformed frame: {err}");
                self.close(ErrorCode::Malformed, &reason, ctx);
            }
            Err(CodecError::Io(err)) => {
                debug!(self.log, "read failed"; "err" => %err);
                self.closing = true;
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.closing = true;
        ctx.stop();
    }
}

impl Handler<ToConnection> for Connection {
    type Result = ();

    fn handle(&mut self, msg: ToConnection, ctx: &mut Context<Self>) {
        match msg {
            ToConnection::Deliver(deliveries) => {
                for delivery in deliveries {
                    self.offer(delivery, ctx);
                }
            }
            ToConnection::Frame(frame) => {
                self.send(frame, ctx);
            }
            ToConnection::Close { code, reason }
                if code == ErrorCode::ServerShutdown && self.writes.storing() =>
            {
                // Messages being stored are acknowledged first.
                self.shutdown = Some((code, reason));
            }
            ToConnection::Close { code, reason } => self.close(code, &reason, ctx),
            ToConnection::Waiting => {
                self.deliveries.missed = true;
                self.start_drain(ctx);
            }
            ToConnection::Replaced { handover } => {
                // Nothing more is delivered here, but what the client sent before it
                // connected again (acknowledgements above all) is still read: until its
                // end of stream, or for `REPLACED_GRACE`. `stopped` then hands the writes
                // over and signals the newer connection.
                self.handover = Some(handover);
                self.deliveries.live = false;
                ctx.run_later(REPLACED_GRACE, |act, ctx| {
                    act.close(
                        ErrorCode::Replaced,
                        "a newer connection authenticated as this identity",
                        ctx,
                    )
                });
            }
        }
    }
}
