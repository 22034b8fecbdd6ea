//! The Agent actor: owns the identity, the prekeys and one Double Ratchet session per
//! peer (through [`AgentState`]), resolves peers by name, starts sessions from fetched
//! bundles, encrypts outgoing and decrypts incoming messages, and reports every outcome
//! as an [`Event`]. Drivers (stdin, script) talk to it with the command messages below.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use actix::prelude::*;
use e2ee_protocol::frame::Frame;
use e2ee_protocol::identity::IdentityKey;
use e2ee_protocol::name_claim::{validate_name, NameClaim};
use e2ee_protocol::payload::{ContentType, Payload};
use e2ee_protocol::prekey::PreKeyBundle;
use rand_core::{OsRng, RngCore};
use slog::{debug, warn, Logger};
use tokio::sync::oneshot;

use crate::event::{identity_hex, msg_id_hex, ConnectionState, Event, IdentityAction};
use crate::failure::FailureClass;
use crate::relay_link::{LinkEvent, Outbound, RelayLink, SetOnline};
use crate::settings::{AgentSettings, IdentityPolicy};
use crate::sink::EventSink;
use crate::state::{AgentState, PinOutcome, ReceiveError};

/// Control payloads that carry the sender's signed name claim start with this.
pub const CLAIM_PREFIX: &[u8] = b"name-claim:";
/// Received messages kept for `expect` steps that have not asked yet.
const INBOX_LIMIT: usize = 10_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Body {
    Text(String),
    Control(Vec<u8>),
    Receipt([u8; 16]),
}

struct PendingSend {
    body: Body,
    msg_id: [u8; 16],
    reply: Option<Reply<String>>,
}

struct Unacked {
    to: String,
    visible: bool,
    reply: Option<Reply<String>>,
}

enum WaitFor {
    Message { peer: String, text: String },
    Failure { peer: String, class: FailureClass },
    Peer { peer: String },
}

struct Waiter {
    id: u64,
    what: WaitFor,
    reply: Reply<()>,
}

/// The agent.
pub struct AgentActor {
    state: AgentState,
    settings: AgentSettings,
    link: Option<Addr<RelayLink>>,
    sink: EventSink,
    log: Logger,
    connected: bool,
    /// Whether the relay's one-time prekey count was acted on since connecting (by the
    /// answer to the publication made on connecting, or by a `PreKeysLow`).
    stock_checked: bool,
    next_request: u32,
    next_waiter: u64,
    lookups: HashMap<u32, String>,
    lookup_in_flight: HashSet<String>,
    fetches: HashMap<u32, (String, IdentityKey)>,
    fetch_in_flight: HashSet<IdentityKey>,
    waiting: HashMap<String, VecDeque<PendingSend>>,
    unacked: HashMap<[u8; 16], Unacked>,
    inbox: VecDeque<(String, String)>,
    failures: VecDeque<(String, FailureClass)>,
    waiters: Vec<Waiter>,
}

impl AgentActor {
    /// An agent over opened state; `link` is attached with [`AgentActor::attach`].
    pub fn new(state: AgentState, settings: AgentSettings, sink: EventSink, log: Logger) -> Self {
        Self {
            state,
            settings,
            link: None,
            sink,
            log,
            connected: false,
            stock_checked: false,
            next_request: 1,
            next_waiter: 1,
            lookups: HashMap::new(),
            lookup_in_flight: HashSet::new(),
            fetches: HashMap::new(),
            fetch_in_flight: HashSet::new(),
            waiting: HashMap::new(),
            unacked: HashMap::new(),
            inbox: VecDeque::new(),
            failures: VecDeque::new(),
            waiters: Vec::new(),
        }
    }

    fn emit(&self, event: Event) {
        self.sink.emit(&event);
    }

    fn to_relay(&self, frame: Frame) {
        if let Some(link) = &self.link {
            link.do_send(Outbound(frame));
        }
    }

    fn request_id(&mut self) -> u32 {
        self.next_request = self.next_request.wrapping_add(1).max(1);
        self.next_request
    }

    fn display_name(&self, identity: &IdentityKey) -> String {
        self.state.name_of(identity).unwrap_or_else(|| identity.short())
    }

    // ---- sending --------------------------------------------------------------------

    fn queue_send(&mut self, peer: String, pending: PendingSend, ctx: &mut Context<Self>) {
        if let Err(err) = validate_name(&peer) {
            return self.fail_send(&peer, pending, &format!("invalid peer name: {err}"));
        }
        if self.state.held_back(&peer).is_some() {
            let reason = format!(
                "the identity of {peer} changed and the policy blocks it: compare safety numbers, \
                 then /trust {peer} to accept it"
            );
            return self.fail_send(&peer, pending, &reason);
        }
        let ready = self
            .state
            .pin(&peer)
            .map(|pin| pin.identity)
            .filter(|id| self.state.has_session(id) && !self.state.is_blocked(id));
        match ready {
            Some(identity) => self.send_now(&peer, identity, pending),
            None => {
                self.waiting.entry(peer.clone()).or_default().push_back(pending);
                self.resolve(&peer, ctx);
            }
        }
    }

    fn fail_send(&self, peer: &str, pending: PendingSend, reason: &str) {
        if matches!(pending.body, Body::Text(_)) {
            self.emit(Event::SendFailed {
                to: peer.to_string(),
                msg_id: msg_id_hex(&pending.msg_id),
                reason: reason.to_string(),
            });
        }
        if let Some(reply) = pending.reply {
            let _ = reply.send(Err(reason.to_string()));
        }
    }

    fn fail_waiting(&mut self, peer: &str, reason: &str) {
        for pending in self.waiting.remove(peer).unwrap_or_default() {
            self.fail_send(peer, pending, reason);
        }
    }

    /// Encrypts (persisting the advanced session and the outbox entry first) and sends.
    fn send_now(&mut self, peer: &str, identity: IdentityKey, pending: PendingSend) {
        let now = now_ms();
        let visible = matches!(pending.body, Body::Text(_));
        let payload = match &pending.body {
            Body::Text(text) => Payload::text(pending.msg_id, now, text),
            Body::Control(body) => Payload::control(pending.msg_id, now, body.clone()),
            Body::Receipt(target) => Payload::receipt(pending.msg_id, now, *target),
        };
        match self.state.encrypt(&identity, &payload) {
            Ok(entry) => {
                self.to_relay(Frame::Send {
                    recipient: *identity.as_bytes(),
                    msg_id: entry.msg_id,
                    payload: entry.wire,
                });
                self.unacked.insert(
                    pending.msg_id,
                    Unacked {
                        to: peer.to_string(),
                        visible,
                        reply: pending.reply,
                    },
                );
            }
            Err(err) => {
                let reason = format!("cannot encrypt: {err}");
                self.fail_send(peer, pending, &reason);
            }
        }
    }

    fn flush_waiting(&mut self, peer: &str, identity: IdentityKey) {
        for pending in self.waiting.remove(peer).unwrap_or_default() {
            self.send_now(peer, identity, pending);
        }
    }

    // ---- peers ----------------------------------------------------------------------

    fn resolve(&mut self, peer: &str, _ctx: &mut Context<Self>) {
        if !self.connected || !self.lookup_in_flight.insert(peer.to_string()) {
            return;
        }
        let request_id = self.request_id();
        self.lookups.insert(request_id, peer.to_string());
        self.to_relay(Frame::LookupName {
            request_id,
            name: peer.to_string(),
        });
    }

    /// Records that `name` is `identity`, applying the identity-change policy. Returns
    /// false if the identity is blocked.
    fn observe(&mut self, name: &str, identity: IdentityKey) -> bool {
        if self.state.is_blocked(&identity) {
            return false;
        }
        match self.state.pin_observed(name, &identity, now_ms()) {
            Ok(PinOutcome::New) => {
                self.emit(Event::PeerPinned {
                    peer: name.to_string(),
                    identity: identity_hex(&identity),
                });
                true
            }
            Ok(PinOutcome::Same) => true,
            Ok(PinOutcome::Changed { previous }) => self.identity_changed(name, previous, identity),
            Err(err) => {
                self.emit(Event::error(format!("cannot record peer {name}: {err}")));
                false
            }
        }
    }

    fn identity_changed(&mut self, name: &str, previous: IdentityKey, current: IdentityKey) -> bool {
        let policy = self.settings.identity_policy;
        let action = match policy {
            IdentityPolicy::Block => IdentityAction::Blocked,
            IdentityPolicy::Warn => IdentityAction::Warned,
            IdentityPolicy::Accept => IdentityAction::Accepted,
        };
        let accepted = action != IdentityAction::Blocked
            && match self.state.accept_identity_change(name, &current, now_ms()) {
                Ok(_) => true,
                Err(err) => {
                    self.emit(Event::error(format!(
                        "cannot accept the new identity of {name}: {err}"
                    )));
                    false
                }
            };
        if !accepted {
            if let Err(err) = self.state.block(name, &current) {
                self.emit(Event::error(format!(
                    "cannot save the block of {name}'s new identity (in effect until a restart): {err}"
                )));
            }
        }
        warn!(self.log, "peer identity changed"; "peer" => name, "action" => ?action);
        self.emit(Event::IdentityChanged {
            peer: name.to_string(),
            previous: identity_hex(&previous),
            current: identity_hex(&current),
            policy,
            action: if accepted { action } else { IdentityAction::Blocked },
        });
        accepted
    }

    fn on_name_claim(&mut self, request_id: u32, claim: Option<Vec<u8>>, ctx: &mut Context<Self>) {
        let Some(name) = self.lookups.remove(&request_id) else {
            return;
        };
        self.lookup_in_flight.remove(&name);
        let Some(bytes) = claim else {
            self.fail_waiting(&name, "no agent of that name is known to the relay");
            if self
                .waiters
                .iter()
                .any(|w| matches!(&w.what, WaitFor::Peer { peer } if *peer == name))
            {
                ctx.run_later(Duration::from_millis(200), move |act, ctx| {
                    act.resolve(&name, ctx)
                });
            }
            return;
        };
        let claim = match NameClaim::decode_verified(&bytes) {
            Ok(claim) if claim.name == name => claim,
            Ok(_) | Err(_) => {
                self.emit(Event::error(format!(
                    "the relay returned an invalid name claim for {name}"
                )));
                return self.fail_waiting(&name, "invalid name claim");
            }
        };
        if !self.observe(&name, claim.identity) {
            return self.fail_waiting(&name, "peer identity changed and is blocked by policy");
        }
        self.resolve_waiters(|what| matches!(what, WaitFor::Peer { peer } if *peer == name));
        if self.waiting.contains_key(&name) {
            if self.state.has_session(&claim.identity) {
                self.flush_waiting(&name, claim.identity);
            } else {
                self.fetch(name, claim.identity);
            }
        }
    }

    fn fetch(&mut self, name: String, identity: IdentityKey) {
        if !self.connected || !self.fetch_in_flight.insert(identity) {
            return;
        }
        let request_id = self.request_id();
        self.fetches.insert(request_id, (name, identity));
        self.to_relay(Frame::FetchBundle {
            request_id,
            identity: *identity.as_bytes(),
        });
    }

    fn on_bundle(&mut self, request_id: u32, bundle: Option<Vec<u8>>) {
        let Some((name, identity)) = self.fetches.remove(&request_id) else {
            return;
        };
        self.fetch_in_flight.remove(&identity);
        let Some(bytes) = bundle else {
            return self.fail_waiting(&name, "the peer has published no prekeys");
        };
        let bundle = match PreKeyBundle::decode_verified(&bytes) {
            Ok(bundle) => bundle,
            Err(err) => {
                self.emit(Event::error(format!("invalid prekey bundle for {name}: {err}")));
                return self.fail_waiting(&name, "invalid prekey bundle");
            }
        };
        if bundle.identity != identity {
            // The relay handed out a bundle of another identity than the name's.
            self.emit(Event::IdentityChanged {
                peer: name.clone(),
                previous: identity_hex(&identity),
                current: identity_hex(&bundle.identity),
                policy: self.settings.identity_policy,
                action: IdentityAction::Blocked,
            });
            return self.fail_waiting(&name, "prekey bundle of a different identity");
        }
        if let Err(err) = self.state.start_session(&bundle, &mut OsRng) {
            return self.fail_waiting(&name, &format!("cannot start a session: {err}"));
        }
        let with_opk = if bundle.one_time_prekeys.is_empty() {
            ""
        } else {
            " and a one-time prekey"
        };
        self.emit(Event::info(format!(
            "new session with {name}: X3DH over its signed prekey{with_opk}"
        )));
        // Our signed name claim goes first, so the peer learns who we are.
        match self.state.name_claim(now_ms()) {
            Ok(claim) => {
                let mut body = CLAIM_PREFIX.to_vec();
                body.extend_from_slice(&claim.encode());
                let pending = PendingSend {
                    body: Body::Control(body),
                    msg_id: random_id(),
                    reply: None,
                };
                self.waiting.entry(name.clone()).or_default().push_front(pending);
            }
            Err(err) => self.emit(Event::error(format!("cannot sign our name claim: {err}"))),
        }
        self.flush_waiting(&name, identity);
    }

    // ---- receiving ------------------------------------------------------------------

    fn on_deliver(&mut self, sender: [u8; 32], msg_id: [u8; 16], wire: &[u8]) {
        let ack = Frame::DeliveryAck { sender, msg_id };
        let Ok(identity) = IdentityKey::from_bytes(sender) else {
            self.report_failure(
                sender_hex(&sender),
                String::new(),
                FailureClass::Malformed,
                "invalid sender identity",
            );
            return self.to_relay(ack);
        };
        let from = self.display_name(&identity);
        if self.state.is_blocked(&identity) {
            self.report_failure(
                from,
                identity_hex(&identity),
                FailureClass::IdentityChanged,
                "sender's identity is blocked by policy",
            );
            return self.to_relay(ack);
        }
        match self.state.decrypt(&identity, msg_id, wire, &mut OsRng) {
            Ok(incoming) => {
                let new_session = incoming.new_session;
                self.on_plaintext(identity, incoming.payload, incoming.newly_skipped, incoming.late);
                if new_session {
                    let from = self.display_name(&identity);
                    self.emit(Event::info(format!(
                        "{from} started a new session with us (X3DH from a PreKey message)"
                    )));
                }
                self.to_relay(ack);
            }
            Err(ReceiveError::Failed(failure)) if failure.redelivery => {
                self.emit(Event::Redelivered {
                    from,
                    from_identity: identity_hex(&identity),
                    msg_id: msg_id_hex(&msg_id),
                });
                self.to_relay(ack);
            }
            Err(ReceiveError::Failed(failure)) => {
                self.report_failure(from, identity_hex(&identity), failure.class, &failure.detail);
                self.to_relay(ack);
            }
            Err(ReceiveError::State(err)) => {
                // Not acknowledged: the relay delivers it again once the state can be saved.
                self.emit(Event::error(format!(
                    "cannot save state for a message from {from}: {err}"
                )));
            }
        }
    }

    fn report_failure(&mut self, from: String, from_identity: String, class: FailureClass, detail: &str) {
        self.emit(Event::DecryptFailure {
            from: from.clone(),
            from_identity,
            class,
            detail: detail.to_string(),
        });
        if !self.resolve_first(
            |what| matches!(what, WaitFor::Failure { peer, class: c } if *peer == from && *c == class),
        ) {
            push_bounded(&mut self.failures, (from, class));
        }
    }

    fn on_plaintext(&mut self, sender: IdentityKey, payload: Payload, newly_skipped: u32, late: bool) {
        match payload.content_type {
            ContentType::Control => {
                let claim = payload
                    .body
                    .strip_prefix(CLAIM_PREFIX)
                    .and_then(|bytes| NameClaim::decode_verified(bytes).ok())
                    .filter(|claim| claim.identity == sender);
                match claim {
                    Some(claim) => {
                        self.observe(&claim.name, sender);
                        self.resolve_waiters(
                            |what| matches!(what, WaitFor::Peer { peer } if *peer == claim.name),
                        );
                    }
                    None => self.emit(Event::error(format!(
                        "unverifiable control message from {}",
                        self.display_name(&sender)
                    ))),
                }
            }
            ContentType::Receipt => {
                if let Some(target) = payload.receipt_target() {
                    self.emit(Event::Delivered {
                        to: self.display_name(&sender),
                        msg_id: msg_id_hex(&target),
                    });
                }
            }
            ContentType::Text => {
                let from = self.display_name(&sender);
                let text = payload.as_text().unwrap_or_default().to_string();
                self.emit(Event::Message {
                    from: from.clone(),
                    from_identity: identity_hex(&sender),
                    text: text.clone(),
                    msg_id: msg_id_hex(&payload.message_id),
                    timestamp_ms: payload.timestamp_ms,
                    newly_skipped,
                    late,
                });
                let matched = self.resolve_first(
                    |what| matches!(what, WaitFor::Message { peer, text: t } if *peer == from && text.contains(t.as_str())),
                );
                if !matched {
                    push_bounded(&mut self.inbox, (from.clone(), text));
                }
                // An end-to-end receipt (never for receipts, so no loop).
                let receipt = PendingSend {
                    body: Body::Receipt(payload.message_id),
                    msg_id: random_id(),
                    reply: None,
                };
                self.send_now(&from, sender, receipt);
            }
        }
    }

    // ---- waiters --------------------------------------------------------------------

    fn resolve_first(&mut self, matches: impl Fn(&WaitFor) -> bool) -> bool {
        match self.waiters.iter().position(|w| matches(&w.what)) {
            Some(index) => {
                let waiter = self.waiters.remove(index);
                let _ = waiter.reply.send(Ok(()));
                true
            }
            None => false,
        }
    }

    fn resolve_waiters(&mut self, matches: impl Fn(&WaitFor) -> bool) {
        let (done, keep): (Vec<_>, Vec<_>) = self.waiters.drain(..).partition(|w| matches(&w.what));
        self.waiters = keep;
        for waiter in done {
            let _ = waiter.reply.send(Ok(()));
        }
    }

    fn wait(
        &mut self,
        what: WaitFor,
        timeout_ms: u64,
        describe: String,
        ctx: &mut Context<Self>,
    ) -> oneshot::Receiver<Result<(), String>> {
        let (tx, rx) = oneshot::channel();
        let id = self.next_waiter;
        self.next_waiter += 1;
        self.waiters.push(Waiter { id, what, reply: tx });
        ctx.run_later(Duration::from_millis(timeout_ms), move |act, _| {
            if let Some(index) = act.waiters.iter().position(|w| w.id == id) {
                let waiter = act.waiters.remove(index);
                let _ = waiter.reply.send(Err(format!(
                    "timed out after {timeout_ms} ms waiting for {describe}"
                )));
            }
        });
        rx
    }

    // ---- relay events ---------------------------------------------------------------

    fn on_connected(&mut self, ctx: &mut Context<Self>) {
        self.connected = true;
        self.emit(Event::Connection {
            state: ConnectionState::Connected,
            relay: self.settings.relay.clone(),
            attempt: None,
        });
        // Every connection publishes the signed prekey (and any one-time prekeys not
        // yet confirmed): a relay that lost its data gets the bundle back, and its
        // PreKeysStored answer says how many one-time prekeys it holds.
        self.stock_checked = false;
        self.to_relay(Frame::PublishPreKeys {
            bundle: self.state.bundle_to_publish().encode(),
        });
        match self.state.name_claim(now_ms()) {
            Ok(claim) => self.to_relay(Frame::PublishName {
                claim: claim.encode(),
            }),
            Err(err) => self.emit(Event::error(format!("cannot sign our name claim: {err}"))),
        }
        // Everything the relay has not acknowledged goes again, with the same ids.
        for entry in self.state.outbox() {
            if !self.unacked.contains_key(&entry.msg_id) {
                let to = self.display_name(&entry.recipient);
                self.unacked.insert(
                    entry.msg_id,
                    Unacked {
                        to,
                        visible: entry.text,
                        reply: None,
                    },
                );
            }
            self.to_relay(Frame::Send {
                recipient: *entry.recipient.as_bytes(),
                msg_id: entry.msg_id,
                payload: entry.wire,
            });
        }
        self.resolve_pending(ctx);
    }

    /// Looks up every peer that messages or `wait-peer` steps are waiting for.
    fn resolve_pending(&mut self, ctx: &mut Context<Self>) {
        let names: Vec<String> = self.waiting.keys().cloned().collect();
        for name in names {
            self.resolve(&name, ctx);
        }
        let peers: Vec<String> = self
            .waiters
            .iter()
            .filter_map(|w| match &w.what {
                WaitFor::Peer { peer } => Some(peer.clone()),
                _ => None,
            })
            .collect();
        for peer in peers {
            self.resolve(&peer, ctx);
        }
    }

    /// Sends outbox entry `msg_id` again after `delay_ms`, if the relay has not stored it
    /// by then.
    fn resend_later(&mut self, msg_id: [u8; 16], delay_ms: u32, ctx: &mut Context<Self>) {
        ctx.run_later(Duration::from_millis(u64::from(delay_ms)), move |act, _| {
            if let Some(entry) = act.state.outbox().into_iter().find(|e| e.msg_id == msg_id) {
                act.to_relay(Frame::Send {
                    recipient: *entry.recipient.as_bytes(),
                    msg_id,
                    payload: entry.wire,
                });
            }
        });
    }

    /// Tops the relay's one-time prekeys up from `remaining` to `prekeys.replenish_to`.
    fn replenish(&mut self, remaining: u32) {
        self.stock_checked = true;
        let target = self.settings.prekeys.replenish_to as usize;
        debug!(self.log, "replenishing one-time prekeys"; "remaining" => remaining);
        match self.state.replenish(remaining as usize, target, &mut OsRng) {
            Ok(bundle) => self.to_relay(Frame::PublishPreKeys {
                bundle: bundle.encode(),
            }),
            Err(err) => self.emit(Event::error(format!("cannot replenish prekeys: {err}"))),
        }
    }

    /// Forgets the lookups and fetches in flight (their answers will not come).
    fn forget_requests(&mut self) {
        self.lookups.clear();
        self.lookup_in_flight.clear();
        self.fetches.clear();
        self.fetch_in_flight.clear();
    }

    fn on_disconnected(&mut self, reason: String, retry: Option<(u32, Duration)>) {
        self.connected = false;
        // Answers to these requests are lost; they are asked again after reconnecting.
        self.forget_requests();
        debug!(self.log, "disconnected"; "reason" => &reason);
        self.emit(Event::Connection {
            state: if retry.is_some() {
                ConnectionState::Reconnecting
            } else {
                ConnectionState::Disconnected
            },
            relay: self.settings.relay.clone(),
            attempt: retry.map(|(attempt, _)| attempt),
        });
    }

    fn on_frame(&mut self, frame: Frame, ctx: &mut Context<Self>) {
        match frame {
            Frame::Deliver {
                sender,
                msg_id,
                payload,
                ..
            } => self.on_deliver(sender, msg_id, &payload),
            Frame::SentAck { msg_id } => {
                if let Err(err) = self.state.acked(&msg_id) {
                    self.emit(Event::error(format!("cannot update the outbox: {err}")));
                }
                if let Some(unacked) = self.unacked.remove(&msg_id) {
                    if unacked.visible {
                        self.emit(Event::Sent {
                            to: unacked.to,
                            msg_id: msg_id_hex(&msg_id),
                        });
                    }
                    if let Some(reply) = unacked.reply {
                        let _ = reply.send(Ok(msg_id_hex(&msg_id)));
                    }
                }
            }
            Frame::NameClaim { request_id, claim } => self.on_name_claim(request_id, claim, ctx),
            Frame::Bundle { request_id, bundle } => self.on_bundle(request_id, bundle),
            Frame::PreKeysStored { opks } => {
                debug!(self.log, "prekeys stored at the relay"; "opks" => opks);
                if let Err(err) = self.state.mark_published() {
                    self.emit(Event::error(format!("cannot save prekey state: {err}")));
                }
                if !self.stock_checked && opks < self.settings.prekeys.replenish_below {
                    self.replenish(opks);
                }
                self.stock_checked = true;
            }
            Frame::PreKeysLow { remaining } => self.replenish(remaining),
            Frame::RateLimited {
                msg_id: Some(msg_id),
                retry_after_ms,
            } => self.resend_later(msg_id, retry_after_ms, ctx),
            Frame::RateLimited {
                msg_id: None,
                retry_after_ms,
            } => {
                // A lookup, fetch or publication was refused; which one is not said, so
                // every request in flight is asked again after the delay.
                self.emit(Event::info(format!(
                    "the relay rate-limited a request: asking again in {retry_after_ms} ms"
                )));
                ctx.run_later(Duration::from_millis(u64::from(retry_after_ms)), |act, ctx| {
                    act.forget_requests();
                    act.resolve_pending(ctx);
                });
            }
            Frame::QuotaExceeded {
                msg_id,
                recipient,
                retry_after_ms,
            } => {
                let to = IdentityKey::from_bytes(recipient)
                    .map(|id| self.display_name(&id))
                    .unwrap_or_else(|_| sender_hex(&recipient));
                // Kept in the outbox: resent after the delay and on every reconnection
                // until the relay stores it. A script's `send` fails now rather than wait.
                let reason = format!(
                    "the queue of {to} at the relay is full: kept in the outbox, resending in {retry_after_ms} ms"
                );
                self.emit(Event::info(reason.clone()));
                if let Some(Unacked { reply, .. }) = self.unacked.get_mut(&msg_id) {
                    if let Some(reply) = reply.take() {
                        let _ = reply.send(Err(reason));
                    }
                }
                self.resend_later(msg_id, retry_after_ms, ctx);
            }
            Frame::Error { code, reason } => {
                self.emit(Event::error(format!("relay: {}: {reason}", code.name())));
            }
            other => debug!(self.log, "ignored frame"; "kind" => other.kind()),
        }
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() >= INBOX_LIMIT {
        queue.pop_front();
    }
    queue.push_back(item);
}

fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    id
}

fn sender_hex(bytes: &[u8; 32]) -> String {
    bytes[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl Actor for AgentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Unbounded (0), like the relay link's `do_send`s: with a bounded mailbox a full
        // queue defers `send`s and can reorder the messages typed on stdin.
        ctx.set_mailbox_capacity(0);
        self.emit(Event::Started {
            name: self.state.name().to_string(),
            identity: identity_hex(self.state.identity().public()),
        });
    }
}

/// Attaches the relay link (made after the agent, since it needs the agent's address).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach(pub Addr<RelayLink>);

impl Handler<Attach> for AgentActor {
    type Result = ();
    fn handle(&mut self, msg: Attach, _: &mut Context<Self>) {
        self.link = Some(msg.0);
    }
}

impl Handler<LinkEvent> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: LinkEvent, ctx: &mut Context<Self>) {
        match msg {
            LinkEvent::Connected { .. } => self.on_connected(ctx),
            LinkEvent::Disconnected { reason, retry } => self.on_disconnected(reason, retry),
            LinkEvent::Frame(frame) => self.on_frame(frame, ctx),
        }
    }
}

/// Send a text message to a peer by name; resolves when the relay stored it durably.
#[derive(Message)]
#[rtype(result = "Result<String, String>")]
pub struct SendText {
    /// Peer name.
    pub peer: String,
    /// The text.
    pub text: String,
}

impl Handler<SendText> for AgentActor {
    type Result = ResponseFuture<Result<String, String>>;

    fn handle(&mut self, msg: SendText, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let pending = PendingSend {
            body: Body::Text(msg.text),
            msg_id: random_id(),
            reply: Some(tx),
        };
        self.queue_send(msg.peer, pending, ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("agent stopped".into())) })
    }
}

/// Wait for a message from `peer` containing `text`.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Expect {
    /// Peer name.
    pub peer: String,
    /// Text the message must contain.
    pub text: String,
    /// How long to wait.
    pub timeout_ms: u64,
}

impl Handler<Expect> for AgentActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: Expect, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(index) = self
            .inbox
            .iter()
            .position(|(from, text)| *from == msg.peer && text.contains(msg.text.as_str()))
        {
            self.inbox.remove(index);
            return Box::pin(async { Ok(()) });
        }
        let describe = format!("a message from {} containing {:?}", msg.peer, msg.text);
        let rx = self.wait(
            WaitFor::Message {
                peer: msg.peer,
                text: msg.text,
            },
            msg.timeout_ms,
            describe,
            ctx,
        );
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("agent stopped".into())) })
    }
}

/// Wait for a decrypt failure of `class` from `peer`.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct ExpectFailure {
    /// Peer name (or short identity).
    pub peer: String,
    /// The failure class.
    pub class: FailureClass,
    /// How long to wait.
    pub timeout_ms: u64,
}

impl Handler<ExpectFailure> for AgentActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: ExpectFailure, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(index) = self
            .failures
            .iter()
            .position(|(from, class)| *from == msg.peer && *class == msg.class)
        {
            self.failures.remove(index);
            return Box::pin(async { Ok(()) });
        }
        let describe = format!("a {} failure from {}", msg.class, msg.peer);
        let rx = self.wait(
            WaitFor::Failure {
                peer: msg.peer,
                class: msg.class,
            },
            msg.timeout_ms,
            describe,
            ctx,
        );
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("agent stopped".into())) })
    }
}

/// Wait until a peer's name is known (pinned).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct WaitPeer {
    /// Peer name.
    pub peer: String,
    /// How long to wait.
    pub timeout_ms: u64,
}

impl Handler<WaitPeer> for AgentActor {
    type Result = ResponseFuture<Result<(), String>>;

    fn handle(&mut self, msg: WaitPeer, ctx: &mut Context<Self>) -> Self::Result {
        if let Err(err) = validate_name(&msg.peer) {
            let reason = format!("invalid peer name: {err}");
            return Box::pin(async move { Err(reason) });
        }
        let describe = format!("peer {} to be known", msg.peer);
        let rx = self.wait(
            WaitFor::Peer {
                peer: msg.peer.clone(),
            },
            msg.timeout_ms,
            describe,
            ctx,
        );
        // Always ask the relay: it is also how an identity change is noticed.
        self.resolve(&msg.peer, ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err("agent stopped".into())) })
    }
}

/// Show the safety number (and QR code) for a peer.
#[derive(Message)]
#[rtype(result = "Result<String, String>")]
pub struct Verify {
    /// Peer name.
    pub peer: String,
}

impl Handler<Verify> for AgentActor {
    type Result = Result<String, String>;

    fn handle(&mut self, msg: Verify, _: &mut Context<Self>) -> Self::Result {
        let number = self.state.safety_number(&msg.peer).ok_or_else(|| {
            format!(
                "no identity pinned for {}: exchange a message or wait-peer first",
                msg.peer
            )
        })?;
        self.emit(Event::SafetyNumber {
            peer: msg.peer.clone(),
            digits: number.digits().to_string(),
            grouped: number.display_groups(),
            scannable: hex::encode(number.scannable()),
        });
        if !self.sink.is_json() {
            match crate::qr::render(&number.scannable()) {
                Ok(qr) => self.sink.raw(&qr),
                Err(err) => self.emit(Event::error(format!("cannot draw the QR code: {err}"))),
            }
        }
        Ok(number.digits().to_string())
    }
}

/// Mark a peer's identity as verified.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Trust {
    /// Peer name.
    pub peer: String,
}

impl Handler<Trust> for AgentActor {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: Trust, _: &mut Context<Self>) -> Self::Result {
        // An identity change the policy held back is accepted first, unverified (a
        // change always clears `verified`): its safety number has not been compared.
        let accepted = self
            .state
            .accept_held_back(&msg.peer, now_ms())
            .map_err(|e| e.to_string())?;
        if accepted.is_some() {
            self.emit(Event::info(format!(
                "accepted the new identity of {peer} (unverified): compare safety numbers with \
                 /verify {peer}, then /trust {peer}",
                peer = msg.peer
            )));
            return Ok(());
        }
        let number = self
            .state
            .safety_number(&msg.peer)
            .ok_or_else(|| format!("no identity pinned for {}", msg.peer))?;
        self.state
            .set_verified(&msg.peer, true)
            .map_err(|e| e.to_string())?;
        self.emit(Event::PeerVerified {
            peer: msg.peer,
            safety_number: number.digits().to_string(),
        });
        Ok(())
    }
}

/// List known peers.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListPeers;

impl Handler<ListPeers> for AgentActor {
    type Result = ();

    fn handle(&mut self, _: ListPeers, _: &mut Context<Self>) {
        self.emit(Event::Peers {
            peers: self.state.peer_list(),
        });
    }
}

/// Go offline or online.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Online(pub bool);

impl Handler<Online> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: Online, _: &mut Context<Self>) {
        if let Some(link) = &self.link {
            link.do_send(SetOnline(msg.0));
        }
    }
}

/// Print an event through the agent's sink (drivers use it for their own events).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Emit(pub Event);

impl Handler<Emit> for AgentActor {
    type Result = ();

    fn handle(&mut self, msg: Emit, _: &mut Context<Self>) {
        self.emit(msg.0);
    }
}
